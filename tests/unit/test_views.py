import gzip
import io
import json

import pytest

from ingest.models import DeliveryOutcome
from ingest.records import BatchRecord

URL = "/api/v1/events/clicks"


def post(client, body, *, url=URL, content_type="application/json", **headers):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return client.generic("POST", url, body, content_type=content_type, **headers)


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    return body


def test_post_one_event_answers_202_after_the_publish(client, gateway, publisher):
    response = post(client, {"id": "e1", "key": "user-1", "n": 1})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 1
    assert body["ids"] == ["e1"]
    assert body["ack"] == "durable"
    value = '{"id": "e1", "key": "user-1", "n": 1}'  # exactly as sent
    assert publisher.records == [BatchRecord("clicks", "e1", "user-1", value)]
    batch_id, first, count, _signature = body["receipt"].split(".")
    assert (batch_id, first, count) == (publisher.batches[0].batch_id, "0", "1")


@pytest.mark.parametrize(
    "document", [[{"n": 1}, {"n": 2}, {"n": 3}], {"events": [{"n": 1}, {"n": 2}, {"n": 3}]}]
)
def test_post_a_batch(client, gateway, publisher, document):
    response = post(client, document)
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    assert [record[1] for record in publisher.records] == response.json()["ids"]


def test_post_gzip_body(client, gateway, publisher):
    response = post(client, gzip.compress(b'[{"n": 1}]'), HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202
    assert len(publisher.records) == 1


def test_ack_none_answers_before_the_publish(client, gateway, publisher):
    publisher.gate.clear()
    response = post(client, {"n": 1}, url=URL + "?ack=none")
    assert response.status_code == 202
    assert response.json()["ack"] == "none"
    assert publisher.records == []
    publisher.gate.set()


def test_ack_delivered_returns_offsets(client, gateway, publisher, monkeypatch):
    def wait(batch_id, *, timeout):
        return DeliveryOutcome(batch_id=batch_id, status="delivered", offsets=[[3, 10], [3, 11]])

    monkeypatch.setattr(gateway.outcomes, "wait", wait)
    response = post(client, [{"id": "a"}, {"id": "b"}], HTTP_X_INGEST_ACK="delivered")
    assert response.status_code == 202
    assert response.json()["offsets"] == [
        {"id": "a", "partition": 3, "offset": 10},
        {"id": "b", "partition": 3, "offset": 11},
    ]


def test_ack_delivered_timeout_says_which_ids_are_pending(client, gateway):
    response = post(client, [{"id": "a"}], url=URL + "?ack=delivered")
    assert response.status_code == 202
    assert response.json()["ack"] == "durable"
    assert response.json()["pending_ids"] == ["a"]


def test_show_turns_query_parameters_into_one_event(client, gateway, publisher, settings):
    response = client.get("/api/v1/show/?a=1&b=2&b=3")
    assert response.status_code == 202
    ((topic, event_id, key, value, source, protocol),) = publisher.records
    assert topic == settings.KAFKA_DEFAULT_TOPIC
    assert json.loads(value) == {"a": "1", "b": ["2", "3"]}
    assert response.json()["ids"] == [event_id]
    assert (source, protocol) == ("", "native")


@pytest.mark.parametrize(
    "body, code, fragment",
    [
        (b"{not json", "invalid_json", "not valid JSON"),
        (b'"a string"', "invalid_body", "object or an array"),
        (b'[{"n": 1}, 2]', "invalid_event", "event 1"),
        (b'[{"n": 1}, {"id": 5}]', "invalid_event", "event 1"),
        (b'[{"key": ["x"]}]', "invalid_event", "event 0"),
        (b"[]", "invalid_body", "no events"),
    ],
)
def test_bad_input_is_400_and_accepts_nothing(client, gateway, publisher, body, code, fragment):
    body = assert_error(post(client, body), 400, code)
    assert fragment in body["message"]
    assert publisher.records == []


def test_body_over_the_limit_is_413(client, gateway, publisher, settings):
    settings.INGEST_MAX_BODY_BYTES = 100
    assert_error(post(client, [{"pad": "x" * 200}]), 413, "body_too_large")
    assert publisher.records == []


def test_decompressed_body_over_the_limit_is_413(client, gateway, publisher, settings):
    settings.INGEST_MAX_DECOMPRESSED_BYTES = 1000
    body = gzip.compress(json.dumps([{"pad": "x" * 5000}]).encode())
    assert_error(post(client, body, HTTP_CONTENT_ENCODING="gzip"), 413, "body_too_large")
    assert publisher.records == []


def test_too_many_events_is_413(client, gateway, settings):
    settings.INGEST_MAX_EVENTS_PER_REQUEST = 2
    assert_error(post(client, [{}, {}, {}]), 413, "too_many_events")


def test_unsupported_content_type_is_415(client, gateway):
    assert_error(post(client, b"a=1", content_type="text/csv"), 415, "unsupported_media_type")


def test_unsupported_encoding_is_415(client, gateway):
    response = post(client, b"{}", HTTP_CONTENT_ENCODING="br")
    assert_error(response, 415, "unsupported_encoding")


def test_topic_outside_the_allowlist_is_404(client, gateway, settings, publisher):
    settings.KAFKA_TOPIC_ALLOWLIST = ["views"]
    assert_error(post(client, {"n": 1}), 404, "unknown_topic")
    assert publisher.records == []


def test_invalid_topic_name_is_404(client, gateway):
    assert_error(post(client, {"n": 1}, url="/api/v1/events/bad%20topic"), 404, "unknown_topic")


def test_wrong_method_is_405_with_allow(client, gateway):
    response = client.get(URL)
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"
    assert_error(client.post("/api/v1/show/"), 405, "method_not_allowed")


def test_unknown_path_is_a_json_404(client):
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_unknown_ack_level_is_400(client, gateway):
    assert_error(post(client, {}, url=URL + "?ack=maybe"), 400, "invalid_ack")


def test_full_batcher_is_a_fast_503_with_retry_after(client, gateway, publisher):
    publisher.gate.clear()
    post(client, [{}] * 50, url=URL + "?ack=none")
    response = post(client, {"n": 1})
    assert_error(response, 503, "overloaded")
    assert response["Retry-After"] == "1"
    publisher.gate.set()


def test_unreachable_broker_is_503_and_the_request_is_not_accepted(client, gateway, publisher):
    publisher.error = ConnectionRefusedError("broker down")
    response = post(client, {"n": 1})
    assert_error(response, 503, "unavailable")
    assert response["Retry-After"]


@pytest.mark.parametrize(
    "error, depth, code", [("refused", 0, "unavailable"), (None, 101, "backlogged")]
)
def test_backlog_monitor_sheds_load_before_the_batcher(
    client, gateway, publisher, error, depth, code
):
    gateway.backlog.error, gateway.backlog.depth = error, depth
    response = post(client, {"n": 1})
    assert_error(response, 503, code)
    assert response["Retry-After"]
    assert publisher.records == []


@pytest.mark.django_db
def test_the_hot_path_does_no_database_query(client, gateway, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert post(client, [{"n": 1}, {"n": 2}]).status_code == 202
        assert client.get("/api/v1/show/?a=1").status_code == 202


def test_a_chunked_body_is_read_up_to_the_limit(client, gateway, publisher, settings):
    chunked = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"}
    body = b'[{"id": "c1"}, {"id": "c2"}]'
    response = post(client, body, **chunked, **{"wsgi.input": io.BytesIO(body)})
    assert response.status_code == 202, response.content
    assert [record.event_id for record in publisher.records] == ["c1", "c2"]
    settings.INGEST_MAX_BODY_BYTES = 10
    response = post(client, body, **chunked, **{"wsgi.input": io.BytesIO(body)})
    assert_error(response, 413, "body_too_large")


@pytest.mark.parametrize(
    "settings_changes, headers, status",
    [
        ({"INGEST_REQUIRE_API_KEYS": True}, {}, 401),
        ({"KAFKA_TOPIC_ALLOWLIST": ["views"]}, {}, 404),
        ({}, {"HTTP_X_INGEST_ACK": "maybe"}, 400),
        ({}, {"CONTENT_LENGTH": str(10**9)}, 413),
    ],
)
def test_requests_refused_by_their_headers_never_read_the_body(
    client, gateway, settings, unreadable_body, settings_changes, headers, status
):
    for name, value in settings_changes.items():
        setattr(settings, name, value)
    response = post(client, b"{}", **{"wsgi.input": unreadable_body, **headers})
    assert response.status_code == status, response.content


def test_events_that_cannot_be_delivered_as_sent_are_400(client, gateway, publisher):
    body = assert_error(post(client, b'[{"n": 1}, {"key": "\\ud800"}]'), 400, "invalid_event")
    assert 'event 1: "key" holds a lone UTF-16 surrogate' in body["message"]
    assert_error(post(client, b'{"v": 1e999}'), 400, "invalid_event")
    assert publisher.records == []


def test_an_event_over_the_record_size_is_413(client, gateway, publisher, settings):
    settings.KAFKA_MAX_REQUEST_SIZE = 2_000
    assert_error(post(client, [{"n": 1}, {"pad": "x" * 2_000}]), 413, "event_too_large")
    assert publisher.records == []


def test_a_late_confirm_is_a_late_202_not_a_503(client, gateway, publisher, settings):
    # The publisher holds the batch past one publish timeout, as a slow broker's confirm would.
    publisher.delay_s = settings.INGEST_PUBLISH_TIMEOUT_S + 0.5
    response = post(client, {"id": "late"})
    assert response.status_code == 202, response.content
    assert [record.event_id for record in publisher.records] == ["late"]


class CutBody(io.BytesIO):
    """A body the server stops reading: its client was too slow (ingestsite.server.connections)."""

    def read(self, *args):
        raise TimeoutError("Socket operation timed out: the request deadline passed")


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_cut_by_the_server_is_408_not_500(client, gateway, publisher, chunked):
    headers = {"CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"} if chunked else {}
    response = post(client, b"{}", **headers, **{"wsgi.input": CutBody()})
    body = assert_error(response, 408, "request_timeout")
    assert "deadline" in body["message"]
    assert publisher.records == []
