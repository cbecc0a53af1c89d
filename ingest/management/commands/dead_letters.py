from django.core.management.base import BaseCommand, CommandError

from ingest.control.dead_letters import replay_dead_letters
from ingest.models import DeadLetter


class Command(BaseCommand):
    help = (
        "List, replay or purge dead letters (events that could not be delivered to Kafka), "
        "one record each: list shows its id, event id and reason; --id picks them one by one."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=("list", "replay", "purge"))
        parser.add_argument("--topic", help="only dead letters of this topic")
        parser.add_argument("--id", type=int, action="append", dest="ids", help="only these ids")
        parser.add_argument("--all", action="store_true", help="with purge: every dead letter")

    def handle(self, *args, action, topic, ids, all, **options):
        dead_letters = DeadLetter.objects.all()
        if topic:
            dead_letters = dead_letters.filter(topic=topic)
        if ids:
            dead_letters = dead_letters.filter(id__in=ids)
        if action == "list":
            for dead_letter in dead_letters:
                state = (
                    f"replayed {dead_letter.replayed_at:%Y-%m-%d %H:%M}"
                    if (dead_letter.replayed_at)
                    else "waiting"
                )
                ids = dead_letter.event_ids
                # Rows from before per-record dead letters may hold several events.
                events = ids[0] if len(ids) == 1 else f"{len(ids)} events"
                self.stdout.write(
                    f"{dead_letter.id}\t{dead_letter.created_at:%Y-%m-%d %H:%M:%S}\t"
                    f"{dead_letter.topic}\t{events}\t{state}\t{dead_letter.reason}"
                )
        elif action == "replay":
            count = replay_dead_letters(dead_letters=dead_letters)
            self.stdout.write(f"enqueued {count} events again")
        else:
            if not (topic or ids or all):
                raise CommandError("purge needs --topic, --id or --all")
            count, _ = dead_letters.delete()
            self.stdout.write(f"purged {count} dead letters")
