"""Choosing a producer backend, classifying its errors and replacing a broken one, without a
broker."""

import os
import subprocess
import sys
import time

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from django.core.exceptions import ImproperlyConfigured
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from kafka.partitioner import default

from ingest.delivery import producers
from ingest.delivery.producers import RecordFailure, encode_record
from ingest.delivery.producers.confluent import ConfluentProducer, confluent_failure
from ingest.delivery.producers.kafka_python import (
    KafkaPythonProducer,
    KeyPartitionCache,
    kafka_python_failure,
)
from ingest.records import BatchRecord
from tests.stack import ROOT, free_port


class StubProducer:
    """A Producer chosen by its dotted path: acknowledges every record, or fails them all with
    the failure it is given."""

    def __init__(self, failure: RecordFailure | None = None):
        self.failure = failure
        self.closed_with: float | None = None

    def produce(self, *, records, timeout):
        return [self.failure or [0, offset] for offset, _ in enumerate(records)]

    def close(self, *, timeout):
        self.closed_with = timeout


@pytest.fixture(autouse=True)
def no_producer_left(settings):
    # Depends on `settings` so the producer closes before the settings it was built from go.
    producers.close_producer(timeout=1)
    yield
    producers.close_producer(timeout=1)


def test_a_short_name_chooses_its_backend(settings):
    settings.KAFKA_CLIENT = "kafka-python"
    assert producers.backend() is KafkaPythonProducer
    settings.KAFKA_CLIENT = "confluent"
    assert producers.backend() is ConfluentProducer


def test_a_dotted_path_chooses_a_producer_class(settings):
    settings.KAFKA_CLIENT = f"{__name__}.StubProducer"
    assert producers.produce(records=[BatchRecord("t", "id-1", None, "{}")], timeout=1) == [[0, 0]]
    assert isinstance(producers.get_producer(), StubProducer)


@pytest.mark.parametrize("client", ["librdkafka", "ingest.delivery.producers.NoSuchProducer"])
def test_an_unknown_client_is_a_configuration_error(settings, client):
    settings.KAFKA_CLIENT = client
    with pytest.raises(ImproperlyConfigured, match="KAFKA_CLIENT must be one of"):
        producers.get_producer()


def test_settings_refuse_an_unknown_client_at_startup():
    env = {**os.environ, "KAFKA_CLIENT": "kafka", "DJANGO_SETTINGS_MODULE": "ingestsite.settings"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        "KAFKA_CLIENT must be kafka-python, confluent or the dotted path of a Producer class, "
        "got 'kafka'" in result.stderr
    )


def test_a_failure_that_breaks_the_producer_replaces_it():
    broken = StubProducer(RecordFailure("KafkaTimeoutError: no ack", True, replace_producer=True))
    producers.get_producer.replace(broken)
    (failure,) = producers.produce(records=[BatchRecord("t", "id-1", None, "{}")], timeout=1)
    assert failure.replace_producer
    assert broken.closed_with == 0
    assert producers.get_producer.current() is None


def test_a_failure_that_leaves_the_producer_sound_keeps_it():
    sound = StubProducer(RecordFailure("MessageSizeTooLargeError: too big", False))
    producers.get_producer.replace(sound)
    producers.produce(records=[BatchRecord("t", "id-1", None, "{}")], timeout=1)
    assert producers.get_producer.current() is sound
    assert sound.closed_with is None


def test_close_producer_closes_it_once_with_the_timeout():
    stub = StubProducer()
    producers.get_producer.replace(stub)
    producers.close_producer(timeout=3)
    assert stub.closed_with == 3
    assert producers.get_producer.current() is None
    producers.close_producer(timeout=3)  # nothing left to close


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KafkaTimeoutError("no ack"), True),
        (KafkaConnectionError("refused"), True),
        (MessageSizeTooLargeError("too big"), False),
    ],
)
def test_kafka_python_errors_are_classified_and_replace_the_producer(error, transient):
    failure = kafka_python_failure(error)
    assert failure.transient is transient
    assert failure.replace_producer
    assert type(error).__name__ in failure.reason


def test_a_record_refused_for_its_size_before_sending_leaves_the_producer_in_place():
    failure = kafka_python_failure(MessageSizeTooLargeError("too big"), sent=False)
    assert (failure.transient, failure.replace_producer) == (False, False)
    timeout = kafka_python_failure(KafkaTimeoutError("no metadata"), sent=False)
    assert (timeout.transient, timeout.replace_producer) == (True, True)


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (BatchRecord("t", "id-1", "\ud800", "{}"), "key"),
        (BatchRecord("t", "\udfff", None, "{}"), "id"),
        (BatchRecord("t", "id-1", None, '{"v": "\udfff"}'), "value"),
    ],
)
def test_a_record_that_cannot_encode_fails_permanently_naming_the_field(record, field):
    failure = encode_record(record)
    assert isinstance(failure, RecordFailure)
    assert not failure.transient and not failure.replace_producer
    assert failure.reason.startswith(f"UnicodeEncodeError in the {field}")


@pytest.mark.parametrize("topic", ["", "a b", "x" * 250, "..", "caf\u00e9"])
def test_an_illegal_topic_fails_permanently(topic):
    failure = encode_record(BatchRecord(topic, "id-1", None, "{}"))
    assert isinstance(failure, RecordFailure)
    assert not failure.transient
    assert failure.reason.startswith("InvalidTopicError")


def test_a_good_record_encodes_to_bytes_with_its_id_source_and_protocol_headers():
    record = BatchRecord("t.1", "id-1", "k\u00e9", '{"a":1}', "shop", "segment")
    assert encode_record(record) == (
        "t.1",
        b'{"a":1}',
        "k\u00e9".encode(),
        [("event-id", b"id-1"), ("source", b"shop"), ("protocol", b"segment")],
    )


def test_binary_keys_and_values_are_produced_as_their_own_bytes():
    record = BatchRecord("t.1", "id-1", b"\xff\x00", b"\x80raw", "", "confluent")
    _, value, key, _ = encode_record(record)
    assert (value, key) == (b"\x80raw", b"\xff\x00")


@pytest.mark.parametrize(
    ("code", "fatal", "transient", "replace"),
    [
        (RdKafkaError._MSG_TIMED_OUT, False, True, False),
        (RdKafkaError._ALL_BROKERS_DOWN, False, True, False),
        (RdKafkaError.MSG_SIZE_TOO_LARGE, False, False, False),
        (RdKafkaError.TOPIC_AUTHORIZATION_FAILED, False, False, False),
        (RdKafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, True, True, True),
    ],
)
def test_confluent_errors_are_classified(code, fatal, transient, replace):
    failure = confluent_failure(RdKafkaError(code, fatal=fatal))
    assert (failure.transient, failure.replace_producer) == (transient, replace)


@pytest.mark.parametrize("client", sorted(producers.BACKENDS))
def test_an_unreachable_broker_fails_transiently_within_the_timeout(client, settings):
    settings.KAFKA_CLIENT = client
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    settings.KAFKA_MAX_BLOCK_MS = 500
    records = [
        BatchRecord("t", "id-1", None, "{}"),
        BatchRecord("t", "id-2", "\ud800", "{}"),
        BatchRecord("t", "id-3", None, "{}"),
    ]
    started = time.monotonic()
    first, poison, last = producers.produce(records=records, timeout=1.0)
    assert time.monotonic() - started < 3
    assert first.transient and last.transient
    assert not poison.transient  # the poison record fails on its own terms, not the broker's


class FakeCluster:
    def __init__(self, partitions: int):
        self.partitions = set(range(partitions))

    def topics(self):
        return {"clicks"}

    def partitions_for_topic(self, topic):
        return self.partitions

    def available_partitions_for_topic(self, topic):
        return self.partitions


def test_key_partition_cache_agrees_with_the_default_and_hashes_each_key_once(monkeypatch):
    hashed = []
    murmur2 = default.murmur2

    def counting_murmur2(data):
        hashed.append(data)
        return murmur2(data)

    monkeypatch.setattr(default, "murmur2", counting_murmur2)
    cached, reference = KeyPartitionCache(), default.DefaultPartitioner()
    cluster = FakeCluster(6)
    keys = [f"user-{n % 50}".encode() for n in range(500)]
    for key in keys:
        expected = reference.partition("clicks", None, key, None, None, cluster)
        assert cached.partition("clicks", None, key, None, None, cluster) == expected
    assert len(hashed) == 500 + 50  # the reference hashes every time, the cache once per key

    cluster.partitions = set(range(12))  # partitions were added: keys move as Kafka moves them
    for key in keys[:50]:
        expected = reference.partition("clicks", None, key, None, None, cluster)
        assert cached.partition("clicks", None, key, None, None, cluster) == expected
    assert cached.partition("clicks", None, None, None, None, cluster) in cluster.partitions
