"""JSON log lines, request ids and the access log (ingest/logging.py)."""

import json
import logging

from ingest.control.logging import JsonFormatter, request_id_var


def test_json_log_lines_carry_the_request_id():
    record = logging.makeLogRecord(
        {
            "name": "ingest",
            "levelname": "INFO",
            "msg": "hello %s",
            "args": ("you",),
            "n": 3,
            "data": {"kwargs": "a whole task payload"},
        }
    )
    token = request_id_var.set("req-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "req-1" and line["n"] == 3
    assert "data" not in line


def test_responses_carry_a_request_id(client, gateway):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-Id"] == "abc-123"
    generated = client.get("/healthz", HTTP_X_REQUEST_ID="bad id!")["X-Request-Id"]
    assert len(generated) == 32


def test_access_log_lines_carry_the_request_id(client, gateway, settings, caplog):
    settings.INGEST_ACCESS_LOG = True
    with caplog.at_level("INFO", logger="ingest.access"):
        client.get("/healthz", HTTP_X_REQUEST_ID="trace-7")
    (record,) = caplog.records
    assert (record.method, record.path, record.status) == ("GET", "/healthz", 200)
    assert record.request_id == "trace-7"
    assert json.loads(JsonFormatter().format(record))["request_id"] == "trace-7"
