"""The real snowplow-tracker SDK, POST and GET emitters, against serve.py in production mode."""

import json
import time
import uuid

import pytest
import requests
from snowplow_tracker import Emitter
from snowplow_tracker.emitters import PAYLOAD_DATA_SCHEMA
from snowplow_tracker.events import PageView

from tests.protocols import snowplow_sdk
from tests.protocols.conftest import SdkSource, create_source
from tests.protocols.drivers import snowplow_get, snowplow_post
from tests.protocols.ledger import wait_for_ids

pytestmark = pytest.mark.integration

EVENTS = 2_000
SEND_TIMEOUT_S = 60
KAFKA_TIMEOUT_S = 60


def fresh_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


@pytest.fixture(scope="module", autouse=True)
def sources(sdk_stack) -> dict[str, SdkSource]:
    """Every source this module sends as, made once (each is a manage.py run).

    The SDK never retries a 401: its tests depend on the key cache reloading for an unknown key
    (INGEST_KEY_CACHE_MISS_RELOAD_S).
    """
    made = {
        use: create_source(sdk_stack, protocol_topics={"snowplow": "{topic}"})
        for use in ("post", "get", "pixel")
    }
    name, topic = f"sdk-{uuid.uuid4().hex[:10]}", f"sdk-{uuid.uuid4().hex[:10]}"
    key = sdk_stack.run_manage(
        "create_source",
        name,
        "--topics",
        f"{topic}-web",
        f"--protocol-topic=snowplow={topic}-{{aid}}",
    ).stdout.strip()
    made["aid"] = SdkSource(name=name, key=key, topic=f"{topic}-web")
    return made


@pytest.mark.parametrize("driver", [snowplow_post, snowplow_get], ids=["post", "get"])
def test_no_loss(sdk_stack, sources, driver):
    source = sources[driver.__name__.rsplit("_", 1)[-1]]
    ids = fresh_ids(EVENTS)
    started = time.monotonic()
    driver.send(url=sdk_stack.url, key=source.key, ids=ids, timeout_s=SEND_TIMEOUT_S)
    sent_s = time.monotonic() - started
    records = wait_for_ids(
        sdk_stack,
        source.topic,
        ids,
        timeout_s=KAFKA_TIMEOUT_S,
        source=source.name,
        protocol="snowplow",
    )
    value = json.loads(records[0].raw_value)
    assert value["eid"] == records[0].event_id
    assert (value["e"], value["aid"]) == ("se", snowplow_sdk.APP_ID)
    assert sent_s < SEND_TIMEOUT_S


def failing_emitter(*, url: str, key: str, method: str, failures: list) -> Emitter:
    session = requests.Session()
    if method == "post":
        session.headers["Authorization"] = f"Bearer {key}"
        endpoint = url
    else:
        endpoint = f"{url}/snowplow/{key}"
    return Emitter(
        endpoint,
        method=method,
        batch_size=5 if method == "post" else 1,
        on_failure=lambda sent, events: failures.append((sent, [e["eid"] for e in events])),
        request_timeout=(2.0, 10.0),
        session=session,
    )


@pytest.mark.parametrize("method", ["post", "get"])
def test_a_wrong_key_fails_the_events_without_retrying(sdk_stack, method):
    failures: list = []
    emitter = failing_emitter(url=sdk_stack.url, key="not-a-key", method=method, failures=failures)
    ids = fresh_ids(5)
    snowplow_sdk.track_all(emitter, ids)
    emitter.flush()
    # The SDK reports the 401 to on_failure (no success), and drops the events: 401 is one of
    # the statuses it never retries.
    if method == "post":
        assert failures == [(0, ids)]
    else:
        assert failures == [(0, [event_id]) for event_id in ids]
    assert emitter.event_store.size() == 0
    assert not emitter.retry_timer.is_active()


def test_the_pixel_and_the_batch_answer_as_the_collector(sdk_stack, sources):
    source = sources["pixel"]
    pixel = requests.get(
        f"{sdk_stack.url}/snowplow/{source.key}/i", params={"e": "pv", "eid": "px"}, timeout=10
    )
    assert pixel.status_code == 200
    assert pixel.headers["Content-Type"] == "image/gif"
    assert pixel.content.startswith(b"GIF89a")
    assert "no-store" in pixel.headers["Cache-Control"]
    body = {"schema": PAYLOAD_DATA_SCHEMA, "data": [{"e": "pv", "eid": "bx"}]}
    batch = requests.post(
        f"{sdk_stack.url}/com.snowplowanalytics.snowplow/tp2",
        json=body,
        headers={"X-Api-Key": source.key},
        timeout=10,
    )
    assert (batch.status_code, batch.text) == (200, "ok")
    broken = requests.post(
        f"{sdk_stack.url}/com.snowplowanalytics.snowplow/tp2",
        data=b"{not json",
        headers={"X-Api-Key": source.key, "Content-Type": "application/json"},
        timeout=10,
    )
    assert broken.status_code == 400
    assert broken.text.startswith("invalid_json: ")
    wait_for_ids(
        sdk_stack,
        source.topic,
        ["px", "bx"],
        timeout_s=KAFKA_TIMEOUT_S,
        source=source.name,
        protocol="snowplow",
    )


def test_a_topic_by_aid(sdk_stack, sources):
    source = sources["aid"]
    session = requests.Session()
    session.headers["X-Api-Key"] = source.key
    emitter = Emitter(sdk_stack.url, method="post", session=session, request_timeout=10)
    tracker = snowplow_sdk.IdentifiedTracker(namespace="ingest", emitters=emitter, app_id="web")
    ids = fresh_ids(3)
    for event_id in ids:
        tracker.track_with_id(event_id, PageView(page_url="https://shop.example/"))
    snowplow_sdk.drain(emitter, deadline=time.monotonic() + SEND_TIMEOUT_S)
    wait_for_ids(
        sdk_stack,
        source.topic,
        ids,
        timeout_s=KAFKA_TIMEOUT_S,
        source=source.name,
        protocol="snowplow",
    )
