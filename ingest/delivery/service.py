"""Deliver a batch: settle each record in Kafka or as a dead letter, then record the outcome."""

import logging
import random
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections

from ingest.control import stats
from ingest.models import DeliveryOutcome
from ingest.records import BatchRecord

from . import outcomes, producers

logger = logging.getLogger(__name__)

# Delivery retries back off exponentially with full jitter between these bounds.
RETRY_BACKOFF_BASE_S = 0.5
RETRY_BACKOFF_MAX_S = 30.0
# The outcome write is retried in the task, without producing again, with capped exponential
# backoff: about 8 s in all before the task re-sends itself to wait in the queue instead.
OUTCOME_WRITE_ATTEMPTS = 5
OUTCOME_WRITE_BACKOFF_BASE_S = 0.25
OUTCOME_WRITE_BACKOFF_MAX_S = 4.0
# An unexpected exception's message is cut to this in a dead letter's reason.
FAILURE_MESSAGE_MAX_CHARS = 300


class DeliveryInterrupted(Exception):
    """The worker is shutting down in the middle of a batch; what is settled goes with it."""


class OutcomeNotRecorded(Exception):
    """The database refused every attempt to write a settled batch's outcome."""


@dataclass
class Settlement:
    """What is settled of one batch so far; a task re-sent before the end carries it along."""

    # Per record, in batch order: [partition, offset] once Kafka acknowledged it, else None.
    offsets: list
    # Record index -> why it is dead-lettered.
    failures: dict[int, str] = field(default_factory=dict)
    # Kafka attempts made, counted against INGEST_DELIVERY_MAX_ATTEMPTS.
    attempts: int = 0
    # Unexpected exceptions so far, counted against INGEST_TASK_MAX_RETRIES.
    errors: int = 0

    @classmethod
    def start(cls, *, count: int) -> "Settlement":
        return cls(offsets=[None] * count)

    @classmethod
    def from_message(cls, state: dict | None, *, count: int) -> "Settlement":
        """Read the state a re-sent task message carries; a first message carries none."""
        if not state:
            return cls.start(count=count)
        return cls(
            offsets=list(state["offsets"]),
            failures={int(index): reason for index, reason in state["failures"].items()},
            attempts=state["attempts"],
            errors=state["errors"],
        )

    def as_message(self) -> dict:
        return {
            "offsets": self.offsets,
            "failures": {str(index): reason for index, reason in self.failures.items()},
            "attempts": self.attempts,
            "errors": self.errors,
        }

    def unsettled(self) -> list[int]:
        """Return the indexes of records neither acknowledged by Kafka nor given up on."""
        return [
            index
            for index, offset in enumerate(self.offsets)
            if offset is None and index not in self.failures
        ]


def is_transient(failure: producers.RecordFailure) -> bool:
    """Say whether a retry may succeed; the producer backend classifies its client's errors."""
    return failure.transient


def produce_records(
    *, records: Sequence[BatchRecord], timeout: float
) -> list[producers.RecordResult]:
    """Write records to Kafka; return [partition, offset] or a RecordFailure for each."""
    return producers.produce(records=records, timeout=timeout)


def deliver_batch(
    *,
    batch_id: str,
    records: Sequence[BatchRecord],
    accepted_at: float,
    stopping: threading.Event,
    settlement: Settlement | None = None,
) -> DeliveryOutcome:
    """Settle each record of a batch in Kafka or as a dead letter, then record the outcome.

    `settlement` carries what an earlier run of the same task settled: records Kafka
    acknowledged are never produced again.
    """
    settlement = settlement or Settlement.start(count=len(records))
    settle_records(
        batch_id=batch_id,
        records=records,
        accepted_at=accepted_at,
        settlement=settlement,
        stopping=stopping,
    )
    return record_outcome(
        batch_id=batch_id,
        records=records,
        accepted_at=accepted_at,
        settlement=settlement,
        stopping=stopping,
    )


def settle_records(
    *,
    batch_id: str,
    records: Sequence[BatchRecord],
    accepted_at: float,
    settlement: Settlement,
    stopping: threading.Event,
) -> None:
    """Produce the unsettled records, retrying those that failed transiently while the budget
    lasts; a record that fails for good, or is out of chances, is marked to dead-letter."""
    while unsettled := settlement.unsettled():
        settlement.attempts += 1
        attempt = settlement.attempts
        results = produce_records(
            records=records
            if len(unsettled) == len(records)
            else [records[index] for index in unsettled],
            timeout=settings.KAFKA_DELIVERY_TIMEOUT_S,
        )
        transient = {}
        failed_for_good = False
        offsets = settlement.offsets
        for index, result in zip(unsettled, results, strict=True):
            if not isinstance(result, producers.RecordFailure):
                offsets[index] = result
            elif is_transient(result):
                transient[index] = result.reason
            else:
                settlement.failures[index] = result.reason
                failed_for_good = True
        if transient or failed_for_good:
            stats.count_producer_error()
        if not transient:
            return
        age = time.time() - accepted_at
        if (
            attempt >= settings.INGEST_DELIVERY_MAX_ATTEMPTS
            or age >= settings.INGEST_DELIVERY_MAX_AGE_S
        ):
            for index, reason in transient.items():
                settlement.failures[index] = f"{reason} (attempt {attempt}, age {age:.0f}s)"
            return
        backoff = random.uniform(0, min(RETRY_BACKOFF_MAX_S, RETRY_BACKOFF_BASE_S * 2**attempt))
        logger.warning(
            "batch %s attempt %d: %d of %d records failed transiently (%s); retrying them in %.1fs",
            batch_id,
            attempt,
            len(transient),
            len(records),
            next(iter(transient.values())),
            backoff,
        )
        if stopping.wait(backoff):
            raise DeliveryInterrupted(batch_id)


def record_outcome(
    *,
    batch_id: str,
    records: Sequence[BatchRecord],
    accepted_at: float,
    settlement: Settlement,
    stopping: threading.Event,
) -> DeliveryOutcome:
    """Write a settled batch's outcome and dead letters, retrying while the database is away.

    Raises OutcomeNotRecorded when every write failed; nothing is produced again here.
    """
    for attempt in range(1, OUTCOME_WRITE_ATTEMPTS + 1):
        try:
            outcome = outcomes.write_outcome(
                batch_id=batch_id,
                records=records,
                accepted_at=accepted_at,
                offsets=settlement.offsets,
                failures=settlement.failures,
                attempts=settlement.attempts,
            )
            break
        except (OperationalError, InterfaceError) as error:
            if attempt == OUTCOME_WRITE_ATTEMPTS:
                raise OutcomeNotRecorded(batch_id) from error
            backoff = min(OUTCOME_WRITE_BACKOFF_MAX_S, OUTCOME_WRITE_BACKOFF_BASE_S * 2**attempt)
            logger.warning(
                "batch %s: writing its outcome failed (attempt %d of %d): %r; retrying in %.1fs",
                batch_id,
                attempt,
                OUTCOME_WRITE_ATTEMPTS,
                error,
                backoff,
            )
            if stopping.wait(backoff):
                raise DeliveryInterrupted(batch_id) from error
            # A connection the failure broke is replaced by the next query.
            close_old_connections()
    failed = [records[index] for index in settlement.failures]
    if failed:
        logger.error(
            "batch %s: %d of %d records dead-lettered; first: %s",
            batch_id,
            len(failed),
            len(records),
            outcome.reason,
        )
        stats.count_dead_lettered(records=failed)
    if len(failed) < len(records):
        delivered = (
            [record for index, record in enumerate(records) if index not in settlement.failures]
            if failed
            else records
        )
        stats.count_delivered(records=delivered, accepted_at=accepted_at)
    return outcome


def dead_letter_unsettled(
    *,
    batch_id: str,
    records: Sequence[BatchRecord],
    accepted_at: float,
    settlement: Settlement,
    reason: str,
    stopping: threading.Event,
) -> DeliveryOutcome:
    """Give up on every record not settled yet, dead-lettering it with `reason`."""
    for index in settlement.unsettled():
        settlement.failures[index] = reason
    return record_outcome(
        batch_id=batch_id,
        records=records,
        accepted_at=accepted_at,
        settlement=settlement,
        stopping=stopping,
    )


def failure_summary(error: BaseException) -> str:
    """Summarize an unexpected exception for a dead letter: its type, message and last frame."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    message = str(error)[:FAILURE_MESSAGE_MAX_CHARS]
    return f"{type(error).__name__}: {message}{where}"
