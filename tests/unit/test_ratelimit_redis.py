"""The Redis backend without a Redis: the fallback to a share of each limit, never unlimited.

Leases against the real Redis are tested in tests/integration/test_ratelimit_redis.py.
"""

import logging
import socket
import threading
import time

import pytest

from ingest.control import keys
from ingest.control.ratelimit import RateLimited
from ingest.control.ratelimit import redis as redis_backend
from tests.waiting import wait_until

# Port 9 (discard) has no listener here: connecting to it is refused at once.
CLOSED_PORT = 9
TIMEOUT_S = 0.1


def source_info(**limits) -> keys.SourceInfo:
    return keys.SourceInfo(
        name="s",
        topics=frozenset(),
        max_events_per_s=limits.get("events"),
        max_bytes_per_s=limits.get("bytes"),
    )


def limiter_at(port: int, *, processes: int) -> redis_backend.RedisRateLimiter:
    return redis_backend.RedisRateLimiter(
        url=f"redis://127.0.0.1:{port}/0",
        burst_s=1.0,
        processes=processes,
        timeout_s=TIMEOUT_S,
        key_prefix="ingest-tests:ratelimit:unreachable:",
    )


def passed(limiter, source, *, checks: int) -> int:
    """Check one event `checks` times; return how many passed."""
    count = 0
    for _ in range(checks):
        try:
            limiter.check(source, events=1, nbytes=10)
        except RateLimited as limited:
            assert limited.retry_after >= 1
        else:
            count += 1
    return count


class SilentServer:
    """A listening socket that takes connections and never answers: a Redis that hangs."""

    def __init__(self):
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self.port = self._socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections.append(connection)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        for connection in self.connections:
            connection.close()
        self._socket.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.stop()


def test_an_unreachable_redis_leaves_each_process_its_share_of_the_limit(caplog):
    limiter = limiter_at(CLOSED_PORT, processes=4)
    with caplog.at_level(logging.WARNING, logger=redis_backend.__name__):
        # 40 events/s among 4 processes: a burst of 10 here, then 429s; never an exception.
        assert passed(limiter, source_info(events=40), checks=50) == 10
        with pytest.raises(RateLimited):
            limiter.admit(source_info(events=40), declared_bytes=1)
    warnings = [record for record in caplog.records if "Redis is unavailable" in record.message]
    assert len(warnings) == 1, "one warning per outage"
    assert "1/4 of each limit" in warnings[0].message


def test_bytes_fall_back_to_their_share_too():
    limiter = limiter_at(CLOSED_PORT, processes=2)
    source = source_info(bytes=2_000)
    limiter.check(source, events=1, nbytes=1_000)
    with pytest.raises(RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert "2000 bytes/s" in raised.value.message


def test_a_source_without_limits_never_asks_redis(silent_server):
    limiter = limiter_at(silent_server.port, processes=1)
    for _ in range(100):
        limiter.admit(keys.ANONYMOUS, declared_bytes=10**9)
        limiter.check(keys.ANONYMOUS, events=1_000, nbytes=10**9)
    assert silent_server.connections == []


def test_a_redis_that_hangs_is_tried_once_a_second_and_costs_one_timeout(
    silent_server, monkeypatch
):
    limiter = limiter_at(silent_server.port, processes=2)
    source = source_info(events=1_000)
    started = time.monotonic()
    assert passed(limiter, source, checks=200) > 0
    # One lease timed out; every other check used the fallback without waiting.
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    wait_until(lambda: len(silent_server.connections) == 1, timeout=5, message="one connection")
    passed(limiter, source, checks=100)
    assert len(silent_server.connections) == 1, "no second try within a second"
    real_clock = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_clock() + redis_backend.RETRY_S)
    passed(limiter, source, checks=100)
    wait_until(lambda: len(silent_server.connections) == 2, timeout=5, message="a second try")
