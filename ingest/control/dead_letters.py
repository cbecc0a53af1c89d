"""Replay dead letters: publish their records again as new batches, used by the admin and
the dead_letters command."""

from django.conf import settings
from django.utils import timezone

from ..models import DeadLetter
from ..pipeline.broker import enqueue_records
from ..records import BatchRecord, record_from_stored


def replay_dead_letters(*, dead_letters) -> int:
    """Enqueue dead letters again as new batches and mark them replayed; return events sent.

    Dead letters hold one record each, so they are gathered into batches of up to
    INGEST_BATCH_MAX_EVENTS records and INGEST_BATCH_MAX_BYTES, one publish each.
    """
    replayed = 0
    records, letters, size = [], [], 0
    for dead_letter in dead_letters.filter(replayed_at__isnull=True).order_by("id"):
        stored = [record_from_stored(dead_letter.topic, entry) for entry in dead_letter.records]
        records.extend(stored)
        letters.append(dead_letter.pk)
        size += sum(len(record.value) for record in stored)
        if (
            len(records) >= settings.INGEST_BATCH_MAX_EVENTS
            or size >= settings.INGEST_BATCH_MAX_BYTES
        ):
            replayed += _replay(records=records, dead_letter_ids=letters)
            records, letters, size = [], [], 0
    if records:
        replayed += _replay(records=records, dead_letter_ids=letters)
    return replayed


def _replay(*, records: list[BatchRecord], dead_letter_ids: list[int]) -> int:
    enqueue_records(records=records)
    DeadLetter.objects.filter(pk__in=dead_letter_ids).update(replayed_at=timezone.now())
    return len(records)
