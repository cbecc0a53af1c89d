import gzip
import json
import tracemalloc

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.delivery.producers import RecordFailure, encode_record
from ingest.edge import parsing
from ingest.edge.errors import ApiError
from ingest.records import BatchRecord, Event

PAIR_AND_ESCAPES = r'{"v": "\u00e9\ud83d\ude00 é"}'
LIMITS = {"max_events": 10, "max_id_length": 16, "max_record_bytes": 4096}


def parse(body: bytes, **limits) -> list[Event]:
    return parsing.parse_events(body, **{**LIMITS, **limits})


def refusal(body: bytes, **limits) -> ApiError:
    with pytest.raises(ApiError) as raised:
        parse(body, **limits)
    return raised.value


@pytest.mark.parametrize(
    "body, values",
    [
        (b'{"a": 1}', ['{"a": 1}']),
        (b'[{"a": 1}, {"b": 2}]', ['{"a": 1}', '{"b": 2}']),
        (b' {"events": [{"a": 1}]} ', ['{"a": 1}']),
        (b'{"events": 1, "other": 2}', ['{"events": 1, "other": 2}']),
        (b'{"v": 123456789012345678901234567890}', ['{"v": 123456789012345678901234567890}']),
        (PAIR_AND_ESCAPES.encode(), [PAIR_AND_ESCAPES]),
    ],
)
def test_records_keep_each_event_exactly_as_sent(body, values):
    assert [record.value for record in parse(body)] == values


def test_records_keep_ids_and_keys_and_assign_uuid7():
    built = parse(b'[{"id": "e1", "key": "k", "v": 1}, {"v": 2}]')
    assert built[0] == Event("e1", "k", '{"id": "e1", "key": "k", "v": 1}')
    assert built[1].key is None
    assert built[1].event_id[14] == "7"


@pytest.mark.parametrize(
    "body, code",
    [
        (b"{bad", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'"\xed\xa0\x80"', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "invalid_json"),
        (b'[{"a": 1}, {"a": 2},]', "invalid_json"),
        (b'[{"a": 1}] trailing', "invalid_json"),
        (b'"text"', "invalid_body"),
        (b"42", "invalid_body"),
        (b"null", "invalid_body"),
        (b"[]", "invalid_body"),
        (b'{"events": {"a": 1}}', "invalid_body"),
    ],
)
def test_malformed_bodies_are_refused_with_a_code(body, code):
    error = refusal(body, max_record_bytes=1_048_576)
    assert (error.status, error.code) == (400, code)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"key": "\\ud800"}', 'event 0: "key" holds a lone UTF-16 surrogate (\\ud800)'),
        (b'[{}, {"id": "\\udfff"}]', 'event 1: "id" holds a lone UTF-16 surrogate (\\udfff)'),
        (b'[{}, {"p": {"x": [1, "\\udfff"]}}]', 'event 1: "p.x[1]" holds a lone'),
        (b'{"events": [{}, {"\\ud800": 1}]}', "event 1: the member name"),
        (b'{"a": "\xed\xa0\x80"}', 'event 0: "a" holds a lone UTF-16 surrogate'),
        (b'{"v": 1e999}', 'event 0: "v" is inf, not a finite JSON number'),
        (b'[{}, {"v": -1e999}]', 'event 1: "v" is -inf, not a finite'),
        (b'{"v": NaN}', 'event 0: "v" is nan'),
        (b'{"v": Infinity}', 'event 0: "v" is inf'),
        (b'[{"a": 1}, 5]', "event 1 is not a JSON object"),
        (b'[{"id": 7}]', 'event 0: "id" must be'),
        (b'[{"id": ""}]', 'event 0: "id" must be'),
        (b'[{"id": "' + b"x" * 17 + b'"}]', 'event 0: "id" must be'),
        (b'[{}, {}, {"key": 3}]', 'event 2: "key" must be a string'),
    ],
)
def test_events_that_cannot_be_delivered_as_sent_are_named(body, fragment):
    error = refusal(body)
    assert (error.status, error.code) == (400, "invalid_event")
    assert fragment in error.message


@pytest.mark.parametrize("events", [11, 5_000])
def test_too_many_events_are_refused_before_they_are_all_parsed(events):
    error = refusal(b"[" + b",".join([b"{}"] * events) + b"]")
    assert (error.status, error.code) == (413, "too_many_events")


def test_a_bomb_of_empty_objects_is_refused_after_the_limit():
    bomb = b"[" + b",".join([b"{}"] * 1_400_000) + b"]"  # 4 MiB, as a 4 KB gzip body expands
    tracemalloc.start()
    try:
        error = refusal(bomb, max_events=1_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.code == "too_many_events"
    assert peak < 1_048_576, f"{peak} bytes allocated to refuse it"  # not the whole body


def test_events_with_many_members_count_as_one_each():
    body = b"[" + b",".join([b'{"a": 1, "b": 2, "c": 3}'] * 10) + b"]"
    assert len(parse(body)) == 10


def test_an_event_larger_than_a_record_is_refused():
    error = refusal(b'[{}, {"v": "' + b"x" * 4_000 + b'"}]')
    assert (error.status, error.code) == (413, "event_too_large")
    assert "event 1" in error.message
    long_key = b'{"key": "' + b"k" * 1_800 + b'", "v": "' + b"x" * 1_800 + b'"}'
    assert refusal(long_key).code == "event_too_large"


def test_events_from_objects_encodes_strictly():
    (record,) = parsing.events_from_objects(
        [{"a": "b", "id": "x"}], max_id_length=16, max_record_bytes=4096
    )
    assert record == Event("x", None, '{"a":"b","id":"x"}')
    with pytest.raises(ApiError) as raised:
        parsing.events_from_objects([{"a": "\ud800"}], max_id_length=16, max_record_bytes=4096)
    assert raised.value.code == "invalid_event"


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


def test_decode_body_decodes_every_gzip_member():
    body = gzip.compress(b'[{"a": 1}') + gzip.compress(b', {"b": 2}]')
    decoded = parsing.decode_body(body, content_encoding="gzip", max_decompressed_bytes=100)
    assert decoded == b'[{"a": 1}, {"b": 2}]'


def test_decode_body_counts_every_member_against_the_limit():
    body = gzip.compress(b"0" * 60) + gzip.compress(b"0" * 60)
    with pytest.raises(ApiError) as raised:
        parsing.decode_body(body, content_encoding="gzip", max_decompressed_bytes=100)
    assert (raised.value.status, raised.value.code) == (413, "body_too_large")


@pytest.mark.parametrize(
    "body, encoding, status, code",
    [
        (b"not gzip", "gzip", 400, "invalid_encoding"),
        (gzip.compress(b"{}") + b"trailing", "gzip", 400, "invalid_encoding"),
        (gzip.compress(b"{}") + gzip.compress(b"{}")[:-6], "gzip", 400, "invalid_encoding"),
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


# --- Property: every body is refused with a 4xx or delivered exactly as sent ---------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=8)


def json_string(text: str, *, escaped: bool) -> str:
    """Write a JSON string; a lone surrogate becomes a \\u escape or raw (invalid) UTF-8."""
    return json.dumps(text, ensure_ascii=escaped)


NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1E2", "-0.0"]),
)


@st.composite
def json_values(draw, depth=0) -> str:
    """Draw JSON text that lenient parsers accept: strict JSON plus its common departures."""
    leaves = st.one_of(
        NUMBERS,
        st.sampled_from(["true", "false", "null"]),
        st.builds(json_string, TEXT, escaped=st.booleans()),
    )
    if depth >= 3:
        return draw(leaves)
    children = st.lists(json_values(depth=depth + 1), max_size=4)
    kind = draw(st.sampled_from(["leaf", "array", "object"]))
    if kind == "leaf":
        return draw(leaves)
    if kind == "array":
        return "[" + ",".join(draw(children)) + "]"
    return json_object(draw, children=draw(children))


def json_object(draw, *, children: list[str], fields=()) -> str:
    names = draw(
        st.lists(
            st.one_of(TEXT, st.sampled_from(["a", "id", "key"])),
            min_size=len(children),
            max_size=len(children),
        )
    )
    escaped = draw(st.booleans())
    members = [
        *fields,
        *(f"{json_string(n, escaped=escaped)}:{v}" for n, v in zip(names, children, strict=True)),
    ]
    if members and draw(st.booleans()):
        members.append(members[0])  # a duplicate member name
    return "{" + ",".join(members) + "}"


@st.composite
def json_events(draw) -> str:
    fields = draw(
        st.lists(
            st.sampled_from(
                ['"id":"e1"', '"key":"k"', '"id":"\\ud800"', '"key":"\\udfff"', '"id":7']
            ),
            max_size=2,
            unique=True,
        )
    )
    return json_object(
        draw, children=draw(st.lists(json_values(depth=1), max_size=4)), fields=fields
    )


@st.composite
def json_bodies(draw) -> bytes:
    events = draw(st.lists(json_events(), min_size=1, max_size=4))
    shape = draw(st.sampled_from(["object", "array", "envelope", "deep"]))
    if shape == "object":
        text = events[0]
    elif shape == "envelope":
        text = '{"events":[' + ",".join(events) + "]}"
    elif shape == "deep":
        text = "[" + "[" * 2_000 + "]" * 2_000 + "]"
    else:
        text = "[" + ",".join(events) + "]"
    return text.encode("utf-8", "surrogatepass")


def lenient_events(body: bytes) -> list:
    document = json.loads(body)
    if isinstance(document, dict) and set(document) == {"events"}:
        return document["events"]
    return document if isinstance(document, list) else [document]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_bodies())
def test_every_body_is_refused_or_its_records_are_strict_json_equal_to_it(body):
    try:
        records = parse(body, max_record_bytes=1_048_576)
    except ApiError as error:
        assert 400 <= error.status < 500 and error.code and error.message
        event(f"refused {error.code}")
        return
    event("accepted")
    events = lenient_events(body)
    assert len(records) == len(events)
    for record, sent in zip(records, events, strict=True):
        value, key, headers = encoded_for_kafka(record)
        assert msgspec.json.decode(value) == sent
        assert key is None or key.decode() == sent["key"]
        assert headers[0] == ("event-id", record.event_id.encode())


def encoded_for_kafka(record: Event) -> tuple:
    """Return the value, key and headers both producer backends hand their client."""
    encoded = encode_record(BatchRecord("t", *record))
    assert not isinstance(encoded, RecordFailure), encoded
    _, value, key, headers = encoded
    return value, key, headers


def test_a_large_array_is_cut_whole_when_its_start_does_not_settle_it():
    # More commas than events (so not msgspec's path), and longer than the decoded prefix.
    event = b'{"a": 1, "b": 2, "pad": "' + b"\xc3\xa9" * 200 + b'"}'
    body = b"[" + b",".join([event] * 800) + b"]"
    assert len(body) > parsing.SCAN_PREFIX_BYTES
    assert len(parse(body, max_events=1_000, max_record_bytes=1_048_576)) == 800
    error = refusal(body, max_events=799, max_record_bytes=1_048_576)
    assert error.code == "too_many_events"
