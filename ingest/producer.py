"""One Kafka producer per process behind a small interface; KAFKA_CLIENT picks the client library.

Both backends give the same guarantees: acks=all, idempotence, and `produce` settles each record
on its own: [partition, offset] once Kafka confirmed it, or a RecordFailure saying why not and
whether a retry may succeed. One record that can never be sent fails alone.
"""

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

CLIENT_ID = "ingest-gateway"
# Longest a poll() of librdkafka blocks, so its thread notices the producer closing.
CONFLUENT_POLL_INTERVAL_S = 0.1
# Pause before trying again to hand a record to librdkafka while its queue is full.
CONFLUENT_QUEUE_FULL_PAUSE_S = 0.01


# Kafka's rule for topic names; a record naming another topic can never be produced.
LEGAL_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


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


def encode_record(record: list) -> tuple[str, bytes, bytes | None, list] | RecordFailure:
    """Return what a client sends for a [topic, event_id, key, value] record, or why it cannot."""
    topic, event_id, key, value = record
    if not LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
        return RecordFailure(
            f"InvalidTopicError: {topic[:60]!r} is not a legal topic name", transient=False
        )
    encoded = []
    for field, text in (("value", value), ("key", key), ("id", event_id)):
        try:
            encoded.append(None if text is None else text.encode())
        except UnicodeEncodeError as error:
            return RecordFailure(f"UnicodeEncodeError in the {field}: {error}", transient=False)
    value_bytes, key_bytes, id_bytes = encoded
    return topic, value_bytes, key_bytes, [("event-id", id_bytes)]


class Producer(Protocol):
    def produce(self, *, records: list, timeout: float) -> list[RecordResult]:
        """Write [topic, event_id, key, value] records; return what became of each, in order."""

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
                max_request_size=settings.KAFKA_MAX_REQUEST_SIZE,
                request_timeout_ms=settings.KAFKA_REQUEST_TIMEOUT_MS,
                max_block_ms=settings.KAFKA_MAX_BLOCK_MS,
                # Creating the producer bootstraps eagerly; bound it like any other blocking call.
                bootstrap_timeout_ms=settings.KAFKA_MAX_BLOCK_MS,
                client_id=CLIENT_ID,
            )
        except KafkaError as error:
            raise ProduceFailed(kafka_python_failure(error)) from error

    def produce(self, *, records: list, timeout: float) -> list[RecordResult]:
        from kafka.errors import KafkaError, KafkaTimeoutError

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
                if not isinstance(error, kafka_python_size_errors()):
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


def kafka_python_size_errors() -> tuple:
    """Return kafka-python's errors about one record's size, which leave the producer sound."""
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    return (MessageSizeTooLargeError, RecordListTooLargeError)


def kafka_python_failure(error: Exception, *, sent: bool = True) -> RecordFailure:
    """Classify a kafka-python error; a record that was sent and failed replaces the producer,
    which may be left with a broken connection or sequence state."""
    from kafka.errors import (
        InvalidTopicError,
        KafkaConfigurationError,
        TopicAuthorizationFailedError,
    )

    # Errors that no retry can mend; everything else may pass (a broker restarting, a
    # partition moving, a network blip).
    permanent = (
        *kafka_python_size_errors(),
        InvalidTopicError,
        KafkaConfigurationError,
        TopicAuthorizationFailedError,
    )
    return RecordFailure(
        f"{type(error).__name__}: {error}",
        transient=not isinstance(error, permanent),
        replace_producer=sent or not isinstance(error, kafka_python_size_errors()),
    )


class _DeliveryReports:
    """Collect the delivery reports of one batch, whichever thread's poll() serves them."""

    def __init__(self, count: int):
        self.results: list = [None] * count
        self.missing = 0
        self.done = threading.Event()
        self.done.set()
        self._lock = threading.Lock()

    def expect(self) -> None:
        """Count one more record handed to librdkafka, whose report is still to come."""
        with self._lock:
            self.missing += 1
            self.done.clear()

    def on_delivery(self, index: int, error, message) -> None:
        if error is not None:
            self.settle(index, confluent_failure(error))
        else:
            self.settle(index, [message.partition(), message.offset()])

    def settle(self, index: int, result: RecordResult) -> None:
        """Keep what became of an expected record."""
        with self._lock:  # the poller and a closing flush() may both serve reports
            self.results[index] = result
            self.missing -= 1
            if self.missing == 0:
                self.done.set()

    def unconfirmed(self, failure: RecordFailure) -> list[RecordResult]:
        """Return the results, with `failure` for each record whose report has not come."""
        with self._lock:
            return [failure if result is None else result for result in self.results]


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
            # five minutes: past this they fail, and those records are retried.
            "delivery.timeout.ms": max(1, int(settings.KAFKA_DELIVERY_TIMEOUT_S * 1000)),
            # A larger record fails at produce() on its own instead of in a broker's answer.
            "message.max.bytes": settings.KAFKA_MAX_REQUEST_SIZE,
            "error_cb": self._on_client_error,
        }
        try:
            self._producer = RdKafkaProducer(config)
        except KafkaException as error:
            raise ProduceFailed(confluent_failure(error.args[0])) from error
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

    def produce(self, *, records: list, timeout: float) -> list[RecordResult]:
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        reports = _DeliveryReports(len(records))
        queue_full = None
        for index, record in enumerate(records):
            encoded = encode_record(record)
            if isinstance(encoded, RecordFailure):
                reports.results[index] = encoded
                continue
            if queue_full is not None:
                reports.results[index] = queue_full
                continue
            topic, value, key, headers = encoded
            reports.expect()
            try:
                self._enqueue(
                    topic=topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=lambda error, message, index=index: reports.on_delivery(
                        index, error, message
                    ),
                    deadline=deadline,
                )
            except KafkaException as error:  # refused at once: too large, an invalid argument
                reports.settle(index, confluent_failure(error.args[0]))
            except BufferError:
                # The queue stayed full until the deadline: the rest of the batch waits too.
                queue_full = RecordFailure(
                    "BufferError: the producer queue stayed full", transient=True
                )
                reports.settle(index, queue_full)
        reports.done.wait(max(0.0, deadline - time.monotonic()))
        return reports.unconfirmed(
            RecordFailure(f"KafkaTimeoutError: not confirmed in {timeout:.1f}s", transient=True)
        )

    def _enqueue(self, *, deadline: float, **message) -> None:
        """Hand one record to librdkafka, waiting while its queue is full."""
        while True:
            try:
                self._producer.produce(**message)
                return
            except BufferError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                time.sleep(min(CONFLUENT_QUEUE_FULL_PAUSE_S, remaining))

    def close(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._poller.join(timeout)
        left = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if left:
            logger.warning("%d records were not delivered before the producer closed", left)


def confluent_failure(error) -> RecordFailure:
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
    return RecordFailure(
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


def produce(*, records: list, timeout: float) -> list[RecordResult]:
    """Write records with this process's producer; replace the producer if a failure broke it."""
    try:
        producer = get_producer()
    except ProduceFailed as failed:
        # A record that could never be sent fails for that reason, not for the broker's.
        return [
            encoded
            if isinstance(encoded := encode_record(record), RecordFailure)
            else failed.failure
            for record in records
        ]
    results = producer.produce(records=records, timeout=timeout)
    if any(isinstance(result, RecordFailure) and result.replace_producer for result in results):
        discard_producer(producer)
    return results


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
