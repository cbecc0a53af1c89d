"""One Kafka producer per process, created on first use and flushed with a timeout at shutdown."""

import logging
import threading

from django.conf import settings
from kafka import KafkaProducer

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_producer: KafkaProducer | None = None


def get_producer() -> KafkaProducer:
    global _producer
    with _lock:
        if _producer is None:
            _producer = KafkaProducer(
                bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
                acks="all",
                enable_idempotence=True,
                compression_type=None
                if settings.KAFKA_COMPRESSION_TYPE == "none"
                else settings.KAFKA_COMPRESSION_TYPE,
                linger_ms=settings.KAFKA_LINGER_MS,
                request_timeout_ms=settings.KAFKA_REQUEST_TIMEOUT_MS,
                max_block_ms=settings.KAFKA_MAX_BLOCK_MS,
                client_id="ingest-gateway",
            )
        return _producer


def discard_producer(failed: KafkaProducer) -> None:
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
        producer.flush(timeout=timeout)
        producer.close(timeout=timeout)
