import base64
import gzip
import json

import msgspec
import pytest

from ingest.edge.errors import ApiError
from ingest.edge.protocols import base
from ingest.edge.protocols.segment import messages
from tests.unit.sources import make_source

LIMITS = {"max_id_length": 128, "max_record_bytes": 1_048_576}


def batch(*items, **members) -> bytes:
    return json.dumps({"batch": list(items), **members}).encode()


def refused(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


# Parsing and mapping (pure functions)


def test_a_batch_message_is_kept_byte_for_byte_with_its_id_and_user_key():
    raw = b'{"type": "track",  "event": "Clicked", "messageId": "m1", "userId": "u1", "n": 1e2}'
    parsed = messages.parse_batch(b'{"batch": [' + raw + b"]}", **LIMITS)
    assert parsed.write_key is None
    [event] = parsed.events
    assert (event.event_id, event.key, event.value) == ("m1", "u1", raw.decode())


def test_the_key_falls_back_to_the_anonymous_id_then_none():
    parsed = messages.parse_batch(
        batch(
            {"type": "page", "anonymousId": "a1"},
            {"type": "alias", "userId": "", "anonymousId": "a2"},
            {"type": "identify", "userId": 7},
        ),
        **LIMITS,
    )
    assert [event.key for event in parsed.events] == ["a1", "a2", None]


def test_a_missing_message_id_gets_a_generated_id():
    parsed = messages.parse_batch(batch({"type": "track"}, {"type": "track"}), **LIMITS)
    first, second = (event.event_id for event in parsed.events)
    assert first and second and first != second


def test_the_batch_write_key_is_returned_and_not_stored():
    parsed = messages.parse_batch(batch({"type": "track"}, writeKey="k1"), **LIMITS)
    assert parsed.write_key == "k1"
    assert "k1" not in parsed.events[0].value


def test_the_batch_sent_at_is_added_before_the_message_own_bytes():
    raw = '{"type":"track", "messageId":"m1"}'
    body = '{"batch":[' + raw + '],"sentAt":"2026-12-01T00:00:00Z"}'
    [event] = messages.parse_batch(body.encode(), **LIMITS).events
    assert event.value == '{"sentAt":"2026-12-01T00:00:00Z",' + raw[1:]


def test_a_message_sent_at_wins_over_the_batch_one():
    body = batch({"type": "track", "sentAt": "mine"}, sentAt="batch")
    [event] = messages.parse_batch(body, **LIMITS).events
    assert json.loads(event.value)["sentAt"] == "mine"


def test_batch_context_and_integrations_apply_to_every_message_its_own_members_winning():
    body = batch(
        {"type": "track", "context": {"ip": "1.1.1.1", "locale": "fr"}},
        {"type": "track"},
        context={"ip": "9.9.9.9", "library": {"name": "curl"}},
        integrations={"All": False},
    )
    first, second = (
        json.loads(event.value) for event in messages.parse_batch(body, **LIMITS).events
    )
    assert first["context"] == {"ip": "1.1.1.1", "locale": "fr", "library": {"name": "curl"}}
    assert second["context"] == {"ip": "9.9.9.9", "library": {"name": "curl"}}
    assert first["integrations"] == second["integrations"] == {"All": False}


def test_a_non_object_batch_context_is_refused():
    error = refused(messages.parse_batch, batch({"type": "track"}, context=[1]), **LIMITS)
    assert (error.status, error.code) == (400, "invalid_body")


def test_a_single_call_gets_its_endpoint_type_and_loses_its_write_key():
    body = (
        b'{"writeKey": "k1", "event": "Clicked", "messageId": "m1", "big": 123456789012345678901}'
    )
    parsed = messages.parse_single(body, message_type="track", **LIMITS)
    assert parsed.write_key == "k1"
    [event] = parsed.events
    assert event.event_id == "m1"
    assert msgspec.json.decode(event.value) == {
        "type": "track",
        "event": "Clicked",
        "messageId": "m1",
        "big": 123456789012345678901,
    }
    assert "123456789012345678901" in event.value  # digits kept as sent


def test_a_single_call_without_changes_is_kept_as_sent():
    body = b' {"type": "identify", "userId": "u1", "traits": {"a": [1, 2]}} \n'
    [event] = messages.parse_single(body, message_type="identify", **LIMITS).events
    assert event.value == body.strip().decode()


def test_a_single_call_type_is_added_to_an_empty_object():
    [event] = messages.parse_single(b"{ }", message_type="page", **LIMITS).events
    assert event.value == '{"type":"page" }'
    assert json.loads(event.value) == {"type": "page"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"[]", "invalid_body"),
        (b'{"type": "track", "x": "\\ud800"}', "invalid_event"),
        (b'{"type": "track", "x": NaN}', "invalid_event"),
        (b'{"type": "identify"}', "invalid_event"),
        (b'{"messageId": 5}', "invalid_event"),
        (b'{"messageId": ""}', "invalid_event"),
        (b'{"writeKey": 5}', "invalid_body"),
    ],
)
def test_a_bad_single_call_is_refused(body, code):
    error = refused(messages.parse_single, body, message_type="track", **LIMITS)
    assert (error.status, error.code) == (400, code)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[]", "invalid_body"),
        (b'{"events": []}', "invalid_body"),
        (b'{"batch": {}}', "invalid_body"),
        (b'{"batch": []}', "invalid_body"),
        (b'{"batch": [1]}', "invalid_event"),
        (b'{"batch": [{"event": "no type"}]}', "invalid_event"),
        (b'{"batch": [{"type": "unknown"}]}', "invalid_event"),
        (b'{"batch": [{"type": "track", "p": "\\udc00"}]}', "invalid_event"),
        (b'{"batch": [{"type": "track"}], "context": "\\ud800"}', "invalid_event"),
    ],
)
def test_a_bad_batch_is_refused(body, code):
    error = refused(messages.parse_batch, body, **LIMITS)
    assert (error.status, error.code) == (400, code)


def test_a_message_over_32_kib_is_too_large():
    fits = {"type": "track", "p": "x" * (32 * 1024 - 40)}
    assert len(json.dumps(fits)) <= 32 * 1024
    messages.parse_batch(batch(fits), **LIMITS)
    over = {"type": "track", "p": "x" * (32 * 1024)}
    error = refused(messages.parse_batch, batch(over), **LIMITS)
    assert (error.status, error.code) == (413, "body_too_large")
    error = refused(
        messages.parse_single, json.dumps(over).encode(), message_type="track", **LIMITS
    )
    assert (error.status, error.code) == (413, "body_too_large")


def test_a_batch_over_500_kib_is_too_large():
    items = [{"type": "track", "p": "x" * 20_000} for _ in range(26)]
    error = refused(messages.parse_batch, batch(*items), **LIMITS)
    assert (error.status, error.code) == (413, "body_too_large")


def test_a_batch_of_more_than_2500_messages_is_refused():
    messages.parse_batch(batch(*[{"type": "track"}] * 2500), **LIMITS)
    error = refused(messages.parse_batch, batch(*[{"type": "track"}] * 2501), **LIMITS)
    assert (error.status, error.code) == (413, "too_many_events")


def test_a_message_that_would_not_fit_a_kafka_record_is_refused():
    limits = {**LIMITS, "max_record_bytes": 1_000}
    error = refused(messages.parse_batch, batch({"type": "track", "p": "x" * 600}), **limits)
    assert (error.status, error.code) == (413, "event_too_large")


# The endpoints, through Django's test client


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def send(client, body, *, url="/v1/batch", key=None, **headers):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = basic(key)
    return client.generic("POST", url, body, content_type="application/json", **headers)


def assert_segment_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert body["message"]
    return body


def test_a_batch_is_answered_200_success_once_durable(client, gateway, publisher):
    messages_sent = [
        {"type": "track", "event": "A", "messageId": "m1", "userId": "u1"},
        {"type": "identify", "messageId": "m2", "anonymousId": "a2", "traits": {}},
    ]
    response = send(client, {"batch": messages_sent})
    assert response.status_code == 200
    assert response.json() == {"success": True}
    records = publisher.records
    assert [(r.topic, r.event_id, r.key, r.protocol) for r in records] == [
        ("segment", "m1", "u1", "segment"),
        ("segment", "m2", "a2", "segment"),
    ]
    assert [json.loads(r.value) for r in records] == messages_sent


@pytest.mark.parametrize("message_type", messages.MESSAGE_TYPES)
def test_each_single_call_takes_one_message_of_its_type(client, gateway, publisher, message_type):
    response = send(client, {"messageId": "m1", "userId": "u1"}, url=f"/v1/{message_type}")
    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    [record] = publisher.records
    assert json.loads(record.value) == {"type": message_type, "messageId": "m1", "userId": "u1"}


def test_a_trailing_slash_is_not_found_never_redirected(client, gateway):
    for url in ("/v1/batch/", "/v1/track/"):
        assert send(client, {"batch": []}, url=url).status_code == 404


def test_other_methods_are_405_in_segment_shape(client, gateway):
    response = client.get("/v1/batch")
    assert_segment_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_a_gzip_batch_is_accepted(client, gateway, publisher):
    body = gzip.compress(json.dumps({"batch": [{"type": "track", "messageId": "g1"}]}).encode())
    response = send(client, body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert [record.event_id for record in publisher.records] == ["g1"]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{", "invalid_json"), (b'{"batch": [{"no": "type"}]}', "invalid_event")],
)
def test_bad_input_is_400_in_segment_shape(client, gateway, publisher, body, code):
    assert_segment_error(send(client, body), 400, code)
    assert publisher.records == []


def test_size_limits_are_answered_400_as_segment_does(client, gateway, publisher):
    big = {"type": "track", "p": "x" * 33_000}
    body = assert_segment_error(send(client, {"batch": [big]}), 400, "body_too_large")
    assert body["message"].startswith("Exceed payload limit")
    assert_segment_error(send(client, big, url="/v1/track"), 400, "body_too_large")
    batch_body = {"batch": [{"type": "track", "p": "x" * 30_000}] * 18}
    assert_segment_error(send(client, batch_body), 400, "body_too_large")
    assert publisher.records == []


@pytest.mark.django_db
def test_the_basic_auth_user_name_is_the_write_key(client, gateway, publisher, fresh_keys):
    _, key = make_source(
        name="web", allowed_topics="web-events", protocol_topics={"segment": "web-events"}
    )
    response = send(client, {"batch": [{"type": "track"}]}, key=key)
    assert response.status_code == 200, response.content
    [record] = publisher.records
    assert (record.topic, record.source, record.protocol) == ("web-events", "web", "segment")


@pytest.mark.django_db
def test_the_body_write_key_is_used_without_auth_and_not_stored(
    client, gateway, publisher, fresh_keys
):
    _, key = make_source(name="web")
    for url, body in [
        ("/v1/batch", {"batch": [{"type": "track"}], "writeKey": key}),
        ("/v1/track", {"event": "A", "writeKey": key}),
    ]:
        assert send(client, body, url=url).status_code == 200
    assert [record.source for record in publisher.records] == ["web", "web"]
    assert not any(key in record.value for record in publisher.records)


@pytest.mark.django_db
def test_a_wrong_or_missing_key_is_401_and_a_wrong_header_key_reads_no_body(
    client, gateway, publisher, fresh_keys, unreadable_body
):
    make_source()
    assert_segment_error(send(client, {"batch": [{"type": "track"}]}), 401, "unauthorized")
    body = {"batch": [{"type": "track"}], "writeKey": "wrong"}
    assert_segment_error(send(client, body), 401, "unauthorized")
    response = client.generic(
        "POST",
        "/v1/batch",
        b"{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=basic("wrong"),
        **{"wsgi.input": unreadable_body},
    )
    assert_segment_error(response, 401, "unauthorized")
    malformed = send(client, b"{}", HTTP_AUTHORIZATION="Basic ***")
    assert_segment_error(malformed, 401, "unauthorized")
    assert publisher.records == []


@pytest.mark.django_db
def test_a_source_not_allowed_its_segment_topic_is_403(client, gateway, fresh_keys):
    _, key = make_source(allowed_topics="orders")
    response = send(client, {"batch": [{"type": "track"}]}, key=key)
    assert_segment_error(response, 403, "forbidden_topic")


@pytest.mark.django_db
def test_over_its_rate_limit_a_source_gets_429_with_retry_after(client, gateway, fresh_keys):
    _, key = make_source(max_events_per_s=2)
    assert send(client, {"batch": [{"type": "track"}] * 2}, key=key).status_code == 200
    response = send(client, {"batch": [{"type": "track"}]}, key=key)
    assert_segment_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


def test_an_unavailable_broker_is_503_with_retry_after(client, gateway, publisher):
    publisher.error = ConnectionRefusedError("broker down")
    response = send(client, {"batch": [{"type": "track"}]})
    assert_segment_error(response, 503, "unavailable")
    assert response["Retry-After"]


@pytest.mark.django_db
def test_rejections_are_counted_by_topic_source_and_protocol(
    client, gateway, fresh_keys, monkeypatch
):
    _, key = make_source(name="web")
    counted = []
    monkeypatch.setattr(base.stats, "count_rejected", lambda **labels: counted.append(labels))
    send(client, {"batch": [{"type": "nope"}]}, key=key)
    # Before its writeKey is read, a body's source and topic are unknown: counted without them.
    send(client, {"batch": [{"type": "nope"}], "writeKey": key})
    assert counted == [
        {"topic": "segment", "source": "web", "protocol": "segment", "code": "invalid_event"},
        {"topic": "", "source": "", "protocol": "segment", "code": "invalid_event"},
    ]


@pytest.mark.django_db
def test_the_hot_path_does_no_database_query(client, gateway, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert send(client, {"batch": [{"type": "track"}]}).status_code == 200
        assert send(client, {"event": "A"}, url="/v1/track").status_code == 200


def test_the_endpoints_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"/v1/batch", "/v1/track", "/v1/alias"} <= set(paths)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b'"s"',
        b"null",
        b'{"batch": null}',
        b"[" * 5000 + b"]" * 5000,
        b'{"batch": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"batch": [{"type": ["track"]}]}',
        b'{"batch": [{"type": "track"}], "writeKey": {"a": 1}}',
        b'{"batch": [{"type": "track"}], "context": {"\\udc00": 1}}',
        b'{"type": "track", "a": 1e999}',
    ],
)
@pytest.mark.parametrize("url", ["/v1/batch", "/v1/track"])
def test_odd_input_is_answered_in_segment_shape_never_a_5xx(client, gateway, body, url):
    response = client.generic("POST", url, body, content_type="application/json")
    assert response.status_code < 500, response.content
    # A single call takes any object as its message (its type implied): only 200 is a success.
    assert response.json()["success"] is (response.status_code == 200)


def test_a_message_without_a_batch_context_object_keeps_its_own(client, gateway, publisher):
    body = {"batch": [{"type": "track", "context": 5, "writeKey": "k"}], "context": {"a": 1}}
    assert send(client, body).status_code == 200
    [record] = publisher.records
    assert json.loads(record.value) == {"type": "track", "context": 5}
