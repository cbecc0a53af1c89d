"""HTTP interface of the ingest API: thin views over the pipeline and the control plane."""

import functools

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ..control import keys, metrics, readiness, receipts, stats
from ..control.health import process_report
from ..pipeline import accept, runtime
from . import openapi, parsing
from .errors import DOMAIN_ERRORS, ApiError, api_error, json_response

ACK_HEADER = "HTTP_X_INGEST_ACK"


def api_view(*methods: str):
    """Allow only `methods`, skip CSRF, and answer ApiError and domain errors (edge.errors)."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if request.method not in methods:
                    error = ApiError(
                        405, "method_not_allowed", f"{request.method} is not allowed here"
                    )
                    response = error.response()
                    response["Allow"] = ", ".join(methods)
                    return response
                return view(request, *args, **kwargs)
            except (ApiError, *DOMAIN_ERRORS) as raised:
                error = api_error(raised)
                topic = getattr(request, "ingest_topic", None)
                if topic is not None:  # only the ingest endpoints count their rejections
                    source = getattr(request, "ingest_source", "")
                    stats.count_rejected(topic=topic, source=source, code=error.code)
                return error.response()

        return wrapper

    return decorate


def declared_length(request) -> int | None:
    """Return the Content-Length, None for a chunked body, refusing one over the body limit."""
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        declared = int(raw or 0)
    except ValueError as error:
        raise ApiError(400, "invalid_request", "Content-Length is not a number") from error
    limit = settings.INGEST_MAX_BODY_BYTES
    if declared > limit:
        raise parsing.body_too_large(f"body of {declared} bytes exceeds {limit} bytes")
    return declared


def read_body(request, declared: int | None) -> bytes:
    """Read the body: Content-Length bytes, or a chunked body up to the body limit."""
    limit = settings.INGEST_MAX_BODY_BYTES
    try:
        if declared is not None:
            return request.body
        # Django reads only Content-Length bytes; cheroot undoes the chunking on wsgi.input.
        body = request.environ["wsgi.input"].read(limit + 1)
    except OSError as error:  # the server cut a client too slow to send its body, or it left
        raise ApiError(
            408, "request_timeout", f"the request body did not arrive in time: {error}"
        ) from error
    if len(body) > limit:
        raise parsing.body_too_large(f"chunked body exceeds {limit} bytes")
    return body


@api_view("POST")
def post_events(request, topic: str):
    """Accept one event or a batch of events for a topic."""
    # Everything that needs no body comes first, so a request that will be refused costs no
    # read, decompression or parse; stats count a topic only once it is valid and authorized.
    request.ingest_topic = ""
    source = authenticate(request)
    parsing.check_topic(
        topic, allowlist=settings.KAFKA_TOPIC_ALLOWLIST, pattern=settings.KAFKA_TOPIC_PATTERN
    )
    keys.authorize_topic(source, topic)
    request.ingest_topic = topic
    ack = accept.parse_ack_level(request.GET.get("ack") or request.META.get(ACK_HEADER))
    parsing.check_content_type(request.META.get("CONTENT_TYPE", ""))
    declared = declared_length(request)
    accept.admit_request(source=source, declared_bytes=declared or 0)
    body = parsing.decode_body(
        read_body(request, declared),
        content_encoding=request.META.get("HTTP_CONTENT_ENCODING", ""),
        max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
    )
    events = parsing.parse_events(
        body,
        max_events=settings.INGEST_MAX_EVENTS_PER_REQUEST,
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )
    acceptance = accept.accept_events(source=source, topic=topic, events=events, ack=ack)
    return json_response(acceptance.as_json(), status=202)


@api_view("GET")
def show(request):
    """Accept the query parameters as one event on the default topic (tracking pixels)."""
    topic = settings.KAFKA_DEFAULT_TOPIC
    request.ingest_topic = ""
    source = authenticate(request)
    keys.authorize_topic(source, topic)
    request.ingest_topic = topic
    event = {
        name: values[0] if len(values) == 1 else values for name, values in request.GET.lists()
    }
    ack = accept.parse_ack_level(request.META.get(ACK_HEADER))
    events = parsing.events_from_objects(
        [event],
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )
    acceptance = accept.accept_events(source=source, topic=topic, events=events, ack=ack)
    return json_response(acceptance.as_json(), status=202)


def authenticate(request) -> keys.SourceInfo:
    source = keys.authenticate(request.META)
    request.ingest_source = source.name
    return source


@api_view("GET")
def receipt(request, receipt_id: str):
    """Say whether the events behind a receipt reached Kafka; only to the source that sent them."""
    source = authenticate(request)
    return json_response(receipts.receipt_status(receipt_id=receipt_id, source=source))


@api_view("GET")
def healthz(request):
    """Answer 200 while the process can serve requests."""
    return json_response({"status": "ok", "process": process_report()})


@api_view("GET")
def readyz(request):
    """Answer 200 when the database, the broker and Kafka answer and the backlog is bounded."""
    report = readiness.get_probe().report(backlog=runtime.get_gateway().backlog)
    return json_response(report, status=503 if report["failed"] else 200)


@api_view("GET")
def prometheus_metrics(request):
    """Expose the gateway's metrics in the Prometheus text format."""
    gateway = runtime.get_gateway()
    body = metrics.render(backlog=gateway.backlog.depth, pending_events=gateway.batcher.pending[0])
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")


@api_view("GET")
def openapi_document(request):
    """Describe the ingest API in OpenAPI 3."""
    return json_response(openapi.document())


def not_found(request, exception=None):
    return ApiError(404, "not_found", f"no endpoint at {request.path}").response()


def server_error(request):
    return ApiError(500, "internal_error", "the gateway failed to handle this request").response()
