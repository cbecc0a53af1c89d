"""Segment's HTTP Tracking API (RudderStack speaks it too): POST /v1/batch and the single calls.

The write key is the user name of HTTP Basic auth (the SDKs send it so), else a Bearer or
X-Api-Key header, else the body's `writeKey`. Every accepted request is durable before it is
answered `200 {"success": true}`; the protocol has no room for other ack levels.
"""

import base64
import binascii
import functools

from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from ....control import keys
from ....pipeline import accept
from ... import bodies, parsing
from ...errors import ApiError, json_response
from .. import base
from . import messages, openapi

# Segment answers its size limits with 400 Bad Request, which its SDKs never retry.
SIZE_LIMIT_STATUS = 400
SIZE_LIMIT_MESSAGE = "Exceed payload limit"
MISSING_KEY = "send the write key as the Basic auth user name, or as the body's writeKey"


def render_error(error: ApiError) -> HttpResponse:
    """Answer in Segment's shape; `code` and `message` are what its SDKs report."""
    status, message = error.status, error.message
    if status == 413:
        status, message = SIZE_LIMIT_STATUS, f"{SIZE_LIMIT_MESSAGE}: {message}"
    body = {"success": False, "code": error.code, "message": message}
    return base.with_retry_after(json_response(body, status=status), error)


PROTOCOL = base.Protocol(
    name="segment",
    default_topic="segment",
    render_error=render_error,
    openapi_paths=openapi.PATHS,
)


@base.protocol_view(PROTOCOL, "POST")
def post_batch(request):
    """Accept a batch of messages of any type."""
    return _accept(
        request,
        max_bytes=messages.MAX_BATCH_BYTES,
        parse=messages.parse_batch,
    )


def _single_call_view(message_type: str):
    @base.protocol_view(PROTOCOL, "POST")
    def post_message(request):
        return _accept(
            request,
            max_bytes=messages.MAX_MESSAGE_BYTES,
            parse=functools.partial(messages.parse_single, message_type=message_type),
        )

    post_message.__doc__ = f"Accept one {message_type} message."
    post_message.__name__ = f"post_{message_type}"
    return post_message


def _accept(request, *, max_bytes: int, parse) -> HttpResponse:
    request.ingest_topic = ""
    parsing.check_content_type(request.META.get("CONTENT_TYPE", ""))
    header_key = presented_key(request.META)
    if header_key is not None:
        # The usual case (both SDKs): everything that needs no body comes before reading it.
        source = _authenticate(request, header_key)
        _authorize(request, source)
        body = bodies.read_request_body(request, source=source, max_bytes=max_bytes)
        parsed = _parse(parse, body)
    else:
        body = bodies.read_unauthenticated_body(request, max_bytes=max_bytes)
        parsed = _parse(parse, body)
        source = _authenticate(request, parsed.write_key)
        _authorize(request, source)
        accept.admit_request(source=source, declared_bytes=len(body))
    accept.accept_events(
        source=source,
        topic=request.ingest_topic,
        events=parsed.events,
        ack="durable",
        protocol=PROTOCOL.name,
    )
    return json_response({"success": True})


def presented_key(meta: dict) -> str | None:
    """Return the write key of HTTP Basic auth (the user name), or a Bearer / X-Api-Key key."""
    scheme, _, credentials = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return keys.presented_key(meta)
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise keys.Unauthorized("the Basic credentials are not base64 of 'writeKey:'") from error
    return decoded.partition(":")[0] or None


def _authenticate(request, key: str | None) -> keys.SourceInfo:
    source = keys.authenticate_key(key, missing=MISSING_KEY)
    request.ingest_source = source.name
    return source


def _authorize(request, source: keys.SourceInfo) -> None:
    topic = base.source_topic(source, PROTOCOL)
    parsing.check_topic(
        topic, allowlist=settings.KAFKA_TOPIC_ALLOWLIST, pattern=settings.KAFKA_TOPIC_PATTERN
    )
    keys.authorize_topic(source, topic)
    request.ingest_topic = topic  # stats count a topic only once it is valid and authorized


def _parse(parse, body: bytes) -> messages.SegmentBody:
    return parse(
        body,
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )


urlpatterns = [path("v1/batch", post_batch, name="segment-batch")] + [
    path(f"v1/{message_type}", _single_call_view(message_type), name=f"segment-{message_type}")
    for message_type in messages.MESSAGE_TYPES
]
