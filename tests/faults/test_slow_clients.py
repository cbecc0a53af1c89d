"""300 slowloris connections at a byte a second: good requests are still answered 202 at once."""

import http.client
import json
import selectors
import socket
import statistics
import threading
import time
import uuid
from collections import Counter

import pytest

from .conftest import assert_nothing_lost, drain_and_count
from .loadgen import REQUEST_TIMEOUT_S, LoadResult

pytestmark = pytest.mark.faults

SLOW_CONNECTIONS = 300
DRIBBLE_INTERVAL_S = 1.0
# Longer than serve.py's default request deadline (10 s), so deadline cuts happen in the run.
SLOWLORIS_SECONDS = 15.0
# Good requests start once every slow connection is open and has sent its first byte.
SLOWLORIS_OPEN_TIMEOUT_S = 10.0
GOOD_THREADS = 4
GOOD_P99_MAX_S = 1.0
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# A cut reaches the client at its next read; a slow client reads between bytes, once a second.
CUT_SLACK_S = DRIBBLE_INTERVAL_S + 1.0
SLOW_BODY_BYTES = 200


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class Slowloris:
    """Keep `connections` requests open, each sending one byte a second; reopen those cut.

    Half dribble their request head; the other half send the head whole and dribble the body,
    which the view is reading when the deadline passes. One thread and one selector run them all.
    """

    def __init__(self, *, port: int, topic: str, connections: int, seconds: float):
        self.port = port
        self.connections = connections
        self.seconds = seconds
        body = json.dumps({"id": f"slowloris-{uuid.uuid4().hex}", "pad": "x" * SLOW_BODY_BYTES})
        self._head = (
            f"POST /api/v1/events/{topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._body = body.encode()
        self.opened = 0
        self.answers: Counter = Counter()  # first line of the server's answer, or "closed"
        self.held_seconds: list[float] = []  # from a connection's first byte to its cut
        self.all_open = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)

    def __enter__(self) -> "Slowloris":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(self.seconds + 10)
        assert not self._thread.is_alive(), "the slowloris thread hangs"

    @property
    def cut(self) -> int:
        return len(self.held_seconds)

    def _open(self, selector: selectors.BaseSelector, index: int) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=REQUEST_TIMEOUT_S)
        sock.setblocking(False)
        pending = self._head + self._body if index % 2 else self._body
        if not index % 2:
            sock.sendall(self._head)  # still nothing to wait for: the body never ends
        data = {"index": index, "pending": pending, "first_byte": time.monotonic()}
        selector.register(sock, selectors.EVENT_READ, data)
        self.opened += 1

    def _close(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        """Record what the server did to a connection it cut, and close it."""
        try:
            answer = key.fileobj.recv(4096)
        except OSError:
            answer = b""
        self.answers[answer.split(b"\r\n", 1)[0].decode() if answer else "closed"] += 1
        self.held_seconds.append(time.monotonic() - key.data["first_byte"])
        selector.unregister(key.fileobj)
        key.fileobj.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        ends = time.monotonic() + self.seconds
        reopen = list(range(self.connections))
        try:
            while not self._stop.is_set() and time.monotonic() < ends:
                for index in reopen:
                    self._open(selector, index)
                reopen = []
                for key in list(selector.get_map().values()):
                    try:
                        key.fileobj.send(key.data["pending"][:1])
                        key.data["pending"] = key.data["pending"][1:]
                    except OSError:
                        pass  # cut already: the selector reports it below
                self.all_open.set()
                tick = time.monotonic() + DRIBBLE_INTERVAL_S
                while (remaining := tick - time.monotonic()) > 0:
                    for key, _ in selector.select(remaining):
                        reopen.append(key.data["index"])
                        self._close(selector, key)
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()
            selector.close()


class GoodClients:
    """POST single events with unique ids from a few threads; time every answer."""

    def __init__(self, *, port: int, topic: str, threads: int):
        self.port = port
        self.topic = topic
        self.result = LoadResult()
        self.accepted_seconds: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"good-{n}", daemon=True)
            for n in range(threads)
        ]

    def run_until(self, done: threading.Event, *, timeout: float) -> LoadResult:
        self.result.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        done.wait(timeout)
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a good client hangs"
        self.result.finished = time.monotonic()
        return self.result

    def _run(self) -> None:
        while not self._stop.is_set():
            event_id = f"good-{uuid.uuid4().hex}"
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            started = time.monotonic()
            try:
                connection.request(
                    "POST",
                    f"/api/v1/events/{self.topic}",
                    body=json.dumps({"id": event_id, "page": "/home"}).encode(),
                    headers={"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                answer = response.read()
                error = None
            except (OSError, http.client.HTTPException) as failure:
                error = "TimeoutError" if isinstance(failure, TimeoutError) else type(failure)
            finally:
                connection.close()
            seconds = time.monotonic() - started
            with self._lock:
                self.result.requests += 1
                self.result.sent.add(event_id)
                if error is not None:
                    self.result.errors[str(error)] += 1
                    continue
                self.result.statuses[response.status] += 1
                if response.status == 202 and json.loads(answer)["ids"] == [event_id]:
                    self.result.accepted.add(event_id)
                    self.accepted_seconds.append(seconds)


def test_slowloris_leaves_good_requests_fast(fault_stack, topic, report):
    # serve.py's defaults: --request-timeout 10, --slow-client-share 0.5 of 150 threads.
    stack = fault_stack()
    stack.start_worker()
    stack.start_server()
    good = GoodClients(port=stack.port, topic=topic, threads=GOOD_THREADS)
    slowloris = Slowloris(
        port=stack.port, topic=topic, connections=SLOW_CONNECTIONS, seconds=SLOWLORIS_SECONDS
    )
    with slowloris:
        assert slowloris.all_open.wait(SLOWLORIS_OPEN_TIMEOUT_S), "slow connections did not open"
        attack_over = threading.Event()
        threading.Timer(SLOWLORIS_SECONDS - 1.0, attack_over.set).start()
        result = good.run_until(attack_over, timeout=SLOWLORIS_SECONDS)

    figures = drain_and_count(stack, topic, result, scenario="slowloris")
    latencies = good.accepted_seconds or [0.0]
    p50_ms, p99_ms = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
    held = slowloris.held_seconds or [0.0]
    report(
        figures,
        f"slowloris: {SLOW_CONNECTIONS} connections at 1 byte/s for {SLOWLORIS_SECONDS:.0f}s "
        f"({slowloris.opened} opened); good 202 latency p50 {p50_ms:.0f} ms, p99 {p99_ms:.0f} ms "
        f"over {len(good.accepted_seconds)} accepted; slow connections cut {slowloris.cut} "
        f"(answers {dict(slowloris.answers)}), held p50 {statistics.median(held):.1f}s, "
        f"max {max(held):.1f}s",
    )
    assert good.accepted_seconds, f"no good request was accepted: {result.errors}"
    assert result.statuses == Counter({202: result.requests}), "a good request was not accepted"
    assert percentile(good.accepted_seconds, 0.99) < GOOD_P99_MAX_S
    assert slowloris.cut > 0, "no slow connection was cut"
    assert max(held) < DEFAULT_REQUEST_TIMEOUT_S + CUT_SLACK_S, "a slow request outlived 10 s"
    assert set(slowloris.answers) <= {"HTTP/1.1 408 Request Timeout", "closed"}, slowloris.answers
    assert_nothing_lost(figures)
