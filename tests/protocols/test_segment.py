"""Segment's real SDKs (Python and Node) against serve.py in production mode."""

import base64
import gzip
import json
import logging
import threading
import uuid

import pytest
from segment.analytics import Client

from tests.protocols.conftest import SdkSource, create_source
from tests.protocols.drivers import segment_node, segment_python
from tests.protocols.ledger import wait_for_ids
from tests.stack import Stack
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

NO_LOSS_EVENTS = 2_000
SEND_TIMEOUT_S = 60
LEDGER_TIMEOUT_S = 60
BAD_KEY_TIMEOUT_S = 10
# A new source's key is known to a serve.py process once an unknown key reloads its key cache
# (INGEST_KEY_CACHE_MISS_RELOAD_S); each probe is a new connection, to any of the processes.
KEY_KNOWN_TIMEOUT_S = 30
KEY_KNOWN_PROBES = 12
DRIVERS = [segment_python, segment_node]


def fresh_ids(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"{prefix}-{run}-{number}" for number in range(count)]


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture(scope="module")
def sources(sdk_stack) -> dict[str, SdkSource]:
    """A source (and topic) per test that sends, created at once so their keys load together."""
    created = {
        name: create_source(sdk_stack, protocol_topics={"segment": "{topic}"})
        for name in ("python", "node", "single")
    }
    wait_until_key_is_known(sdk_stack, created["single"].key)  # the last created: all loaded
    return created


def wait_until_key_is_known(stack: Stack, key: str) -> None:
    headers = {"Authorization": basic_auth(key)}

    def probe() -> int:
        # An empty batch is refused after the key is checked: 400 once known, 401 before.
        status, _, _ = stack.post_json("/v1/batch", {"batch": []}, headers=headers)
        return status

    def key_is_known() -> bool:
        return all(probe() == 400 for _ in range(KEY_KNOWN_PROBES))

    wait_until(
        key_is_known,
        timeout=KEY_KNOWN_TIMEOUT_S,
        interval=0.5,
        message="serve.py did not learn the new sources' keys in time",
    )


@pytest.mark.parametrize("driver", DRIVERS, ids=["python", "node"])
def test_no_loss(sdk_stack, sources, driver):
    client = driver.__name__.rsplit("_", 1)[-1]
    source = sources[client]
    ids = fresh_ids(client, NO_LOSS_EVENTS)
    driver.send(url=sdk_stack.url, key=source.key, ids=ids, timeout_s=SEND_TIMEOUT_S)
    records = wait_for_ids(
        sdk_stack,
        source.topic,
        ids,
        timeout_s=LEDGER_TIMEOUT_S,
        source=source.name,
        protocol="segment",
    )
    record = records[0]
    message = json.loads(record.raw_value)
    assert message["type"] == "track"
    assert message["messageId"] == record.event_id
    assert message["event"] == "Driver Event"
    assert record.key == message["userId"]
    assert source.key not in record.raw_value.decode()


def test_bad_key_python_reports_a_401_api_error_to_on_error(sdk_stack, caplog):
    errors = []
    done = threading.Event()

    def on_error(error, batch):
        errors.append((error, len(batch)))
        done.set()

    client = Client("not-a-key", host=sdk_stack.url, on_error=on_error, max_retries=2)
    caplog.set_level(logging.ERROR, logger="segment")
    try:
        client.track(user_id="u1", event="Bad Key", message_id="bad-key-python")
        assert done.wait(BAD_KEY_TIMEOUT_S), "the SDK never reported the refused batch"
    finally:
        client.join()
    [(error, size)] = errors
    assert (error.status, error.code, size) == (401, "unauthorized", 1)
    assert "401" in caplog.text


def test_bad_key_node_fails_delivery_with_401(sdk_stack):
    report = segment_node.run(
        url=sdk_stack.url, key="not-a-key", ids=["bad-key-node"], timeout_s=BAD_KEY_TIMEOUT_S
    )
    assert report["delivered"] == []
    assert report["failed"] == [{"id": "bad-key-node", "reason": "Error: [401] Unauthorized"}]


def test_single_calls_with_the_body_write_key_and_gzip(sdk_stack, sources):
    source = sources["single"]
    ids = fresh_ids("single", 2)
    track = {"writeKey": source.key, "event": "A", "userId": "u1", "messageId": ids[0]}
    status, _, body = sdk_stack.request(
        "POST",
        "/v1/track",
        gzip.compress(json.dumps(track).encode()),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert (status, body) == (200, {"success": True})
    status, _, body = sdk_stack.post_json(
        "/v1/identify",
        {"userId": "u1", "traits": {"plan": "pro"}, "messageId": ids[1]},
        headers={"Authorization": basic_auth(source.key)},
    )
    assert (status, body) == (200, {"success": True})
    records = wait_for_ids(
        sdk_stack,
        source.topic,
        ids,
        timeout_s=LEDGER_TIMEOUT_S,
        source=source.name,
        protocol="segment",
    )
    by_id = {record.event_id: json.loads(record.raw_value) for record in records}
    assert by_id[ids[0]] == {"type": "track", "event": "A", "userId": "u1", "messageId": ids[0]}
    assert by_id[ids[1]]["type"] == "identify"
