"""Read Snowplow's tracker protocol: the tp2 `payload_data` envelope, the pixel's query string,
and the topic each event goes to."""

from typing import NamedTuple

import msgspec

from ....records import Event
from ... import parsing
from ...errors import bad_request
from ...rejections import rejection

PAYLOAD_DATA_SCHEMA_PREFIX = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-"
# A source's Snowplow topic may name each event's application: "web-{aid}".
APP_ID_PLACEHOLDER = "{aid}"


class TrackerEvent(NamedTuple):
    """An event ready for Kafka, and the application id (`aid`) that may choose its topic."""

    event: Event
    app_id: str | None


class _PayloadData(msgspec.Struct):
    schema: str
    data: msgspec.Raw


_PAYLOAD_DATA = msgspec.json.Decoder(_PayloadData)
_STRICT_JSON = msgspec.json.Decoder()


def events_from_body(
    body: bytes, *, max_events: int, max_id_length: int, max_record_bytes: int
) -> list[TrackerEvent]:
    """Validate a tp2 POST body and return its events, each value its JSON object as sent."""
    try:
        envelope = _PAYLOAD_DATA.decode(body)
    except msgspec.ValidationError as error:
        raise bad_request(
            f'body must be a payload_data envelope {{"schema": "...", "data": [...]}}: {error}',
            code="invalid_body",
        ) from error
    except (msgspec.DecodeError, RecursionError) as error:
        # Names the member ("data[1].url") of JSON that only a lenient parser reads.
        raise rejection(body, error) from error
    if not envelope.schema.startswith(PAYLOAD_DATA_SCHEMA_PREFIX):
        raise bad_request(
            f"schema {envelope.schema!r} is not {PAYLOAD_DATA_SCHEMA_PREFIX}*", code="invalid_body"
        )
    data = bytes(envelope.data)
    if not data.startswith(b"["):
        raise bad_request('"data" must be an array of events', code="invalid_body")
    elements = parsing.split_events(data, max_events=max_events)
    if not elements:
        raise bad_request('"data" holds no events', code="invalid_body")
    return [
        _tracker_event(
            index, raw, None, max_id_length=max_id_length, max_record_bytes=max_record_bytes
        )
        for index, raw in enumerate(elements)
    ]


def event_from_query(
    params: dict[str, str], *, max_id_length: int, max_record_bytes: int
) -> TrackerEvent:
    """Return the pixel's event: its query parameters as one JSON object of strings."""
    try:
        raw = msgspec.json.encode(params)
    except (msgspec.EncodeError, UnicodeEncodeError) as error:
        raise bad_request(f"event 0 cannot be encoded as JSON: {error}") from error
    return _tracker_event(
        0, raw, params, max_id_length=max_id_length, max_record_bytes=max_record_bytes
    )


def _decoded(index: int, raw: bytes) -> object:
    try:
        return _STRICT_JSON.decode(raw)
    except (msgspec.DecodeError, RecursionError) as error:
        raise rejection(raw, error, index=index) from error


def _tracker_event(
    index: int, raw: bytes, fields: dict | None, *, max_id_length: int, max_record_bytes: int
) -> TrackerEvent:
    """Check one event's fields (decoded from `raw` when None) and make it a Kafka event."""
    if len(raw) + parsing.RECORD_OVERHEAD_BYTES > max_record_bytes:
        raise parsing.event_too_large(index, len(raw), max_record_bytes)
    if fields is None:
        fields = _decoded(index, raw)
    if not isinstance(fields, dict):
        raise bad_request(f"event {index} is not a JSON object")
    if not isinstance(fields.get("e"), str) or not fields["e"]:
        raise bad_request(f'event {index}: "e" (the event type) must be a non-empty string')
    event_id = parsing.event_id_or_new(
        fields.get("eid"), field=f'event {index}: "eid"', max_length=max_id_length
    )
    app_id = fields.get("aid")
    if app_id is not None and not isinstance(app_id, str):
        raise bad_request(f'event {index}: "aid" must be a string')
    size = len(raw) + len(event_id.encode())
    if size + parsing.RECORD_OVERHEAD_BYTES > max_record_bytes:
        raise parsing.event_too_large(index, size, max_record_bytes)
    # The strict decode (or the encode) accepted the bytes, so they are UTF-8.
    return TrackerEvent(Event(event_id, None, raw.decode()), app_id or None)


def events_by_topic(events: list[TrackerEvent], *, topic: str) -> dict[str, list[Event]]:
    """Group events by their topic: `topic`, with {aid} replaced by each event's `aid`."""
    if APP_ID_PLACEHOLDER not in topic:
        return {topic: [tracker_event.event for tracker_event in events]}
    grouped: dict[str, list[Event]] = {}
    for index, (event, app_id) in enumerate(events):
        if app_id is None:
            raise bad_request(
                f'event {index} has no "aid", and this source routes events by it ({topic!r})'
            )
        grouped.setdefault(topic.replace(APP_ID_PLACEHOLDER, app_id), []).append(event)
    return grouped
