"""Turn REST Proxy v2 and v3 produce bodies into events, refusing what cannot be produced as sent.

A JSON key or value becomes the record's bytes exactly as sent (its JSON text); a BINARY one its
base64-decoded bytes; a v3 STRING one the string's UTF-8. The protocol has no event id: each
record gets a UUIDv7.
"""

import base64
import binascii
import json
from dataclasses import dataclass

import msgspec

from ....ids import uuid7
from ....records import Event
from ...parsing import RECORD_OVERHEAD_BYTES, too_many_events
from .errors import JSON_CONVERSION, ConfluentError

V2_FORMATS = {
    "application/vnd.kafka.json.v2+json": "JSON",
    "application/vnd.kafka.binary.v2+json": "BINARY",
}
V2_FIELDS = frozenset({"key", "value", "partition"})
V3_TYPES = ("BINARY", "JSON", "STRING")
V3_FIELDS = frozenset({"key", "value", "headers", "partition_id", "timestamp"})
V3_DATA_FIELDS = frozenset({"type", "data"})
JSON_WHITESPACE = " \t\r\n"

_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw])
# Raw members are only skimmed: this strict decode refuses what they may still hide (1e999,
# surrogates as raw bytes).
_STRICT = msgspec.json.Decoder()
_FIND_END = json.JSONDecoder().raw_decode


def v2_format(content_type: str) -> str:
    """Return the embedded format ("JSON" or "BINARY") a v2 Content-Type names."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    embedded = V2_FORMATS.get(media_type)
    if embedded is None:
        raise ConfluentError(
            415,
            "unsupported_media_type",
            f"Content-Type {media_type!r} is not supported; send"
            f" {' or '.join(V2_FORMATS)} (avro, protobuf and jsonschema need a Schema Registry)",
        )
    return embedded


def parse_v2(
    body: bytes, *, embedded_format: str, max_records: int, max_record_bytes: int
) -> list[Event]:
    """Return the events of a v2 body {"records": [...]}; one bad record refuses them all."""
    try:
        document = _OBJECT.decode(body)
    except msgspec.ValidationError as error:
        raise _v2_invalid('the body must be an object {"records": [...]}') from error
    except (msgspec.DecodeError, RecursionError) as error:
        raise ConfluentError(400, "invalid_json", f"the body is not valid JSON: {error}") from error
    try:
        records = _RAW_LIST.decode(document.get("records", b"null"))
    except msgspec.ValidationError as error:
        raise _v2_invalid('"records" must be an array of records') from error
    if not records:
        raise _v2_invalid("records may not be empty")
    if len(records) > max_records:
        raise too_many_events(f"{len(records)} records in one request", max_records)
    return [
        _v2_event(index, raw, embedded_format=embedded_format, max_record_bytes=max_record_bytes)
        for index, raw in enumerate(records)
    ]


def _v2_event(index: int, raw: msgspec.Raw, *, embedded_format: str, max_record_bytes: int):
    try:
        fields = _OBJECT.decode(raw)
    except msgspec.ValidationError as error:
        raise _v2_invalid(f"record {index} is not an object") from error
    if unknown := sorted(set(fields) - V2_FIELDS):
        raise _v2_invalid(f"record {index}: unknown field(s) {', '.join(unknown)}")
    if not _is_null(fields.get("partition")):
        raise _v2_invalid(
            f'record {index}: this gateway cannot choose a partition; omit "partition" and'
            " Kafka's partitioner picks one by key"
        )
    value = _v2_data(fields.get("value"), index=index, field="value", embedded=embedded_format)
    if value is None:
        raise _v2_invalid(
            f"record {index}: value is required; this gateway produces no null values (tombstones)"
        )
    key = _v2_data(fields.get("key"), index=index, field="key", embedded=embedded_format)
    event = Event(uuid7(), key, value)
    _check_size(event, index=index, max_record_bytes=max_record_bytes)
    return event


def _v2_data(raw: msgspec.Raw | None, *, index: int, field: str, embedded: str):
    if _is_null(raw):
        return None
    try:
        return _embedded(raw, embedded)
    except ValueError as error:
        raise ConfluentError(
            422, "invalid_record", f"record {index}: {field} {error}", error_code=JSON_CONVERSION
        ) from error


def _embedded(raw: msgspec.Raw, embedded: str) -> str | bytes:
    """Return the bytes a key or value of this format is produced as; ValueError says why not."""
    try:
        decoded = _STRICT.decode(raw)
    except (msgspec.DecodeError, RecursionError) as error:
        raise ValueError(f"is not strict JSON (RFC 8259): {error}") from error
    if embedded == "JSON":
        return bytes(raw).decode()  # the JSON text as sent; strict JSON is UTF-8
    if not isinstance(decoded, str):
        raise ValueError(f"must be a {embedded} string")
    if embedded == "STRING":
        return decoded
    try:
        return base64.b64decode(decoded, validate=True)
    except binascii.Error as error:
        raise ValueError(f"is not valid base64: {error}") from error


def _check_size(event: Event, *, index: int, max_record_bytes: int) -> None:
    size = sum(_size(part) for part in (event.event_id, event.key, event.value))
    if size + RECORD_OVERHEAD_BYTES > max_record_bytes:
        limit = max_record_bytes - RECORD_OVERHEAD_BYTES
        raise ConfluentError(
            413,
            "event_too_large",
            f"record {index} is {size} bytes with its key and id; a record may be at most {limit}",
        )


def _size(part: str | bytes | None) -> int:
    if part is None:
        return 0
    return len(part.encode() if isinstance(part, str) else part)


def _v2_invalid(message: str) -> ConfluentError:
    return ConfluentError(422, "invalid_record", message)


def _is_null(raw: msgspec.Raw | None) -> bool:
    return raw is None or bytes(raw) == b"null"


@dataclass(frozen=True)
class V3Record:
    """One v3 record: its event and its report's key and value, or the refusal of it alone."""

    event: Event | None = None
    key: dict | None = None
    value: dict | None = None
    refusal: ConfluentError | None = None


def split_v3_stream(body: bytes, *, max_records: int) -> list[bytes]:
    """Cut a v3 body (one record object, or several concatenated) into each record's JSON."""
    try:
        text = body.decode()
    except UnicodeDecodeError as error:
        raise ConfluentError(400, "invalid_json", f"the body is not UTF-8: {error}") from error
    records = []
    position = _skip_whitespace(text, 0)
    while position < len(text):
        if len(records) == max_records:
            raise too_many_events(f"more than {max_records} records in one request", max_records)
        try:
            _, end = _FIND_END(text, position)
        except (ValueError, RecursionError) as error:
            raise ConfluentError(
                400,
                "invalid_json",
                f"record {len(records)} is not JSON (near character {position}): {error}",
            ) from error
        records.append(text[position:end].encode())
        position = _skip_whitespace(text, end)
    if not records:
        raise ConfluentError(400, "invalid_body", "the body holds no record")
    return records


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in JSON_WHITESPACE:
        position += 1
    return position


def parse_v3_record(raw: bytes, *, index: int, max_record_bytes: int) -> V3Record:
    """Return one v3 record's event, or its refusal (its report says why)."""
    try:
        return _v3_record(raw, index=index, max_record_bytes=max_record_bytes)
    except ConfluentError as refusal:
        return V3Record(refusal=refusal)


def _v3_record(raw: bytes, *, index: int, max_record_bytes: int) -> V3Record:
    fields = _v3_object(raw, what=f"record {index}")
    if unknown := sorted(set(fields) - V3_FIELDS):
        raise _v3_invalid(f"record {index}: unknown field(s) {', '.join(unknown)}")
    for name, why in (
        ("partition_id", "cannot choose a partition; Kafka's partitioner picks one by key"),
        ("timestamp", "cannot set a record's timestamp; the producer sets it"),
    ):
        if not _is_null(fields.get(name)):
            raise _v3_invalid(f"record {index}: this gateway {why}; omit {name!r}")
    if not _is_null(fields.get("headers")) and _STRICT.decode(fields["headers"]) != []:
        raise _v3_invalid(
            f"record {index}: headers are not supported; each record carries the gateway's"
            " event-id, source and protocol headers"
        )
    value, value_report = _v3_data(fields.get("value"), what=f"record {index}: value")
    if value is None:
        raise _v3_invalid(
            f"record {index}: value.data is required; this gateway produces no null values"
        )
    key, key_report = _v3_data(fields.get("key"), what=f"record {index}: key")
    event = Event(uuid7(), key, value)
    _check_size(event, index=index, max_record_bytes=max_record_bytes)
    return V3Record(event=event, key=key_report, value=value_report)


def _v3_data(raw: msgspec.Raw | None, *, what: str) -> tuple[str | bytes | None, dict | None]:
    if _is_null(raw):
        return None, None
    fields = _v3_object(raw, what=what)
    if unknown := sorted(set(fields) - V3_DATA_FIELDS):
        raise _v3_invalid(
            f"{what}: {', '.join(unknown)} not supported; schemas need a Schema Registry,"
            f" send type {', '.join(V3_TYPES)} with data"
        )
    embedded = _STRICT.decode(fields["type"]) if "type" in fields else None
    if embedded not in V3_TYPES:
        raise _v3_invalid(f"{what}: type must be one of {', '.join(V3_TYPES)}")
    if _is_null(fields.get("data")):
        return None, None
    try:
        data = _embedded(fields["data"], embedded)
    except ValueError as error:
        raise _v3_invalid(f"{what}: data {error}") from error
    return data, {"type": embedded, "size": _size(data)}


def _v3_object(raw: bytes | msgspec.Raw, *, what: str) -> dict[str, msgspec.Raw]:
    try:
        return _OBJECT.decode(raw)
    except msgspec.ValidationError as error:
        raise _v3_invalid(f"{what} must be a JSON object") from error
    except (msgspec.DecodeError, RecursionError) as error:
        raise _v3_invalid(f"{what} is not strict JSON (RFC 8259): {error}") from error


def _v3_invalid(message: str) -> ConfluentError:
    return ConfluentError(400, "invalid_record", message)
