"""Turn a Segment HTTP Tracking API body into events: one per message, its messageId the id.

A message stays the message Segment's spec defines: `type` and every other member are kept,
byte for byte where nothing is added or removed. What the gateway changes, and why:
- a single call (/v1/track, ...) gets the `type` its endpoint implies when it has none;
- `writeKey` is removed: it is a credential, not a field of the message;
- a batch's `context`, `integrations` and `sentAt` apply to every message of the batch (Segment's
  batch call), so each message gets them; its own members win, and its own `context` and
  `integrations` objects are merged over the batch's, member by member.
"""

from dataclasses import dataclass

import msgspec

from ....records import Event
from ...errors import ApiError, bad_request
from ...parsing import RECORD_OVERHEAD_BYTES, event_id_or_new, event_too_large
from ...rejections import rejection

MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")
# Segment's documented limits: 32 KB a message (a single call's whole body), 500 KB a batch
# request and 2,500 messages in it. The SDKs measure them in KiB, so these are too.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_MESSAGES = 2500
# Members of a batch request that apply to each of its messages; the merged ones are objects.
BATCH_WIDE_MEMBERS = ("context", "integrations", "sentAt")
MERGED_MEMBERS = ("context", "integrations")
CREDENTIAL_MEMBER = "writeKey"
JSON_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True)
class SegmentBody:
    """A parsed request: the write key its body carried, if any, and one event per message."""

    write_key: str | None
    events: list[Event]


ABSENT = msgspec.Raw(b"null")  # a member left out reads as one sent null: neither applies


class _BatchRequest(msgspec.Struct):
    batch: list[msgspec.Raw]
    writeKey: object = None  # Segment's member names, camelCase
    context: msgspec.Raw = ABSENT
    integrations: msgspec.Raw = ABSENT
    sentAt: msgspec.Raw = ABSENT


_BATCH = msgspec.json.Decoder(_BatchRequest)
_STRICT = msgspec.json.Decoder()
_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def parse_batch(body: bytes, *, max_id_length: int, max_record_bytes: int) -> SegmentBody:
    """Return the events of a /v1/batch body ({"batch": [...], ...})."""
    if len(body) > MAX_BATCH_BYTES:
        raise payload_too_large(f"the batch is {len(body)} bytes; the limit is {MAX_BATCH_BYTES}")
    try:
        request = _BATCH.decode(body)
    except msgspec.ValidationError as error:
        raise bad_request(
            f'a batch must be an object with a "batch" array of messages: {error}',
            code="invalid_body",
        ) from error
    except (msgspec.DecodeError, RecursionError) as error:
        raise rejection(body, error) from error
    if not request.batch:
        raise bad_request('"batch" holds no messages', code="invalid_body")
    if len(request.batch) > MAX_BATCH_MESSAGES:
        raise ApiError(
            413,
            "too_many_events",
            f"{len(request.batch)} messages in one batch; the limit is {MAX_BATCH_MESSAGES}",
        )
    batch_wide = _batch_wide_members(request)
    events = [
        message_event(
            index,
            bytes(raw),
            implied_type=None,
            batch_wide=batch_wide,
            max_id_length=max_id_length,
            max_record_bytes=max_record_bytes,
        )
        for index, raw in enumerate(request.batch)
    ]
    return SegmentBody(write_key=_write_key(request.writeKey), events=events)


def _batch_wide_members(request: _BatchRequest) -> dict[str, bytes]:
    """Return the batch's members that apply to every message, strictly valid, objects merged."""
    members = {}
    for name in BATCH_WIDE_MEMBERS:
        raw = bytes(getattr(request, name))
        if raw == b"null":
            continue
        value = _decode_strictly(raw)
        if name in MERGED_MEMBERS and not isinstance(value, dict):
            raise bad_request(f'the batch\'s "{name}" must be an object', code="invalid_body")
        members[name] = raw
    return members


def parse_single(
    body: bytes, *, message_type: str, max_id_length: int, max_record_bytes: int
) -> SegmentBody:
    """Return the one event of a single call's body (/v1/track and the others)."""
    document = body.strip(JSON_WHITESPACE)
    message = _decode_strictly(document)
    if not isinstance(message, dict):
        raise bad_request("the body must be a JSON object, one message", code="invalid_body")
    event = message_event(
        0,
        document,
        implied_type=message_type,
        batch_wide={},
        max_id_length=max_id_length,
        max_record_bytes=max_record_bytes,
    )
    return SegmentBody(write_key=_write_key(message.get(CREDENTIAL_MEMBER)), events=[event])


def message_event(
    index: int,
    raw: bytes,
    *,
    implied_type: str | None,
    batch_wide: dict[str, bytes],
    max_id_length: int,
    max_record_bytes: int,
) -> Event:
    """Validate one message and return its event: id from messageId, key from the user."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise payload_too_large(
            f"message {index} is {len(raw)} bytes; one message may be at most {MAX_MESSAGE_BYTES}"
        )
    message = _decode_strictly(raw, index=index)
    if not isinstance(message, dict):
        raise bad_request(f"message {index} is not a JSON object")
    additions = _implied_type(index, message.get("type"), implied_type)
    additions.update((name, value) for name, value in batch_wide.items() if name not in message)
    merges = {
        name: value
        for name, value in batch_wide.items()
        if name in MERGED_MEMBERS and isinstance(message.get(name), dict)
    }
    value = raw.strip(JSON_WHITESPACE)
    if merges or CREDENTIAL_MEMBER in message:
        value = _rebuilt(value, additions=additions, merges=merges)
    elif additions:
        value = _prepended(value, additions)
    event_id = _event_id(index, message.get("messageId"), max_id_length=max_id_length)
    key = _user_key(message)
    size = len(value) + len(event_id.encode()) + len(key.encode() if key else b"")
    if size + RECORD_OVERHEAD_BYTES > max_record_bytes:
        raise event_too_large(index, size, max_record_bytes)
    return Event(event_id, key, value.decode())


def payload_too_large(message: str) -> ApiError:
    # 413 inside the gateway (stats count it as such); the protocol answers it as Segment does.
    return ApiError(413, "body_too_large", message)


def _implied_type(index: int, sent, implied: str | None) -> dict[str, bytes]:
    if sent is None and implied is not None:
        return {"type": msgspec.json.encode(implied)}
    if sent not in MESSAGE_TYPES:
        raise bad_request(
            f'message {index}: "type" must be one of {", ".join(MESSAGE_TYPES)}, got {sent!r}'
        )
    if implied is not None and sent != implied:
        raise bad_request(
            f'message {index}: "type" is {sent!r}, but this endpoint takes {implied!r}'
        )
    return {}


def _event_id(index: int, message_id, *, max_id_length: int) -> str:
    return event_id_or_new(
        message_id, field=f'message {index}: "messageId"', max_length=max_id_length
    )


def _user_key(message: dict) -> str | None:
    """Key a message by its user, so one user's messages keep their order in a partition."""
    for name in ("userId", "anonymousId"):
        if isinstance(user := message.get(name), str) and user:
            return user
    return None


def _write_key(value) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request('"writeKey" must be a string', code="invalid_body")
    return value


def _prepended(message: bytes, additions: dict[str, bytes]) -> bytes:
    """Add members before the message's own, leaving every byte it was sent with as it was."""
    members = b",".join(
        msgspec.json.encode(name) + b":" + value for name, value in additions.items()
    )
    rest = message[1:]
    separator = b"" if rest.lstrip(JSON_WHITESPACE).startswith(b"}") else b","
    return b"{" + members + separator + rest


def _rebuilt(message: bytes, *, additions: dict[str, bytes], merges: dict[str, bytes]) -> bytes:
    """Re-encode the message's members (each value's bytes kept) without its writeKey."""
    members = _MEMBERS.decode(message)
    members.pop(CREDENTIAL_MEMBER, None)
    for name, batch_value in merges.items():
        merged = {**_MEMBERS.decode(batch_value), **_MEMBERS.decode(bytes(members[name]))}
        members[name] = msgspec.Raw(msgspec.json.encode(merged))
    added = {name: msgspec.Raw(value) for name, value in additions.items()}
    return msgspec.json.encode({**added, **members})


def _decode_strictly(document: bytes, *, index: int | None = None):
    try:
        return _STRICT.decode(document)
    except (msgspec.DecodeError, RecursionError) as error:
        raise rejection(document, error, index=index) from error
