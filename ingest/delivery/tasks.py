"""Celery interface of the worker: the delivery task, the worker's signals and inspect command.

The task only translates between a task message and delivery.service. celery_app names the
ingest.delivery package for autodiscovery, which on its own looks only for `ingest.tasks`.
"""

import gc
import logging
import random
import threading

from celery import shared_task
from celery.exceptions import Reject, Retry
from celery.signals import (
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker.control import inspect_command
from django.conf import settings
from django.db import close_old_connections

from ingest.control import health, stats
from ingest.records import BatchRecord, batch_kwargsrepr

from . import service
from .producers import close_producer

logger = logging.getLogger(__name__)

# The web side publishes messages under this name without importing this module.
DELIVER_BATCH_TASK = "ingest.deliver_batch"
PRODUCER_FLUSH_TIMEOUT_S = 10.0
# A task re-sent to wait in the queue (the database away, an unexpected error) runs again after
# a capped exponential backoff with jitter.
RESEND_BACKOFF_BASE_S = 1.0
RESEND_BACKOFF_MAX_S = 60.0
BATCH_RECORD_FIELDS = len(BatchRecord._fields)
# Logged for a batch re-sent because the worker stops (tests/faults counts these).
STOPPING = "the worker is stopping; the batch goes back to the queue with what is settled"

_worker_stopping = threading.Event()


@shared_task(
    name=DELIVER_BATCH_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # bounded by INGEST_TASK_MAX_RETRIES, counted in the settled state
    Request="celery_app.request:DecodedRequest",
)
def deliver_batch(
    self, batch_id: str, records: list, accepted_at: float, settled: dict | None = None
) -> str:
    """Deliver one batch of records to Kafka; `settled` is what an earlier run settled."""
    # What Django does around a request: drop a connection that is broken or past CONN_MAX_AGE
    # and keep the rest (Celery's fixup no longer closes them all, see CELERY_DB_REUSE_MAX).
    close_old_connections()
    settlement = service.Settlement.from_message(settled, count=len(records))
    try:
        return service.deliver_batch(
            batch_id=batch_id,
            records=batch_records(records),
            accepted_at=accepted_at,
            stopping=_worker_stopping,
            settlement=settlement,
        ).status
    except service.DeliveryInterrupted as error:
        raise _resend(self, settlement, why=STOPPING, countdown=0) from error
    except service.OutcomeNotRecorded as error:
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
        return _give_up(self, settlement, reason=service.failure_summary(error))
    finally:
        close_old_connections()


def batch_records(items: list) -> list[BatchRecord]:
    """Return the typed records of a task message's [topic, event_id, key, value] lists."""
    # _make skips the defaults that only messages of older gateways, of four fields, need.
    return [
        BatchRecord._make(item) if len(item) == BATCH_RECORD_FIELDS else BatchRecord(*item)
        for item in items
    ]


def _give_up(task, settlement: service.Settlement, *, reason: str) -> str:
    """Dead-letter every record of the task's batch that is not settled yet."""
    kwargs = task.request.kwargs
    try:
        return service.dead_letter_unsettled(
            batch_id=kwargs["batch_id"],
            records=batch_records(kwargs["records"]),
            accepted_at=kwargs["accepted_at"],
            settlement=settlement,
            reason=reason,
            stopping=_worker_stopping,
        ).status
    except (service.DeliveryInterrupted, service.OutcomeNotRecorded) as error:
        raise _resend(task, settlement, why="its dead letters were not written") from error


def _resend(
    task, settlement: service.Settlement, *, why: str, countdown: float | None = None
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
            kwargsrepr=batch_kwargsrepr(batch_id=kwargs["batch_id"], count=len(kwargs["records"])),
        )
    except Reject as error:
        # Celery rejects without requeueing when the new message cannot be published, which
        # would drop the batch. This is the one requeue left: of the message as it came, so
        # records acknowledged in this run may be produced again.
        raise Reject(f"re-send failed: {error.reason!r}; requeued", requeue=True) from error


@worker_ready.connect
def _freeze_startup_objects(**kwargs) -> None:
    # The collector's full passes would otherwise walk every object Django, Celery and the
    # clients made at startup, again and again, as batches of records churn through memory:
    # about a fifth of the CPU per record (docs/BENCHMARKS.md, "Worker cost").
    gc.freeze()


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
