"""Per-record settlement of a batch (delivery.service.deliver_batch) with a fake producer and
the real database."""

import json
import threading
import time
from collections import Counter

import pytest
from django.db import OperationalError

from ingest.delivery import outcomes, service
from ingest.ids import uuid7
from ingest.models import DeadLetter, DeliveryOutcome
from tests.unit.fake_kafka import batch_of

pytestmark = pytest.mark.django_db


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
    assert dead_letter.records == [["ev-2", "\\ud800", records[2].value, "", "native"]]
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


def test_a_redelivered_batch_replaces_its_outcome_and_keeps_when_it_was_accepted(kafka):
    records = batch_of(2, poison_at={1})
    batch_id, accepted_at = uuid7(), time.time() - 60
    outcomes.write_outcome(
        batch_id=batch_id,
        records=records,
        accepted_at=accepted_at,
        offsets=[[0, 7], None],
        failures={1: "bad"},
        attempts=1,
    )
    outcomes.write_outcome(
        batch_id=batch_id,
        records=records,
        accepted_at=time.time(),
        offsets=[[0, 7], [1, 3]],
        failures={},
        attempts=2,
    )
    stored = DeliveryOutcome.objects.get(batch_id=batch_id)
    assert (stored.status, stored.offsets, stored.failures, stored.reason, stored.attempts) == (
        DeliveryOutcome.Status.DELIVERED,
        [[0, 7], [1, 3]],
        {},
        "",
        2,
    )
    assert stored.topics == sorted({record.topic for record in records})
    assert abs(stored.accepted_at.timestamp() - accepted_at) < 0.001
    assert stored.finished_at.timestamp() > accepted_at
