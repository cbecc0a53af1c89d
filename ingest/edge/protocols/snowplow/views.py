"""Snowplow's tracker protocol: POST /com.snowplowanalytics.snowplow/tp2 and the GET /i pixel,
answered as Snowplow's collector answers them."""

import base64

from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from ....control import keys
from ....control.keys import SourceInfo
from ....pipeline import accept
from ... import bodies, parsing
from ...errors import ApiError
from .. import base
from . import openapi, payloads
from .payloads import APP_ID_PLACEHOLDER, TrackerEvent

ACK_HEADER = "HTTP_X_INGEST_ACK"
TEXT = "text/plain; charset=utf-8"
# The collector's own answer to the pixel: a transparent 1x1 GIF, never cached.
PIXEL = base64.b64decode("R0lGODlhAQABAPAAAP///wAAACH5BAUAAAAALAAAAAABAAEAAAICRAEAOw==")
NO_CACHE = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}
# Browser trackers POST JSON across origins; these are the headers their preflight asks for.
ALLOWED_HEADERS = "Content-Type, SP-Anonymous, Authorization, X-Api-Key, X-Ingest-Ack"
PREFLIGHT_MAX_AGE_S = 3600


def render_error(error: ApiError) -> HttpResponse:
    """Answer an error as the collector does: its status and a plain-text reason."""
    response = HttpResponse(
        f"{error.code}: {error.message}", status=error.status, content_type=TEXT
    )
    return base.with_retry_after(response, error)


PROTOCOL = base.Protocol(
    name="snowplow",
    default_topic="snowplow",
    render_error=render_error,
    openapi_paths=openapi.PATHS,
)


@base.protocol_view(PROTOCOL, "POST", "OPTIONS")
def post_events(request, key: str | None = None):
    """Accept a tp2 batch: a payload_data envelope of events; answer 200 "ok" once durable."""
    if request.method == "OPTIONS":
        return preflight(request)
    source, topic = _source_and_topic(request, key)
    ack = accept.parse_ack_level(request.META.get(ACK_HEADER))
    parsing.check_content_type(request.META.get("CONTENT_TYPE", ""))
    events = payloads.events_from_body(
        bodies.read_request_body(request, source=source),
        max_events=settings.INGEST_MAX_EVENTS_PER_REQUEST,
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )
    _accept(request, source=source, topic=topic, events=events, ack=ack)
    return _with_cors(HttpResponse("ok", content_type=TEXT), request)


@base.protocol_view(PROTOCOL, "GET")
def pixel(request, key: str | None = None):
    """Accept the pixel's query parameters as one event; answer the 1x1 GIF once durable."""
    source, topic = _source_and_topic(request, key)
    ack = accept.parse_ack_level(request.META.get(ACK_HEADER))
    # A repeated parameter keeps its last value, as Django reads it: events are string maps.
    event = payloads.event_from_query(
        request.GET.dict(),
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )
    _accept(request, source=source, topic=topic, events=[event], ack=ack)
    response = HttpResponse(PIXEL, content_type="image/gif")
    for header, value in NO_CACHE.items():
        response[header] = value
    return _with_cors(response, request)


def preflight(request) -> HttpResponse:
    """Let browser trackers POST from any origin, as the collector does."""
    response = HttpResponse(status=200)
    response["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    return _with_cors(response, request)


def _with_cors(response: HttpResponse, request) -> HttpResponse:
    # Credentials are allowed, so the origin is echoed: "*" does not work with them.
    response["Access-Control-Allow-Origin"] = request.META.get("HTTP_ORIGIN") or "*"
    response["Access-Control-Allow-Credentials"] = "true"
    return response


def _source_and_topic(request, key: str | None) -> tuple[SourceInfo, str]:
    """Authenticate by the path's key, else the header's; check a topic that needs no body."""
    request.ingest_topic = ""
    source = keys.authenticate(request.META) if key is None else keys.authenticate_key(key)
    request.ingest_source = source.name
    topic = base.source_topic(source, PROTOCOL)
    if APP_ID_PLACEHOLDER not in topic:
        _authorize(source, topic)
        request.ingest_topic = topic
    return source, topic


def _authorize(source: SourceInfo, topic: str) -> None:
    parsing.check_topic(
        topic, allowlist=settings.KAFKA_TOPIC_ALLOWLIST, pattern=settings.KAFKA_TOPIC_PATTERN
    )
    keys.authorize_topic(source, topic)


def _accept(
    request, *, source: SourceInfo, topic: str, events: list[TrackerEvent], ack: str
) -> None:
    """Accept the events, one call per topic when the topic names each event's `aid`."""
    grouped = payloads.events_by_topic(events, topic=topic)
    if APP_ID_PLACEHOLDER in topic:
        for routed in grouped:
            _authorize(source, routed)
        if len(grouped) == 1:
            request.ingest_topic = next(iter(grouped))
    # Topics are accepted one after the other: a refusal after the first answers an error for
    # events already accepted, and the tracker's retry sends them again with the same ids.
    for routed, routed_events in grouped.items():
        accept.accept_events(
            source=source, topic=routed, events=routed_events, ack=ack, protocol=PROTOCOL.name
        )


urlpatterns = [
    path("com.snowplowanalytics.snowplow/tp2", post_events, name="snowplow-tp2"),
    path("i", pixel, name="snowplow-pixel"),
    path("snowplow/<str:key>/com.snowplowanalytics.snowplow/tp2", post_events),
    path("snowplow/<str:key>/i", pixel),
]
