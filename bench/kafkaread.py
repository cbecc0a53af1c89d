"""Read the bench's topics back: every record's event id, or the ids of one run as they come."""

import json
import time
import uuid
from collections import Counter

from ingest.control.topics import read_topic

KAFKA_READ_IDLE_S = 2.0
TAIL_TIMEOUT_S = 2.0
# Tansu's high watermark can lag the last records of a partition by up to one batch of the
# producer's; a tail starts this many records earlier so it misses none.
TAIL_REWIND_RECORDS = 10_000


def value_id(value: bytes | None) -> str | None:
    """The "id" member of a record's JSON value (the bench's id where the protocol has none)."""
    try:
        return json.loads(value)["id"]
    except (TypeError, ValueError, KeyError):
        return None


def count_event_ids(*, topic: str, bootstrap: str, id_in_value: bool = False) -> Counter:
    """Count every record's event-id header (or its value's "id"), from the beginning of every
    partition."""
    try:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
    except ImportError:  # the slower pure-Python reader of the gateway's own tools
        return Counter(
            value_id(record.raw_value) if id_in_value else record.event_id
            for record in read_topic(
                topic=topic, idle_timeout_s=KAFKA_READ_IDLE_S, bootstrap_servers=[bootstrap]
            )
        )
    # librdkafka reads hundreds of thousands of records a second; assign() joins no group.
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    counts: Counter = Counter()
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        partitions = sorted(metadata.partitions) if metadata and not metadata.error else []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        idle_since = time.monotonic()
        while len(at_end) < len(partitions):
            messages = consumer.consume(num_messages=10_000, timeout=0.5)
            if not messages and time.monotonic() - idle_since > KAFKA_READ_IDLE_S * 5:
                break
            for message in messages:
                idle_since = time.monotonic()
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                    continue
                if id_in_value:
                    counts[value_id(message.value())] += 1
                    continue
                headers = dict(message.headers() or [])
                event_id = headers.get("event-id")
                counts[event_id.decode() if event_id is not None else None] += 1
    finally:
        consumer.close()
    return counts


class TopicTail:
    """The distinct event ids of one prefix that reach a topic, read as they arrive.

    It starts a little before the topic's end (or at its beginning if the topic does not exist
    yet): ids are told apart by their prefix, so reading a few earlier records costs only time.
    """

    def __init__(self, *, topic: str, bootstrap: str, prefix: str):
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-tail-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        self.topic, self.prefix = topic, prefix.encode()
        self.ids: set[str] = set()
        self.assigned = False
        self.existed = self._assign(rewind=True)

    def _assign(self, *, rewind: bool) -> bool:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        found = self.consumer.list_topics(self.topic, timeout=TAIL_TIMEOUT_S).topics.get(self.topic)
        if found is None or found.error or not found.partitions:
            return False
        partitions = []
        for partition in sorted(found.partitions):
            offset = OFFSET_BEGINNING
            if rewind:
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=TAIL_TIMEOUT_S, cached=False
                )
                offset = max(low, high - TAIL_REWIND_RECORDS)
            partitions.append(TopicPartition(self.topic, partition, offset))
        self.consumer.assign(partitions)
        self.assigned = True
        return True

    def read(self, *, timeout_s: float) -> int:
        """Read what arrived, waiting at most timeout_s; return how many ids were seen so far."""
        if not self.assigned and not self._assign(rewind=False):
            time.sleep(timeout_s)  # the topic is created by its first record: wait for it
            return len(self.ids)
        for message in self.consumer.consume(num_messages=10_000, timeout=timeout_s):
            if message.error():
                continue
            for name, value in message.headers() or ():
                if name == "event-id" and value.startswith(self.prefix):
                    self.ids.add(value.decode())
        return len(self.ids)

    def close(self) -> None:
        self.consumer.close()
