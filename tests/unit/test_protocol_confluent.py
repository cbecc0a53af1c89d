"""Confluent REST Proxy v2 and v3 through the Django test client, over a recording broker."""

import base64
import gzip
import io
import json

import pytest

from ingest.control import stats
from ingest.edge import openapi
from ingest.models import DeliveryOutcome
from tests.unit.sources import make_source

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
V2_URL = "/topics/clicks"
V3_URL = "/v3/clusters/ingest-gateway/topics/clicks/records"
CHUNKED = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"}


def post(client, body, *, url=V2_URL, content_type=JSON_V2, **headers):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return client.generic("POST", url, body, content_type=content_type, **headers)


def post_v3(client, body, **headers):
    return post(client, body, url=V3_URL, content_type="application/json", **headers)


def post_chunked(client, body: bytes):
    return post_v3(client, body, **CHUNKED, **{"wsgi.input": io.BytesIO(body)})


def assert_v2_error(response, status, error_code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/vnd.kafka.v2+json"
    body = response.json()
    assert body["error_code"] == error_code
    assert body["message"]
    return body


def assert_v3_error(response, status, error_code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error_code"] == error_code, body
    assert body["message"]
    return body


def reports(response) -> list[dict]:
    """Split a v3 answer's concatenated JSON reports."""
    decoder, text, position, found = json.JSONDecoder(), response.content.decode(), 0, []
    while position < len(text):
        report, position = decoder.raw_decode(text, position)
        found.append(report)
    return found


@pytest.fixture
def delivered(gateway, publisher, monkeypatch):
    """Kafka acknowledges every batch: partition 2, offsets from 40; `dead` indexes fail."""
    dead = set()

    def wait(batch_id, *, timeout):
        batch = next(batch for batch in publisher.batches if batch.batch_id == batch_id)
        offsets = [None if i in dead else [2, 40 + i] for i in range(len(batch.records))]
        failures = {str(i): "RecordTooLargeError" for i in dead}
        return DeliveryOutcome(
            batch_id=batch_id, status="delivered", offsets=offsets, failures=failures
        )

    monkeypatch.setattr(gateway.outcomes, "wait", wait)
    return dead


# --- v2 -------------------------------------------------------------------------------------


def test_v2_json_records_are_produced_as_their_json_text(client, delivered, publisher):
    body = b'{"records": [{"key": "u1", "value": {"a": 1,  "b": [true]}}, {"value": 7}]}'
    response = post(client, body)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/vnd.kafka.v2+json"
    assert response.json() == {
        "offsets": [
            {"partition": 2, "offset": 40, "error_code": None, "error": None},
            {"partition": 2, "offset": 41, "error_code": None, "error": None},
        ],
        "key_schema_id": None,
        "value_schema_id": None,
    }
    first, second = publisher.records
    assert (first.topic, first.key, first.value) == ("clicks", '"u1"', '{"a": 1,  "b": [true]}')
    assert (second.key, second.value) == (None, "7")
    assert first.protocol == second.protocol == "confluent"
    assert first.event_id != second.event_id  # a UUIDv7 each: the protocol has no id


def test_v2_binary_records_are_produced_as_their_bytes(client, delivered, publisher):
    key, value = b"\x00k", b"\xff\xfe raw"
    records = [{"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}]
    response = post(client, {"records": records}, content_type=BINARY_V2)
    assert response.status_code == 200, response.content
    (record,) = publisher.records
    assert (record.key, record.value) == (key, value)


def test_v2_gzip_body(client, delivered, publisher):
    body = gzip.compress(b'{"records": [{"value": "x"}]}')
    response = post(client, body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200, response.content
    assert publisher.records[0].value == '"x"'


def test_v2_dead_lettered_record_has_its_error_in_its_entry(client, delivered):
    delivered.add(1)
    response = post(client, {"records": [{"value": 1}, {"value": 2}]})
    assert response.status_code == 200
    ok, dead = response.json()["offsets"]
    assert ok["error_code"] is None and ok["offset"] == 40
    assert dead["error_code"] == 50002
    assert dead["partition"] is None and dead["offset"] is None
    assert "RecordTooLargeError" in dead["error"]


def test_v2_kafka_ack_timeout_says_durable_and_not_to_resend(client, gateway, publisher):
    response = post(client, {"records": [{"value": 1}, {"value": 2}]})
    assert response.status_code == 200
    for entry in response.json()["offsets"]:
        assert entry["error_code"] is None
        assert entry["offset"] is None
        assert "durable" in entry["error"] and "do not send it again" in entry["error"]
    assert len(publisher.records) == 2


@pytest.mark.parametrize(
    "body, status, error_code, fragment",
    [
        (b'{"records": [', 400, 400, "not valid JSON"),
        (b'{"records": [{"value": NaN}]}', 400, 400, "not valid JSON"),
        (b"[]", 422, 422, '{"records"'),
        (b"{}", 422, 422, '"records"'),
        (b'{"records": []}', 422, 422, "may not be empty"),
        (b'{"records": [1]}', 422, 422, "record 0 is not an object"),
        (b'{"records": [{"value": 1, "partition": 0}]}', 422, 422, "cannot choose a partition"),
        (b'{"records": [{"key": "k"}]}', 422, 422, "tombstones"),
        (b'{"records": [{"value": null}]}', 422, 422, "tombstones"),
        (b'{"records": [{"value": 1, "topic": "x"}]}', 422, 422, "unknown field(s) topic"),
        (b'{"records": [{"value": 1e999}]}', 422, 42203, "not strict JSON"),
        (b'{"records": [{"value": "\xed\xa0\x80"}]}', 422, 42203, "not strict JSON"),
    ],
)
def test_v2_invalid_records_refuse_the_request(
    client, gateway, publisher, body, status, error_code, fragment
):
    message = assert_v2_error(post(client, body), status, error_code)["message"]
    assert fragment in message
    assert publisher.records == []


@pytest.mark.parametrize(
    "value, fragment", [("not base64!", "not valid base64"), (12, "must be a BINARY string")]
)
def test_v2_binary_values_must_be_base64_strings(client, gateway, publisher, value, fragment):
    response = post(client, {"records": [{"value": value}]}, content_type=BINARY_V2)
    assert fragment in assert_v2_error(response, 422, 42203)["message"]
    assert publisher.records == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/vnd.kafka.avro.v2+json", "application/vnd.kafka.v2+json"],
)
def test_v2_other_content_types_are_415(client, gateway, content_type):
    response = post(client, {"records": [{"value": 1}]}, content_type=content_type)
    assert_v2_error(response, 415, 415)


def test_v2_unknown_topic_is_40401(client, gateway, settings):
    settings.KAFKA_TOPIC_ALLOWLIST = ["views"]
    assert_v2_error(post(client, {"records": [{"value": 1}]}), 404, 40401)
    assert_v2_error(post(client, {"records": [{"value": 1}]}, url="/topics/-bad"), 404, 40401)


def test_v2_wrong_method_is_405_in_its_shape(client, gateway):
    response = client.get(V2_URL)
    assert_v2_error(response, 405, 405)
    assert response["Allow"] == "POST"


def test_v2_too_many_records_and_a_record_too_large_are_413(client, gateway, settings):
    settings.INGEST_MAX_EVENTS_PER_REQUEST = 2
    assert_v2_error(post(client, {"records": [{"value": 1}] * 3}), 413, 413)
    settings.KAFKA_MAX_REQUEST_SIZE = 1_000
    assert_v2_error(post(client, {"records": [{"value": "x" * 1_000}]}), 413, 413)


def test_v2_full_batcher_is_503_50003_with_retry_after(client, gateway, publisher):
    publisher.gate.clear()
    try:
        fill = b"[{}" + b",{}" * 49 + b"]"
        client.generic("POST", "/api/v1/events/c?ack=none", fill, content_type="application/json")
        response = post(client, {"records": [{"value": 1}]})
        assert_v2_error(response, 503, 50003)
        assert response["Retry-After"] == "1"
    finally:
        publisher.gate.set()


# --- keys -----------------------------------------------------------------------------------


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "credentials",
    [
        lambda key: {"HTTP_AUTHORIZATION": f"Bearer {key}"},
        lambda key: {"HTTP_X_API_KEY": key},
        lambda key: basic(key, ""),
        lambda key: basic("api-key-id", key),
        lambda key: basic(key, "anything"),
    ],
)
def test_a_key_in_any_accepted_place_names_the_source(
    client, delivered, publisher, fresh_keys, credentials
):
    _, key = make_source(name="kafka-team")
    response = post(client, {"records": [{"value": 1}]}, **credentials(key))
    assert response.status_code == 200, response.content
    assert publisher.records[0].source == "kafka-team"


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, {"HTTP_X_API_KEY": "wrong"}, basic("wrong", "wrong")])
def test_a_missing_or_wrong_key_is_40101(client, gateway, fresh_keys, headers):
    make_source()
    assert_v2_error(post(client, {"records": [{"value": 1}]}, **headers), 401, 40101)
    assert_v3_error(post_v3(client, {"value": {"type": "JSON", "data": 1}}, **headers), 401, 40101)
    assert_v3_error(client.get("/v3/clusters", **headers), 401, 40101)


@pytest.mark.django_db
def test_a_topic_the_source_may_not_write_is_40301(client, gateway, fresh_keys):
    _, key = make_source(allowed_topics="views")
    response = post(client, {"records": [{"value": 1}]}, HTTP_X_API_KEY=key)
    assert_v2_error(response, 403, 40301)


@pytest.mark.django_db
def test_a_source_over_its_rate_limit_is_429_with_retry_after(client, delivered, fresh_keys):
    _, key = make_source(max_events_per_s=1)
    statuses = [post(client, {"records": [{"value": 1}]}, HTTP_X_API_KEY=key) for _ in range(4)]
    refused = [response for response in statuses if response.status_code == 429]
    assert refused, [response.status_code for response in statuses]
    assert_v2_error(refused[0], 429, 429)
    assert refused[0]["Retry-After"]


@pytest.mark.django_db
def test_producing_does_no_database_query(client, delivered, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert post(client, {"records": [{"value": 1}]}).status_code == 200
        assert post_v3(client, {"value": {"type": "JSON", "data": 1}}).status_code == 200


# --- v3 -------------------------------------------------------------------------------------


def test_v3_one_record_gets_one_report(client, delivered, publisher):
    record = {"key": {"type": "STRING", "data": "u1"}, "value": {"type": "JSON", "data": [1, 2]}}
    response = post_v3(client, record)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error_code": 200,
        "cluster_id": "ingest-gateway",
        "topic_name": "clicks",
        "partition_id": 2,
        "offset": 40,
        "timestamp": None,
        "key": {"type": "STRING", "size": 2},
        "value": {"type": "JSON", "size": 6},
    }
    (produced,) = publisher.records
    assert (produced.key, produced.value, produced.protocol) == ("u1", "[1, 2]", "confluent")


def test_v3_binary_data_is_produced_as_its_bytes(client, delivered, publisher):
    data = base64.b64encode(b"\x00\x01").decode()
    response = post_v3(client, {"value": {"type": "BINARY", "data": data}})
    assert response.json()["value"] == {"type": "BINARY", "size": 2}
    assert response.json()["key"] is None
    assert publisher.records[0].value == b"\x00\x01"
    assert publisher.records[0].key is None


def test_v3_concatenated_records_get_a_report_each_in_order(client, delivered, publisher):
    body = (
        b'{"value": {"type": "JSON", "data": "a"}}\n'
        b'{"value": {"type": "AVRO", "data": "b"}}'
        b'{"value": {"type": "JSON", "data": "c"}, "headers": []}'
    )
    first, refused, third = reports(post_chunked(client, body))
    assert (first["error_code"], first["offset"]) == (200, 40)
    assert refused["error_code"] == 400
    assert "type must be one of BINARY, JSON, STRING" in refused["message"]
    assert (third["error_code"], third["offset"]) == (200, 41)
    assert [record.value for record in publisher.records] == ['"a"', '"c"']


def test_v3_refused_records_of_a_stream_count_as_rejected(client, delivered, monkeypatch):
    counted = []
    monkeypatch.setattr(stats, "count_rejected", lambda **labels: counted.append(labels))
    body = b'{"value": {"type": "AVRO", "data": 1}} {"value": {"type": "JSON", "data": 2}}'
    assert [report["error_code"] for report in reports(post_chunked(client, body))] == [400, 200]
    assert counted == [
        {"topic": "clicks", "source": "", "protocol": "confluent", "code": "invalid_record"}
    ]


def test_v3_dead_lettered_and_pending_records_are_reported(client, delivered, gateway):
    delivered.add(0)
    body = b'{"value": {"type": "JSON", "data": 1}} {"value": {"type": "JSON", "data": 2}}'
    dead, ok = reports(post_chunked(client, body))
    assert dead["error_code"] == 50002 and "RecordTooLargeError" in dead["message"]
    assert ok["error_code"] == 200 and ok["offset"] == 41


def test_v3_kafka_ack_timeout_reports_durable_without_offset(client, gateway, publisher):
    report = post_v3(client, {"value": {"type": "JSON", "data": 1}}).json()
    assert report["error_code"] == 200
    assert report["offset"] is None and report["partition_id"] is None
    assert "durable" in report["message"]
    assert len(publisher.records) == 1


@pytest.mark.parametrize(
    "record, fragment",
    [
        ({"value": {"type": "JSON", "data": 1}, "partition_id": 0}, "cannot choose a partition"),
        ({"value": {"type": "JSON", "data": 1}, "timestamp": "2026-12-01T00:00:00Z"}, "timestamp"),
        ({"value": {"type": "JSON", "data": 1}, "headers": [{"name": "h"}]}, "headers"),
        ({"value": {"type": "AVRO", "data": 1, "schema_id": 3}}, "Schema Registry"),
        ({"value": {"data": 1}}, "type must be one of"),
        ({"value": {"type": "JSON"}}, "value.data is required"),
        ({"key": {"type": "JSON", "data": 1}}, "value.data is required"),
        ({"value": {"type": "BINARY", "data": "%%%"}}, "not valid base64"),
        ({"value": {"type": "STRING", "data": 5}}, "must be a STRING string"),
        ({"value": {"type": "JSON", "data": 1}, "extra": 1}, "unknown field(s) extra"),
        ([1], "must be a JSON object"),
    ],
)
def test_v3_one_plain_invalid_record_is_a_400(client, gateway, publisher, record, fragment):
    body = assert_v3_error(post_v3(client, record), 400, 400)
    assert fragment in body["message"]
    assert publisher.records == []


@pytest.mark.parametrize("body", [b"  ", b'{"value": ', b"\xff", b'{"value": 1} ]'])
def test_v3_a_body_that_is_not_json_objects_is_400(client, gateway, body):
    assert_v3_error(post_v3(client, body), 400, 400)


def test_v3_a_lenient_only_record_is_refused_alone(client, delivered, publisher):
    body = b'{"value": {"type": "JSON", "data": NaN}} {"value": {"type": "JSON", "data": 2}}'
    refused, ok = reports(post_chunked(client, body))
    assert refused["error_code"] == 400 and "strict JSON" in refused["message"]
    assert ok["error_code"] == 200


def test_v3_unknown_cluster_and_topic_are_404(client, gateway, settings):
    record = {"value": {"type": "JSON", "data": 1}}
    url = "/v3/clusters/other/topics/clicks/records"
    response = post(client, record, url=url, content_type="application/json")
    assert "other" in assert_v3_error(response, 404, 404)["message"]
    settings.KAFKA_TOPIC_ALLOWLIST = ["views"]
    assert_v3_error(post_v3(client, record), 404, 40403)


def test_v3_other_content_types_are_415(client, gateway):
    response = post(client, b"{}", url=V3_URL, content_type="text/plain")
    assert_v3_error(response, 415, 415)


def test_v3_too_many_records_is_413(client, gateway, settings):
    settings.INGEST_MAX_EVENTS_PER_REQUEST = 2
    body = b'{"value": {"type": "JSON", "data": 1}}' * 3
    assert_v3_error(post_v3(client, body), 413, 413)


def test_v3_unavailable_broker_is_503_50003_with_retry_after(client, gateway, publisher):
    publisher.error = ConnectionRefusedError("broker down")
    response = post_v3(client, {"value": {"type": "JSON", "data": 1}})
    assert_v3_error(response, 503, 50003)
    assert response["Retry-After"]


def test_v3_lists_its_one_cluster(client, settings):
    settings.KAFKA_CLUSTER_ID = "lkc-test"
    listing = client.get("/v3/clusters")
    assert listing.status_code == 200
    assert listing["Content-Type"] == "application/json"
    body = listing.json()
    assert body["kind"] == "KafkaClusterList"
    (cluster,) = body["data"]
    assert cluster["cluster_id"] == "lkc-test"
    assert cluster["metadata"]["self"] == "http://testserver/v3/clusters/lkc-test"
    assert client.get("/v3/clusters/lkc-test").json() == cluster
    assert_v3_error(client.get("/v3/clusters/other"), 404, 404)


def test_openapi_describes_every_endpoint():
    paths = openapi.document()["paths"]
    for path in (
        "/topics/{topic}",
        "/v3/clusters",
        "/v3/clusters/{cluster_id}",
        "/v3/clusters/{cluster_id}/topics/{topic}/records",
    ):
        assert path in paths


@pytest.mark.parametrize(
    "url, content_type, settings_changes, status",
    [
        (V2_URL, JSON_V2, {"INGEST_REQUIRE_API_KEYS": True}, 401),
        (V2_URL, JSON_V2, {"KAFKA_TOPIC_ALLOWLIST": ["views"]}, 404),
        (V2_URL, "application/json", {}, 415),
        (V3_URL, "text/plain", {}, 415),
        ("/v3/clusters/other/topics/clicks/records", "application/json", {}, 404),
    ],
)
def test_requests_refused_by_their_headers_never_read_the_body(
    client, gateway, settings, unreadable_body, url, content_type, settings_changes, status
):
    for name, value in settings_changes.items():
        setattr(settings, name, value)
    response = post(
        client, b"{}", url=url, content_type=content_type, **{"wsgi.input": unreadable_body}
    )
    assert response.status_code == status, response.content
