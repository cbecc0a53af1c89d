from django.core.management.base import BaseCommand, CommandError

from ingest.control import keys
from ingest.models import Source


class Command(BaseCommand):
    help = "Create a source and print its API key; the key is shown this once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--topics",
            required=True,
            help='allowed topics, comma-separated; "*" allows every topic',
        )
        parser.add_argument(
            "--protocol-topic",
            action="append",
            default=[],
            metavar="PROTOCOL=TOPIC",
            help="the topic a client protocol's events go to (segment=web-events); repeatable",
        )
        parser.add_argument("--max-events-per-s", type=int, help="rate limit in events/s")
        parser.add_argument("--max-bytes-per-s", type=int, help="rate limit in bytes/s")

    def handle(
        self, *args, name, topics, protocol_topic, max_events_per_s, max_bytes_per_s, **options
    ):
        if Source.objects.filter(name=name).exists():
            raise CommandError(f"source {name!r} exists; rotate its key in the admin")
        if not topics.replace(",", " ").split():
            raise CommandError('--topics names no topic; give topic names, or "*" for every topic')
        source = Source(
            name=name,
            allowed_topics=topics,
            protocol_topics=_protocol_topics(protocol_topic),
            max_events_per_s=max_events_per_s,
            max_bytes_per_s=max_bytes_per_s,
        )
        key = keys.issue_key(source)
        source.full_clean()
        source.save()
        self.stdout.write(key)


def _protocol_topics(pairs: list[str]) -> dict[str, str]:
    protocol_topics = {}
    for pair in pairs:
        protocol, _, topic = pair.partition("=")
        if not protocol.strip() or not topic.strip():
            raise CommandError(f"--protocol-topic wants PROTOCOL=TOPIC, got {pair!r}")
        protocol_topics[protocol.strip()] = topic.strip()
    return protocol_topics
