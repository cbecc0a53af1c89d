"""Keys, quotas, stats and metrics on real serve.py and worker processes match what clients saw."""

import http.client
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.integration

REQUESTS = 60
EVENTS_PER_REQUEST = 20
WRONG_KEY_REQUESTS = 7
FLUSH_WAIT_S = 30
# Each server process keeps its own token buckets, so the gateway admits up to this many times
# a source's limit; the counters of all of them meet in the stats table.
SERVER_PROCESSES = 2
STATS_POLL_S = 0.5


def stat_totals(stack) -> dict[tuple[str, str], int]:
    """Sum the stats table of the stack's database by (source, metric)."""
    url = stack.database.url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT source, metric, SUM(value) FROM ingest_eventstat GROUP BY source, metric"
        ).fetchall()
    return {(source, metric): int(total) for source, metric, total in rows}


def wait_for_stats(stack, expected: dict, *, timeout: float = FLUSH_WAIT_S) -> dict:
    """Wait until the stats table counts at least `expected`; return its totals."""

    def reached() -> dict | None:
        totals = stat_totals(stack)
        return totals if all(totals.get(key, 0) >= n for key, n in expected.items()) else None

    return wait_until(
        reached,
        timeout=timeout,
        interval=STATS_POLL_S,
        message=lambda: f"stats {stat_totals(stack)} never reached {expected}",
    )


def get_text(stack, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def create_source(stack, name: str, *args: str) -> str:
    return stack.run_manage("create_source", name, *args).stdout.strip()


@pytest.fixture
def keyed_stack(stack_factory):
    """A stack that requires keys, with its worker running; the test starts the server."""
    stack = stack_factory(
        extra_env={"INGEST_REQUIRE_API_KEYS": "true", "INGEST_KEY_CACHE_TTL_S": "2"}
    )
    stack.start_worker()
    return stack


def test_keys_quotas_and_stats_match_what_the_client_saw(keyed_stack):
    stack = keyed_stack
    topic = f"cp-{uuid.uuid4().hex[:8]}"
    key = create_source(stack, "loader", "--topics", topic)
    limited_key = create_source(stack, "limited", "--topics", "*", "--max-events-per-s", "50")
    # Started after the sources exist, every server process loads a table that has them: no
    # request can meet a cached table from before (which would answer 401 until its TTL ends).
    stack.start_server("--threads", "16", "--processes", str(SERVER_PROCESSES))

    def post(n):
        events = [{"key": f"k{n % 5}", "n": n, "i": i} for i in range(EVENTS_PER_REQUEST)]
        status, _, body = stack.post_json(
            f"/api/v1/events/{topic}", events, {"Authorization": f"Bearer {key}"}
        )
        assert status == 202, body
        return body["accepted"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        accepted = sum(pool.map(post, range(REQUESTS)))
    assert accepted == REQUESTS * EVENTS_PER_REQUEST

    for _ in range(WRONG_KEY_REQUESTS):
        status, _, body = stack.post_json(f"/api/v1/events/{topic}", {"n": 1}, {"X-Api-Key": "no"})
        assert (status, body["code"]) == (401, "unauthorized")
    status, _, body = stack.post_json(f"/api/v1/events/{topic}", {"n": 1})
    assert (status, body["code"]) == (401, "unauthorized")
    status, _, body = stack.post_json("/api/v1/events/elsewhere", {"n": 1}, {"X-Api-Key": key})
    assert (status, body["code"]) == (403, "forbidden_topic")

    started = time.monotonic()
    limited = {"accepted": 0, "refused": 0}
    for n in range(30):
        status, headers, body = stack.post_json(
            f"/api/v1/events/{topic}-limited",
            [{"n": n, "i": i} for i in range(10)],
            {"X-Api-Key": limited_key},
        )
        if status == 429:
            assert body["code"] == "rate_limited"
            assert int(headers["Retry-After"]) >= 1
            limited["refused"] += 1
        else:
            assert status == 202, body
            limited["accepted"] += 10
    elapsed = time.monotonic() - started
    assert limited["refused"] > 0
    assert 50 <= limited["accepted"] <= SERVER_PROCESSES * (50 + 50 * elapsed) + 10

    totals = wait_for_stats(
        stack,
        {
            ("loader", "accepted"): accepted,
            ("loader", "delivered"): accepted,
            ("limited", "delivered"): limited["accepted"],
            ("", "rejected:unauthorized"): WRONG_KEY_REQUESTS + 1,
            ("limited", "rejected:rate_limited"): limited["refused"],
        },
    )
    assert totals[("loader", "accepted")] == accepted
    assert totals[("limited", "accepted")] == limited["accepted"]
    # Delivered events are counted under the source that sent them.
    assert totals[("loader", "delivered")] == accepted
    assert totals[("limited", "delivered")] == limited["accepted"]
    assert ("", "delivered") not in totals
    assert totals[("", "rejected:unauthorized")] == WRONG_KEY_REQUESTS + 1
    assert totals[("loader", "rejected:forbidden_topic")] == 1
    assert totals[("limited", "rejected:rate_limited")] == limited["refused"]
    assert totals[("loader", "accepted_bytes")] > accepted * 20
    latency_events = sum(v for (_, metric), v in totals.items() if metric.startswith("latency_le"))
    assert latency_events == accepted + limited["accepted"]

    delivered = accepted + limited["accepted"]
    expected_metrics = [
        f"ingest_events_accepted_total {delivered}",
        f'ingest_http_requests_total{{code="401"}} {WRONG_KEY_REQUESTS + 1}',
        f'ingest_requests_rejected_total{{code="rate_limited"}} {limited["refused"]}',
        f"ingest_events_delivered_total {delivered}",
        f'ingest_delivery_latency_seconds_bucket{{le="+Inf"}} {delivered}',
    ]

    def missing_metrics() -> list[str]:
        status, text = get_text(stack, "/metrics")
        assert status == 200
        return [line for line in expected_metrics if line not in text.splitlines()]

    # A scrape reaches either process; both answer with the gateway's totals.
    wait_until(
        lambda: not missing_metrics(),
        timeout=FLUSH_WAIT_S,
        interval=STATS_POLL_S,
        message=lambda: f"/metrics lacks {missing_metrics()}",
    )
