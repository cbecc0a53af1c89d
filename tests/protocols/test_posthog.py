"""posthog (Python) and posthog-node against serve.py in production mode: every event in Kafka
once, by its uuid; a wrong key reported as each SDK reports it; the raw wire forms PostHog takes."""

import base64
import gzip
import json
import logging
import threading
import uuid
from urllib.parse import urlencode

import pytest
from posthog import Posthog
from posthog.request import APIError

from tests.protocols.conftest import SdkSource, create_source
from tests.protocols.drivers import posthog_node, posthog_python
from tests.protocols.ledger import wait_for_ids

pytestmark = pytest.mark.integration

EVENTS = 2_000
SEND_TIMEOUT_S = 20
KAFKA_TIMEOUT_S = 30


def fresh_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


@pytest.fixture(scope="module", autouse=True)
def sources(sdk_stack) -> dict[str, SdkSource]:
    """Every source this module sends as, made once (each is a manage.py run)."""
    return {
        name: create_source(sdk_stack, protocol_topics={"posthog": "{topic}"})
        for name in ("python", "node", "wire")
    }


@pytest.mark.parametrize("driver", [posthog_python, posthog_node], ids=["python", "node"])
def test_no_loss(sdk_stack, sources, driver):
    source = sources[driver.__name__.rsplit("_", 1)[-1]]
    ids = fresh_ids(EVENTS)
    driver.send(url=sdk_stack.url, key=source.key, ids=ids, timeout_s=SEND_TIMEOUT_S)
    records = wait_for_ids(
        sdk_stack,
        source.topic,
        ids,
        timeout_s=KAFKA_TIMEOUT_S,
        source=source.name,
        protocol="posthog",
    )
    event = json.loads(records[0].raw_value)
    assert event["event"] == "driver_event"
    assert records[0].key == event["distinct_id"]
    assert event["uuid"] == records[0].event_id


def test_python_sdk_reports_a_wrong_key_to_on_error_and_its_log(sdk_stack, caplog):
    failed = threading.Event()
    reports = []

    def on_error(error, batch):
        reports.append((error, batch))
        failed.set()

    client = Posthog("not-a-key", host=sdk_stack.url, max_retries=0, on_error=on_error)
    with caplog.at_level(logging.ERROR, logger="posthog"):
        client.capture("clicked", distinct_id="u1", uuid=str(uuid.uuid4()))
        client.flush(timeout_seconds=10)
        client.shutdown()
    assert failed.is_set()
    (error, batch), *_ = reports
    assert isinstance(error, APIError)
    assert error.status == 401
    assert error.message == "the API key is not valid"  # PostHog's `detail`
    assert batch[0]["event"] == "clicked"
    assert any("error uploading" in message for message in caplog.messages)


def test_node_sdk_reports_a_wrong_key_as_an_error_event(sdk_stack):
    report = posthog_node.run(url=sdk_stack.url, key="not-a-key", ids=fresh_ids(3), timeout_s=10)
    assert report["sent"] == []
    assert [error["status"] for error in report["errors"]] == [401]
    assert "401" in report["errors"][0]["message"]


def test_the_wire_forms_posthog_takes(sdk_stack, sources):
    source = sources["wire"]
    ids = fresh_ids(4)

    def event(event_id, **fields):
        return {"event": "raw", "distinct_id": "u1", "uuid": event_id, **fields}

    single = json.dumps(event(ids[0], api_key=source.key)).encode()
    gzipped = gzip.compress(json.dumps([event(ids[1], token=source.key)]).encode())
    js_event = event(ids[2], properties={"token": source.key})
    form = urlencode({"data": base64.b64encode(json.dumps(js_event).encode()).decode()})
    batch = json.dumps({"api_key": source.key, "batch": [event(ids[3])]}).encode()
    requests = [
        ("/capture/", single, "application/json"),
        ("/e/?compression=gzip-js", gzipped, "text/plain"),
        ("/e/", form.encode(), "application/x-www-form-urlencoded"),
        ("/i/v0/e/", batch, "application/json"),
    ]
    for path, body, content_type in requests:
        status, _, answer = sdk_stack.request("POST", path, body, {"Content-Type": content_type})
        assert (status, answer) == (200, {"status": 1}), path
    wait_for_ids(
        sdk_stack,
        source.topic,
        ids,
        timeout_s=KAFKA_TIMEOUT_S,
        source=source.name,
        protocol="posthog",
    )


def test_errors_come_in_posthogs_shape(sdk_stack):
    status, _, answer = sdk_stack.request(
        "POST", "/batch/", b"{not json", {"Content-Type": "application/json"}
    )
    assert status == 400
    assert (answer["type"], answer["code"], answer["attr"]) == (
        "validation_error",
        "invalid_json",
        None,
    )
    body = json.dumps({"api_key": "wrong", "batch": [{"event": "e", "distinct_id": "u"}]})
    status, _, answer = sdk_stack.request("POST", "/batch/", body.encode())
    assert (status, answer["type"], answer["code"]) == (
        401,
        "authentication_error",
        "invalid_api_key",
    )
    # PostHog's paths answer without their slash too, never with a redirect.
    status, _, answer = sdk_stack.request("POST", "/batch", body.encode())
    assert (status, answer["code"]) == (401, "invalid_api_key")
