"""Per-record settlement of a batch (delivery.service.deliver_batch, delivery.tasks.deliver_batch)
with a fake producer and the real database."""

import itertools
import json
import threading
import time
from collections import Counter

import pytest
from celery.exceptions import Reject, Retry
from django.db import OperationalError

from ingest.delivery import outcomes, producers, service, tasks
from ingest.ids import uuid7
from ingest.models import DeadLetter, DeliveryOutcome
from ingest.records import BatchRecord

pytestmark = pytest.mark.django_db

POISON_KEY = "\ud800"


class FakeKafka:
    """Stands in for the process's producer: encodes like the real backends, acks the rest, fails
    the records it is told to, and remembers every record it was asked to produce."""

    def __init__(self):
        self.produced: list[str] = []
        self.calls = 0
        self.transient_failures: Counter = Counter()  # event id -> failures still to give
        self.error: Exception | None = None
        self._offsets = itertools.count()

    def produce(self, *, records, timeout):
        self.calls += 1
        if self.error is not None:
            raise self.error
        results = []
        for record in records:
            self.produced.append(record.event_id)
            encoded = producers.encode_record(record)
            if isinstance(encoded, producers.RecordFailure):
                results.append(encoded)
            elif self.transient_failures[record.event_id] > 0:
                self.transient_failures[record.event_id] -= 1
                results.append(producers.RecordFailure("KafkaTimeoutError: no ack", transient=True))
            else:
                results.append([0, next(self._offsets)])
        return results

    def close(self, *, timeout):
        pass


@pytest.fixture
def kafka(monkeypatch):
    fake = FakeKafka()
    producers.get_producer.replace(fake)
    monkeypatch.setattr(service, "RETRY_BACKOFF_BASE_S", 0.0)
    monkeypatch.setattr(service, "OUTCOME_WRITE_BACKOFF_BASE_S", 0.0)
    monkeypatch.setattr(tasks, "RESEND_BACKOFF_BASE_S", 0.0)
    yield fake
    producers.get_producer.replace(None)


def batch_of(count, *, poison_at=()):
    return [
        BatchRecord(
            "clicks",
            f"ev-{n}",
            POISON_KEY if n in poison_at else f"k{n}",
            json.dumps({"n": n}),
        )
        for n in range(count)
    ]


def deliver(records, *, batch_id=None, settlement=None, stopping=None):
    return service.deliver_batch(
        batch_id=batch_id or uuid7(),
        records=records,
        accepted_at=time.time(),
        stopping=stopping or threading.Event(),
        settlement=settlement,
    )


def test_a_poison_record_is_dead_lettered_alone_and_the_rest_delivered_once(kafka):
    records = batch_of(5, poison_at={2})
    outcome = deliver(records)

    assert outcome.status == DeliveryOutcome.Status.PARTIALLY_DELIVERED
    assert kafka.produced == [record.event_id for record in records]  # each asked for once
    stored = DeliveryOutcome.objects.get(batch_id=outcome.batch_id)
    assert stored.offsets[2] is None
    assert all(stored.offsets[n] is not None for n in (0, 1, 3, 4))
    assert list(stored.failures) == ["2"]
    assert stored.failures["2"].startswith("UnicodeEncodeError in the key")
    assert stored.reason == stored.failures["2"]
    (dead_letter,) = DeadLetter.objects.filter(batch_id=outcome.batch_id)
    assert dead_letter.event_ids == ["ev-2"]
    assert dead_letter.topic == "clicks"
    # PostgreSQL refuses lone surrogates; the key is kept as its escape.
    assert dead_letter.records == [["ev-2", "\\ud800", records[2].value]]
    assert dead_letter.reason == stored.failures["2"]


def test_a_batch_of_poison_only_is_dead_lettered_record_by_record(kafka):
    outcome = deliver(batch_of(3, poison_at={0, 1, 2}))
    stored = DeliveryOutcome.objects.get(batch_id=outcome.batch_id)
    assert stored.status == DeliveryOutcome.Status.DEAD_LETTERED
    assert stored.offsets == [None, None, None]
    assert sorted(stored.failures) == ["0", "1", "2"]
    assert DeadLetter.objects.filter(batch_id=outcome.batch_id).count() == 3


def test_only_records_that_failed_transiently_are_produced_again(kafka):
    records = batch_of(5)
    kafka.transient_failures.update({"ev-1": 2, "ev-3": 1})
    outcome = deliver(records)

    assert outcome.status == DeliveryOutcome.Status.DELIVERED
    assert outcome.attempts == 3
    assert Counter(kafka.produced) == {"ev-0": 1, "ev-1": 3, "ev-2": 1, "ev-3": 2, "ev-4": 1}
    stored = DeliveryOutcome.objects.get(batch_id=outcome.batch_id)
    assert stored.failures == {}
    assert None not in stored.offsets
    assert not DeadLetter.objects.exists()


def test_records_still_failing_when_the_budget_ends_are_dead_lettered_alone(kafka, settings):
    settings.INGEST_DELIVERY_MAX_ATTEMPTS = 3
    kafka.transient_failures.update({"ev-1": 100})
    outcome = deliver(batch_of(3))

    assert outcome.status == DeliveryOutcome.Status.PARTIALLY_DELIVERED
    assert Counter(kafka.produced) == {"ev-0": 1, "ev-1": 3, "ev-2": 1}
    (dead_letter,) = DeadLetter.objects.filter(batch_id=outcome.batch_id)
    assert dead_letter.event_ids == ["ev-1"]
    assert dead_letter.attempts == 3
    assert "KafkaTimeoutError" in dead_letter.reason and "(attempt 3," in dead_letter.reason


# The write retry replaces a broken connection, which a test's own transaction cannot survive.
@pytest.mark.django_db(transaction=True)
def test_the_outcome_write_is_retried_without_producing_again(kafka, monkeypatch):
    write = outcomes.write_outcome
    failures = iter([OperationalError("db down"), OperationalError("db down")])

    def flaky_write(**kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return write(**kwargs)

    monkeypatch.setattr(outcomes, "write_outcome", flaky_write)
    records = batch_of(4, poison_at={3})
    outcome = deliver(records)

    assert kafka.produced == [record.event_id for record in records]
    assert DeliveryOutcome.objects.get(batch_id=outcome.batch_id).status == (
        DeliveryOutcome.Status.PARTIALLY_DELIVERED
    )
    assert DeadLetter.objects.filter(batch_id=outcome.batch_id).count() == 1


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


def test_a_redelivered_batch_does_not_dead_letter_a_record_twice(kafka):
    records = batch_of(3, poison_at={1})
    batch_id = uuid7()
    deliver(records, batch_id=batch_id)
    deliver(records, batch_id=batch_id)
    assert DeadLetter.objects.filter(batch_id=batch_id).count() == 1


def test_a_settlement_survives_the_task_message(kafka):
    settlement = service.Settlement(offsets=[[0, 1], None, None], failures={2: "bad"}, attempts=4)
    carried = json.loads(json.dumps(settlement.as_message()))
    assert service.Settlement.from_message(carried, count=3) == settlement
    assert service.Settlement.from_message(None, count=2).unsettled() == [0, 1]
    assert settlement.unsettled() == [1]
