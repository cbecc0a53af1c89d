"""Business logic of the gateway: accept events, deliver batches, dead letters and receipts."""

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import keys, producer, receipts, runtime, stats
from .batcher import BatcherClosed, BatcherFull, Ticket
from .errors import ApiError, unavailable
from .ids import uuid7_unix_seconds
from .models import DeadLetter, DeliveryOutcome
from .parsing import Record

logger = logging.getLogger(__name__)

ACK_LEVELS = ("durable", "delivered", "none")

# Delivery retries back off exponentially with full jitter between these bounds.
RETRY_BACKOFF_BASE_S = 0.5
RETRY_BACKOFF_MAX_S = 30.0


class DeliveryInterrupted(Exception):
    """The worker is shutting down in the middle of retrying; the batch goes back to the queue."""


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


def is_transient(error: producer.ProduceFailed) -> bool:
    """Say whether a retry may succeed; the producer backend classifies its client's errors."""
    return error.transient


def produce_records(*, records: list, timeout: float) -> list[list[int]]:
    """Write records to Kafka and return [partition, offset] for each, once all are acked."""
    return producer.produce(records=records, timeout=timeout)


def deliver_batch(
    *, batch_id: str, records: list, accepted_at: float, stopping: threading.Event
) -> DeliveryOutcome:
    """Produce a batch to Kafka, retrying transient errors; dead-letter it when out of chances."""
    attempt = 0
    while True:
        attempt += 1
        try:
            offsets = produce_records(records=records, timeout=settings.KAFKA_DELIVERY_TIMEOUT_S)
        except producer.ProduceFailed as error:
            stats.count_producer_error()
            age = time.time() - accepted_at
            if (
                not is_transient(error)
                or attempt >= settings.INGEST_DELIVERY_MAX_ATTEMPTS
                or age >= settings.INGEST_DELIVERY_MAX_AGE_S
            ):
                return dead_letter_batch(
                    batch_id=batch_id,
                    records=records,
                    accepted_at=accepted_at,
                    attempts=attempt,
                    reason=f"{type(error).__name__}: {error} (attempt {attempt}, age {age:.0f}s)",
                )
            backoff = random.uniform(0, min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * 2**attempt))
            logger.warning(
                "batch %s attempt %d failed: %r; retrying in %.1fs",
                batch_id,
                attempt,
                error,
                backoff,
            )
            if stopping.wait(backoff):
                raise DeliveryInterrupted(batch_id) from error
            continue
        outcome = record_outcome(
            batch_id=batch_id,
            status=DeliveryOutcome.Status.DELIVERED,
            records=records,
            accepted_at=accepted_at,
            attempts=attempt,
            offsets=offsets,
        )
        stats.count_delivered(records=records, accepted_at=accepted_at)
        return outcome


def record_outcome(
    *,
    batch_id: str,
    status: str,
    records: list,
    accepted_at: float,
    attempts: int,
    offsets: list | None = None,
    reason: str = "",
) -> DeliveryOutcome:
    """Record what became of a batch, replacing an earlier outcome of the same batch."""
    outcome = DeliveryOutcome(
        batch_id=batch_id,
        status=status,
        offsets=offsets or [],
        topics=sorted({record[0] for record in records}),
        reason=reason,
        attempts=attempts,
        accepted_at=datetime.fromtimestamp(accepted_at, tz=UTC),
    )
    # One upsert statement instead of update_or_create's transaction of three: a batch that is
    # delivered again (a redelivered task) replaces its earlier outcome.
    DeliveryOutcome.objects.bulk_create(
        [outcome],
        update_conflicts=True,
        unique_fields=["batch_id"],
        update_fields=["status", "offsets", "topics", "reason", "attempts", "finished_at"],
    )
    return outcome


def dead_letter_batch(
    *, batch_id: str, records: list, accepted_at: float, attempts: int, reason: str
) -> DeliveryOutcome:
    """Keep undeliverable records in the database, one dead letter per topic."""
    logger.error("dead-lettering batch %s (%d events): %s", batch_id, len(records), reason)
    with transaction.atomic():
        for topic, topic_records in groupby(sorted(records, key=lambda r: r[0]), lambda r: r[0]):
            triples = [[event_id, key, value] for _, event_id, key, value in topic_records]
            DeadLetter.objects.create(
                batch_id=batch_id,
                topic=topic,
                reason=reason,
                event_ids=[triple[0] for triple in triples],
                records=triples,
                attempts=attempts,
            )
        outcome = record_outcome(
            batch_id=batch_id,
            status=DeliveryOutcome.Status.DEAD_LETTERED,
            records=records,
            accepted_at=accepted_at,
            attempts=attempts,
            reason=reason,
        )
    stats.count_dead_lettered(records=records)
    return outcome


def replay_dead_letters(*, dead_letters) -> int:
    """Enqueue dead letters again as new batches and mark them replayed; return events sent."""
    from .tasks import enqueue_records

    replayed = 0
    for dead_letter in dead_letters.filter(replayed_at__isnull=True):
        records = [[dead_letter.topic, *triple] for triple in dead_letter.records]
        enqueue_records(records=records)
        dead_letter.replayed_at = timezone.now()
        dead_letter.save(update_fields=["replayed_at"])
        replayed += len(records)
    return replayed


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
