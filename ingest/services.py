"""Business logic of the web side: accept events, replay dead letters, answer receipts.

Delivering batches is the worker's: ingest/delivery/service.py.
"""

import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from . import keys, receipts, runtime, stats
from .batcher import BatcherClosed, BatcherFull, Ticket
from .errors import ApiError, unavailable
from .ids import uuid7_unix_seconds
from .models import DeadLetter, DeliveryOutcome
from .parsing import Record

ACK_LEVELS = ("durable", "delivered", "none")


@dataclass(frozen=True)
class Acceptance:
    """What the gateway says about one accepted request."""

    ids: list[str]
    receipt_id: str
    ack: str
    offsets: list | None = None
    pending_ids: list[str] | None = None

    def as_json(self) -> dict:
        body = {"accepted": len(self.ids), "ids": self.ids, "receipt": self.receipt_id}
        body["ack"] = self.ack
        if self.offsets is not None:
            body["offsets"] = self.offsets
        if self.pending_ids is not None:
            body["pending_ids"] = self.pending_ids
        return body


def admit_request(*, source: keys.SourceInfo, declared_bytes: int) -> None:
    """Refuse a source already over its rate limit before its body is read or parsed."""
    keys.get_limiter().admit(source, declared_bytes=declared_bytes)


def accept_events(
    *, source: keys.SourceInfo, topic: str, records: list[Record], ack: str
) -> Acceptance:
    """Rate-limit the source, hand its records to the batcher, wait as the ack level asks."""
    nbytes = sum(len(record.value) for record in records)
    keys.get_limiter().check(source, events=len(records), nbytes=nbytes)
    gateway = runtime.get_gateway()
    retry_after = settings.INGEST_RETRY_AFTER_S
    gateway.backlog.check(retry_after=retry_after)
    try:
        ticket = gateway.batcher.submit(topic=topic, records=records)
    except BatcherFull as error:
        raise unavailable(
            f"the gateway is at capacity: {error}", retry_after=retry_after, code="overloaded"
        ) from error
    except BatcherClosed as error:
        raise unavailable(str(error), retry_after=retry_after) from error
    ids = [record.event_id for record in records]
    if ack != "none":
        _wait_until_published(ticket, retry_after=retry_after)
    stats.count_accepted(topic=topic, source=source.name, events=len(records), nbytes=nbytes)
    receipt = receipts.Receipt(
        batch_id=ticket.batch.batch_id, first=ticket.first_index, count=ticket.count
    )
    receipt_id = receipt.signed_id(source=source.name)
    if ack in ("none", "durable"):
        return Acceptance(ids=ids, receipt_id=receipt_id, ack=ack)
    outcome = gateway.outcomes.wait(
        ticket.batch.batch_id, timeout=settings.INGEST_DELIVERED_TIMEOUT_S
    )
    return _delivered_acceptance(ids=ids, receipt=receipt, receipt_id=receipt_id, outcome=outcome)


def _wait_until_published(ticket: Ticket, *, retry_after: int) -> None:
    """Wait until the broker confirmed the batch or its publish failed for good.

    The wait outlasts every attempt a flusher can make, so a batch is never confirmed after its
    requests were told 503. One case stays open: a confirm lost after the broker took the
    message (a timeout); those events may still be delivered (README, "Errors").
    """
    batch = ticket.batch
    if not batch.published.wait(runtime.publish_wait_s()):
        raise unavailable("the broker did not confirm in time", retry_after=retry_after)
    if batch.error is not None:
        raise unavailable(
            f"the broker did not take the batch: {type(batch.error).__name__}",
            retry_after=retry_after,
        )


def _delivered_acceptance(
    *,
    ids: list[str],
    receipt: receipts.Receipt,
    receipt_id: str,
    outcome: DeliveryOutcome | None,
) -> Acceptance:
    """Answer `ack=delivered` as the receipt reads: one entry per event, offset or reason."""
    if outcome is None:
        return Acceptance(ids=ids, receipt_id=receipt_id, ack="durable", pending_ids=ids)
    events = receipts.event_outcomes(outcome, receipt=receipt)
    return Acceptance(
        ids=ids,
        receipt_id=receipt_id,
        ack=receipts.status_of(events),
        offsets=[
            {"id": event_id, **event.as_json()} for event_id, event in zip(ids, events, strict=True)
        ],
    )


def parse_ack_level(value: str | None) -> str:
    ack = (value or "durable").strip().lower()
    if ack not in ACK_LEVELS:
        raise ApiError(
            400, "invalid_ack", f"ack must be one of {', '.join(ACK_LEVELS)}, got {value!r}"
        )
    return ack


def replay_dead_letters(*, dead_letters) -> int:
    """Enqueue dead letters again as new batches and mark them replayed; return events sent.

    Dead letters hold one record each, so they are gathered into batches of up to
    INGEST_BATCH_MAX_EVENTS records and INGEST_BATCH_MAX_BYTES, one publish each.
    """
    replayed = 0
    records, letters, size = [], [], 0
    for dead_letter in dead_letters.filter(replayed_at__isnull=True).order_by("id"):
        records.extend([dead_letter.topic, *triple] for triple in dead_letter.records)
        letters.append(dead_letter.pk)
        size += sum(len(triple[2]) for triple in dead_letter.records)
        if (
            len(records) >= settings.INGEST_BATCH_MAX_EVENTS
            or size >= settings.INGEST_BATCH_MAX_BYTES
        ):
            replayed += _replay(records=records, dead_letter_ids=letters)
            records, letters, size = [], [], 0
    if records:
        replayed += _replay(records=records, dead_letter_ids=letters)
    return replayed


def _replay(*, records: list, dead_letter_ids: list[int]) -> int:
    from .tasks import enqueue_records

    enqueue_records(records=records)
    DeadLetter.objects.filter(pk__in=dead_letter_ids).update(replayed_at=timezone.now())
    return len(records)


def receipt_status(*, receipt_id: str, source: keys.SourceInfo) -> dict:
    """Say what became of the events behind a receipt the asking source was given.

    Raises receipts.ReceiptNotFound for a malformed id or one signed for another source.
    """
    receipt = receipts.parse(receipt_id, source=source.name)
    outcome = DeliveryOutcome.objects.filter(batch_id=receipt.batch_id).first()
    if outcome is None:
        age = time.time() - uuid7_unix_seconds(receipt.batch_id)
        recent = age < settings.INGEST_RECEIPT_RETENTION_S
        return {"receipt": receipt_id, "status": "pending" if recent else "unknown"}
    events = receipts.event_outcomes(outcome, receipt=receipt)
    return {"receipt": receipt_id, **receipts.describe(events), "attempts": outcome.attempts}
