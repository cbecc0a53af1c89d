"""Read a PostHog capture body: the API key it carries and its events, each as the bytes sent.

PostHog's capture takes one event, an array of events, `{"batch": [...], "api_key": ...}`
(posthog-python, posthog-node) or `{"data": ...}` (older posthog-js), as JSON, gzip (also named by
`?compression=gzip-js`), base64, or a form field `data=` holding base64 JSON. Like PostHog's own
capture, an event needs an `event` name and a `distinct_id`, and its `uuid`, if any, is a UUID.
"""

import base64
import binascii
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

import msgspec

from ....ids import uuid7
from ....records import Event
from ...errors import ApiError, bad_request
from ...parsing import (
    GZIP_MAGIC,
    JSON_WHITESPACE,
    RECORD_OVERHEAD_BYTES,
    event_too_large,
    gunzip,
    split_events,
)
from ...rejections import rejection

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
GZIP_COMPRESSIONS = frozenset({"gzip", "gzip-js"})
# PostHog cuts a distinct_id to this many characters wherever it keys by it.
MAX_DISTINCT_ID_CHARS = 200
# Where PostHog's clients put the project key: server SDKs `api_key`, posthog-js `token`
# (in `properties` for captures, at the top for identify and feature-flag calls) or `$token`.
KEY_MEMBERS = ("api_key", "token", "$token")

_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_VALUE = msgspec.json.Decoder()


@dataclass(frozen=True)
class Limits:
    """How much one capture request may hold."""

    max_events: int
    max_id_length: int
    max_record_bytes: int
    max_decompressed_bytes: int


@dataclass(frozen=True)
class Capture:
    """A capture request's API key (None if it sent none) and its events, in order."""

    api_key: str | None
    events: list[Event]


def invalid_payload(message: str) -> ApiError:
    return bad_request(message, code="invalid_payload")


def read_capture(body: bytes, *, content_type: str, compression: str, limits: Limits) -> Capture:
    """Return the key and the events of a capture body whose Content-Encoding is undone."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == FORM_CONTENT_TYPE:
        body, compression = _form_data(body, compression)
    document = _decompress(body, compression, limits=limits).strip(JSON_WHITESPACE)
    top_key, raw_events = _split(document, limits=limits)
    if not raw_events:
        raise invalid_payload("the request holds no event")
    events = []
    event_keys = set()
    for index, raw in enumerate(raw_events):
        event, event_key = _event(index, raw, limits=limits)
        events.append(event)
        if event_key is not None:
            event_keys.add(event_key)
    if top_key is not None:
        return Capture(api_key=top_key, events=events)  # the request's key rules its events
    if len(event_keys) > 1:
        raise ApiError(401, "multiple_api_keys", "the batch holds events of different API keys")
    return Capture(api_key=event_keys.pop() if event_keys else None, events=events)


def _form_data(body: bytes, compression: str) -> tuple[bytes, str]:
    """Return the `data` field of a form body, and its `compression` field if it names one."""
    try:
        fields = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=16)
    except (UnicodeDecodeError, ValueError) as error:
        raise invalid_payload(f"the form body cannot be read: {error}") from error
    data = fields.get("data")
    if not data:
        raise invalid_payload('the form body has no "data" field')
    compression = fields.get("compression", [compression])[0]
    text = data[0].encode()
    if text.lstrip(JSON_WHITESPACE)[:1] in (b"{", b"["):
        return text, compression
    # A `+` sent unescaped arrives as a space; base64 has no spaces.
    return _base64(text.replace(b" ", b"+")), compression


def _base64(text: bytes) -> bytes:
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise invalid_payload(f"data is neither JSON nor base64: {error}") from error


def _decompress(body: bytes, compression: str, *, limits: Limits) -> bytes:
    compression = compression.strip().lower()
    if compression == "lz64":
        raise bad_request(
            "compression lz64 is not supported; send gzip-js, gzip, base64 or none",
            code="unsupported_compression",
        )
    if compression == "base64":
        body = _base64(body.strip(JSON_WHITESPACE))
    # PostHog's capture also undoes gzip it recognises by its magic bytes, whatever was declared.
    if compression in GZIP_COMPRESSIONS or body.startswith(GZIP_MAGIC):
        return gunzip(body, max_bytes=limits.max_decompressed_bytes)
    return body


def _split(document: bytes, *, limits: Limits) -> tuple[str | None, list[bytes]]:
    """Return the request-level key and the raw JSON text of each event."""
    if document.startswith(b"["):
        return None, split_events(document, max_events=limits.max_events)
    if not document.startswith(b"{"):
        raise invalid_payload("the body must be a JSON object or an array of events")
    try:
        members = _MEMBERS.decode(document)
    except (msgspec.DecodeError, RecursionError) as error:
        raise rejection(document, error) from error
    if "batch" in members:
        return _request_key(members), _events_of(members["batch"], "batch", limits=limits)
    if "data" in members and "event" not in members:
        return _request_key(members), _data_events(members["data"], limits=limits)
    return None, [document]  # one event, which carries its own key


def _request_key(members: dict[str, msgspec.Raw]) -> str | None:
    for name in KEY_MEMBERS:
        if name in members:
            key = _VALUE.decode(members[name])
            if not isinstance(key, str):
                raise invalid_payload(f'"{name}" must be a string')
            return key or None
    return None


def _events_of(raw: msgspec.Raw, member: str, *, limits: Limits) -> list[bytes]:
    document = bytes(raw)
    if not document.startswith(b"["):
        raise invalid_payload(f'"{member}" must be an array of events')
    return split_events(document, max_events=limits.max_events)


def _data_events(raw: msgspec.Raw, *, limits: Limits) -> list[bytes]:
    """Return the events of a `data` member: an array, one event, or a string of either."""
    document = bytes(raw)
    if document.startswith(b'"'):
        text = _VALUE.decode(document).encode().strip(JSON_WHITESPACE)
        document = text if text[:1] in (b"{", b"[") else _base64(text)
        document = document.strip(JSON_WHITESPACE)
    if document.startswith(b"["):
        return split_events(document, max_events=limits.max_events)
    if document.startswith(b"{"):
        return [document]
    raise invalid_payload('"data" must hold an event or an array of events')


def _event(index: int, raw: bytes, *, limits: Limits) -> tuple[Event, str | None]:
    """Validate one event; return it with the API key it carries itself, if any."""
    if len(raw) + RECORD_OVERHEAD_BYTES > limits.max_record_bytes:
        raise event_too_large(index, len(raw), limits.max_record_bytes)
    try:
        event = _VALUE.decode(raw)
    except (msgspec.DecodeError, RecursionError) as error:
        raise rejection(raw, error, index=index) from error
    if not isinstance(event, dict):
        raise invalid_payload(f"event {index} is not a JSON object")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise invalid_payload(f'event {index} has no "event" name')
    distinct_id = _distinct_id(event)
    if distinct_id is None:
        raise invalid_payload(f'event {index} has no "distinct_id"')
    event_id = _event_id(index, event.get("uuid"), max_length=limits.max_id_length)
    key = distinct_id[:MAX_DISTINCT_ID_CHARS]
    size = len(raw) + len(event_id) + len(key.encode())
    if size + RECORD_OVERHEAD_BYTES > limits.max_record_bytes:
        raise event_too_large(index, size, limits.max_record_bytes)
    # msgspec accepted the bytes, so they are UTF-8 and decode without a check.
    return Event(event_id, key, raw.decode()), _event_key(index, event)


def _distinct_id(event: dict) -> str | None:
    properties = event.get("properties")
    value = event.get("distinct_id", event.get("$distinct_id"))
    if value is None and isinstance(properties, dict):
        value = properties.get("distinct_id")
    if value is None:
        return None
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text or None


def _event_id(index: int, value: object, *, max_length: int) -> str:
    if value is None:
        return uuid7()
    try:
        if not isinstance(value, str) or len(value) > max_length:
            raise ValueError(value)
        uuid.UUID(value)
    except ValueError as error:
        raise invalid_payload(f'event {index}: "uuid" must be a UUID string') from error
    return value


def _event_key(index: int, event: dict) -> str | None:
    properties = event.get("properties")
    holders = (event, properties) if isinstance(properties, dict) else (event,)
    for holder in holders:
        for name in KEY_MEMBERS:
            key = holder.get(name)
            if key is not None and not isinstance(key, str):
                raise invalid_payload(f'event {index}: "{name}" must be a string')
            if key:
                return key
    return None
