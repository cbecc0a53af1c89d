"""Read records back from Kafka without a consumer group (Tansu does not complete group joins)."""

import json
from dataclasses import dataclass

from django.conf import settings
from kafka import KafkaConsumer, TopicPartition

METADATA_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class TopicRecord:
    event_id: str | None
    key: str | None
    value: dict | str
    partition: int
    offset: int
    headers: dict[str, bytes]
    raw_value: bytes


def read_topic(*, topic: str, idle_timeout_s: float, bootstrap_servers: list[str] | None = None):
    """Yield every record of `topic` from the beginning until none arrives for `idle_timeout_s`."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers or settings.KAFKA_BOOTSTRAP_SERVERS,
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        request_timeout_ms=METADATA_TIMEOUT_MS + 1_000,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        if not assigned:
            return
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        for message in consumer:
            headers = dict(message.headers or [])
            raw_id = headers.get("event-id")
            try:
                value = json.loads(message.value)
            except ValueError:
                value = message.value.decode(errors="replace")
            yield TopicRecord(
                event_id=raw_id.decode() if raw_id is not None else None,
                key=message.key.decode(errors="replace") if message.key is not None else None,
                value=value,
                partition=message.partition,
                offset=message.offset,
                headers=headers,
                raw_value=message.value,
            )
    finally:
        consumer.close()
