"""Both producer backends against a real Tansu: records, keys, headers and offsets."""

import json
import time
import uuid

import pytest
from django.utils.module_loading import import_string

from ingest.control.topics import read_topic
from ingest.delivery import producers
from ingest.delivery.producers import RecordFailure
from ingest.records import BatchRecord

pytestmark = pytest.mark.integration

BACKENDS = sorted(producers.BACKENDS)


@pytest.fixture(params=BACKENDS)
def client(request, settings, kafka_address):
    """Select one backend on the session Tansu; its producer is closed after the test."""
    producers.close_producer(timeout=5)
    settings.KAFKA_CLIENT = request.param
    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_address]
    yield request.param
    producers.close_producer(timeout=5)


def records_for(topic: str, count: int) -> list:
    return [
        BatchRecord(
            topic,
            f"ev-{uuid.uuid4().hex[:8]}-{n}",
            None if n % 4 == 0 else f"user-{n % 3}",
            json.dumps({"n": n}),
            "shop",
            "segment" if n % 2 else "native",
        )
        for n in range(count)
    ]


def test_records_read_back_with_event_id_key_value_at_the_returned_offsets(client, kafka_address):
    topic = f"producer-{client}-{uuid.uuid4().hex[:8]}"
    records = records_for(topic, 50)
    offsets = producers.produce(records=records, timeout=15)
    assert isinstance(producers.get_producer(), import_string(producers.BACKENDS[client]))
    assert len(offsets) == len(records)
    assert not any(isinstance(offset, RecordFailure) for offset in offsets)

    found = {
        record.event_id: record
        for record in read_topic(topic=topic, idle_timeout_s=2, bootstrap_servers=[kafka_address])
    }
    assert set(found) == {record.event_id for record in records}
    for record, (partition, offset) in zip(records, offsets, strict=True):
        read = found[record.event_id]
        assert read.key == record.key
        assert read.value == json.loads(record.value)
        assert (read.partition, read.offset) == (partition, offset)
        assert read.headers == {
            "event-id": record.event_id.encode(),
            "source": b"shop",
            "protocol": record.protocol.encode(),
        }


def test_binary_keys_and_values_are_produced_as_their_raw_bytes(client, kafka_address):
    topic = f"producer-binary-{client}-{uuid.uuid4().hex[:8]}"
    record = BatchRecord(topic, "ev-bin", b"\xff\x00k", b"\x80\x81raw", "", "confluent")
    (offset,) = producers.produce(records=[record], timeout=15)
    assert isinstance(offset, list)
    (read,) = read_topic(topic=topic, idle_timeout_s=2, bootstrap_servers=[kafka_address])
    assert read.raw_value == b"\x80\x81raw"
    assert read.headers["protocol"] == b"confluent"


def test_a_frozen_broker_gives_a_transient_failure_in_time_then_delivery_resumes(
    client, settings, tansu
):
    settings.KAFKA_BOOTSTRAP_SERVERS = [tansu.address]
    topic = f"frozen-{client}-{uuid.uuid4().hex[:8]}"
    producers.produce(records=records_for(topic, 1), timeout=15)  # connected and topic created

    tansu.freeze()
    started = time.monotonic()
    failures = producers.produce(records=records_for(topic, 5), timeout=1.5)
    assert time.monotonic() - started < 3
    assert all(isinstance(failure, RecordFailure) for failure in failures)
    assert all(failure.transient for failure in failures)
    tansu.thaw()

    records = records_for(topic, 5)
    offsets = producers.produce(records=records, timeout=15)
    assert all(isinstance(offset, list) for offset in offsets)
    found = {
        record.event_id
        for record in read_topic(topic=topic, idle_timeout_s=2, bootstrap_servers=[tansu.address])
    }
    assert {record.event_id for record in records} <= found


def test_a_record_larger_than_kafka_takes_fails_permanently(client):
    topic = f"big-{client}-{uuid.uuid4().hex[:8]}"
    big = [BatchRecord(topic, "big-1", None, json.dumps({"pad": "x" * 2_000_000}))]
    (failure,) = producers.produce(records=big, timeout=15)
    assert not failure.transient


def test_poison_records_fail_alone_and_the_others_are_delivered(client, settings, kafka_address):
    settings.KAFKA_MAX_REQUEST_SIZE = 10_000  # the client, not the broker, must refuse the big one
    topic = f"poison-{client}-{uuid.uuid4().hex[:8]}"
    records = records_for(topic, 6)
    records[1] = records[1]._replace(value=json.dumps({"pad": "x" * 20_000}))
    records[3] = records[3]._replace(key="\ud800")
    records.append(BatchRecord("not a topic!", "ev-bad-topic", None, "{}"))
    results = producers.produce(records=records, timeout=15)

    failed = {
        index: result for index, result in enumerate(results) if isinstance(result, RecordFailure)
    }
    assert sorted(failed) == [1, 3, 6]
    assert not any(failure.transient for failure in failed.values())
    assert "size" in failed[1].reason.lower() or "large" in failed[1].reason.lower()
    assert failed[3].reason.startswith("UnicodeEncodeError in the key")
    assert failed[6].reason.startswith("InvalidTopicError")
    found = {
        record.event_id
        for record in read_topic(topic=topic, idle_timeout_s=2, bootstrap_servers=[kafka_address])
    }
    assert found == {records[index].event_id for index in (0, 2, 4, 5)}
    # Refusing a record leaves the producer in place for the next batch.
    assert isinstance(producers.produce(records=records_for(topic, 1), timeout=15)[0], list)
