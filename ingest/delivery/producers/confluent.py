"""librdkafka through confluent-kafka behind the Producer protocol."""

import logging
import threading
import time
from collections.abc import Sequence
from functools import partial

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as RdKafkaProducer
from django.conf import settings

from ingest.records import BatchRecord

from .base import CLIENT_ID, ProduceFailed, RecordFailure, RecordResult, encode_record

logger = logging.getLogger(__name__)

# Longest a poll() of librdkafka blocks, so its thread notices the producer closing.
CONFLUENT_POLL_INTERVAL_S = 0.1
# Pause before trying again to hand a record to librdkafka while its queue is full.
CONFLUENT_QUEUE_FULL_PAUSE_S = 0.01

# Error codes that no retry can mend.
PERMANENT_ERRORS = {
    KafkaError._INVALID_ARG,
    KafkaError.INVALID_RECORD,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,
}


class _DeliveryReports:
    """Collect the delivery reports of one batch, whichever thread's poll() serves them."""

    def __init__(self, count: int):
        self.results: list = [None] * count
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._reported = 0
        # Unknown while records are still handed to librdkafka, whose reports may come first.
        self._expected: int | None = None

    def expect(self, count: int) -> None:
        """Say how many records were handed to librdkafka in all, each with a report to come."""
        with self._lock:
            self._expected = count
            if self._reported == count:
                self.done.set()

    def on_delivery(self, index: int, error, message) -> None:
        """Keep what became of a record handed to librdkafka (its on_delivery callback)."""
        result = (
            [message.partition(), message.offset()] if error is None else confluent_failure(error)
        )
        with self._lock:  # the poller and a closing flush() may both serve reports
            self.results[index] = result
            self._reported += 1
            if self._reported == self._expected:
                self.done.set()

    def unconfirmed(self, failure: RecordFailure) -> list[RecordResult]:
        """Return the results, with `failure` for each record whose report has not come."""
        with self._lock:
            return [failure if result is None else result for result in self.results]


class ConfluentProducer:
    """librdkafka through confluent-kafka; one thread of its own serves the delivery reports."""

    def __init__(self):
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

    def produce(self, *, records: Sequence[BatchRecord], timeout: float) -> list[RecordResult]:
        deadline = time.monotonic() + timeout
        reports = _DeliveryReports(len(records))
        results = reports.results
        handed = 0
        queue_full = None
        produce = self._producer.produce
        for index, record in enumerate(records):
            encoded = encode_record(record)
            if isinstance(encoded, RecordFailure):
                results[index] = encoded
                continue
            if queue_full is not None:
                results[index] = queue_full
                continue
            topic, value, key, headers = encoded
            # A partial, not a lambda: librdkafka calls it once per record, from the poller.
            on_delivery = partial(reports.on_delivery, index)
            try:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                except BufferError:
                    self._enqueue_when_room(
                        deadline=deadline,
                        topic=topic,
                        value=value,
                        key=key,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
            except KafkaException as error:  # refused at once: too large, an invalid argument
                results[index] = confluent_failure(error.args[0])
                continue
            except BufferError:
                # The queue stayed full until the deadline: the rest of the batch waits too.
                queue_full = results[index] = RecordFailure(
                    "BufferError: the producer queue stayed full", transient=True
                )
                continue
            handed += 1
        reports.expect(handed)
        reports.done.wait(max(0.0, deadline - time.monotonic()))
        return reports.unconfirmed(
            RecordFailure(f"KafkaTimeoutError: not confirmed in {timeout:.1f}s", transient=True)
        )

    def _enqueue_when_room(self, *, deadline: float, **message) -> None:
        """Hand one record to librdkafka once its full queue has room, until the deadline."""
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(CONFLUENT_QUEUE_FULL_PAUSE_S, remaining))
            try:
                self._producer.produce(**message)
                return
            except BufferError:
                pass
        raise BufferError("the producer queue stayed full")

    def close(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._closing.set()
        self._poller.join(timeout)
        left = self._producer.flush(max(0.0, deadline - time.monotonic()))
        if left:
            logger.warning("%d records were not delivered before the producer closed", left)


def confluent_failure(error: KafkaError) -> RecordFailure:
    """Classify a confluent_kafka.KafkaError; only a fatal error needs a new producer."""
    return RecordFailure(
        f"{error.name()}: {error.str()}",
        transient=error.code() not in PERMANENT_ERRORS,
        replace_producer=error.fatal() or error.code() == KafkaError._FATAL,
    )
