"""Keys, quotas, stats, metrics and readiness on real serve.py and worker processes."""

import contextlib
import http.client
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

pytestmark = pytest.mark.integration

RABBITMQ = ("127.0.0.1", 5672)
REQUESTS = 60
EVENTS_PER_REQUEST = 20
WRONG_KEY_REQUESTS = 7
FLUSH_WAIT_S = 30
# Each server process keeps its own token buckets, so the gateway admits up to this many times
# a source's limit; the counters of all of them meet in the stats table.
SERVER_PROCESSES = 2
READY_CHANGE_S = 10.0


def stat_totals(stack) -> dict[tuple[str, str], int]:
    """Sum the stats table of the stack's database by (source, metric)."""
    url = stack.database.url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT source, metric, SUM(value) FROM ingest_eventstat GROUP BY source, metric"
        ).fetchall()
    return {(source, metric): int(total) for source, metric, total in rows}


def wait_for_stats(stack, expected: dict, *, timeout: float = FLUSH_WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        totals = stat_totals(stack)
        if all(totals.get(key, 0) >= value for key, value in expected.items()):
            return totals
        assert time.monotonic() < deadline, f"stats {totals} never reached {expected}"
        time.sleep(0.5)


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
    stack = stack_factory(
        extra_env={"INGEST_REQUIRE_API_KEYS": "true", "INGEST_KEY_CACHE_TTL_S": "2"}
    )
    stack.start_worker()
    stack.start_server("--threads", "16", "--processes", str(SERVER_PROCESSES))
    return stack


def test_keys_quotas_and_stats_match_what_the_client_saw(keyed_stack):
    stack = keyed_stack
    topic = f"cp-{uuid.uuid4().hex[:8]}"
    key = create_source(stack, "loader", "--topics", topic)
    limited_key = create_source(stack, "limited", "--topics", "*", "--max-events-per-s", "50")
    time.sleep(2.5)  # the server's source table is at most INGEST_KEY_CACHE_TTL_S old

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
            ("", "delivered"): accepted + limited["accepted"],
            ("", "rejected:unauthorized"): WRONG_KEY_REQUESTS + 1,
            ("limited", "rejected:rate_limited"): limited["refused"],
        },
    )
    assert totals[("loader", "accepted")] == accepted
    assert totals[("limited", "accepted")] == limited["accepted"]
    assert totals[("", "delivered")] == accepted + limited["accepted"]
    assert totals[("", "rejected:unauthorized")] == WRONG_KEY_REQUESTS + 1
    assert totals[("loader", "rejected:forbidden_topic")] == 1
    assert totals[("limited", "rejected:rate_limited")] == limited["refused"]
    assert totals[("loader", "accepted_bytes")] > accepted * 20
    latency_events = sum(v for (_, metric), v in totals.items() if metric.startswith("latency_le"))
    assert latency_events == totals[("", "delivered")]

    delivered = accepted + limited["accepted"]
    expected_metrics = [
        f"ingest_events_accepted_total {delivered}",
        f'ingest_http_requests_total{{code="401"}} {WRONG_KEY_REQUESTS + 1}',
        f'ingest_requests_rejected_total{{code="rate_limited"}} {limited["refused"]}',
        f"ingest_events_delivered_total {delivered}",
        f'ingest_delivery_latency_seconds_bucket{{le="+Inf"}} {delivered}',
    ]
    deadline = time.monotonic() + FLUSH_WAIT_S
    while True:  # a scrape reaches either process; both answer with the gateway's totals
        status, text = get_text(stack, "/metrics")
        assert status == 200
        missing = [line for line in expected_metrics if line not in text.splitlines()]
        if not missing:
            break
        assert time.monotonic() < deadline, f"/metrics lacks {missing}:\n{text}"
        time.sleep(0.5)


class TcpProxy:
    """Forward a local port to a target; stop() makes the target look down, start() back up."""

    def __init__(self, target: tuple[str, int]):
        from tests.stack import free_port

        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # Without the shutdown the socket keeps listening while _accept blocks in accept():
            # it would take one more connection and keep start() from binding the port again.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def wait_for_readiness(
    stack, *, ready: bool, timeout: float = READY_CHANGE_S
) -> tuple[float, dict]:
    started = time.monotonic()
    while True:
        status, _, body = stack.request("GET", "/readyz", timeout=10)
        assert status in (200, 503)
        if (status == 200) == ready:
            assert body["status"] == ("ready" if ready else "unavailable")
            return time.monotonic() - started, body
        assert time.monotonic() - started < timeout, f"/readyz stayed {status}: {body}"
        time.sleep(0.2)


def test_readyz_follows_the_broker_and_kafka(stack_factory, tansu):
    proxy = TcpProxy(RABBITMQ)
    proxy.start()
    stack = stack_factory(
        kafka=tansu.address,
        extra_env={"CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}//"},
    )
    try:
        # Readiness is each process's own view; one process makes every answer that view.
        stack.start_server("--threads", "8", "--processes", "1")
        _, body = wait_for_readiness(stack, ready=True)
        assert body["failed"] == []
        assert set(body["checks"]) == {"database", "broker", "kafka", "backlog"}

        proxy.stop()
        took, body = wait_for_readiness(stack, ready=False)
        assert "broker" in body["failed"] and "kafka" not in body["failed"]
        print(f"/readyz 503 {took:.1f}s after the broker went away: {body['checks']['broker']}")
        proxy.start()
        took, _ = wait_for_readiness(stack, ready=True)
        print(f"/readyz 200 {took:.1f}s after the broker came back")

        tansu.freeze()
        took, body = wait_for_readiness(stack, ready=False)
        assert body["failed"] == ["kafka"]
        print(f"/readyz 503 {took:.1f}s after Kafka froze: {body['checks']['kafka']}")
        tansu.thaw()
        took, _ = wait_for_readiness(stack, ready=True)
        print(f"/readyz 200 {took:.1f}s after Kafka thawed")
        status, _, body = stack.request("GET", "/healthz")
        assert status == 200 and body["process"]["pid"] == stack.server.pid
    finally:
        tansu.thaw()
        if proxy._listener is None:
            proxy.start()
