import json

from django.core.management.base import BaseCommand

from ingest.control.topics import read_topic


class Command(BaseCommand):
    help = "Print the records of a Kafka topic from the beginning, one JSON line each."

    def add_arguments(self, parser):
        parser.add_argument("topic")
        parser.add_argument(
            "--idle-timeout",
            type=float,
            default=3.0,
            help="stop after this many seconds without a new record (default 3)",
        )
        parser.add_argument("--limit", type=int, default=0, help="stop after this many records")

    def handle(self, *args, topic, idle_timeout, limit, **options):
        count = 0
        for record in read_topic(topic=topic, idle_timeout_s=idle_timeout):
            line = {
                "partition": record.partition,
                "offset": record.offset,
                "id": record.event_id,
                "source": _header(record, "source"),
                "protocol": _header(record, "protocol"),
                "key": record.key,
                "value": record.value,
            }
            self.stdout.write(json.dumps(line, separators=(",", ":")))
            count += 1
            if count == limit:
                break
        self.stderr.write(f"{count} records in {topic}")


def _header(record, name: str) -> str | None:
    value = record.headers.get(name)
    return None if value is None else value.decode(errors="replace")
