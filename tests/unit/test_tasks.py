"""The Celery task delivery.tasks.deliver_batch: its resends, bounded retries and stopping, run
as a worker would with a fake producer and the real database."""

import json
import time
from collections import Counter

import pytest
from celery.exceptions import Reject, Retry
from django.db import OperationalError

from ingest.delivery import outcomes, service, tasks
from ingest.ids import uuid7
from ingest.models import DeadLetter, DeliveryOutcome
from tests.unit.fake_kafka import batch_of

pytestmark = pytest.mark.django_db


class FakeWorker:
    """Runs delivery.tasks.deliver_batch as a worker would: each Retry's new message is run next.

    Tests using it need transaction=True: the task closes connections a transaction holds.
    """

    def __init__(self, monkeypatch):
        self.resent: list[dict] = []
        self.countdowns: list[float] = []
        self.publish_error: Exception | None = None
        task = tasks.deliver_batch._get_current_object()
        self.task = task
        monkeypatch.setattr(task, "retry", self._retry)

    def _retry(self, *, kwargs, countdown, throw, kwargsrepr):
        assert not throw and "records>" in kwargsrepr
        if self.publish_error is not None:
            raise Reject(self.publish_error, requeue=False)  # what Celery does
        self.resent.append(json.loads(json.dumps(kwargs)))  # as the broker carries it
        self.countdowns.append(countdown)
        return Retry()

    def run(self, kwargs: dict, *, max_runs: int = 20) -> str:
        for retries in range(max_runs):
            self.task.push_request(kwargs=kwargs, retries=retries, id=kwargs["batch_id"])
            try:
                return self.task.run(**kwargs)
            except Retry:
                kwargs = self.resent[-1]
            finally:
                self.task.pop_request()
        raise AssertionError(f"still retrying after {max_runs} runs")


@pytest.fixture
def worker(monkeypatch):
    return FakeWorker(monkeypatch)


def task_kwargs(records):
    """Return a task message's kwargs: records travel as JSON lists."""
    return {"batch_id": uuid7(), "records": [list(r) for r in records], "accepted_at": time.time()}


@pytest.mark.django_db(transaction=True)
def test_a_task_message_without_settled_state_is_delivered(kafka, worker):
    kwargs = task_kwargs(batch_of(3, poison_at={1}))
    assert worker.run(kwargs) == DeliveryOutcome.Status.PARTIALLY_DELIVERED
    assert worker.resent == []


@pytest.mark.django_db(transaction=True)
def test_an_outcome_never_written_resends_the_task_with_what_kafka_acked(
    kafka, worker, monkeypatch
):
    write = outcomes.write_outcome
    down = {"runs": 2 * service.OUTCOME_WRITE_ATTEMPTS}

    def database_down_for_two_runs(**kwargs):
        if down["runs"] > 0:
            down["runs"] -= 1
            raise OperationalError("db down")
        return write(**kwargs)

    monkeypatch.setattr(outcomes, "write_outcome", database_down_for_two_runs)
    records = batch_of(4, poison_at={0})
    kwargs = task_kwargs(records)
    assert worker.run(kwargs) == DeliveryOutcome.Status.PARTIALLY_DELIVERED

    assert len(worker.resent) == 2
    first_run = [record.event_id for record in records]
    assert kafka.produced == first_run  # nothing produced again
    settled = worker.resent[0]["settled"]
    assert settled["offsets"][0] is None and None not in settled["offsets"][1:]
    assert list(settled["failures"]) == ["0"]
    assert DeadLetter.objects.filter(batch_id=kwargs["batch_id"]).count() == 1


@pytest.mark.django_db(transaction=True)
def test_unexpected_errors_are_retried_a_bounded_number_of_times_then_dead_lettered(
    kafka, worker, settings
):
    settings.INGEST_TASK_MAX_RETRIES = 2
    kafka.error = RuntimeError("boom")
    kwargs = task_kwargs(batch_of(3))

    assert worker.run(kwargs) == DeliveryOutcome.Status.DEAD_LETTERED
    assert kafka.calls == 3  # the first run and two retries
    assert [message["settled"]["errors"] for message in worker.resent] == [1, 2]
    dead_letters = DeadLetter.objects.filter(batch_id=kwargs["batch_id"]).order_by("id")
    assert [dead_letter.event_ids for dead_letter in dead_letters] == [["ev-0"], ["ev-1"], ["ev-2"]]
    reason = dead_letters[0].reason
    assert reason.startswith("RuntimeError: boom at ") and "in produce" in reason


@pytest.mark.django_db(transaction=True)
def test_a_retry_after_an_unexpected_error_skips_records_kafka_acked(kafka, worker, monkeypatch):
    records = batch_of(4)
    kafka.transient_failures.update({"ev-2": 1})
    real_fake = kafka.produce
    calls = iter([real_fake, None, real_fake])

    def second_attempt_crashes(*, records, timeout):
        step = next(calls)
        if step is None:
            raise RuntimeError("crash between attempts")
        return step(records=records, timeout=timeout)

    monkeypatch.setattr(kafka, "produce", second_attempt_crashes)
    assert worker.run(task_kwargs(records)) == DeliveryOutcome.Status.DELIVERED
    assert Counter(kafka.produced) == {"ev-0": 1, "ev-1": 1, "ev-2": 2, "ev-3": 1}
    assert len(worker.resent) == 1


@pytest.mark.django_db(transaction=True)
def test_a_stopping_worker_resends_the_batch_with_its_settled_records(kafka, worker, settings):
    tasks._worker_stopping.set()
    try:
        kafka.transient_failures.update({"ev-1": 1})
        kwargs = task_kwargs(batch_of(3))
        worker.task.push_request(kwargs=kwargs, retries=0, id=kwargs["batch_id"])
        try:
            with pytest.raises(Retry):
                worker.task.run(**kwargs)
        finally:
            worker.task.pop_request()
    finally:
        tasks._worker_stopping.clear()
    (message,) = worker.resent
    assert worker.countdowns == [0]
    assert message["settled"]["offsets"][1] is None
    assert message["settled"]["offsets"][0] is not None
    assert not DeliveryOutcome.objects.exists()

    assert worker.run(message) == DeliveryOutcome.Status.DELIVERED
    assert Counter(kafka.produced) == {"ev-0": 1, "ev-1": 2, "ev-2": 1}


@pytest.mark.django_db(transaction=True)
def test_a_resend_that_cannot_be_published_requeues_the_message(kafka, worker, settings):
    settings.INGEST_TASK_MAX_RETRIES = 1
    kafka.error = RuntimeError("boom")
    worker.publish_error = ConnectionError("broker away")
    kwargs = task_kwargs(batch_of(1))
    worker.task.push_request(kwargs=kwargs, retries=0, id=kwargs["batch_id"])
    try:
        with pytest.raises(Reject) as rejected:
            worker.task.run(**kwargs)
    finally:
        worker.task.pop_request()
    assert rejected.value.requeue
