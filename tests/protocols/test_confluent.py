"""Confluent REST Proxy v2 and v3 against serve.py in production mode, from the published API
specification (no maintained client exists): content types, offsets per record, error codes,
and v3's streaming mode over a real chunked request."""

import base64
import http.client
import json
import uuid
from dataclasses import replace

import pytest

from ingest.ids import uuid7_unix_seconds
from tests.protocols.conftest import SdkSource, create_source
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
V2_ANSWER = "application/vnd.kafka.v2+json"
CLUSTER = "ingest-gateway"
NO_LOSS_RECORDS = 2_000
NO_LOSS_PER_REQUEST = 500
TOPIC_TIMEOUT_S = 20
HTTP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def sources(sdk_stack) -> tuple[SdkSource, SdkSource]:
    """One source that may write every topic, one only its own, made once for the module."""
    name = f"kafka-team-{uuid.uuid4().hex[:8]}"
    key = sdk_stack.run_manage("create_source", name, "--topics", "*").stdout.strip()
    anywhere = SdkSource(name=name, key=key, topic="")
    return anywhere, create_source(sdk_stack, protocol_topics={})


@pytest.fixture
def source(sources) -> SdkSource:
    """The every-topic source, with a fresh topic of the test's own."""
    anywhere, _ = sources
    return replace(anywhere, topic=f"confluent-{uuid.uuid4().hex[:10]}")


def call(stack, method, path, *, body=None, headers=None):
    """Send one request; return its status, headers and raw body."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def produce_v2(stack, source, records, *, content_type=JSON_V2, topic=None, auth=None):
    body = json.dumps({"records": records}).encode()
    headers = {"Content-Type": content_type, **(auth or bearer(source.key))}
    return call(stack, "POST", f"/topics/{topic or source.topic}", body=body, headers=headers)


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def concatenated(raw: bytes) -> list[dict]:
    decoder, text, position, found = json.JSONDecoder(), raw.decode(), 0, []
    while position < len(text):
        report, position = decoder.raw_decode(text, position)
        found.append(report)
    return found


def topic_records(stack, topic: str, count: int) -> list:
    """Read the topic until it holds `count` records."""
    return wait_until(
        lambda: (
            (records := stack.read_topic(topic, idle_timeout_s=1.0))
            and len(records) >= count
            and records
        ),
        timeout=TOPIC_TIMEOUT_S,
        message=f"{topic} did not reach {count} records",
    )


def by_position(records) -> dict:
    return {(record.partition, record.offset): record for record in records}


def assert_origin(record, source) -> None:
    assert record.headers["source"] == source.name.encode()
    assert record.headers["protocol"] == b"confluent"
    assert uuid7_unix_seconds(record.event_id) is not None  # a UUIDv7 per record


def test_v2_json_answers_each_records_offset_once_in_kafka(sdk_stack, source):
    sent = [{"key": "u1", "value": {"n": 1, "page": "/a"}}, {"value": [1, "two", None]}]
    status, headers, raw = produce_v2(sdk_stack, source, sent)
    assert status == 200, raw
    assert headers["Content-Type"] == V2_ANSWER
    answer = json.loads(raw)
    assert answer["key_schema_id"] is None and answer["value_schema_id"] is None
    offsets = answer["offsets"]
    assert [entry["error_code"] for entry in offsets] == [None, None]
    records = by_position(topic_records(sdk_stack, source.topic, 2))
    assert len(records) == 2
    for entry, record in zip(offsets, sent, strict=True):
        produced = records[(entry["partition"], entry["offset"])]
        assert json.loads(produced.raw_value) == record["value"]
        assert_origin(produced, source)
    first = records[(offsets[0]["partition"], offsets[0]["offset"])]
    assert first.key == '"u1"'  # the key's JSON text, as the json format produces it


def test_v2_binary_values_are_produced_as_raw_bytes(sdk_stack, source):
    value, key = b"\x00\xff\xfe not utf-8", b"k1"
    records = [{"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}]
    status, _, raw = produce_v2(sdk_stack, source, records, content_type=BINARY_V2)
    assert status == 200, raw
    (entry,) = json.loads(raw)["offsets"]
    (record,) = topic_records(sdk_stack, source.topic, 1)
    assert (record.partition, record.offset) == (entry["partition"], entry["offset"])
    assert record.raw_value == value
    assert record.key == "k1"


def test_v2_no_loss_every_record_once_at_its_offset(sdk_stack, source):
    answers = []
    for start in range(0, NO_LOSS_RECORDS, NO_LOSS_PER_REQUEST):
        records = [{"value": {"n": n}} for n in range(start, start + NO_LOSS_PER_REQUEST)]
        status, _, raw = produce_v2(sdk_stack, source, records)
        assert status == 200, raw
        answers.extend(json.loads(raw)["offsets"])
    assert all(entry["error_code"] is None for entry in answers)
    records = topic_records(sdk_stack, source.topic, NO_LOSS_RECORDS)
    assert len(records) == NO_LOSS_RECORDS
    assert len({record.event_id for record in records}) == NO_LOSS_RECORDS
    positions = by_position(records)
    for n, entry in enumerate(answers):
        assert positions[(entry["partition"], entry["offset"])].value == {"n": n}


@pytest.mark.parametrize(
    "auth",
    [
        lambda key: {"X-Api-Key": key},
        lambda key: basic(key, ""),
        lambda key: basic("my-api-key-id", key),
    ],
)
def test_v2_accepts_the_key_as_header_or_basic_auth(sdk_stack, source, auth):
    status, _, raw = produce_v2(sdk_stack, source, [{"value": 1}], auth=auth(source.key))
    assert status == 200, raw


def test_v2_a_topic_the_source_may_not_write_is_40301(sdk_stack, sources):
    _, own_topic_only = sources
    status, headers, raw = produce_v2(
        sdk_stack, own_topic_only, [{"value": 1}], topic=f"other-{uuid.uuid4().hex[:8]}"
    )
    assert (status, json.loads(raw)["error_code"]) == (403, 40301)
    assert headers["Content-Type"] == V2_ANSWER


@pytest.mark.parametrize(
    "case, status, error_code",
    [
        ("wrong key", 401, 40101),
        ("invalid topic", 404, 40401),
        ("avro", 415, 415),
        ("partition", 422, 422),
        ("bad base64", 422, 42203),
        ("not json", 400, 400),
    ],
)
def test_v2_errors_in_its_shape(sdk_stack, source, case, status, error_code):
    records, options = [{"value": 1}], {}
    if case == "wrong key":
        options["auth"] = bearer("wrong")
    elif case == "invalid topic":
        options["topic"] = "-not-a-topic"
    elif case == "avro":
        options["content_type"] = "application/vnd.kafka.avro.v2+json"
    elif case == "partition":
        records = [{"value": 1, "partition": 0}]
    elif case == "bad base64":
        records, options["content_type"] = [{"value": "%%%"}], BINARY_V2
    if case == "not json":
        body, headers = b'{"records": [', {"Content-Type": JSON_V2, **bearer(source.key)}
        got, answer_headers, raw = call(
            sdk_stack, "POST", f"/topics/{source.topic}", body=body, headers=headers
        )
    else:
        got, answer_headers, raw = produce_v2(sdk_stack, source, records, **options)
    assert got == status, raw
    assert answer_headers["Content-Type"] == V2_ANSWER
    answer = json.loads(raw)
    assert answer["error_code"] == error_code
    assert answer["message"]
    assert sdk_stack.read_topic(source.topic, idle_timeout_s=0.5) == []


def v3_path(source, cluster=CLUSTER) -> str:
    return f"/v3/clusters/{cluster}/topics/{source.topic}/records"


def test_v3_one_record_one_report(sdk_stack, source):
    record = {"key": {"type": "STRING", "data": "u1"}, "value": {"type": "JSON", "data": {"a": 1}}}
    headers = {"Content-Type": "application/json", **bearer(source.key)}
    status, answer_headers, raw = call(
        sdk_stack, "POST", v3_path(source), body=json.dumps(record).encode(), headers=headers
    )
    assert status == 200, raw
    assert answer_headers["Content-Type"] == "application/json"
    report = json.loads(raw)
    assert report["error_code"] == 200
    assert (report["cluster_id"], report["topic_name"]) == (CLUSTER, source.topic)
    assert report["key"] == {"type": "STRING", "size": 2}
    assert report["value"] == {"type": "JSON", "size": len(b'{"a": 1}')}
    (produced,) = topic_records(sdk_stack, source.topic, 1)
    assert (produced.partition, produced.offset) == (report["partition_id"], report["offset"])
    assert (produced.key, produced.raw_value) == ("u1", b'{"a": 1}')
    assert_origin(produced, source)


def test_v3_streaming_over_a_chunked_request_reports_each_record_in_order(sdk_stack, source):
    records = [{"value": {"type": "JSON", "data": {"n": n}}} for n in range(5)]
    records[2] = {"value": {"type": "JSON", "data": 2}, "partition_id": 0}  # refused alone
    stream = b"\n".join(json.dumps(record).encode() for record in records)
    # Chunks that cut records in the middle: the records are found in the reassembled stream.
    chunks = [stream[i : i + 17] for i in range(0, len(stream), 17)]
    connection = http.client.HTTPConnection("127.0.0.1", sdk_stack.port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(
            "POST",
            v3_path(source),
            body=iter(chunks),
            headers={"Content-Type": "application/json", **bearer(source.key)},
            encode_chunked=True,
        )
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    assert status == 200, raw
    reports = concatenated(raw)
    assert [report["error_code"] for report in reports] == [200, 200, 400, 200, 200]
    assert "partition" in reports[2]["message"]
    produced = by_position(topic_records(sdk_stack, source.topic, 4))
    assert len(produced) == 4
    for n in (0, 1, 3, 4):
        report = reports[n]
        assert produced[(report["partition_id"], report["offset"])].value == {"n": n}


def test_v3_cluster_listing_and_unknown_cluster(sdk_stack, source):
    status, _, raw = call(sdk_stack, "GET", "/v3/clusters", headers=bearer(source.key))
    assert status == 200, raw
    (cluster,) = json.loads(raw)["data"]
    assert cluster["cluster_id"] == CLUSTER
    status, _, raw = call(sdk_stack, "GET", f"/v3/clusters/{CLUSTER}", headers=bearer(source.key))
    assert (status, json.loads(raw)["cluster_id"]) == (200, CLUSTER)
    headers = {"Content-Type": "application/json", **bearer(source.key)}
    body = json.dumps({"value": {"type": "JSON", "data": 1}}).encode()
    status, _, raw = call(sdk_stack, "POST", v3_path(source, "nope"), body=body, headers=headers)
    assert (status, json.loads(raw)["error_code"]) == (404, 404)


def test_v3_wrong_key_is_40101(sdk_stack, source):
    headers = {"Content-Type": "application/json", **bearer("wrong")}
    body = json.dumps({"value": {"type": "JSON", "data": 1}}).encode()
    status, _, raw = call(sdk_stack, "POST", v3_path(source), body=body, headers=headers)
    assert (status, json.loads(raw)["error_code"]) == (401, 40101)
