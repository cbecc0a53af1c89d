"""Signed receipts: which slice of which batch a request's events are, and what became of them.

A receipt id is "<batch_id>.<first>.<count>.<sig>": the request's events are records
[first, first + count) of the batch, and sig is the first 16 hex digits of
HMAC-SHA256(SECRET_KEY, "<batch_id>.<first>.<count>.<source name>"). Only the source that sent
the events (the anonymous source "" without keys) can read them, and an id cannot be forged
to read another slice of the batch.
"""

import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from django.conf import settings

from ..ids import uuid7_unix_seconds
from ..models import DeliveryOutcome
from .keys import SourceInfo

SIGNATURE_HEX_DIGITS = 16
# A UUIDv7 as ingest/ids.py writes it, two canonical decimals of at most 6 digits (count >= 1)
# and the signature; ASCII only, so "²" or other Unicode digits never parse.
RECEIPT_ID = re.compile(
    r"(?P<batch_id>[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})"
    r"\.(?P<first>0|[1-9][0-9]{0,5})"
    r"\.(?P<count>[1-9][0-9]{0,5})"
    rf"\.(?P<signature>[0-9a-f]{{{SIGNATURE_HEX_DIGITS}}})"
)
MAX_RECEIPT_ID_LENGTH = 36 + 1 + 6 + 1 + 6 + 1 + SIGNATURE_HEX_DIGITS


class ReceiptNotFound(Exception):
    """The receipt id is malformed, or not signed for the source that asks."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A request's events in a batch: records [first, first + count) of batch `batch_id`."""

    batch_id: str
    first: int
    count: int

    def signature(self, *, source: str) -> str:
        message = f"{self.batch_id}.{self.first}.{self.count}.{source}".encode()
        digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()
        return digest[:SIGNATURE_HEX_DIGITS]

    def signed_id(self, *, source: str) -> str:
        """Return the id to give the source that sent these events."""
        return f"{self.batch_id}.{self.first}.{self.count}.{self.signature(source=source)}"


def parse(receipt_id: str, *, source: str) -> Receipt:
    """Return the receipt behind an id signed for `source`, or raise ReceiptNotFound."""
    match = RECEIPT_ID.fullmatch(receipt_id) if len(receipt_id) <= MAX_RECEIPT_ID_LENGTH else None
    if match is None:
        raise ReceiptNotFound("not a receipt id")
    receipt = Receipt(
        batch_id=match["batch_id"], first=int(match["first"]), count=int(match["count"])
    )
    if not hmac.compare_digest(receipt.signature(source=source), match["signature"]):
        raise ReceiptNotFound("no such receipt for this source")
    return receipt


@dataclass(frozen=True, slots=True)
class Delivered:
    """Kafka acknowledged the event at this partition and offset."""

    partition: int
    offset: int

    def as_json(self) -> dict:
        return {"partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """The event was not delivered; it is a dead letter for this reason."""

    reason: str

    def as_json(self) -> dict:
        return {"dead_lettered": self.reason}


def event_outcomes(outcome, *, receipt: Receipt) -> list[Delivered | DeadLettered]:
    """Return what became of each event of the receipt, from its batch's DeliveryOutcome.

    `offsets` holds [partition, offset] per record, or None for a dead-lettered record whose
    reason is in `failures`; a row from before per-record outcomes has empty offsets and one
    reason for the whole dead-lettered batch.
    """
    if not outcome.offsets:
        return [DeadLettered(outcome.reason)] * receipt.count
    return [
        Delivered(*entry)
        if entry is not None
        else DeadLettered(outcome.failures.get(str(index), outcome.reason))
        for index, entry in enumerate(
            outcome.offsets[receipt.first : receipt.first + receipt.count], start=receipt.first
        )
    ]


def status_of(events: list[Delivered | DeadLettered]) -> str:
    """Say "delivered", "dead_lettered" or "partially_delivered" for a receipt's events."""
    delivered = sum(isinstance(event, Delivered) for event in events)
    if delivered == len(events):
        return "delivered"
    if delivered == 0:
        return "dead_lettered"
    return "partially_delivered"


def describe(events: list[Delivered | DeadLettered]) -> dict:
    """Return a receipt answer's status and per-event details (without the receipt id)."""
    status = status_of(events)
    if status == "delivered":
        return {"status": status, "offsets": [event.as_json() for event in events]}
    if status == "dead_lettered":
        reasons = dict.fromkeys(event.reason for event in events)  # distinct, in order
        return {"status": status, "reason": "; ".join(reasons)}
    return {"status": status, "events": [event.as_json() for event in events]}


def receipt_status(*, receipt_id: str, source: SourceInfo) -> dict:
    """Say what became of the events behind a receipt the asking source was given.

    Raises ReceiptNotFound for a malformed id or one signed for another source.
    """
    receipt = parse(receipt_id, source=source.name)
    outcome = DeliveryOutcome.objects.filter(batch_id=receipt.batch_id).first()
    if outcome is None:
        age = time.time() - uuid7_unix_seconds(receipt.batch_id)
        recent = age < settings.INGEST_RECEIPT_RETENTION_S
        return {"receipt": receipt_id, "status": "pending" if recent else "unknown"}
    events = event_outcomes(outcome, receipt=receipt)
    return {"receipt": receipt_id, **describe(events), "attempts": outcome.attempts}
