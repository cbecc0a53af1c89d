"""serve.py and a Celery worker as real processes, on PostgreSQL, RabbitMQ and Tansu."""

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from celery_app import app as celery_app
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SINGLE_POSTS = 300
SHOW_GETS = 200
BATCHES = 5
BATCH_SIZE = 100
DRAIN_TIMEOUT_S = 60
TOPIC_POLL_S = 1.0


@pytest.fixture
def stack(stack_factory):
    stack = stack_factory(extra_env={"KAFKA_DEFAULT_TOPIC": f"show-{uuid.uuid4().hex[:8]}"})
    stack.start_worker()
    stack.start_server("--threads", "16")
    return stack


def test_every_accepted_event_reaches_kafka_once_with_payload_and_key(stack):
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    show_topic = stack.env["KAFKA_DEFAULT_TOPIC"]
    expected = {}  # event id -> (topic, key, payload)

    def post_single(n):
        event = {"id": f"single-{n}", "key": f"user-{n % 7}", "n": n, "kind": "single"}
        status, _, body = stack.post_json(f"/api/v1/events/{topic}", event)
        assert status == 202, body
        assert body["ids"] == [event["id"]]
        return [(event["id"], topic, event["key"], event)]

    def get_show(n):
        params = {"n": str(n), "page": "/home"}
        status, _, body = stack.request("GET", "/api/v1/show/?" + urlencode(params))
        assert status == 202, body
        return [(body["ids"][0], show_topic, None, params)]

    def post_batch(n):
        events = [{"key": f"user-{i % 5}", "batch": n, "i": i} for i in range(BATCH_SIZE)]
        status, _, body = stack.post_json(f"/api/v1/events/{topic}", {"events": events})
        assert status == 202, body
        assert body["accepted"] == BATCH_SIZE
        return [
            (event_id, topic, event["key"], event)
            for event_id, event in zip(body["ids"], events, strict=True)
        ]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [pool.submit(post_single, n) for n in range(SINGLE_POSTS)]
        jobs += [pool.submit(get_show, n) for n in range(SHOW_GETS)]
        jobs += [pool.submit(post_batch, n) for n in range(BATCHES)]
        for job in jobs:
            for event_id, event_topic, key, payload in job.result():
                expected[event_id] = (event_topic, key, payload)
    accept_seconds = time.monotonic() - started
    assert len(expected) == SINGLE_POSTS + SHOW_GETS + BATCHES * BATCH_SIZE == 1000

    stack.wait_for_drain(timeout=DRAIN_TIMEOUT_S)

    records = []

    def all_arrived() -> bool:
        records[:] = stack.read_topic(topic) + stack.read_topic(show_topic)
        return len({record.event_id for record in records}) >= len(expected)

    wait_until(
        all_arrived,
        timeout=DRAIN_TIMEOUT_S,
        interval=TOPIC_POLL_S,
        message=lambda: f"{len(records)} of {len(expected)} records arrived",
    )

    counts = Counter(record.event_id for record in records)
    assert {event_id for event_id, n in counts.items() if n > 1} == set()
    assert set(counts) == set(expected)
    for record in records:
        event_topic, key, payload = expected[record.event_id]
        assert record.key == key
        assert record.value == payload
    print(f"accepted 1000 events in {accept_seconds:.2f}s ({1000 / accept_seconds:.0f} events/s)")


def test_receipt_and_delivered_ack_report_kafka_offsets(stack):
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    status, _, body = stack.post_json(
        f"/api/v1/events/{topic}?ack=delivered", [{"id": "a", "key": "k"}, {"id": "b"}]
    )
    assert status == 202, body
    assert body["ack"] == "delivered"
    assert [offset["id"] for offset in body["offsets"]] == ["a", "b"]
    status, _, receipt = stack.request("GET", f"/api/v1/receipts/{body['receipt']}")
    assert status == 200
    assert receipt["status"] == "delivered"
    assert receipt["offsets"] == [
        {"partition": offset["partition"], "offset": offset["offset"]} for offset in body["offsets"]
    ]


def test_server_and_worker_run_on_native_threads_with_the_stock_socket(stack):
    status, _, body = stack.request("GET", "/healthz")
    assert status == 200
    assert body["process"]["socket_module"] == "socket"
    assert body["process"]["green_thread_libraries_loaded"] == []

    celery_app.conf.broker_url = stack.env["CELERY_BROKER_URL"]
    deadline = time.monotonic() + 20
    replies = None
    while not replies and time.monotonic() < deadline:
        replies = celery_app.control.inspect(
            destination=[f"{stack.queue}@{__import__('socket').gethostname()}"], timeout=2
        )._request("process_report")
    assert replies, "the worker did not answer the process_report inspect command"
    (report,) = replies.values()
    assert report["socket_module"] == "socket"
    assert report["green_thread_libraries_loaded"] == []
    assert report["pid"] == stack.worker.pid


def test_the_worker_keeps_its_database_connections_from_batch_to_batch(stack):
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.post_json(f"/api/v1/events/{topic}?ack=delivered", {"id": "warm-up"})
    sessions_before = stack.database.sessions()
    for n in range(BATCHES * 4):
        status, _, body = stack.post_json(f"/api/v1/events/{topic}?ack=delivered", {"id": f"{n}"})
        assert (status, body["ack"]) == (202, "delivered"), body
    # One batch per request, each written by a worker thread: Celery's Django fixup would open
    # a connection (a PostgreSQL backend) for every one of them.
    assert stack.database.sessions() - sessions_before < BATCHES
