"""The typed records that travel from the edge through the broker to Kafka."""

import base64
from typing import NamedTuple

# The protocol of the gateway's own API, in stats and the Kafka `protocol` header.
NATIVE_PROTOCOL = "native"


class Event(NamedTuple):
    """One validated event as the edge accepted it: its id, its Kafka key and its value.

    A str key or value is produced as its UTF-8 bytes; bytes (Confluent's binary format) as
    they are.
    """

    event_id: str
    key: str | bytes | None
    value: str | bytes


class BatchRecord(NamedTuple):
    """One record of a published batch; a NamedTuple, so it encodes to the same array
    ([topic, event_id, key, value, source, protocol]) in task messages, as a plain tuple of its
    fields does (the batcher's). Messages published before sources and protocols were carried
    hold the first four fields only.

    Task messages carry bytes as MessagePack's bytes (JSON messages of earlier versions through
    kombu's marker); dead letters keep them as {"base64": ...} (stored_record).
    """

    topic: str
    event_id: str
    key: str | bytes | None
    value: str | bytes
    source: str = ""
    protocol: str = NATIVE_PROTOCOL


def batch_kwargsrepr(*, batch_id: str, count: int) -> str:
    """Describe a batch task's arguments for Celery's headers and logs: its size, no contents."""
    return f"{{'batch_id': {batch_id!r}, 'records': <{count} records>}}"


def stored_field(field: str | bytes | None) -> str | dict | None:
    """Return a key or value as JSON can hold it: bytes as {"base64": ...}."""
    if isinstance(field, bytes):
        return {"base64": base64.b64encode(field).decode()}
    return field


def loaded_field(stored: str | dict | None) -> str | bytes | None:
    """Undo stored_field."""
    if isinstance(stored, dict):
        return base64.b64decode(stored["base64"])
    return stored


def record_from_stored(topic: str, stored: list) -> BatchRecord:
    """Return the record of a dead letter's [event_id, key, value, source, protocol] entry
    (entries written before sources and protocols were kept hold the first three)."""
    event_id, key, value, *origin = stored
    return BatchRecord(topic, event_id, loaded_field(key), loaded_field(value), *origin)
