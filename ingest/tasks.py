"""Celery interface of the gateway: publish batches from the web side, deliver them on workers."""

import logging
import random
import threading
import time

from celery import shared_task
from celery.exceptions import Reject, Retry
from celery.signals import worker_process_shutdown, worker_shutdown, worker_shutting_down
from celery.worker.control import inspect_command
from django.conf import settings
from django.db import close_old_connections

from . import health, metrics, services, stats
from .batcher import Batch
from .ids import uuid7
from .producer import close_producer
from .publisher import TaskPublisher

logger = logging.getLogger(__name__)

DELIVER_BATCH_TASK = "ingest.deliver_batch"
PRODUCER_FLUSH_TIMEOUT_S = 10.0
# A task re-sent to wait in the queue (the database away, an unexpected error) runs again after
# a capped exponential backoff with jitter.
RESEND_BACKOFF_BASE_S = 1.0
RESEND_BACKOFF_MAX_S = 60.0
# Logged for a batch re-sent because the worker stops (tests/faults counts these).
STOPPING = "the worker is stopping; the batch goes back to the queue with what is settled"

_worker_stopping = threading.Event()
_thread_publishers = threading.local()
_publishers_lock = threading.Lock()
_publishers: list[TaskPublisher] = []


@shared_task(
    name=DELIVER_BATCH_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # bounded by INGEST_TASK_MAX_RETRIES, counted in the settled state
)
def deliver_batch(
    self, batch_id: str, records: list, accepted_at: float, settled: dict | None = None
) -> str:
    """Deliver one batch of records to Kafka; `settled` is what an earlier run settled."""
    # What Django does around a request: drop a connection that is broken or past CONN_MAX_AGE
    # and keep the rest (Celery's fixup no longer closes them all, see CELERY_DB_REUSE_MAX).
    close_old_connections()
    settlement = services.Settlement.from_message(settled, count=len(records))
    try:
        return services.deliver_batch(
            batch_id=batch_id,
            records=records,
            accepted_at=accepted_at,
            stopping=_worker_stopping,
            settlement=settlement,
        ).status
    except services.DeliveryInterrupted as error:
        raise _resend(self, settlement, why=STOPPING, countdown=0) from error
    except services.OutcomeNotRecorded as error:
        why = f"its outcome was not written: {error.__cause__!r}"
        raise _resend(self, settlement, why=why) from error
    except Exception as error:
        settlement.errors += 1
        if settlement.errors <= settings.INGEST_TASK_MAX_RETRIES:
            logger.exception(
                "batch %s failed unexpectedly (error %d of at most %d)",
                batch_id,
                settlement.errors,
                settings.INGEST_TASK_MAX_RETRIES,
            )
            raise _resend(self, settlement, why=f"unexpected {error!r}") from error
        logger.exception(
            "batch %s failed unexpectedly %d times; dead-lettering what is not settled",
            batch_id,
            settlement.errors,
        )
        return _give_up(self, settlement, reason=services.failure_summary(error))
    finally:
        close_old_connections()


def _give_up(task, settlement: services.Settlement, *, reason: str) -> str:
    """Dead-letter every record of the task's batch that is not settled yet."""
    kwargs = task.request.kwargs
    try:
        return services.dead_letter_unsettled(
            batch_id=kwargs["batch_id"],
            records=kwargs["records"],
            accepted_at=kwargs["accepted_at"],
            settlement=settlement,
            reason=reason,
            stopping=_worker_stopping,
        ).status
    except (services.DeliveryInterrupted, services.OutcomeNotRecorded) as error:
        raise _resend(task, settlement, why="its dead letters were not written") from error


def _resend(
    task, settlement: services.Settlement, *, why: str, countdown: float | None = None
) -> Retry:
    """Publish the task again with what is settled, so nothing Kafka acknowledged is produced
    again; return the Retry to raise, which acks this message once the broker confirmed the new
    one (CELERY_BROKER_TRANSPORT_OPTIONS confirm_publish)."""
    request = task.request
    if countdown is None:
        countdown = random.uniform(
            0, min(RESEND_BACKOFF_MAX_S, RESEND_BACKOFF_BASE_S * 2**request.retries)
        )
    logger.warning(
        "batch %s re-sent (retry %d) with %d of %d records settled, to run in %.1fs: %s",
        request.kwargs["batch_id"],
        request.retries + 1,
        len(settlement.offsets) - len(settlement.unsettled()),
        len(settlement.offsets),
        countdown,
        why,
    )
    kwargs = {**request.kwargs, "settled": settlement.as_message()}
    try:
        return task.retry(
            kwargs=kwargs,
            countdown=countdown,
            throw=False,
            kwargsrepr=_kwargsrepr(batch_id=kwargs["batch_id"], count=len(kwargs["records"])),
        )
    except Reject as error:
        # Celery rejects without requeueing when the new message cannot be published, which
        # would drop the batch. This is the one requeue left: of the message as it came, so
        # records acknowledged in this run may be produced again.
        raise Reject(f"re-send failed: {error.reason!r}; requeued", requeue=True) from error


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
    """Publish records as a new batch over a connection of their own (the admin's replays)."""
    batch_id = uuid7()
    publisher = _new_publisher()
    try:
        _publish_with(publisher, batch_id=batch_id, records=records)
    finally:
        publisher.close()
    return batch_id


def publish(*, batch_id: str, records: list) -> None:
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
    app = deliver_batch.app
    return TaskPublisher(
        connect=app.connection_for_write,
        queue=app.amqp.default_queue,
        task_name=DELIVER_BATCH_TASK,
        timeout=settings.INGEST_PUBLISH_TIMEOUT_S,
    )


def _publish_with(publisher: TaskPublisher, *, batch_id: str, records: list) -> None:
    publisher.publish(
        task_id=batch_id,
        kwargs={"batch_id": batch_id, "records": records, "accepted_at": time.time()},
        kwargsrepr=_kwargsrepr(batch_id=batch_id, count=len(records)),
    )


def _kwargsrepr(*, batch_id: str, count: int) -> str:
    # Only the size, not the batch: the headers and the workers' logs carry no event contents.
    return f"{{'batch_id': {batch_id!r}, 'records': <{count} records>}}"


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
