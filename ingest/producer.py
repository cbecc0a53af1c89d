"""One Kafka producer per process behind a small interface; KAFKA_CLIENT picks the client library.

Both backends give the same guarantees: acks=all, idempotence, and `produce` returns only once
Kafka has confirmed every record, or raises ProduceFailed saying whether a retry may succeed.
"""

import logging
import threading
import time
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

CLIENT_ID = "ingest-gateway"
# Longest a poll() of librdkafka blocks, so its thread notices the producer closing.
CONFLUENT_POLL_INTERVAL_S = 0.1
# Pause before trying again to hand a record to librdkafka while its queue is full.
CONFLUENT_QUEUE_FULL_PAUSE_S = 0.01


class ProduceFailed(Exception):
    """Kafka did not confirm every record of a batch."""

    def __init__(self, message: str, *, transient: bool, replace_producer: bool):
        super().__init__(message)
        self.transient = transient
        self.replace_producer = replace_producer


class Producer(Protocol):
    def produce(self, *, records: list, timeout: float) -> list[list[int]]:
        """Write [topic, event_id, key, value] records; return [partition, offset] for each."""

    def close(self, *, timeout: float) -> None:
        """Deliver what is buffered, waiting at most `timeout` seconds, and release the client."""


# Keys whose partitions a KeyPartitionCache remembers before it starts over.
PARTITION_CACHE_MAX_KEYS = 100_000


def key_partition_cache():
    """Return kafka-python's default partitioner, remembering the partition of each key.

    Its murmur2 hash is pure Python, a tenth of a worker's CPU, and event keys (user or device
    ids) repeat. A key's partition depends only on its topic's partition count, so that count
    is part of what is remembered.
    """
    from kafka.partitioner.default import DefaultPartitioner

    class KeyPartitionCache(DefaultPartitioner):
        def __init__(self):
            self._partitions: dict[tuple, int] = {}

        def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
            partitions = cluster.partitions_for_topic(topic)
            if serialized_key is None or not partitions:
                return super().partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            remembered = (topic, serialized_key, len(partitions))
            partition = self._partitions.get(remembered)
            if partition is None:
                if len(self._partitions) >= PARTITION_CACHE_MAX_KEYS:
                    self._partitions.clear()
                partition = self._partitions[remembered] = super().partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            return partition

    return KeyPartitionCache()


class KafkaPythonProducer:
    """The pure-Python client (kafka-python)."""

    def __init__(self):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self._producer = KafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                partitioner=key_partition_cache(),
                acks="all",
                enable_idempotence=True,
                compression_type=None
                if settings.KAFKA_COMPRESSION_TYPE == "none"
                else settings.KAFKA_COMPRESSION_TYPE,
                linger_ms=settings.KAFKA_LINGER_MS,
                batch_size=settings.KAFKA_BATCH_SIZE,
                request_timeout_ms=settings.KAFKA_REQUEST_TIMEOUT_MS,
                max_block_ms=settings.KAFKA_MAX_BLOCK_MS,
                # Creating the producer bootstraps eagerly; bound it like any other blocking call.
                bootstrap_timeout_ms=settings.KAFKA_MAX_BLOCK_MS,
                client_id=CLIENT_ID,
            )
        except KafkaError as error:
            raise kafka_python_failure(error) from error

    def produce(self, *, records: list, timeout: float) -> list[list[int]]:
        from kafka.errors import KafkaError

        try:
            futures = [
                self._producer.send(
                    topic,
                    value=value.encode(),
                    key=None if key is None else key.encode(),
                    headers=[("event-id", event_id.encode())],
                )
                for topic, event_id, key, value in records
            ]
            deadline = time.monotonic() + timeout
            offsets = []
            for future in futures:
                metadata = future.get(timeout=max(0.0, deadline - time.monotonic()))
                offsets.append([metadata.partition, metadata.offset])
            return offsets
        except KafkaError as error:
            raise kafka_python_failure(error) from error

    def close(self, *, timeout: float) -> None:
        self._producer.flush(timeout=timeout)
        self._producer.close(timeout=timeout)


def kafka_python_failure(error: Exception) -> ProduceFailed:
    """Classify a kafka-python error; its producer is replaced after any failure, as it may be
    left with a broken connection or sequence state."""
    from kafka.errors import (
        InvalidTopicError,
        KafkaConfigurationError,
        MessageSizeTooLargeError,
        RecordListTooLargeError,
        TopicAuthorizationFailedError,
    )

    # Errors that no retry can mend; everything else may pass (a broker restarting, a
    # partition moving, a network blip).
    permanent = (
        InvalidTopicError,
        KafkaConfigurationError,
        MessageSizeTooLargeError,
        RecordListTooLargeError,
        TopicAuthorizationFailedError,
    )
    return ProduceFailed(
        f"{type(error).__name__}: {error}",
        transient=not isinstance(error, permanent),
        replace_producer=True,
    )


class _DeliveryReports:
    """Collect the delivery reports of one batch, whichever thread's poll() serves them."""

    def __init__(self, count: int):
        self.offsets: list = [None] * count
        self.missing = count
        self.error = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        if count == 0:
            self.done.set()

    def on_delivery(self, index: int, error, message) -> None:
        with self._lock:  # the poller and a closing flush() may both serve reports
            if error is not None:
                self.error = self.error or error
            else:
                self.offsets[index] = [message.partition(), message.offset()]
                self.missing -= 1
            if error is not None or self.missing == 0:
                self.done.set()


class ConfluentProducer:
    """librdkafka through confluent-kafka; one thread of its own serves the delivery reports."""

    def __init__(self):
        from confluent_kafka import KafkaException
        from confluent_kafka import Producer as RdKafkaProducer

        config = {
            "bootstrap.servers": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
            "client.id": CLIENT_ID,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": settings.KAFKA_COMPRESSION_TYPE,
            "linger.ms": settings.KAFKA_LINGER_MS,
            "request.timeout.ms": settings.KAFKA_REQUEST_TIMEOUT_MS,
            # Records of an attempt that timed out must not stay queued for librdkafka's default
            # five minutes: past this they fail, and the batch is retried as a whole.
            "delivery.timeout.ms": max(1, int(settings.KAFKA_DELIVERY_TIMEOUT_S * 1000)),
            "error_cb": self._on_client_error,
        }
        try:
            self._producer = RdKafkaProducer(config)
        except KafkaException as error:
            raise confluent_failure(error.args[0]) from error
        # When the waiting threads poll themselves, one thread may serve another's report while
        # that one sleeps in its own poll(); a single poller wakes each waiter at once instead.
        self._closing = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_delivery_reports, name="kafka-delivery-reports", daemon=True
        )
        self._poller.start()

    def _serve_delivery_reports(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(CONFLUENT_POLL_INTERVAL_S)

    @staticmethod
    def _on_client_error(error) -> None:
        # librdkafka retries connection errors itself; fatal ones also fail the next delivery.
        logger.warning("kafka client error: %s", error)

    def produce(self, *, records: list, timeout: float) -> list[list[int]]:
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        reports = _DeliveryReports(len(records))
        try:
            for index, (topic, event_id, key, value) in enumerate(records):
                self._enqueue(
                    topic=topic,
                    value=value.encode(),
                    key=None if key is None else key.encode(),
                    headers=[("event-id", event_id.encode())],
                    on_delivery=lambda error, message, index=index: reports.on_delivery(
                        index, error, message
                    ),
                    deadline=deadline,
                )
        except KafkaException as error:
            raise confluent_failure(error.args[0]) from error
        if not reports.done.wait(max(0.0, deadline - time.monotonic())):
            raise ProduceFailed(
                f"KafkaTimeoutError: {reports.missing} of {len(records)} records not "
                f"confirmed in {timeout:.1f}s",
                transient=True,
                replace_producer=False,
            )
        if reports.error is not None:
            raise confluent_failure(reports.error)
        return reports.offsets

    def _enqueue(self, *, deadline: float, **message) -> None:
        """Hand one record to librdkafka, waiting while its queue is full."""
        while True:
            try:
                self._producer.produce(**message)
                return
            except BufferError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProduceFailed(
                        "BufferError: the producer queue stayed full",
                        transient=True,
                        replace_producer=False,
                    ) from None
                time.sleep(min(CONFLUENT_QUEUE_FULL_PAUSE_S, remaining))

    def close(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._poller.join(timeout)
        left = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if left:
            logger.warning("%d records were not delivered before the producer closed", left)


def confluent_failure(error) -> ProduceFailed:
    """Classify a confluent_kafka.KafkaError; only a fatal error needs a new producer."""
    from confluent_kafka import KafkaError

    permanent = {
        KafkaError._INVALID_ARG,
        KafkaError.INVALID_RECORD,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
    }
    return ProduceFailed(
        f"{error.name()}: {error.str()}",
        transient=error.code() not in permanent,
        replace_producer=error.fatal() or error.code() == KafkaError._FATAL,
    )


BACKENDS = {"kafka-python": KafkaPythonProducer, "confluent": ConfluentProducer}

_lock = threading.Lock()
_producer: Producer | None = None


def backend() -> type:
    """Return the producer class that settings.KAFKA_CLIENT names."""
    try:
        return BACKENDS[settings.KAFKA_CLIENT]
    except KeyError:
        raise ImproperlyConfigured(
            f"KAFKA_CLIENT must be one of {', '.join(BACKENDS)}, got {settings.KAFKA_CLIENT!r}"
        ) from None


def get_producer() -> Producer:
    global _producer
    with _lock:
        if _producer is None:
            _producer = backend()()
        return _producer


def produce(*, records: list, timeout: float) -> list[list[int]]:
    """Write records with this process's producer; replace the producer if the failure broke it."""
    producer = get_producer()
    try:
        return producer.produce(records=records, timeout=timeout)
    except ProduceFailed as failure:
        if failure.replace_producer:
            discard_producer(producer)
        raise


def discard_producer(failed: Producer) -> None:
    """Replace a producer that failed, unless another thread already did."""
    global _producer
    with _lock:
        if _producer is not failed:
            return
        _producer = None
    try:
        failed.close(timeout=0)
    except Exception as error:  # a broken producer may fail to close; it is dropped anyway
        logger.debug("closing a failed producer: %r", error)


def close_producer(*, timeout: float) -> None:
    """Flush and close this process's producer, waiting at most `timeout` seconds."""
    global _producer
    with _lock:
        producer, _producer = _producer, None
    if producer is not None:
        producer.close(timeout=timeout)
