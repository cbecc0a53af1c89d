"""What every producer backend shares: the Producer protocol, its results and record encoding.

Every backend gives the same guarantees: acks=all, idempotence, and `produce` settles each record
on its own: [partition, offset] once Kafka confirmed it, or a RecordFailure saying why not and
whether a retry may succeed. One record that can never be sent fails alone.
"""

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest.records import BatchRecord

CLIENT_ID = "ingest-gateway"

# Kafka's rule for topic names; a record naming another topic can never be produced.
LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Topic names whose legality is remembered; a batch names few, a worker's traffic not many more.
LEGAL_TOPICS_REMEMBERED = 1_024


@dataclass(frozen=True)
class RecordFailure:
    """Why Kafka did not take one record, and whether a retry may succeed."""

    reason: str
    transient: bool
    # The client may be left broken (a connection, idempotence sequence state): start a new one.
    replace_producer: bool = False


# What `produce` returns for each record: [partition, offset], or why it failed.
RecordResult = list[int] | RecordFailure


class ProduceFailed(Exception):
    """The producer itself failed (it could not be created): every record failed alike."""

    def __init__(self, failure: RecordFailure):
        super().__init__(failure.reason)
        self.failure = failure


def encode_record(record: BatchRecord) -> tuple[str, bytes, bytes | None, list] | RecordFailure:
    """Return what a client sends for a record (topic, value, key, headers), or why it cannot.

    Every record carries the headers event-id, source (empty for anonymous requests) and
    protocol.
    """
    topic, event_id, key, value, source, protocol = record
    if not legal_topic(topic):
        return RecordFailure(
            f"InvalidTopicError: {topic[:60]!r} is not a legal topic name", transient=False
        )
    # Runs once per record: one try for every field, the field at fault only looked for after.
    try:
        value_bytes = value if isinstance(value, bytes) else value.encode()
        key_bytes = key if key is None or isinstance(key, bytes) else key.encode()
        headers = [
            ("event-id", event_id.encode()),
            ("source", source.encode()),
            ("protocol", protocol.encode()),
        ]
    except UnicodeEncodeError:
        return _unencodable(record)
    return topic, value_bytes, key_bytes, headers


@functools.lru_cache(maxsize=LEGAL_TOPICS_REMEMBERED)
def legal_topic(topic: str) -> bool:
    """Say whether Kafka takes this topic name; remembered, since a batch's topics repeat."""
    return LEGAL_TOPIC.fullmatch(topic) is not None and topic not in (".", "..")


def _unencodable(record: BatchRecord) -> RecordFailure:
    """Say which field of a record does not encode to UTF-8."""
    for field, text in (
        ("value", record.value),
        ("key", record.key),
        ("id", record.event_id),
        ("source", record.source),
        ("protocol", record.protocol),
    ):
        try:
            if isinstance(text, str):
                text.encode()
        except UnicodeEncodeError as error:
            return RecordFailure(f"UnicodeEncodeError in the {field}: {error}", transient=False)
    raise AssertionError("every field of the record encodes")


class Producer(Protocol):
    """A Kafka client behind the gateway's interface; a backend's __init__ takes no argument
    and reads its configuration from settings."""

    def produce(self, *, records: Sequence[BatchRecord], timeout: float) -> list[RecordResult]:
        """Write records; return what became of each, in order."""

    def close(self, *, timeout: float) -> None:
        """Deliver what is buffered, waiting at most `timeout` seconds, and release the client."""
