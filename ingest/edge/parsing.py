"""Turn a request body into validated events, or say exactly what is wrong with it.

This is the edge: what is wrong with a request's body is answered here, as ApiError.

An event is accepted only if it can be delivered exactly as sent: its bytes become the record
value unchanged, so they must be strict RFC 8259 JSON (UTF-8, no lone surrogates, no NaN or
Infinity, no number that overflows a double) and fit in one Kafka record. msgspec checks that in
C; memory and work stay bounded by the event limit before any event is decoded.
"""

import json
import re
import zlib
from functools import lru_cache
from json.scanner import make_scanner

import msgspec

from ..ids import uuid7
from ..records import Event
from .errors import ApiError, bad_request
from .rejections import rejection

ACCEPTED_CONTENT_TYPES = ("application/json", "text/plain", "")
GZIP_WINDOW_BITS = 16 + zlib.MAX_WBITS
GZIP_MAGIC = b"\x1f\x8b"
JSON_WHITESPACE = b" \t\r\n"
# How much of an oversized array is decoded first to find out whether it holds too many events.
SCAN_PREFIX_BYTES = 262_144
# What a record adds to its value, key and id in a produce request (record and batch headers,
# the event-id header name); an event must leave this much room under KAFKA_MAX_REQUEST_SIZE.
RECORD_OVERHEAD_BYTES = 512


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """A body of the form {"events": [...]}; any other member makes it a single event."""

    events: msgspec.Raw


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_RAW_EVENTS = msgspec.json.Decoder(list[msgspec.Raw])
_EVENT = msgspec.json.Decoder()
# Only finds where each element of an oversized array ends; msgspec validates each one after.
_SCAN_ELEMENT = make_scanner(json.JSONDecoder())


def check_content_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in ACCEPTED_CONTENT_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media_type!r} is not supported; send application/json.",
        )


def decode_body(body: bytes, *, content_encoding: str, max_decompressed_bytes: int) -> bytes:
    """Return the body with its Content-Encoding undone, bounded in size."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise ApiError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not supported; use gzip or none.",
        )
    return gunzip(body, max_bytes=max_decompressed_bytes)


def gunzip(body: bytes, *, max_bytes: int) -> bytes:
    """Decompress every gzip member of `body` (RFC 1952 allows several), at most `max_bytes`."""
    members = []
    total = 0
    remaining = body
    while True:
        decompressor = zlib.decompressobj(GZIP_WINDOW_BITS)
        try:
            member = decompressor.decompress(remaining, max_bytes - total + 1)
        except zlib.error as error:
            raise bad_request(
                f"body is not valid gzip: {error}", code="invalid_encoding"
            ) from error
        total += len(member)
        if total > max_bytes:
            raise body_too_large(f"decompressed body exceeds {max_bytes} bytes")
        if not decompressor.eof:
            raise bad_request("gzip body is truncated", code="invalid_encoding")
        members.append(member)
        remaining = decompressor.unused_data
        if not remaining:
            # One member (the usual body) is returned as it is: a join would copy it.
            return members[0] if len(members) == 1 else b"".join(members)
        if not remaining.startswith(GZIP_MAGIC):
            raise bad_request(
                f"{len(remaining)} bytes after the last gzip member are not gzip",
                code="invalid_encoding",
            )


def body_too_large(message: str) -> ApiError:
    return ApiError(413, "body_too_large", message)


def parse_events(
    body: bytes, *, max_events: int, max_id_length: int, max_record_bytes: int
) -> list[Event]:
    """Validate a body (an object, an array, or {"events": [...]}) and return its events.

    One bad event rejects the whole request: nothing of it is accepted.
    """
    events = split_events(body, max_events=max_events)
    if not events:
        raise bad_request("the batch holds no events", code="invalid_body")
    return [
        _event(
            index,
            raw,
            max_id_length=max_id_length,
            max_record_bytes=max_record_bytes,
        )
        for index, raw in enumerate(events)
    ]


def split_events(body: bytes, *, max_events: int) -> list[bytes]:
    """Return the raw JSON text of each event in the body, refusing more than `max_events`."""
    document = body.strip(JSON_WHITESPACE)
    if document.startswith(b"{"):
        try:
            events = bytes(_ENVELOPE.decode(document).events)
        except msgspec.ValidationError:
            return [document]  # any object but {"events": ...} is one event
        except (msgspec.DecodeError, RecursionError) as error:
            raise rejection(document, error) from error
        if not events.startswith(b"["):
            raise bad_request('"events" must be an array of objects', code="invalid_body")
        document = events
    if not document.startswith(b"["):
        _decode_strictly(document)  # says invalid_json for what is not JSON at all
        raise bad_request("body must be a JSON object or an array of objects", code="invalid_body")
    # An array of n elements holds at most n - 1 commas, so this bound keeps msgspec from
    # building more than max_events elements; past it, elements are counted one at a time.
    if document.count(b",") < max_events:
        try:
            return [bytes(raw) for raw in _RAW_EVENTS.decode(document)]
        except (msgspec.DecodeError, RecursionError) as error:
            raise rejection(document, error) from error
    return _scan_elements(document, max_events=max_events)


def _scan_elements(document: bytes, *, max_events: int) -> list[bytes]:
    """Cut a large array into its elements, stopping as soon as there are too many."""
    # An array of many tiny elements (a small gzip body can expand into one) is refused from its
    # first bytes, before the whole body is decoded to text.
    if len(document) > SCAN_PREFIX_BYTES:
        prefix = _decoded_prefix(document, SCAN_PREFIX_BYTES)
        if prefix is not None and _shows_more_elements_than(prefix, max_events):
            raise too_many_events(f"more than {max_events} events in one request", max_events)
    try:
        text = document.decode()
    except UnicodeDecodeError as error:
        raise bad_request(f"body is not valid UTF-8: {error}", code="invalid_json") from error
    elements = []
    position = _skip_whitespace(text, 1)
    if text[position : position + 1] == "]":
        return elements
    while True:
        if len(elements) == max_events:
            raise too_many_events(f"more than {max_events} events in one request", max_events)
        try:
            _, end = _SCAN_ELEMENT(text, position)
        except (StopIteration, ValueError, RecursionError) as error:
            raise bad_request(
                f"body is not valid JSON near character {position}", code="invalid_json"
            ) from error
        elements.append(text[position:end].encode())
        position = _skip_whitespace(text, end)
        separator = text[position : position + 1]
        if separator == "]" and not text[position + 1 :].strip():
            return elements
        if separator != ",":
            raise bad_request(
                f"body is not valid JSON near character {position}", code="invalid_json"
            )
        position = _skip_whitespace(text, position + 1)


def _decoded_prefix(document: bytes, size: int) -> str | None:
    """Return about `size` bytes of the body as text, cut at a character boundary."""
    cut = size
    while cut > 0 and document[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        cut -= 1
    try:
        return document[:cut].decode()
    except UnicodeDecodeError:
        return None  # the whole body's decoding says where


def _shows_more_elements_than(text: str, limit: int) -> bool:
    """Say whether the start of an array's text already holds more than `limit` elements."""
    position = _skip_whitespace(text, 1)
    for _ in range(limit + 1):
        try:
            _, end = _SCAN_ELEMENT(text, position)
        except (StopIteration, ValueError, RecursionError):
            return False  # the prefix ends (or the JSON breaks) first
        position = _skip_whitespace(text, end)
        if text[position : position + 1] != ",":
            return False
        position = _skip_whitespace(text, position + 1)
    return True


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def too_many_events(message: str, max_events: int) -> ApiError:
    return ApiError(413, "too_many_events", f"{message}; the limit is {max_events}")


def _event(index: int, raw: bytes, *, max_id_length: int, max_record_bytes: int) -> Event:
    if len(raw) + RECORD_OVERHEAD_BYTES > max_record_bytes:
        raise event_too_large(index, len(raw), max_record_bytes)
    try:
        event = _EVENT.decode(raw)
    except (msgspec.DecodeError, RecursionError) as error:
        raise rejection(raw, error, index=index) from error
    if not isinstance(event, dict):
        raise bad_request(f"event {index} is not a JSON object")
    event_id = event.get("id")
    # An event's own valid id, the usual case, is taken without formatting the field's name.
    if not (isinstance(event_id, str) and 0 < len(event_id) <= max_id_length):
        event_id = event_id_or_new(event_id, field=f'event {index}: "id"', max_length=max_id_length)
    key = event.get("key")
    if key is not None and not isinstance(key, str):
        raise bad_request(f'event {index}: "key" must be a string')
    size = len(raw) + len(event_id.encode()) + len(key.encode() if key else b"")
    if size + RECORD_OVERHEAD_BYTES > max_record_bytes:
        raise event_too_large(index, size, max_record_bytes)
    # msgspec accepted the bytes, so they are UTF-8 and decode without a check.
    return Event(event_id, key, raw.decode())


def event_id_or_new(value: object, *, field: str, max_length: int) -> str:
    """Return an event's own id (a non-empty string of at most `max_length`), or a new UUIDv7."""
    if value is None:
        return uuid7()
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise bad_request(f"{field} must be a non-empty string of at most {max_length} characters")
    return value


def events_from_objects(
    objects: list[dict], *, max_id_length: int, max_record_bytes: int
) -> list[Event]:
    """Return events for objects built in the gateway (query parameters), encoded strictly."""
    events = []
    for index, event in enumerate(objects):
        try:
            raw = msgspec.json.encode(event)
        except (msgspec.EncodeError, UnicodeEncodeError) as error:
            raise bad_request(f"event {index} cannot be encoded as JSON: {error}") from error
        events.append(
            _event(index, raw, max_id_length=max_id_length, max_record_bytes=max_record_bytes)
        )
    return events


def event_too_large(index: int, size: int, max_record_bytes: int) -> ApiError:
    limit = max_record_bytes - RECORD_OVERHEAD_BYTES
    return ApiError(
        413,
        "event_too_large",
        f"event {index} is {size} bytes with its id and key; one event may be at most {limit}",
    )


def _decode_strictly(document: bytes) -> object:
    try:
        return _EVENT.decode(document)
    except (msgspec.DecodeError, RecursionError) as error:
        raise bad_request(f"body is not valid JSON: {error}", code="invalid_json") from error


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def check_topic(topic: str, *, allowlist: list[str], pattern: str) -> None:
    if (allowlist and topic not in allowlist) or not _compiled(pattern).fullmatch(topic):
        raise ApiError(404, "unknown_topic", f"topic {topic!r} is not accepted by this gateway")
