"""Celery interface of the gateway: publish batches from the web side, deliver them on workers."""

import logging
import threading
import time

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_process_shutdown, worker_shutdown, worker_shutting_down
from celery.worker.control import inspect_command
from django.conf import settings

from . import health, metrics, services, stats
from .batcher import Batch
from .ids import uuid7
from .producer import close_producer

logger = logging.getLogger(__name__)

DELIVER_BATCH_TASK = "ingest.deliver_batch"
# A publish that cannot reach the broker fails fast; the client retries after a 503.
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}
PRODUCER_FLUSH_TIMEOUT_S = 10.0
UNEXPECTED_FAILURE_REQUEUE_DELAY_S = 1.0

_worker_stopping = threading.Event()


@shared_task(
    name=DELIVER_BATCH_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver_batch(self, batch_id: str, records: list, accepted_at: float) -> str:
    """Deliver one batch of records to Kafka."""
    try:
        outcome = services.deliver_batch(
            batch_id=batch_id, records=records, accepted_at=accepted_at, stopping=_worker_stopping
        )
    except services.DeliveryInterrupted as error:
        raise Reject(
            f"worker stopping; batch {batch_id} goes back to the queue", requeue=True
        ) from (error)
    except Exception as error:
        # Celery acks a late-acked task that raised, which would drop an accepted batch (a bug,
        # the database down while dead-lettering): requeue it instead, after a pause so a batch
        # that keeps failing does not spin.
        logger.exception("batch %s failed unexpectedly; requeueing it", batch_id)
        _worker_stopping.wait(UNEXPECTED_FAILURE_REQUEUE_DELAY_S)
        raise Reject(f"batch {batch_id} failed: {error!r}; requeued", requeue=True) from error
    return outcome.status


def enqueue_batch(batch: Batch) -> None:
    """Publish a batch as one persistent task message and wait for the broker's confirm."""
    started = time.monotonic()
    try:
        publish(batch_id=batch.batch_id, records=batch.records)
    except Exception:
        metrics.count_publish_error()
        raise
    metrics.observe_publish(events=len(batch.records), seconds=time.monotonic() - started)


def enqueue_records(*, records: list) -> str:
    batch_id = uuid7()
    publish(batch_id=batch_id, records=records)
    return batch_id


def publish(*, batch_id: str, records: list) -> None:
    timeout = settings.INGEST_PUBLISH_TIMEOUT_S
    deliver_batch.apply_async(
        kwargs={"batch_id": batch_id, "records": records, "accepted_at": time.time()},
        task_id=batch_id,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
        timeout=timeout,
        confirm_timeout=timeout,
        # Celery would otherwise repr() the whole batch into every message's headers (and its
        # workers' logs): 5% of a loaded server's time, and event contents in the logs.
        argsrepr="()",
        kwargsrepr=f"{{'batch_id': {batch_id!r}, 'records': <{len(records)} records>}}",
    )


def queue_depth() -> int:
    """Return how many batches wait in the broker for a worker."""
    with deliver_batch.app.connection_for_read() as connection:
        return _declared_depth(connection)


class QueueDepthReader:
    """Read the queue depth over one kept connection, for a caller that asks every second."""

    def __init__(self):
        self._connection = None

    def __call__(self) -> int:
        try:
            if self._connection is None:
                self._connection = deliver_batch.app.connection_for_read()
            return _declared_depth(self._connection)
        except Exception:
            self._connection, broken = None, self._connection
            if broken is not None:
                broken.release()
            raise


def _declared_depth(connection) -> int:
    connection.ensure_connection(max_retries=1, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
    _, depth, _ = connection.default_channel.queue_declare(
        queue=settings.CELERY_TASK_DEFAULT_QUEUE, durable=True, auto_delete=False, passive=False
    )
    return depth


@worker_shutting_down.connect
def _stop_retrying(**kwargs) -> None:
    _worker_stopping.set()


@worker_shutdown.connect
@worker_process_shutdown.connect
def _flush_producer(**kwargs) -> None:
    close_producer(timeout=PRODUCER_FLUSH_TIMEOUT_S)
    stats.flush_quietly()


@inspect_command()
def process_report(state) -> dict:
    """Report the worker process, so operators and tests can see it runs on native threads."""
    return health.process_report()
