"""Write what became of a settled batch: its DeliveryOutcome and a dead letter per failed record."""

import functools
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from ingest.models import DeadLetter, DeliveryOutcome
from ingest.records import BatchRecord, stored_field

# The upsert's columns, and those a batch delivered again replaces (the whole outcome but the
# batch and when it was accepted).
OUTCOME_COLUMNS = (
    "batch_id",
    "status",
    "offsets",
    "failures",
    "topics",
    "reason",
    "attempts",
    "accepted_at",
    "finished_at",
)
REPLACED_COLUMNS = ("status", "offsets", "failures", "topics", "reason", "attempts", "finished_at")


def write_outcome(
    *,
    batch_id: str,
    records: Sequence[BatchRecord],
    accepted_at: float,
    offsets: list,
    failures: dict[int, str],
    attempts: int,
) -> DeliveryOutcome:
    """Write the outcome of a settled batch and a dead letter per failed record, in one go.

    `offsets` holds [partition, offset] or None per record, `failures` why each failed record
    failed, by index; `attempts` counts the Kafka attempts made.
    """
    failed = sorted(failures.items())
    if not failed:
        status = DeliveryOutcome.Status.DELIVERED
    elif len(failed) == len(records):
        status = DeliveryOutcome.Status.DEAD_LETTERED
    else:
        status = DeliveryOutcome.Status.PARTIALLY_DELIVERED
    outcome = DeliveryOutcome(
        batch_id=batch_id,
        status=status,
        offsets=offsets,
        failures={str(index): storable(reason) for index, reason in failed},
        topics=sorted({record.topic for record in records}),
        reason=storable(failed[0][1]) if failed else "",
        attempts=attempts,
        accepted_at=datetime.fromtimestamp(accepted_at, tz=UTC),
    )
    if not failed:  # the common case stays one statement, without a transaction around it
        _upsert(outcome)
        return outcome
    with transaction.atomic():
        DeadLetter.objects.bulk_create(
            new_dead_letters(batch_id=batch_id, records=records, failures=failed, attempts=attempts)
        )
        _upsert(outcome)
    return outcome


def _upsert(outcome: DeliveryOutcome) -> None:
    """Insert an outcome, or replace the earlier outcome of a batch delivered again.

    One statement of our own instead of update_or_create's transaction of three, or
    bulk_create's compiler: the write is a worker's largest cost per batch. The JSON columns are
    passed as serialised text, which the database parses, instead of being quoted value by
    value on the client.
    """
    outcome.finished_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            _upsert_sql(connection.vendor),
            [
                outcome.batch_id,
                outcome.status,
                _json(outcome.offsets),
                _json(outcome.failures),
                _json(outcome.topics),
                outcome.reason,
                outcome.attempts,
                connection.ops.adapt_datetimefield_value(outcome.accepted_at),
                connection.ops.adapt_datetimefield_value(outcome.finished_at),
            ],
        )


def new_dead_letters(
    *,
    batch_id: str,
    records: Sequence[BatchRecord],
    failures: list[tuple[int, str]],
    attempts: int,
) -> list[DeadLetter]:
    """Build a dead letter per failed record, leaving out those an earlier run of the same
    batch already wrote (a task redelivered after its commit)."""
    # A dead letter stores [event_id, key, value, source, protocol] per record; its topic has a
    # column of its own.
    kept = Counter(
        _identity(stored_record)
        for stored in DeadLetter.objects.filter(batch_id=batch_id).values_list("records", flat=True)
        for stored_record in stored
    )
    dead_letters = []
    for index, reason in failures:
        record = records[index]
        stored_record = [
            _storable_field(field)
            for field in (record.event_id, record.key, record.value, record.source, record.protocol)
        ]
        if kept[_identity(stored_record)] > 0:
            kept[_identity(stored_record)] -= 1
            continue
        dead_letters.append(
            DeadLetter(
                batch_id=batch_id,
                topic=storable(record.topic),
                reason=storable(reason),
                event_ids=[stored_record[0]],
                records=[stored_record],
                attempts=attempts,
            )
        )
    return dead_letters


def _storable_field(field: str | bytes | None) -> str | dict | None:
    return storable(field) if isinstance(field, str) else stored_field(field)


def _identity(stored_record: list) -> str:
    return json.dumps(stored_record, sort_keys=True)


@functools.cache
def _upsert_sql(vendor: str) -> str:
    """Return the upsert statement; PostgreSQL and SQLite share it, as they share quoting."""
    table = connection.ops.quote_name(DeliveryOutcome._meta.db_table)
    replaced = ", ".join(f"{column} = excluded.{column}" for column in REPLACED_COLUMNS)
    return (
        f"INSERT INTO {table} ({', '.join(OUTCOME_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(OUTCOME_COLUMNS))}) "
        f"ON CONFLICT (batch_id) DO UPDATE SET {replaced}"
    )


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def storable(text: str) -> str:
    """Return text PostgreSQL keeps: lone surrogates and NUL, which it refuses in text and
    JSON, as backslash escapes. Only a record that could never be produced carries them."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode(errors="backslashreplace").decode()
    return text
