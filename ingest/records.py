"""The typed records that travel from the edge through the broker to Kafka."""

from typing import NamedTuple


class Event(NamedTuple):
    """One validated event as the edge accepted it: its id, its Kafka key and its JSON text."""

    event_id: str
    key: str | None
    value: str


class BatchRecord(NamedTuple):
    """One record of a published batch; a NamedTuple, so it encodes to the same JSON list
    ([topic, event_id, key, value]) that task messages and dead letters have always held."""

    topic: str
    event_id: str
    key: str | None
    value: str


def batch_kwargsrepr(*, batch_id: str, count: int) -> str:
    """Describe a batch task's arguments for Celery's headers and logs: its size, no contents."""
    return f"{{'batch_id': {batch_id!r}, 'records': <{count} records>}}"
