"""One Kafka producer per process, of the backend settings.KAFKA_CLIENT names.

KAFKA_CLIENT is a short name ("kafka-python", "confluent") or the dotted path of a class that
follows base.Producer, as Django's SESSION_ENGINE names a session backend. A backend module is
imported only when chosen, so a process loads one client library.
"""

import logging
import threading
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ingest.records import BatchRecord
from ingest.state import per_process

from .base import (
    ProduceFailed,
    Producer,
    RecordFailure,
    RecordResult,
    encode_record,
)

__all__ = [
    "BACKENDS",
    "ProduceFailed",
    "Producer",
    "RecordFailure",
    "RecordResult",
    "backend",
    "close_producer",
    "encode_record",
    "get_producer",
    "produce",
]

logger = logging.getLogger(__name__)

BACKENDS = {
    "kafka-python": "ingest.delivery.producers.kafka_python.KafkaPythonProducer",
    "confluent": "ingest.delivery.producers.confluent.ConfluentProducer",
}

# Held while the producer is taken away (discarded or closed), so two threads never both close it.
_swap_lock = threading.Lock()


def backend() -> type[Producer]:
    """Return the producer class that settings.KAFKA_CLIENT names."""
    path = BACKENDS.get(settings.KAFKA_CLIENT, settings.KAFKA_CLIENT)
    try:
        return import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"KAFKA_CLIENT must be one of {', '.join(BACKENDS)} or the dotted path of a "
            f"Producer class, got {settings.KAFKA_CLIENT!r}: {error}"
        ) from error


@per_process
def get_producer() -> Producer:
    """Return this process's producer, created on first use."""
    return backend()()


def produce(*, records: Sequence[BatchRecord], timeout: float) -> list[RecordResult]:
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
        _discard(producer)
    return results


def _discard(failed: Producer) -> None:
    """Replace a producer that failed, unless another thread already did."""
    with _swap_lock:
        if get_producer.current() is not failed:
            return
        get_producer.replace(None)
    try:
        failed.close(timeout=0)
    except Exception as error:  # a broken producer may fail to close; it is dropped anyway
        logger.debug("closing a failed producer: %r", error)


def close_producer(*, timeout: float) -> None:
    """Flush and close this process's producer, if it has one, waiting at most `timeout` s."""
    with _swap_lock:
        producer = get_producer.current()
        if producer is None:
            return
        get_producer.replace(None)
    producer.close(timeout=timeout)
