"""Snowplow's tracker protocol: the tp2 envelope and the pixel, their answers and errors."""

import gzip
import json

import pytest

from ingest.edge.errors import ApiError
from ingest.edge.protocols.snowplow import views as snowplow
from ingest.edge.protocols.snowplow.payloads import (
    event_from_query,
    events_by_topic,
    events_from_body,
)
from ingest.ids import uuid7_unix_seconds
from ingest.records import BatchRecord, Event
from tests.unit.sources import make_source

TP2 = "/com.snowplowanalytics.snowplow/tp2"
SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
LIMITS = {"max_events": 10, "max_id_length": 16, "max_record_bytes": 2048}


def envelope(*events) -> bytes:
    return json.dumps({"schema": SCHEMA, "data": list(events)}).encode()


def post(client, body, *, url=TP2, content_type="application/json; charset=utf-8", **headers):
    if not isinstance(body, bytes):
        body = envelope(*body)
    return client.generic("POST", url, body, content_type=content_type, **headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode().startswith(f"{code}: ")
    return response


def refusal(body: bytes) -> ApiError:
    with pytest.raises(ApiError) as raised:
        events_from_body(body, **LIMITS)
    return raised.value


# The envelope, the pixel's query and topic routing, without HTTP.


def test_each_event_keeps_its_json_as_sent_and_its_eid():
    body = (
        b'{"schema": "' + SCHEMA.encode() + b'", "data": ['
        b'{"e": "pv", "eid": "a", "aid": "shop", "url": "/"},  {"e":"se","eid":"b"}]}'
    )
    events = events_from_body(body, **LIMITS)
    assert [tracked.event for tracked in events] == [
        Event("a", None, '{"e": "pv", "eid": "a", "aid": "shop", "url": "/"}'),
        Event("b", None, '{"e":"se","eid":"b"}'),
    ]
    assert [tracked.app_id for tracked in events] == ["shop", None]


def test_an_event_without_eid_gets_a_uuid7():
    (tracked,) = events_from_body(envelope({"e": "pv"}), **LIMITS)
    assert uuid7_unix_seconds(tracked.event.event_id) is not None


def test_every_payload_data_revision_is_accepted():
    body = json.dumps({"schema": SCHEMA[:-1] + "0", "data": [{"e": "pv"}]}).encode()
    assert len(events_from_body(body, **LIMITS)) == 1


@pytest.mark.parametrize(
    "body, code, fragment",
    [
        (b"not json", "invalid_json", "not valid JSON"),
        (b'[{"e": "pv"}]', "invalid_body", "payload_data envelope"),
        (b'{"data": [{"e": "pv"}]}', "invalid_body", "payload_data envelope"),
        (
            json.dumps({"schema": "iglu:x/y/jsonschema/1-0-0", "data": []}).encode(),
            "invalid_body",
            "is not",
        ),
        (json.dumps({"schema": SCHEMA, "data": {"e": "pv"}}).encode(), "invalid_body", "array"),
        (envelope(), "invalid_body", "no events"),
        (envelope([1]), "invalid_event", "not a JSON object"),
        (envelope({"eid": "a"}), "invalid_event", '"e"'),
        (envelope({"e": ""}), "invalid_event", '"e"'),
        (envelope({"e": "pv", "eid": 7}), "invalid_event", '"eid"'),
        (envelope({"e": "pv", "eid": ""}), "invalid_event", '"eid"'),
        (envelope({"e": "pv", "eid": "x" * 17}), "invalid_event", '"eid"'),
        (envelope({"e": "pv", "aid": 1}), "invalid_event", '"aid"'),
        (envelope({"e": "pv"}, {"e": "pv", "x": "\ud800"}), "invalid_event", '"data[1].x"'),
        (envelope({"e": "pv"}, {"e": "pv", "n": float("nan")}), "invalid_event", '"data[1].n"'),
    ],
)
def test_a_malformed_body_is_400_naming_what_is_wrong(body, code, fragment):
    error = refusal(body)
    assert (error.status, error.code) == (400, code)
    assert fragment in error.message


def test_too_many_events_is_413():
    error = refusal(envelope(*[{"e": "pv"}] * 11))
    assert (error.status, error.code) == (413, "too_many_events")


def test_an_event_over_the_record_size_is_413():
    error = refusal(envelope({"e": "pv", "x": "y" * 2000}))
    assert (error.status, error.code) == (413, "event_too_large")


def test_the_pixel_query_is_one_string_map():
    tracked = event_from_query({"e": "pv", "eid": "p1", "aid": "web"}, **LIMITS_NO_EVENTS)
    assert tracked.event == Event("p1", None, '{"e":"pv","eid":"p1","aid":"web"}')
    assert tracked.app_id == "web"


LIMITS_NO_EVENTS = {"max_id_length": 16, "max_record_bytes": 2048}


def test_a_pixel_without_event_type_is_400():
    with pytest.raises(ApiError) as raised:
        event_from_query({"eid": "p1"}, **LIMITS_NO_EVENTS)
    assert raised.value.status == 400


def test_events_go_to_the_topic_or_by_their_aid():
    events = events_from_body(
        envelope(
            {"e": "pv", "eid": "a", "aid": "web"},
            {"e": "pv", "eid": "b", "aid": "app"},
            {"e": "pv", "eid": "c", "aid": "web"},
        ),
        **LIMITS,
    )
    assert {
        topic: [e.event_id for e in group]
        for topic, group in events_by_topic(events, topic="clicks").items()
    } == {"clicks": ["a", "b", "c"]}
    assert {
        topic: [e.event_id for e in group]
        for topic, group in events_by_topic(events, topic="sp-{aid}").items()
    } == {
        "sp-web": ["a", "c"],
        "sp-app": ["b"],
    }


def test_routing_by_aid_refuses_an_event_without_one():
    events = events_from_body(envelope({"e": "pv", "aid": "web"}, {"e": "pv"}), **LIMITS)
    with pytest.raises(ApiError) as raised:
        events_by_topic(events, topic="sp-{aid}")
    assert raised.value.status == 400
    assert "event 1" in raised.value.message


# The endpoints, through Django, with the broker faked.


def test_post_answers_200_ok_once_the_broker_confirmed(client, gateway, publisher):
    response = post(client, [{"e": "pv", "eid": "e1"}, {"e": "se", "eid": "e2"}])
    assert response.status_code == 200
    assert response.content == b"ok"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert publisher.records == [
        BatchRecord("snowplow", "e1", None, '{"e": "pv", "eid": "e1"}', "", "snowplow"),
        BatchRecord("snowplow", "e2", None, '{"e": "se", "eid": "e2"}', "", "snowplow"),
    ]


def test_post_echoes_the_origin_for_browser_trackers(client, gateway):
    response = post(client, [{"e": "pv"}], HTTP_ORIGIN="https://shop.example")
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


def test_a_preflight_allows_the_post_without_accepting_anything(client, gateway, publisher):
    response = client.options(TP2, HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 200
    assert "Content-Type" in response["Access-Control-Allow-Headers"]
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert publisher.records == []


def test_post_gzip_body(client, gateway, publisher):
    body = gzip.compress(envelope({"e": "pv", "eid": "z"}))
    assert post(client, body, HTTP_CONTENT_ENCODING="gzip").status_code == 200
    assert [record.event_id for record in publisher.records] == ["z"]


def test_pixel_answers_a_gif_that_is_never_cached(client, gateway, publisher):
    response = client.get("/i?e=pv&eid=p1&url=%2Fhome&aid=web")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response.content == snowplow.PIXEL
    assert response.content.startswith(b"GIF89a")
    assert "no-store" in response["Cache-Control"]
    assert "no-cache" in response["Cache-Control"]
    assert response["Pragma"] == "no-cache"
    assert response["Expires"]
    assert publisher.records == [
        BatchRecord(
            "snowplow",
            "p1",
            None,
            '{"e":"pv","eid":"p1","url":"/home","aid":"web"}',
            "",
            "snowplow",
        )
    ]


def test_pixel_without_event_type_is_400_and_accepts_nothing(client, gateway, publisher):
    assert_error(client.get("/i?eid=p1"), 400, "invalid_event")
    assert publisher.records == []


@pytest.mark.django_db
def test_the_key_comes_in_a_header_or_the_path(client, gateway, publisher, fresh_keys):
    _, key = make_source(name="web")
    assert (
        post(client, [{"e": "pv", "eid": "h"}], HTTP_AUTHORIZATION=f"Bearer {key}").status_code
        == 200
    )
    assert post(client, [{"e": "pv", "eid": "x"}], HTTP_X_API_KEY=key).status_code == 200
    assert post(client, [{"e": "pv", "eid": "p"}], url=f"/snowplow/{key}{TP2}").status_code == 200
    assert client.get(f"/snowplow/{key}/i?e=pv&eid=g").status_code == 200
    assert [(record.event_id, record.source) for record in publisher.records] == [
        ("h", "web"),
        ("x", "web"),
        ("p", "web"),
        ("g", "web"),
    ]


@pytest.mark.django_db
def test_a_missing_or_wrong_key_is_401(client, gateway, publisher, fresh_keys, unreadable_body):
    make_source()
    assert_error(post(client, [{"e": "pv"}]), 401, "unauthorized")
    assert_error(post(client, [{"e": "pv"}], HTTP_AUTHORIZATION="Bearer nope"), 401, "unauthorized")
    assert_error(post(client, [{"e": "pv"}], url=f"/snowplow/nope{TP2}"), 401, "unauthorized")
    assert_error(client.get("/snowplow/nope/i?e=pv"), 401, "unauthorized")
    response = client.generic(
        "POST",
        TP2,
        content_type="application/json",
        CONTENT_LENGTH="10",
        **{"wsgi.input": unreadable_body},
    )
    assert_error(response, 401, "unauthorized")
    assert publisher.records == []


@pytest.mark.django_db
def test_the_source_topic_applies_and_must_be_allowed(client, gateway, publisher, fresh_keys):
    _, key = make_source(allowed_topics="web", protocol_topics={"snowplow": "web"})
    _, other = make_source(name="other", allowed_topics="web")
    assert post(client, [{"e": "pv", "eid": "a"}], HTTP_X_API_KEY=key).status_code == 200
    assert publisher.records[0].topic == "web"
    assert_error(post(client, [{"e": "pv"}], HTTP_X_API_KEY=other), 403, "forbidden_topic")


@pytest.mark.django_db
def test_a_topic_by_aid_groups_the_events(client, gateway, publisher, fresh_keys):
    _, key = make_source(allowed_topics="sp-web,sp-app", protocol_topics={"snowplow": "sp-{aid}"})
    events = [{"e": "pv", "eid": "a", "aid": "web"}, {"e": "pv", "eid": "b", "aid": "app"}]
    assert post(client, events, HTTP_X_API_KEY=key).status_code == 200
    assert sorted((record.topic, record.event_id) for record in publisher.records) == [
        ("sp-app", "b"),
        ("sp-web", "a"),
    ]


@pytest.mark.django_db
def test_an_aid_topic_the_source_may_not_write_accepts_nothing(
    client, gateway, publisher, fresh_keys
):
    _, key = make_source(allowed_topics="sp-web", protocol_topics={"snowplow": "sp-{aid}"})
    events = [{"e": "pv", "aid": "web"}, {"e": "pv", "aid": "admin"}]
    assert_error(post(client, events, HTTP_X_API_KEY=key), 403, "forbidden_topic")
    assert_error(client.get("/i?e=pv&aid=bad%20name", HTTP_X_API_KEY=key), 404, "unknown_topic")
    assert publisher.records == []


@pytest.mark.django_db
def test_over_the_rate_limit_is_429_with_retry_after(client, gateway, publisher, fresh_keys):
    _, key = make_source(max_events_per_s=2)
    assert post(client, [{"e": "pv"}] * 2, HTTP_X_API_KEY=key).status_code == 200
    response = assert_error(post(client, [{"e": "pv"}], HTTP_X_API_KEY=key), 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1


def test_a_full_batcher_is_503_with_retry_after(client, gateway, publisher):
    publisher.gate.clear()
    post(client, [{"e": "pv"}] * 50, HTTP_X_INGEST_ACK="none")
    response = assert_error(post(client, [{"e": "pv"}]), 503, "overloaded")
    assert response["Retry-After"] == "1"
    response = assert_error(client.get("/i?e=pv"), 503, "overloaded")
    assert response["Retry-After"] == "1"
    publisher.gate.set()


def test_an_unreachable_broker_is_503_not_ok(client, gateway, publisher):
    publisher.error = ConnectionRefusedError("broker down")
    response = assert_error(post(client, [{"e": "pv"}]), 503, "unavailable")
    assert response["Retry-After"]


def test_limits_and_media_types_answer_in_the_text_shape(client, gateway, settings):
    settings.INGEST_MAX_BODY_BYTES = 100
    assert_error(post(client, [{"e": "pv", "x": "y" * 200}]), 413, "body_too_large")
    assert_error(
        post(client, [{"e": "pv"}], content_type="text/xml"), 415, "unsupported_media_type"
    )
    assert_error(post(client, [{"e": "pv"}], HTTP_X_INGEST_ACK="maybe"), 400, "invalid_ack")


def test_a_wrong_method_is_405_with_allow(client, gateway):
    response = assert_error(client.get(TP2), 405, "method_not_allowed")
    assert response["Allow"] == "POST, OPTIONS"
    response = assert_error(client.post("/i"), 405, "method_not_allowed")
    assert response["Allow"] == "GET"


@pytest.mark.django_db
def test_the_hot_path_does_no_database_query(client, gateway, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert post(client, [{"e": "pv"}]).status_code == 200
        assert client.get("/i?e=pv").status_code == 200


def test_the_openapi_document_describes_the_endpoints(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert "post" in paths[TP2]
    assert "get" in paths["/i"]
    assert "/snowplow/{key}/i" in paths
