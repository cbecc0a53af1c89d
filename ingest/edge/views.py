"""HTTP interface of the ingest API: thin views over the pipeline and the control plane."""

from django.conf import settings
from django.http import HttpResponse

from ..control import keys, metrics, readiness, receipts
from ..control.health import process_report
from ..pipeline import accept, runtime
from ..records import NATIVE_PROTOCOL
from . import bodies, openapi, parsing
from .errors import ApiError, json_response
from .protocols.base import Protocol, protocol_view

ACK_HEADER = "HTTP_X_INGEST_ACK"


# The gateway's own API: errors as {"code", "message"} (edge.errors.ApiError).
NATIVE = Protocol(
    name=NATIVE_PROTOCOL,
    default_topic=settings.KAFKA_DEFAULT_TOPIC,
    render_error=ApiError.response,
)


def api_view(*methods: str):
    """Allow only `methods`, skip CSRF, and answer ApiError and domain errors (edge.errors)."""
    return protocol_view(NATIVE, *methods)


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
    body = bodies.read_request_body(request, source=source)
    events = parsing.parse_events(
        body,
        max_events=settings.INGEST_MAX_EVENTS_PER_REQUEST,
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )
    acceptance = accept.accept_events(
        source=source, topic=topic, events=events, ack=ack, protocol=NATIVE_PROTOCOL
    )
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
    acceptance = accept.accept_events(
        source=source, topic=topic, events=events, ack=ack, protocol=NATIVE_PROTOCOL
    )
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
    body = metrics.render(
        backlog=gateway.backlog.depth,
        pending_events=gateway.batcher.pending[0],
        batch_window_s=gateway.batcher.window_s,
    )
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")


@api_view("GET")
def openapi_document(request):
    """Describe the ingest API in OpenAPI 3."""
    return json_response(openapi.document())


def not_found(request, exception=None):
    return ApiError(404, "not_found", f"no endpoint at {request.path}").response()


def server_error(request):
    return ApiError(500, "internal_error", "the gateway failed to handle this request").response()
