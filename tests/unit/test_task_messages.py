"""The task messages' format: MessagePack as msgspec encodes it, JSON when it must be."""

from kombu.serialization import loads

from celery_app.serialization import MSGPACK_CONTENT_TYPE, TASK_SERIALIZERS, dumps_body
from ingest.delivery.tasks import batch_records
from ingest.records import BatchRecord

ACCEPT = ["application/x-msgpack", "application/json"]


def body_of(records: list) -> tuple:
    return ((), {"batch_id": "b1", "records": records, "accepted_at": 1.5}, {"chain": None})


def decoded(content_type: str, content_encoding: str, data: bytes) -> list[BatchRecord]:
    return batch_records(loads(data, content_type, content_encoding, accept=ACCEPT)[1]["records"])


def test_a_batch_is_messagepack_with_its_values_unescaped_and_bytes_kept():
    records = [
        ("t", "ev-1", "user-1", '{"n":"\u00e9\\""}', "web", "native"),
        BatchRecord("t", "ev-2", b"\x00k", b"\x00\xffbinary", "kafka-team", "confluent"),
    ]
    content_type, content_encoding, data = dumps_body(body_of(records), serializer="msgpack")

    assert content_type == MSGPACK_CONTENT_TYPE
    assert records[0][3].encode() in data
    assert decoded(content_type, content_encoding, data) == records


def test_a_str_messagepack_cannot_hold_sends_the_batch_as_json():
    records = [("t", "ev-1", "\ud800", "{}", "", "native"), ("t", "ev-2", None, b"\xff", "", "")]
    message = dumps_body(body_of(records), serializer="msgpack")

    assert message[0] == "application/json"
    assert decoded(*message) == records


def test_json_batches_of_earlier_versions_still_decode():
    records = [["t", "ev-1", None, "{}"]]  # before sources and protocols were carried
    for serializer in TASK_SERIALIZERS:
        message = dumps_body(body_of(records), serializer=serializer)
        assert decoded(*message) == [BatchRecord("t", "ev-1", None, "{}")]
