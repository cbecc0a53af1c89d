import io
import json

import pytest
from django.core import signals
from django.db import connection

from ingest.control import keys
from ingest.edge.handlers import GatewayWSGIHandler
from ingest.models import Source
from ingest.pipeline import accept


def call(handler, method, path, body=b"", *, query="", **headers):
    """Call the WSGI handler as cheroot does; return (status, headers, body)."""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        **headers,
    }
    answer = {}

    def start_response(status, response_headers):
        answer["status"] = int(status.split()[0])
        answer["headers"] = dict(response_headers)

    chunks = handler(environ, start_response)
    content = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return answer["status"], answer["headers"], content


@pytest.fixture
def request_signals():
    """Count the request_started signals Django sends."""
    sent = []

    def receiver(**kwargs):
        sent.append(kwargs)

    signals.request_started.connect(receiver)
    yield sent
    signals.request_started.disconnect(receiver)


def test_event_post_takes_the_fast_path_with_a_complete_answer(gateway, request_signals):
    status, headers, content = call(
        GatewayWSGIHandler(), "POST", "/api/v1/events/clicks", b'{"id": "e1"}'
    )
    assert status == 202
    assert json.loads(content)["ids"] == ["e1"]
    assert headers["Content-Length"] == str(len(content))
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert len(headers["X-Request-Id"]) == 32
    assert "Set-Cookie" not in headers
    assert request_signals == []


def test_other_paths_run_the_full_middleware_chain(gateway, request_signals):
    status, headers, content = call(GatewayWSGIHandler(), "GET", "/healthz")
    assert status == 200
    assert json.loads(content)["status"] == "ok"
    assert headers["X-Frame-Options"] == "DENY"  # XFrameOptionsMiddleware ran
    assert len(request_signals) == 1


def test_fast_path_can_be_turned_off(gateway, request_signals, settings):
    settings.INGEST_FAST_PATHS = ()
    status, headers, _ = call(GatewayWSGIHandler(), "POST", "/api/v1/events/clicks", b"{}")
    assert status == 202
    assert headers["X-Frame-Options"] == "DENY"
    assert len(request_signals) == 1


def test_unknown_path_under_a_fast_prefix_is_a_json_404(gateway):
    status, headers, content = call(GatewayWSGIHandler(), "POST", "/api/v1/events/", b"{}")
    assert status == 404
    assert json.loads(content)["code"] == "not_found"
    assert headers["Content-Length"] == str(len(content))


def test_view_crash_on_the_fast_path_is_a_json_500(gateway, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(accept, "accept_events", crash)
    status, _, content = call(GatewayWSGIHandler(), "POST", "/api/v1/events/clicks", b"{}")
    assert status == 500
    assert json.loads(content)["code"] == "internal_error"


def test_key_cache_reload_on_the_fast_path_closes_its_connection(
    gateway, transactional_db, settings, monkeypatch
):
    settings.INGEST_REQUIRE_API_KEYS = True
    keys.get_cache.replace(None)  # a cache that has not loaded yet
    source = Source(name="shop", allowed_topics="*")
    key = keys.issue_key(source)
    source.save()
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)  # close after each request
    status, _, _ = call(
        GatewayWSGIHandler(),
        "POST",
        "/api/v1/events/clicks",
        b"{}",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert status == 202
    assert keys.get_cache().lookup(keys.hash_key(key)).name == "shop"  # it did load from the DB
    assert connection.connection is None


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("gw.example.com", 202),
        ("gw.example.com:8000", 202),
        ("eu.events.example.org", 202),
        ("evil.example.net", 400),
        ("gw.example.com.evil.net", 400),
        ("bad host", 400),
    ],
)
def test_fast_path_checks_the_host_against_allowed_hosts(
    gateway, publisher, settings, host, status
):
    settings.ALLOWED_HOSTS = ["gw.example.com", ".events.example.org"]
    answer, headers, content = call(
        GatewayWSGIHandler(), "POST", "/api/v1/events/clicks", b"{}", HTTP_HOST=host
    )
    assert answer == status
    if status == 400:
        assert json.loads(content)["code"] == "invalid_host"
        assert headers["Content-Type"] == "application/json"
        assert len(headers["X-Request-Id"]) == 32  # answered inside the fast chain
        assert publisher.records == []
