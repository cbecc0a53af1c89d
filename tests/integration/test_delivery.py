"""Worker-side delivery against the real Tansu and PostgreSQL."""

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
from django.core.management import call_command

from ingest.control.topics import read_topic
from ingest.delivery import producers, service
from ingest.ids import uuid7
from ingest.models import DeadLetter, DeliveryOutcome
from ingest.records import BatchRecord
from tests.stack import ROOT, free_port
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def fresh_producer(kafka_address, settings):
    # Depends on `settings` so the producer closes before the settings it was built from go.
    producers.close_producer(timeout=5)
    yield
    producers.close_producer(timeout=5)


def batch_of(topic, count, *, size=10):
    """Return a batch as a task message carries it: [topic, event_id, key, value] lists."""
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
    return service.deliver_batch(
        batch_id=overrides.get("batch_id", uuid7()),
        records=[BatchRecord(*record) for record in records],
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
    assert outcome.offsets == [None, None, None]
    dead_letters = DeadLetter.objects.filter(batch_id=outcome.batch_id).order_by("id")
    assert [dead_letter.topic for dead_letter in dead_letters] == ["nowhere"] * 3
    assert [dead_letter.event_ids for dead_letter in dead_letters] == [[r[1]] for r in records]
    assert [dead_letter.records for dead_letter in dead_letters] == [
        [[*r[1:], "", "native"]] for r in records
    ]


def test_too_old_a_batch_is_dead_lettered_without_waiting(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    settings.KAFKA_MAX_BLOCK_MS = 300
    settings.INGEST_DELIVERY_MAX_AGE_S = 60
    outcome = deliver(batch_of("old", 1), accepted_at=time.time() - 120)
    assert outcome.status == DeliveryOutcome.Status.DEAD_LETTERED
    assert outcome.attempts == 1


def test_a_record_kafka_can_never_take_is_dead_lettered_at_once_and_alone(kafka_address):
    topic = f"big-{uuid.uuid4().hex[:6]}"
    records = batch_of(topic, 3)
    records[1] = batch_of(topic, 1, size=2_000_000)[0]
    outcome = deliver(records)
    assert outcome.status == DeliveryOutcome.Status.PARTIALLY_DELIVERED
    assert outcome.attempts == 1
    # kafka-python says MessageSizeTooLargeError, librdkafka MSG_SIZE_TOO_LARGE.
    assert "size" in outcome.failures["1"].lower()
    (dead_letter,) = DeadLetter.objects.filter(batch_id=outcome.batch_id)
    assert dead_letter.event_ids == [records[1][1]]
    found = {record.event_id for record in read_topic(topic=topic, idle_timeout_s=2)}
    assert found == {records[0][1], records[2][1]}


def test_a_stopping_worker_hands_the_batch_back(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    settings.KAFKA_MAX_BLOCK_MS = 300
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(service.DeliveryInterrupted):
        deliver(batch_of("later", 1), stopping=stopping)
    assert not DeadLetter.objects.exists()


def test_replayed_dead_letters_reach_kafka(kafka_address, capsys, monkeypatch):
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    records = batch_of(topic, 4)
    service.dead_letter_unsettled(
        batch_id=uuid7(),
        records=[BatchRecord(*record) for record in records],
        accepted_at=time.time(),
        settlement=service.Settlement.start(count=len(records)),
        reason="test",
        stopping=threading.Event(),
    )
    # A dead letter from before per-record dead letters, holding several records.
    DeadLetter.objects.create(
        batch_id=uuid7(),
        topic=topic,
        reason="old",
        event_ids=["old-1", "old-2"],
        records=[["old-1", None, "{}"], ["old-2", "k", "{}"]],
    )
    from ingest.pipeline import broker

    published = []

    def deliver_inline(publisher, *, batch_id, records):
        published.append(batch_id)
        deliver(records, batch_id=batch_id)

    monkeypatch.setattr(broker, "_publish_with", deliver_inline)
    call_command("dead_letters", "list", "--topic", topic)
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 5
    assert any(f"\t{records[0][1]}\twaiting\ttest" in line for line in listing)
    assert any("\t2 events\twaiting\told" in line for line in listing)

    first = DeadLetter.objects.filter(topic=topic).order_by("id").first()
    call_command("dead_letters", "replay", "--id", str(first.id))
    assert "enqueued 1 events again" in capsys.readouterr().out
    call_command("dead_letters", "replay", "--topic", topic)
    assert "enqueued 5 events again" in capsys.readouterr().out
    assert len(published) == 2  # one by one, then the rest in one batch
    assert not DeadLetter.objects.filter(topic=topic, replayed_at__isnull=True).exists()
    found = {record.event_id for record in read_topic(topic=topic, idle_timeout_s=2)}
    assert found == {record[1] for record in records} | {"old-1", "old-2"}

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
    assert {(line["source"], line["protocol"]) for line in lines} == {("", "native")}


ENQUEUE_FROM_STDIN = (
    "import json, sys; from ingest.pipeline.broker import enqueue_records; "
    "print(enqueue_records(records=json.load(sys.stdin)))"
)
OUTCOME_TIMEOUT_S = 60
OUTCOME_POLL_S = 0.2


def wait_for_outcome(stack, batch_id: str) -> tuple:
    with psycopg.connect(stack.database.url.replace("postgres://", "postgresql://")) as db:

        def outcome() -> tuple | None:
            row = db.execute(
                "SELECT status, offsets, failures FROM ingest_deliveryoutcome WHERE batch_id = %s",
                (batch_id,),
            ).fetchone()
            db.commit()  # end the snapshot so the next poll sees the worker's commit
            return row

        row = wait_until(
            outcome,
            timeout=OUTCOME_TIMEOUT_S,
            interval=OUTCOME_POLL_S,
            message=f"no outcome of batch {batch_id} in {OUTCOME_TIMEOUT_S}s",
        )
        dead_letters = db.execute(
            "SELECT event_ids, reason FROM ingest_deadletter WHERE batch_id = %s", (batch_id,)
        ).fetchall()
    return row, dead_letters


def test_a_worker_delivers_a_batch_around_a_poison_record_exactly_once(stack_factory):
    stack = stack_factory()
    stack.start_worker(concurrency=2)
    topic = f"poison-{uuid.uuid4().hex[:8]}"
    records = batch_of(topic, 6)
    records[2][2] = "\ud800"  # a lone surrogate: the key cannot encode to UTF-8
    published = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", ENQUEUE_FROM_STDIN],
        cwd=ROOT,
        env=stack.env,
        input=json.dumps(records),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    batch_id = published.stdout.strip().splitlines()[-1]

    (status, offsets, failures), dead_letters = wait_for_outcome(stack, batch_id)
    assert status == "partially_delivered"
    assert list(failures) == ["2"] and offsets[2] is None
    assert [event_ids for event_ids, _ in dead_letters] == [[records[2][1]]]
    assert dead_letters[0][1].startswith("UnicodeEncodeError in the key")
    found = Counter(record.event_id for record in stack.read_topic(topic, idle_timeout_s=2))
    assert found == {record[1]: 1 for index, record in enumerate(records) if index != 2}
