"""Accept a request's events: rate-limit its source, batch them, wait as its ack level asks."""

from dataclasses import dataclass

from django.conf import settings

from ..control import ratelimit, receipts, stats
from ..control.keys import SourceInfo
from ..models import DeliveryOutcome
from ..records import NATIVE_PROTOCOL, Event
from . import runtime
from .batcher import BatcherClosed, BatcherFull, Ticket
from .errors import BrokerUnavailable, InvalidAckLevel, Overloaded, ShuttingDown

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


def parse_ack_level(value: str | None) -> str:
    """Return the ack level a request asks for (durable if none); raise InvalidAckLevel."""
    ack = (value or "durable").strip().lower()
    if ack not in ACK_LEVELS:
        raise InvalidAckLevel(f"ack must be one of {', '.join(ACK_LEVELS)}, got {value!r}")
    return ack


def admit_request(*, source: SourceInfo, declared_bytes: int) -> None:
    """Refuse a source already over its rate limit before its body is read or parsed."""
    ratelimit.get_limiter().admit(source, declared_bytes=declared_bytes)


def accept_events(
    *,
    source: SourceInfo,
    topic: str,
    events: list[Event],
    ack: str,
    protocol: str = NATIVE_PROTOCOL,
) -> Acceptance:
    """Rate-limit the source, hand its events to the batcher, wait as the ack level asks.

    `protocol` names the API the events came in by, for stats and the records' headers.

    Raises ratelimit.RateLimited or a pipeline.errors exception; then nothing is accepted.
    """
    nbytes = sum(len(event.value) for event in events)
    ratelimit.get_limiter().check(source, events=len(events), nbytes=nbytes)
    gateway = runtime.get_gateway()
    gateway.backlog.check()
    try:
        ticket = gateway.batcher.submit(
            topic=topic, events=events, source=source.name, protocol=protocol
        )
    except BatcherFull as error:
        raise Overloaded(f"the gateway is at capacity: {error}") from error
    except BatcherClosed as error:
        raise ShuttingDown(str(error)) from error
    ids = [event.event_id for event in events]
    if ack != "none":
        _wait_until_published(ticket)
    stats.count_accepted(
        topic=topic, source=source.name, protocol=protocol, events=len(events), nbytes=nbytes
    )
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


def _wait_until_published(ticket: Ticket) -> None:
    """Wait until the broker confirmed the batch or its publish failed for good.

    The wait outlasts every attempt a flusher can make, so a batch is never confirmed after its
    requests were told 503. One case stays open: a confirm lost after the broker took the
    message (a timeout); those events may still be delivered (README, "Errors").
    """
    batch = ticket.batch
    if not batch.published.wait(runtime.publish_wait_s()):
        raise BrokerUnavailable("the broker did not confirm in time")
    if batch.error is not None:
        raise BrokerUnavailable(f"the broker did not take the batch: {type(batch.error).__name__}")


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
