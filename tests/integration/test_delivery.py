"""Worker-side delivery against the real Tansu and PostgreSQL."""

import json
import threading
import time
import uuid

import pytest
from django.core.management import call_command

from ingest import producer, services
from ingest.ids import uuid7
from ingest.models import DeadLetter, DeliveryOutcome
from ingest.topics import read_topic
from tests.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fresh_producer(kafka_address):
    producer.close_producer(timeout=5)
    yield
    producer.close_producer(timeout=5)


def batch_of(topic, count, *, size=10):
    return [
        [
            topic,
            f"ev-{uuid.uuid4().hex[:8]}-{n}",
            f"k{n % 3}",
            json.dumps({"n": n, "pad": "x" * size}),
        ]
        for n in range(count)
    ]


def deliver(records, **overrides):
    return services.deliver_batch(
        batch_id=overrides.get("batch_id", uuid7()),
        records=records,
        accepted_at=overrides.get("accepted_at", time.time()),
        stopping=overrides.get("stopping", threading.Event()),
    )


def test_deliver_batch_writes_records_and_their_offsets(kafka_address):
    topic = f"delivery-{uuid.uuid4().hex[:8]}"
    records = batch_of(topic, 20)
    outcome = deliver(records)
    assert outcome.status == DeliveryOutcome.Status.DELIVERED
    assert DeliveryOutcome.objects.get(batch_id=outcome.batch_id).offsets == outcome.offsets
    found = {record.event_id: record for record in read_topic(topic=topic, idle_timeout_s=2)}
    assert set(found) == {record[1] for record in records}
    for (_, event_id, key, value), (partition, offset) in zip(
        records, outcome.offsets, strict=True
    ):
        assert found[event_id].key == key
        assert found[event_id].value == json.loads(value)
        assert (found[event_id].partition, found[event_id].offset) == (partition, offset)


def test_unreachable_kafka_is_retried_then_dead_lettered(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    settings.KAFKA_MAX_BLOCK_MS = 300
    settings.KAFKA_DELIVERY_TIMEOUT_S = 0.5
    settings.INGEST_DELIVERY_MAX_ATTEMPTS = 2
    records = batch_of("nowhere", 3)
    outcome = deliver(records)
    assert outcome.status == DeliveryOutcome.Status.DEAD_LETTERED
    assert outcome.attempts == 2
    (dead_letter,) = DeadLetter.objects.filter(batch_id=outcome.batch_id)
    assert dead_letter.topic == "nowhere"
    assert dead_letter.event_ids == [record[1] for record in records]
    assert dead_letter.records == [record[1:] for record in records]


def test_too_old_a_batch_is_dead_lettered_without_waiting(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    settings.KAFKA_MAX_BLOCK_MS = 300
    settings.INGEST_DELIVERY_MAX_AGE_S = 60
    outcome = deliver(batch_of("old", 1), accepted_at=time.time() - 120)
    assert outcome.status == DeliveryOutcome.Status.DEAD_LETTERED
    assert outcome.attempts == 1


def test_a_record_kafka_can_never_take_is_dead_lettered_at_once(kafka_address):
    outcome = deliver(batch_of(f"big-{uuid.uuid4().hex[:6]}", 1, size=2_000_000))
    assert outcome.status == DeliveryOutcome.Status.DEAD_LETTERED
    assert outcome.attempts == 1
    # kafka-python says MessageSizeTooLargeError, librdkafka MSG_SIZE_TOO_LARGE.
    assert "size" in outcome.reason.lower()


def test_a_stopping_worker_hands_the_batch_back(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    settings.KAFKA_MAX_BLOCK_MS = 300
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(services.DeliveryInterrupted):
        deliver(batch_of("later", 1), stopping=stopping)
    assert not DeadLetter.objects.exists()


def test_replayed_dead_letters_reach_kafka(kafka_address, capsys, monkeypatch):
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    records = batch_of(topic, 4)
    services.dead_letter_batch(
        batch_id=uuid7(), records=records, accepted_at=time.time(), attempts=3, reason="test"
    )
    from ingest import tasks

    def deliver_inline(publisher, *, batch_id, records):
        deliver(records, batch_id=batch_id)

    monkeypatch.setattr(tasks, "_publish_with", deliver_inline)
    call_command("dead_letters", "replay", "--topic", topic)
    assert "enqueued 4 events again" in capsys.readouterr().out
    assert DeadLetter.objects.get(topic=topic).replayed_at is not None
    found = {record.event_id for record in read_topic(topic=topic, idle_timeout_s=2)}
    assert found == {record[1] for record in records}

    call_command("dead_letters", "purge", "--topic", topic)
    assert not DeadLetter.objects.filter(topic=topic).exists()


def test_tail_topic_prints_records_with_their_ids(kafka_address, capsys):
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    records = batch_of(topic, 3)
    deliver(records)
    call_command("tail_topic", topic, "--idle-timeout", "2")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(record[1] for record in records)
    assert all(line["value"]["pad"] == "x" * 10 for line in lines)
