"""Confluent REST Proxy: v2 and v3 produce, and v3's one cluster (docs/PROTOCOLS.md).

Both produce endpoints answer once Kafka acknowledged the records (ack level "delivered"), with
each record's partition and offset, as the proxy does.
"""

from dataclasses import replace

from django.conf import settings
from django.urls import path

from ....control import keys, stats
from ....pipeline import accept
from ... import bodies, parsing
from ..base import Protocol, protocol_view
from . import reports
from .errors import (
    V2_CONTENT_TYPE,
    V3_CONTENT_TYPE,
    ConfluentError,
    bytes_answer,
    json_answer,
    render_v2_error,
    render_v3_error,
)
from .openapi import PATHS
from .records import V3Record, parse_v2, parse_v3_record, split_v3_stream, v2_format

# The topic is always the path's; there is no default to fall back on.
PROTOCOL = Protocol(
    name="confluent", default_topic="", render_error=render_v2_error, openapi_paths=PATHS
)
V3 = replace(PROTOCOL, render_error=render_v3_error)
MISSING_KEY = "send an API key as 'Authorization: Bearer <key>', X-Api-Key or HTTP Basic"


@protocol_view(PROTOCOL, "POST")
def produce_v2(request, topic: str):
    """Produce {"records": [...]} to a topic; answer each record's offset once Kafka has it."""
    source = authorized_source(request, topic)
    embedded_format = v2_format(request.META.get("CONTENT_TYPE", ""))
    body = bodies.read_request_body(request, source=source)
    events = parse_v2(
        body,
        embedded_format=embedded_format,
        max_records=settings.INGEST_MAX_EVENTS_PER_REQUEST,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )
    acceptance = accept.accept_events(
        source=source, topic=topic, events=events, ack="delivered", protocol=PROTOCOL.name
    )
    return json_answer(reports.v2_answer(acceptance), content_type=V2_CONTENT_TYPE)


@protocol_view(V3, "POST")
def produce_v3(request, cluster_id: str, topic: str):
    """Produce one record, or a stream of concatenated records; answer a report per record."""
    source = authorized_source(request, topic)
    check_cluster(cluster_id)
    check_v3_content_type(request.META.get("CONTENT_TYPE", ""))
    streaming = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    body = bodies.read_request_body(request, source=source)
    records = [
        parse_v3_record(raw, index=index, max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE)
        for index, raw in enumerate(
            split_v3_stream(body, max_records=settings.INGEST_MAX_EVENTS_PER_REQUEST)
        )
    ]
    if not streaming and len(records) == 1 and records[0].refusal is not None:
        raise records[0].refusal  # one plain record is answered with its own status
    _count_refusals(records, topic=topic, source=source)
    events = [record.event for record in records if record.refusal is None]
    acceptance = None
    if events:
        acceptance = accept.accept_events(
            source=source, topic=topic, events=events, ack="delivered", protocol=PROTOCOL.name
        )
    answer = reports.v3_reports(
        records, acceptance, cluster_id=settings.KAFKA_CLUSTER_ID, topic=topic
    )
    return bytes_answer(reports.concatenated(answer), content_type=V3_CONTENT_TYPE)


def _count_refusals(records: list[V3Record], *, topic: str, source: keys.SourceInfo) -> None:
    # A stream's refused records are answered in its reports, not by the error decorator.
    for record in records:
        if record.refusal is not None:
            stats.count_rejected(
                topic=topic, source=source.name, protocol=PROTOCOL.name, code=record.refusal.code
            )


@protocol_view(V3, "GET")
def list_clusters(request):
    """List the one Kafka cluster behind the gateway."""
    authenticate(request)
    body = reports.cluster_list(base_url=base_url(request), cluster_id=settings.KAFKA_CLUSTER_ID)
    return json_answer(body, content_type=V3_CONTENT_TYPE)


@protocol_view(V3, "GET")
def get_cluster(request, cluster_id: str):
    """Describe the Kafka cluster behind the gateway."""
    authenticate(request)
    check_cluster(cluster_id)
    body = reports.cluster(base_url=base_url(request), cluster_id=cluster_id)
    return json_answer(body, content_type=V3_CONTENT_TYPE)


def authorized_source(request, topic: str) -> keys.SourceInfo:
    """Return the request's source once it may write to the path's topic."""
    request.ingest_topic = ""  # stats count a topic only once it is valid and authorized
    source = authenticate(request)
    parsing.check_topic(
        topic, allowlist=settings.KAFKA_TOPIC_ALLOWLIST, pattern=settings.KAFKA_TOPIC_PATTERN
    )
    keys.authorize_topic(source, topic)
    request.ingest_topic = topic
    return source


def authenticate(request) -> keys.SourceInfo:
    """Return the source of a Bearer or X-Api-Key key, or of HTTP Basic's user or password."""
    credentials = keys.basic_credentials(request.META)
    source = _basic_source(*credentials) if credentials else keys.authenticate(request.META)
    request.ingest_source = source.name
    return source


def _basic_source(user: str, password: str) -> keys.SourceInfo:
    # Clients put a single key where their library lets them: the user name, or the password
    # (Confluent Cloud's key:secret pairs); whichever is a key names the source.
    candidates = [part for part in (user, password) if part]
    for candidate in candidates[:-1]:
        try:
            return keys.authenticate_key(candidate)
        except keys.Unauthorized:
            continue
    return keys.authenticate_key(candidates[-1] if candidates else None, missing=MISSING_KEY)


def check_cluster(cluster_id: str) -> None:
    if cluster_id != settings.KAFKA_CLUSTER_ID:
        raise ConfluentError(404, "unknown_cluster", f"Cluster {cluster_id} cannot be found.")


def check_v3_content_type(content_type: str) -> None:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ConfluentError(
            415, "unsupported_media_type", f"Content-Type {media_type!r}: send application/json"
        )


def base_url(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


urlpatterns = [
    path("topics/<str:topic>", produce_v2, name="confluent-v2-produce"),
    path("v3/clusters", list_clusters, name="confluent-v3-clusters"),
    path("v3/clusters/<str:cluster_id>", get_cluster, name="confluent-v3-cluster"),
    path(
        "v3/clusters/<str:cluster_id>/topics/<str:topic>/records",
        produce_v3,
        name="confluent-v3-produce",
    ),
]
