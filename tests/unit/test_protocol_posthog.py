import base64
import gzip
import json
import threading
from urllib.parse import urlencode

import pytest

from ingest.edge.errors import ApiError
from ingest.edge.protocols.posthog.payloads import Limits, read_capture
from tests.unit.sources import make_source
from tests.waiting import wait_until

LIMITS = Limits(
    max_events=10, max_id_length=128, max_record_bytes=4096, max_decompressed_bytes=100_000
)
UUID_A = "0190a6b4-5b7e-7c3e-8f00-000000000001"
UUID_B = "0190a6b4-5b7e-7c3e-8f00-000000000002"


def event(uuid=UUID_A, **fields):
    return {"event": "clicked", "distinct_id": "user-1", "uuid": uuid, **fields}


def read(body, *, content_type="application/json", compression="", limits=LIMITS):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return read_capture(body, content_type=content_type, compression=compression, limits=limits)


def refused(body, status, code, **options):
    with pytest.raises(ApiError) as raised:
        read(body, **options)
    assert (raised.value.status, raised.value.code) == (status, code), raised.value.message
    return raised.value


def test_a_batch_keeps_each_event_as_sent_keyed_by_distinct_id():
    sent_first = f'{{"event":"a", "distinct_id":"u1", "uuid":"{UUID_A}"}}'
    body = f'{{"api_key": "k", "batch": [{sent_first},\n'
    body += ' {"event": "b", "properties": {"distinct_id": "u2"}}], "sent_at": "x"}'
    capture = read(body.encode())
    assert capture.api_key == "k"
    first, second = capture.events
    assert first == (UUID_A, "u1", sent_first)
    assert second.key == "u2"
    assert second.value == '{"event": "b", "properties": {"distinct_id": "u2"}}'
    assert len(second.event_id) == 36  # a fresh UUIDv7 where the event has no uuid


@pytest.mark.parametrize(
    "where",
    [
        {"api_key": "k"},
        {"token": "k"},
        {"$token": "k"},
        {"properties": {"token": "k", "distinct_id": "user-1"}},  # posthog-js
    ],
)
def test_a_single_event_carries_its_own_key(where):
    capture = read(event(**where))
    assert capture.api_key == "k"
    assert json.loads(capture.events[0].value)["event"] == "clicked"


def test_an_array_of_events_takes_the_key_they_share():
    capture = read([event(UUID_A, api_key="k"), event(UUID_B, api_key="k")])
    assert capture.api_key == "k"
    assert [item.event_id for item in capture.events] == [UUID_A, UUID_B]


def test_events_of_different_keys_are_refused():
    refused([event(UUID_A, api_key="k1"), event(UUID_B, api_key="k2")], 401, "multiple_api_keys")


def test_the_request_key_rules_a_property_named_token():
    capture = read({"api_key": "k", "batch": [event(properties={"token": "user data"})]})
    assert capture.api_key == "k"


def test_no_key_at_all_is_none():
    assert read({"batch": [event()]}).api_key is None


def test_a_numeric_distinct_id_is_its_json_text():
    assert read(event(distinct_id=42)).events[0].key == "42"


def test_a_long_distinct_id_is_cut_to_200_characters_in_the_key_only():
    capture = read(event(distinct_id="d" * 300))
    assert capture.events[0].key == "d" * 200
    assert json.loads(capture.events[0].value)["distinct_id"] == "d" * 300


@pytest.mark.parametrize("compression", ["gzip-js", "gzip", ""])
def test_gzip_by_query_or_by_its_magic_bytes(compression):
    body = gzip.compress(json.dumps({"api_key": "k", "batch": [event()]}).encode())
    capture = read(body, content_type="text/plain", compression=compression)
    assert [item.event_id for item in capture.events] == [UUID_A]


def test_base64_compression():
    body = base64.b64encode(json.dumps([event(api_key="k")]).encode())
    assert read(body, compression="base64").api_key == "k"


def test_lz64_is_refused_as_unsupported():
    refused(b"N4Ig", 400, "unsupported_compression", compression="lz64")


def form(data, **fields):
    return urlencode({"data": data, **fields}).encode()


def test_form_data_holds_base64_json_as_older_posthog_js_sends_it():
    data = base64.b64encode(json.dumps(event(properties={"token": "k"})).encode()).decode()
    capture = read(form(data), content_type="application/x-www-form-urlencoded; charset=UTF-8")
    assert capture.api_key == "k"
    assert capture.events[0].event_id == UUID_A


def test_form_data_with_unescaped_plus_signs_and_no_padding():
    raw = json.dumps([event(api_key="k", properties={"q": ">>>?"})]).encode()
    data = base64.b64encode(raw).decode().rstrip("=")
    assert "+" in data
    body = b"data=" + data.encode()  # the client did not escape "+"
    capture = read(body, content_type="application/x-www-form-urlencoded")
    assert json.loads(capture.events[0].value)["properties"]["q"] == ">>>?"


def test_form_data_may_be_plain_json_and_name_its_compression():
    assert read(form(json.dumps(event(api_key="k"))), content_type=FORM).api_key == "k"
    gzipped = base64.b64encode(gzip.compress(json.dumps(event(api_key="k")).encode()))
    body = form(gzipped.decode())
    assert read(body, content_type=FORM).api_key == "k"  # gzip found by its magic bytes


FORM = "application/x-www-form-urlencoded"


def test_a_form_without_data_is_refused():
    refused(b"api_key=k", 400, "invalid_payload", content_type=FORM)


def test_form_data_that_is_neither_json_nor_base64_is_refused():
    refused(form("not base64 %%%"), 400, "invalid_payload", content_type=FORM)


@pytest.mark.parametrize(
    "data",
    [
        [event(api_key="k")],
        event(api_key="k"),
        json.dumps([event(api_key="k")]),
        base64.b64encode(json.dumps([event(api_key="k")]).encode()).decode(),
    ],
)
def test_a_data_member_holds_events_in_any_of_its_forms(data):
    capture = read({"data": data})
    assert capture.api_key == "k"
    assert [item.event_id for item in capture.events] == [UUID_A]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "invalid_payload"),
        (b"42", "invalid_payload"),
        (b"[]", "invalid_payload"),
        (b'{"batch": []}', "invalid_payload"),
        (b'{"batch": {}}', "invalid_payload"),
        (b'{"data": 3}', "invalid_payload"),
        (b'{"batch": [1]}', "invalid_payload"),
        (b'{"api_key": 1, "batch": [{}]}', "invalid_payload"),
        (b"{not json", "invalid_json"),
        (b'[{"event": NaN}]', "invalid_event"),
    ],
)
def test_malformed_bodies_are_refused(body, code):
    refused(body, 400, code)


@pytest.mark.parametrize(
    "fields",
    [
        {"event": ""},
        {"event": None},
        {"distinct_id": ""},
        {"distinct_id": None},
        {"uuid": "not-a-uuid"},
        {"uuid": 7},
        {"api_key": 7},
    ],
)
def test_events_posthog_refuses_are_refused(fields):
    error = refused([event(**fields)], 400, "invalid_payload")
    assert error.message.startswith("event 0")


def test_a_lone_surrogate_is_refused_with_the_event_named():
    error = refused(b'[{"event": "a", "distinct_id": "\\ud800"}]', 400, "invalid_event")
    assert "event 0" in error.message


def test_too_many_events():
    refused({"batch": [event(None)] * 11}, 413, "too_many_events")


def test_an_event_too_large_for_one_record():
    refused([event(properties={"blob": "x" * 4000})], 413, "event_too_large")


def test_a_gzip_bomb_stops_at_the_decompressed_limit():
    body = gzip.compress(b" " * 200_000)
    refused(body, 413, "body_too_large", compression="gzip-js")


def test_broken_gzip_is_refused():
    refused(b"\x1f\x8b broken", 400, "invalid_encoding")


# The endpoints, through the Django test client against a recording publisher.

ROUTES = ["/batch/", "/capture/", "/e/", "/i/v0/e/", "/batch", "/i/v0/e"]


def capture(client, body, *, url="/batch/", content_type="application/json", **headers):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return client.generic("POST", url, body, content_type=content_type, **headers)


def assert_posthog_error(response, status, error_type, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body == {"type": error_type, "code": code, "detail": body["detail"], "attr": None}
    assert body["detail"]
    return body


@pytest.fixture
def source_key(db, fresh_keys):
    _, key = make_source(name="web")
    return key


@pytest.mark.parametrize("url", ROUTES)
def test_every_route_answers_exactly_status_1(client, gateway, publisher, source_key, url):
    response = capture(client, {"api_key": source_key, "batch": [event()]}, url=url)
    assert response.status_code == 200
    assert response.content == b'{"status":1}'
    assert [(record.topic, record.event_id) for record in publisher.records] == [
        ("posthog", UUID_A)
    ]


def test_the_record_is_the_event_as_sent(client, gateway, publisher, source_key):
    sent = f'{{"event": "a", "distinct_id": "u9", "uuid": "{UUID_B}", "properties": {{}}}}'
    body = f'{{"api_key": "{source_key}", "batch": [{sent}]}}'.encode()
    assert capture(client, body).status_code == 200
    (record,) = publisher.records
    assert (record.event_id, record.key, record.value) == (UUID_B, "u9", sent)


def test_gzip_by_content_encoding_and_by_query(client, gateway, publisher, source_key):
    body = gzip.compress(json.dumps(event(api_key=source_key)).encode())
    assert capture(client, body, HTTP_CONTENT_ENCODING="gzip").status_code == 200
    response = capture(client, body, url="/e/?compression=gzip-js", content_type="text/plain")
    assert response.status_code == 200
    assert len(publisher.records) == 2


def test_form_data_from_older_posthog_js(client, gateway, publisher, source_key):
    data = base64.b64encode(json.dumps(event(properties={"token": source_key})).encode())
    response = capture(client, form(data.decode()), url="/e/", content_type=FORM)
    assert response.status_code == 200
    assert publisher.records[0].event_id == UUID_A


@pytest.mark.parametrize("key", ["wrong", None])
def test_a_wrong_or_missing_key_is_posthogs_401(client, gateway, publisher, source_key, key):
    body = {"batch": [event()]} if key is None else {"api_key": key, "batch": [event()]}
    assert_posthog_error(capture(client, body), 401, "authentication_error", "invalid_api_key")
    assert publisher.records == []


@pytest.mark.django_db
def test_without_required_keys_a_keyless_request_is_accepted(client, gateway, publisher):
    assert capture(client, {"batch": [event()]}).status_code == 200
    assert len(publisher.records) == 1


def test_malformed_input_is_posthogs_400_never_a_5xx(client, gateway, publisher, source_key):
    assert_posthog_error(capture(client, b"{oops"), 400, "validation_error", "invalid_json")
    body = {"api_key": source_key, "batch": [event(distinct_id=None)]}
    assert_posthog_error(capture(client, body), 400, "validation_error", "invalid_payload")
    assert publisher.records == []


def test_limits_are_posthogs_413(client, gateway, publisher, source_key, settings):
    settings.INGEST_MAX_EVENTS_PER_REQUEST = 2
    body = {"api_key": source_key, "batch": [event(None)] * 3}
    assert_posthog_error(capture(client, body), 413, "validation_error", "too_many_events")


def test_a_body_over_the_limit_is_413_before_it_is_read(
    client, gateway, source_key, settings, unreadable_body
):
    settings.INGEST_MAX_BODY_BYTES = 10
    response = client.generic(
        "POST",
        "/batch/",
        b"",
        content_type="application/json",
        CONTENT_LENGTH="11",
        **{"wsgi.input": unreadable_body},
    )
    assert_posthog_error(response, 413, "validation_error", "body_too_large")


def test_other_methods_are_405(client, gateway):
    response = client.get("/batch/")
    assert_posthog_error(response, 405, "invalid_request", "method_not_allowed")


def test_a_forbidden_topic_is_403(client, gateway, publisher, db, fresh_keys):
    _, key = make_source(name="narrow", allowed_topics="other")
    body = {"api_key": key, "batch": [event()]}
    assert_posthog_error(capture(client, body), 403, "authentication_error", "forbidden_topic")


def test_a_source_topic_for_posthog_is_used(client, gateway, publisher, db, fresh_keys):
    _, key = make_source(name="routed", protocol_topics={"posthog": "web-events"})
    assert capture(client, {"api_key": key, "batch": [event()]}).status_code == 200
    assert publisher.records[0].topic == "web-events"


def test_rate_limited_is_429_with_retry_after(client, gateway, publisher, db, fresh_keys):
    _, key = make_source(name="slow", max_events_per_s=1)
    body = {"api_key": key, "batch": [event(None)] * 5}
    assert capture(client, body).status_code == 200  # admitted under the limit, then over it
    response = capture(client, body)
    assert_posthog_error(response, 429, "throttled_error", "rate_limited")
    assert response["Retry-After"]


def test_a_full_batcher_is_503_with_retry_after(client, gateway, publisher, source_key):
    # Loads the key cache here: the filling thread cannot see the test's database transaction.
    assert capture(client, {"api_key": source_key, "batch": [event()]}).status_code == 200
    publisher.gate.clear()
    filling = threading.Thread(
        target=capture, args=(client, {"api_key": source_key, "batch": [event(None)] * 50})
    )
    filling.start()
    try:
        wait_until(
            lambda: gateway.batcher.pending[0] >= 50, timeout=5, message="the batcher never filled"
        )
        response = capture(client, {"api_key": source_key, "batch": [event()]})
    finally:
        publisher.gate.set()
        filling.join(timeout=10)
    assert_posthog_error(response, 503, "server_error", "overloaded")
    assert response["Retry-After"] == "1"


def test_an_unreachable_broker_is_503(client, gateway, publisher, source_key):
    publisher.error = ConnectionRefusedError("broker down")
    response = capture(client, {"api_key": source_key, "batch": [event()]})
    assert_posthog_error(response, 503, "server_error", "unavailable")
    assert response["Retry-After"]


def test_stats_count_by_source_and_protocol(client, gateway, publisher, source_key, recorder):
    capture(client, {"api_key": source_key, "batch": [event()]})
    capture(client, {"api_key": source_key, "batch": [event(distinct_id="")]})
    capture(client, {"api_key": "wrong", "batch": [event()]})
    counts = {key[1:]: value for key, value in recorder.pending().items()}
    assert counts[("posthog", "web", "posthog", "accepted")] == 1
    # The body is read before the key inside it: its rejections have no topic or source yet.
    assert counts[("", "", "posthog", "rejected:invalid_payload")] == 1
    assert counts[("", "", "posthog", "rejected:unauthorized")] == 1


def test_the_openapi_document_describes_every_route(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for route in ROUTES[:4]:
        assert "200" in paths[route]["post"]["responses"]
