import gzip
import json

import pytest

from ingest import parsing
from ingest.errors import ApiError


def records(events, **limits):
    return parsing.build_records(events, **{"max_events": 10, "max_id_length": 16, **limits})


@pytest.mark.parametrize(
    "body, expected",
    [
        (b'{"a": 1}', [{"a": 1}]),
        (b'[{"a": 1}, {"b": 2}]', [{"a": 1}, {"b": 2}]),
        (b'{"events": [{"a": 1}]}', [{"a": 1}]),
        (b'{"events": 1, "other": 2}', [{"events": 1, "other": 2}]),
    ],
)
def test_parse_events_accepts_object_array_and_envelope(body, expected):
    assert parsing.parse_events(body) == expected


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{bad", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'"text"', "invalid_body"),
        (b"42", "invalid_body"),
        (b'{"events": {"a": 1}}', "invalid_body"),
    ],
)
def test_parse_events_rejects_with_a_code(body, code):
    with pytest.raises(ApiError) as raised:
        parsing.parse_events(body)
    assert (raised.value.status, raised.value.code) == (400, code)


def test_build_records_keeps_ids_and_keys_and_assigns_uuid7():
    built = records([{"id": "e1", "key": "k", "v": 1}, {"v": 2}])
    assert built[0] == parsing.Record("e1", "k", '{"id":"e1","key":"k","v":1}')
    assert built[1].key is None
    assert built[1].event_id[14] == "7"
    assert json.loads(built[1].value) == {"v": 2}


@pytest.mark.parametrize(
    "events, fragment",
    [
        ([{"a": 1}, 5], "event 1 is not a JSON object"),
        ([{"id": 7}], 'event 0: "id" must be'),
        ([{"id": ""}], 'event 0: "id" must be'),
        ([{"id": "x" * 17}], 'event 0: "id" must be'),
        ([{}, {}, {"key": 3}], 'event 2: "key" must be a string'),
        ([], "no events"),
    ],
)
def test_build_records_names_the_bad_event(events, fragment):
    with pytest.raises(ApiError) as raised:
        records(events)
    assert raised.value.status == 400
    assert fragment in raised.value.message


def test_build_records_limits_events_per_request():
    with pytest.raises(ApiError) as raised:
        records([{}] * 11)
    assert (raised.value.status, raised.value.code) == (413, "too_many_events")


def test_decode_body_gunzips_within_the_limit():
    body = gzip.compress(b'{"a": 1}')
    assert parsing.decode_body(body, content_encoding="gzip", max_decompressed_bytes=100) == (
        b'{"a": 1}'
    )
    assert parsing.decode_body(b"raw", content_encoding="", max_decompressed_bytes=1) == b"raw"


def test_decode_body_stops_a_gzip_bomb_at_the_limit():
    bomb = gzip.compress(b"0" * 10_000_000)
    with pytest.raises(ApiError) as raised:
        parsing.decode_body(bomb, content_encoding="gzip", max_decompressed_bytes=1_000_000)
    assert (raised.value.status, raised.value.code) == (413, "body_too_large")


@pytest.mark.parametrize(
    "body, encoding, status, code",
    [
        (b"not gzip", "gzip", 400, "invalid_encoding"),
        (gzip.compress(b"{}")[:-6], "gzip", 400, "invalid_encoding"),
        (b"{}", "br", 415, "unsupported_encoding"),
    ],
)
def test_decode_body_rejects_bad_encodings(body, encoding, status, code):
    with pytest.raises(ApiError) as raised:
        parsing.decode_body(body, content_encoding=encoding, max_decompressed_bytes=100)
    assert (raised.value.status, raised.value.code) == (status, code)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", ""]
)
def test_check_content_type_accepts_json(content_type):
    parsing.check_content_type(content_type)


def test_check_content_type_rejects_forms():
    with pytest.raises(ApiError) as raised:
        parsing.check_content_type("application/x-www-form-urlencoded")
    assert raised.value.status == 415


def test_check_topic_applies_allowlist_and_pattern():
    parsing.check_topic("clicks", allowlist=[], pattern=r"[a-z]+")
    parsing.check_topic("clicks", allowlist=["clicks"], pattern=r"[a-z]+")
    for topic, allowlist in (("views", ["clicks"]), ("Clicks", []), ("a/b", [])):
        with pytest.raises(ApiError) as raised:
            parsing.check_topic(topic, allowlist=allowlist, pattern=r"[a-z]+")
        assert (raised.value.status, raised.value.code) == (404, "unknown_topic")
