"""The web side's broker: publish batches as task messages by name, and read the queue depth.

The web side never imports the Celery task: it publishes protocol-2 messages naming it, so a
worker, not this process, loads ingest's delivery code.
"""

import threading
import time

from django.conf import settings

from celery_app import app

from ..control import metrics
from ..ids import uuid7
from ..records import BatchRecord, batch_kwargsrepr
from .batcher import Batch
from .publisher import TaskPublisher, connect_to_any_node

# The delivery task's explicit name; ingest/delivery/tasks.py registers the task under it.
DELIVER_BATCH_TASK = "ingest.deliver_batch"

_thread_publishers = threading.local()
_publishers_lock = threading.Lock()
_publishers: list[TaskPublisher] = []


def enqueue_batch(batch: Batch) -> None:
    """Publish a batch as one persistent task message and wait for the broker's confirm."""
    started = time.monotonic()
    try:
        publish(batch_id=batch.batch_id, records=batch.records)
    except Exception:
        metrics.count_publish_error()
        raise
    metrics.observe_publish(events=len(batch.records), seconds=time.monotonic() - started)


def enqueue_records(*, records: list[BatchRecord]) -> str:
    """Publish records as a new batch over a connection of their own (dead-letter replays)."""
    batch_id = uuid7()
    publisher = _new_publisher()
    try:
        _publish_with(publisher, batch_id=batch_id, records=records)
    finally:
        publisher.close()
    return batch_id


def publish(*, batch_id: str, records: list[tuple]) -> None:
    """Publish a batch over this thread's kept connection and wait for the broker's confirm."""
    publisher = getattr(_thread_publishers, "publisher", None)
    if publisher is None:
        publisher = _thread_publishers.publisher = _new_publisher()
        with _publishers_lock:
            _publishers.append(publisher)
    _publish_with(publisher, batch_id=batch_id, records=records)


def close_publishers() -> None:
    """Close every thread's kept broker connection, once the threads publish no more."""
    with _publishers_lock:
        publishers = list(_publishers)
    for publisher in publishers:
        publisher.close()


def _new_publisher() -> TaskPublisher:
    return TaskPublisher(
        connect=app.connection_for_write,
        queue=app.amqp.default_queue,
        task_name=DELIVER_BATCH_TASK,
        timeout=settings.INGEST_PUBLISH_TIMEOUT_S,
        serializer=settings.INGEST_MESSAGE_FORMAT,
    )


def _publish_with(publisher: TaskPublisher, *, batch_id: str, records: list[tuple]) -> None:
    # Each record is a BatchRecord or a tuple of its fields: both encode as the same array.
    publisher.publish(
        task_id=batch_id,
        kwargs={"batch_id": batch_id, "records": records, "accepted_at": time.time()},
        kwargsrepr=batch_kwargsrepr(batch_id=batch_id, count=len(records)),
    )


def queue_depth() -> int:
    """Return how many batches wait in the broker for a worker (the admin's stats page)."""
    with app.connection_for_read() as connection:
        return _declared_depth(connection)


class QueueDepthReader:
    """Read the queue depth over one kept connection, for a caller that asks it often."""

    def __init__(self):
        self._connection = None

    def __call__(self) -> int:
        try:
            if self._connection is None:
                self._connection = app.connection_for_read()
            return _declared_depth(self._connection)
        except Exception:
            self._connection, broken = None, self._connection
            if broken is not None:
                broken.release()
            raise


def broker_url_count() -> int:
    """Return how many broker URLs a connection may try (CELERY_BROKER_URL is `;`-separated)."""
    return len([url for url in settings.CELERY_BROKER_URL.split(";") if url.strip()])


def _declared_depth(connection) -> int:
    connect_to_any_node(connection)
    # Declared as the workers and the publisher declare it: RabbitMQ refuses a declare whose
    # x-queue-type differs from the queue's.
    _, depth, _ = app.amqp.default_queue.bind(connection.default_channel).queue_declare()
    return depth
