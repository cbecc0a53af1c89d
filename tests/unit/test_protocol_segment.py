import json

import msgspec
import pytest

from ingest.edge.errors import ApiError
from ingest.edge.protocols import segment_messages as messages

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
