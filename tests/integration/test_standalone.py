"""`python serve.py` with no service configured: SQLite, the file broker and an embedded worker."""

import http.client
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from ingest.control.topics import read_topic
from ingestsite import embedded
from tests.stack import ROOT, free_port

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60.0


def post(port: int, path: str, document) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", path, json.dumps(document).encode(), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def standalone(kafka_address, tmp_path):
    """serve.py in standalone mode; only Kafka is the test's, so its topics can be read back."""
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")
        and not name.startswith(("CELERY_", "INGEST_"))
    }
    env.update(
        INGEST_MODE="standalone",
        INGEST_DATA_DIR=str(tmp_path / "data"),
        KAFKA_BOOTSTRAP_SERVERS=kafka_address,
        SERVE_BIND=f"127.0.0.1:{port}",
        PYTHONUNBUFFERED="1",
    )
    with (tmp_path / "serve.log").open("ab") as log:
        server = subprocess.Popen(
            [sys.executable, "serve.py", "--processes", "1"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        embedded.wait_for_port("127.0.0.1", port, process=server, timeout=START_TIMEOUT_S)
        yield port
    finally:
        embedded.stop_process(server, timeout=30)


def test_events_posted_to_a_standalone_gateway_reach_kafka(standalone):
    topic = f"standalone-{uuid.uuid4().hex[:8]}"
    ids = [f"sa-{n}" for n in range(5)]
    status, body = post(standalone, f"/api/v1/events/{topic}", [{"id": id_} for id_ in ids])
    assert (status, body["ack"]) == (202, "durable"), body
    status, body = post(standalone, f"/api/v1/events/{topic}?ack=delivered", {"id": "sa-last"})
    assert (status, body["ack"]) == (202, "delivered"), body

    deadline = time.monotonic() + 30
    found: set[str] = set()
    while time.monotonic() < deadline and found != {*ids, "sa-last"}:
        found = {record.event_id for record in read_topic(topic=topic, idle_timeout_s=1)}
    assert found == {*ids, "sa-last"}
