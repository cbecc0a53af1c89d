"""Turn a request body into validated Kafka records, or say exactly what is wrong with it."""

import json
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from .errors import ApiError, bad_request
from .ids import uuid7

ACCEPTED_CONTENT_TYPES = ("application/json", "text/plain", "")
GZIP_WINDOW_BITS = 16 + zlib.MAX_WBITS


@dataclass(frozen=True, slots=True)
class Record:
    """One event as it will be written to Kafka."""

    event_id: str
    key: str | None
    value: str


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
    decompressor = zlib.decompressobj(GZIP_WINDOW_BITS)
    try:
        decoded = decompressor.decompress(body, max_decompressed_bytes)
        if decompressor.unconsumed_tail:
            raise body_too_large(f"decompressed body exceeds {max_decompressed_bytes} bytes")
        decoded += decompressor.flush()
    except zlib.error as error:
        raise bad_request(f"body is not valid gzip: {error}", code="invalid_encoding") from error
    if not decompressor.eof:
        raise bad_request("gzip body is truncated", code="invalid_encoding")
    return decoded


def body_too_large(message: str) -> ApiError:
    return ApiError(413, "body_too_large", message)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_events(body: bytes) -> list:
    """Return the list of events a body holds: an object, an array, or {"events": [...]}."""
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise bad_request(f"body is not valid JSON: {error}", code="invalid_json") from error
    if isinstance(document, dict) and set(document) == {"events"}:
        document = document["events"]
        if not isinstance(document, list):
            raise bad_request('"events" must be an array of objects', code="invalid_body")
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        return document
    raise bad_request("body must be a JSON object or an array of objects", code="invalid_body")


def build_records(events: list, *, max_events: int, max_id_length: int) -> list[Record]:
    """Validate every event and return its record; one bad event rejects the whole request."""
    if not events:
        raise bad_request("the batch holds no events", code="invalid_body")
    if len(events) > max_events:
        raise ApiError(
            413,
            "too_many_events",
            f"{len(events)} events in one request; the limit is {max_events}",
        )
    records = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise bad_request(f"event {index} is not a JSON object")
        event_id = event.get("id")
        if event_id is None:
            event_id = uuid7()
        elif not isinstance(event_id, str) or not 0 < len(event_id) <= max_id_length:
            raise bad_request(
                f'event {index}: "id" must be a non-empty string of at most {max_id_length} '
                "characters"
            )
        key = event.get("key")
        if key is not None and not isinstance(key, str):
            raise bad_request(f'event {index}: "key" must be a string')
        records.append(Record(event_id, key, json.dumps(event, separators=(",", ":"))))
    return records


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def check_topic(topic: str, *, allowlist: list[str], pattern: str) -> None:
    if (allowlist and topic not in allowlist) or not _compiled(pattern).fullmatch(topic):
        raise ApiError(404, "unknown_topic", f"topic {topic!r} is not accepted by this gateway")
