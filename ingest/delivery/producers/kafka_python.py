"""The pure-Python client (kafka-python) behind the Producer protocol."""

import time
from collections.abc import Sequence

from django.conf import settings
from kafka import KafkaProducer
from kafka.errors import (
    InvalidTopicError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from kafka.partitioner.default import DefaultPartitioner

from ingest.records import BatchRecord

from .base import CLIENT_ID, ProduceFailed, RecordFailure, RecordResult, encode_record

# Keys whose partitions a KeyPartitionCache remembers before it starts over.
PARTITION_CACHE_MAX_KEYS = 100_000

# Errors about one record's size, which leave the producer sound.
SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)
# Errors that no retry can mend; everything else may pass (a broker restarting, a partition
# moving, a network blip).
PERMANENT_ERRORS = (
    *SIZE_ERRORS,
    InvalidTopicError,
    KafkaConfigurationError,
    TopicAuthorizationFailedError,
)


class KeyPartitionCache(DefaultPartitioner):
    """kafka-python's default partitioner, remembering the partition of each key.

    Its murmur2 hash is pure Python, a share of a draining worker's CPU worth saving (see
    "remembered key partitions" in docs/BENCHMARKS.md), and event keys (user or device ids)
    repeat. A key's partition depends only on its topic's partition count, so that count is
    part of what is remembered.
    """

    def __init__(self):
        self._partitions: dict[tuple, int] = {}

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        remembered = (topic, serialized_key, len(partitions))
        partition = self._partitions.get(remembered)
        if partition is None:
            if len(self._partitions) >= PARTITION_CACHE_MAX_KEYS:
                self._partitions.clear()
            partition = self._partitions[remembered] = super().partition(
                topic, key, serialized_key, value, serialized_value, cluster
            )
        return partition


class KafkaPythonProducer:
    """The pure-Python client (kafka-python)."""

    def __init__(self):
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                partitioner=KeyPartitionCache(),
                acks="all",
                enable_idempotence=True,
                compression_type=None
                if settings.KAFKA_COMPRESSION_TYPE == "none"
                else settings.KAFKA_COMPRESSION_TYPE,
                linger_ms=settings.KAFKA_LINGER_MS,
                batch_size=settings.KAFKA_BATCH_SIZE,
                max_request_size=settings.KAFKA_MAX_REQUEST_SIZE,
                request_timeout_ms=settings.KAFKA_REQUEST_TIMEOUT_MS,
                max_block_ms=settings.KAFKA_MAX_BLOCK_MS,
                # Creating the producer bootstraps eagerly; bound it like any other blocking call.
                bootstrap_timeout_ms=settings.KAFKA_MAX_BLOCK_MS,
                client_id=CLIENT_ID,
            )
        except KafkaError as error:
            raise ProduceFailed(kafka_python_failure(error)) from error

    def produce(self, *, records: Sequence[BatchRecord], timeout: float) -> list[RecordResult]:
        deadline = time.monotonic() + timeout
        results: list = [None] * len(records)
        futures = []
        # A send that fails on its topic (metadata not available in max_block_ms, not
        # authorized) fails that topic's later records the same way without blocking again.
        failed_topics: dict[str, RecordFailure] = {}
        for index, record in enumerate(records):
            encoded = encode_record(record)
            if isinstance(encoded, RecordFailure):
                results[index] = encoded
                continue
            topic, value, key, headers = encoded
            if topic in failed_topics:
                results[index] = failed_topics[topic]
                continue
            if time.monotonic() >= deadline:
                results[index] = RecordFailure(
                    f"KafkaTimeoutError: not sent within {timeout:.1f}s", transient=True
                )
                continue
            try:
                future = self._producer.send(topic, value=value, key=key, headers=headers)
            except KafkaError as error:
                results[index] = kafka_python_failure(error, sent=False)
                if not isinstance(error, SIZE_ERRORS):
                    failed_topics[topic] = results[index]
                continue
            futures.append((index, future))
        for index, future in futures:
            try:
                metadata = future.get(timeout=max(0.0, deadline - time.monotonic()))
            except KafkaTimeoutError:
                results[index] = RecordFailure(
                    f"KafkaTimeoutError: not confirmed within {timeout:.1f}s",
                    transient=True,
                    replace_producer=True,
                )
            except KafkaError as error:
                results[index] = kafka_python_failure(error, sent=True)
            else:
                results[index] = [metadata.partition, metadata.offset]
        return results

    def close(self, *, timeout: float) -> None:
        self._producer.flush(timeout=timeout)
        self._producer.close(timeout=timeout)


def kafka_python_failure(error: Exception, *, sent: bool = True) -> RecordFailure:
    """Classify a kafka-python error; a record that was sent and failed replaces the producer,
    which may be left with a broken connection or sequence state."""
    return RecordFailure(
        f"{type(error).__name__}: {error}",
        transient=not isinstance(error, PERMANENT_ERRORS),
        replace_producer=sent or not isinstance(error, SIZE_ERRORS),
    )
