"""PostHog's capture API (/batch/, /capture/, /e/, /i/v0/e/) in front of the accept service."""

from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from ....control import keys
from ....pipeline import accept
from ... import bodies
from ...errors import ApiError, json_response
from .. import base
from . import openapi, payloads

# PostHog's error `type`s (drf-exceptions-hog) by status; other 4xx are "invalid_request".
ERROR_TYPES = {
    400: "validation_error",
    401: "authentication_error",
    403: "authentication_error",
    413: "validation_error",
    429: "throttled_error",
}
# PostHog names a key no project has this way; the SDKs show `detail`, not the code.
ERROR_CODES = {"unauthorized": "invalid_api_key"}
ACCEPTED = {"status": 1}


def render_error(error: ApiError) -> HttpResponse:
    """Answer as PostHog's capture does: {"type", "code", "detail", "attr"}."""
    if error.status >= 500:
        error_type = "server_error"
    else:
        error_type = ERROR_TYPES.get(error.status, "invalid_request")
    body = {
        "type": error_type,
        "code": ERROR_CODES.get(error.code, error.code),
        "detail": error.message,
        "attr": None,
    }
    return base.with_retry_after(json_response(body, status=error.status), error)


PROTOCOL = base.Protocol(
    name="posthog",
    default_topic="posthog",
    render_error=render_error,
    openapi_paths=openapi.paths(openapi.CAPTURE_PATHS),
)


@base.protocol_view(PROTOCOL, "POST")
def capture(request):
    """Accept a PostHog capture request; answer 200 {"status": 1} once it is durable."""
    # The key is inside the body: read and parse it first, then authenticate and rate-limit.
    request.ingest_topic = ""
    body = bodies.read_unauthenticated_body(request)
    payload = payloads.read_capture(
        body,
        content_type=request.META.get("CONTENT_TYPE", ""),
        compression=request.GET.get("compression", ""),
        limits=payloads.Limits(
            max_events=settings.INGEST_MAX_EVENTS_PER_REQUEST,
            max_id_length=settings.INGEST_MAX_ID_LENGTH,
            max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
            max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
        ),
    )
    source = keys.authenticate_key(payload.api_key)
    request.ingest_source = source.name
    topic = base.source_topic(source, PROTOCOL)
    keys.authorize_topic(source, topic)
    request.ingest_topic = topic
    accept.admit_request(source=source, declared_bytes=len(body))
    accept.accept_events(
        source=source, topic=topic, events=payload.events, ack="durable", protocol=PROTOCOL.name
    )
    return json_response(ACCEPTED)


# PostHog's capture answers each path with and without its trailing slash; so does this one,
# where Django would otherwise redirect a POST.
urlpatterns = [
    path(route.strip("/") + slash, capture)
    for route in openapi.CAPTURE_PATHS
    for slash in ("/", "")
]
