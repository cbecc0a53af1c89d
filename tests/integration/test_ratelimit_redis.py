"""The Redis backend against the real Redis: leased slices, one budget for several processes."""

import contextlib
import threading
import time

import pytest
import redis
from django.conf import settings

from ingest.control import keys
from ingest.control.ratelimit import RateLimited
from ingest.control.ratelimit import redis as redis_backend
from tests.conftest import ARTIFACTS
from tests.faults.loadgen import LoadGenerator
from tests.faults.redisserver import PrivateRedis, redis_available
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SHARED_RUN_S = 3.0
SERVE_RUN_S = 4.0
SERVE_RATE = 100
PROCESSES = 2
THREADS_PER_PROCESS = 2


def source_info(name: str, **limits) -> keys.SourceInfo:
    return keys.SourceInfo(
        name=name,
        topics=frozenset(),
        max_events_per_s=limits.get("events"),
        max_bytes_per_s=limits.get("bytes"),
    )


def limiter(*, prefix: str, url: str | None = None) -> redis_backend.RedisRateLimiter:
    """A limiter as one gateway process builds it, on the test's own keys."""
    return redis_backend.RedisRateLimiter(
        url=url or settings.REDIS_URL,
        burst_s=1.0,
        processes=PROCESSES,
        timeout_s=0.5,
        key_prefix=prefix,
    )


@pytest.fixture
def client():
    connection = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    yield connection
    connection.close()


def bucket(client, key: str) -> dict[str, float]:
    return {name.decode(): float(value) for name, value in client.hgetall(key).items()}


def test_a_lease_takes_the_shortfall_and_a_slice_ahead_then_spends_it_in_memory(
    redis_limits, client
):
    gateway = limiter(prefix=redis_limits)
    source = source_info("shop", events=1_000)
    key = f"{redis_limits}shop:events"
    gateway.check(source, events=1, nbytes=10)
    first = bucket(client, key)
    # One event and a slice of 50 (1/20 of the rate) left the bucket of 1,000.
    assert 949 <= first["tokens"] < 951
    assert 0 < client.pttl(key) <= 52_000 / 1_000 + 1_000
    for _ in range(25):
        gateway.check(source, events=1, nbytes=10)
    assert bucket(client, key)["at"] == first["at"], "half a slice spent without Redis"
    gateway.check(source, events=1, nbytes=10)
    # Less than half a slice left: a background thread leases the 26 spent, with no request.
    refilled = wait_until(
        lambda: (now := bucket(client, key))["at"] > first["at"] and now,
        timeout=5,
        message="the slice was not refilled",
    )
    refill = (refilled["at"] - first["at"]) * 1_000
    assert refilled["tokens"] == pytest.approx(first["tokens"] + refill - 26, abs=0.01)


def test_a_request_leases_its_events_and_its_bytes_in_one_round_trip(redis_limits, client):
    limiter(prefix=redis_limits).check(
        source_info("both", events=100, bytes=10_000), events=1, nbytes=10
    )
    events = bucket(client, f"{redis_limits}both:events")
    nbytes = bucket(client, f"{redis_limits}both:bytes")
    assert events["at"] == nbytes["at"], "one script call, at one Redis time"
    assert 93 <= events["tokens"] < 95  # 1 event and a slice of 5 from 100
    assert 9_490 <= nbytes["tokens"] < 9_491  # 10 bytes and a slice of 500 from 10,000


def test_a_request_larger_than_the_bucket_passes_when_it_is_full_and_leaves_a_debt(
    redis_limits, client
):
    gateway = limiter(prefix=redis_limits)
    source = source_info("big", bytes=1_000)
    gateway.admit(source, declared_bytes=50_000)
    gateway.check(source, events=1, nbytes=3_000)
    assert bucket(client, f"{redis_limits}big:bytes")["tokens"] < -1_900
    with pytest.raises(RateLimited) as raised:
        limiter(prefix=redis_limits).check(source, events=1, nbytes=1)
    assert raised.value.retry_after >= 2


def test_a_denied_source_is_answered_from_memory_without_asking_redis_again(
    redis_limits, client, monkeypatch
):
    gateway = limiter(prefix=redis_limits)
    source = source_info("flood", events=2)
    gateway.check(source, events=2, nbytes=1)
    with pytest.raises(RateLimited):
        gateway.check(source, events=1, nbytes=1)
    asked = bucket(client, f"{redis_limits}flood:events")["at"]
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now)  # no time passes: the denial holds
    for _ in range(100):
        with pytest.raises(RateLimited) as raised:
            gateway.admit(source, declared_bytes=1)
    assert raised.value.retry_after == 1
    assert bucket(client, f"{redis_limits}flood:events")["at"] == asked


def test_two_processes_share_one_budget_within_ten_percent(redis_limits, capsys):
    rate = 400
    source = source_info("shared", events=rate, bytes=rate * 100)
    gateways = [limiter(prefix=redis_limits) for _ in range(PROCESSES)]
    passed = [0] * PROCESSES
    refused = [0] * PROCESSES
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + SHARED_RUN_S

    def send(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                gateways[index].admit(source, declared_bytes=100)
                gateways[index].check(source, events=1, nbytes=100)
            except RateLimited:
                with lock:
                    refused[index] += 1
                # The scenario is a client that retries at once; a short pause spares the CPU.
                time.sleep(0.001)
            else:
                with lock:
                    passed[index] += 1

    threads = [
        threading.Thread(target=send, args=(index,))
        for index in range(PROCESSES)
        for _ in range(THREADS_PER_PROCESS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SHARED_RUN_S + 10)
    elapsed = time.monotonic() - started
    # The bucket starts full (one second's burst) and refills at the rate.
    allowed = rate * (1.0 + SHARED_RUN_S)
    total = sum(passed)
    with capsys.disabled():
        print(
            f"\n[ratelimit] 2 processes x {THREADS_PER_PROCESS} threads, {rate} events/s, "
            f"{elapsed:.1f} s: passed {total} ({passed[0]} + {passed[1]}) of {allowed:.0f} "
            f"allowed ({100 * (total / allowed - 1):+.1f} %), refused {sum(refused)}"
        )
    assert all(passed), "both processes got part of the budget"
    assert allowed * 0.9 <= total <= allowed * 1.1


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of the test's own, which it may stop and start: the shared one is never stopped."""
    if not redis_available():
        pytest.skip("redis-server is not installed (.ci/services installs it)")
    server = PrivateRedis(host="127.0.0.1", log_path=ARTIFACTS / tmp_path.name / "redis.log")
    server.start()
    yield server
    server.stop()


def test_an_outage_falls_back_to_the_share_and_ends_when_redis_answers(private_redis):
    gateway = limiter(prefix="ingest-tests:ratelimit:outage:", url=private_redis.url)
    source = source_info("shop", events=100)
    gateway.check(source, events=1, nbytes=1)
    private_redis.stop()
    passed = 0
    for _ in range(200):
        try:
            gateway.check(source, events=1, nbytes=1)
            passed += 1
        except RateLimited:
            pass
    # The leased slice (5 events, one spent) and then half the limit's burst: 4 + 50.
    assert 4 + 100 // PROCESSES <= passed <= 4 + 100 // PROCESSES + 2
    private_redis.start()
    watcher = redis.Redis.from_url(private_redis.url, socket_timeout=1)

    def leased_again() -> bool:
        with contextlib.suppress(RateLimited):
            gateway.check(source, events=1, nbytes=1)
        return watcher.exists("ingest-tests:ratelimit:outage:shop:events") == 1

    # Retried at most once a second: within about a second of Redis coming back.
    wait_until(leased_again, timeout=5, message="the limiter did not use Redis again")
    watcher.close()


def test_serve_py_processes_hold_one_limit_through_redis(stack_factory, redis_limits, capsys):
    stack = stack_factory(
        extra_env={
            "INGEST_RATE_LIMIT_BACKEND": "ingest.control.ratelimit.redis.RedisRateLimiter",
            "REDIS_URL": settings.REDIS_URL,
            "INGEST_RATE_LIMIT_KEY_PREFIX": redis_limits,
            "INGEST_RATE_LIMIT_PROCESSES": "2",
            "LOG_LEVEL": "WARNING",
        }
    )
    created = stack.run_manage(
        "create_source", "limited", "--topics", "*", "--max-events-per-s", str(SERVE_RATE)
    )
    key = created.stdout.split()[-1]
    stack.start_server("--processes", "2")
    started = time.monotonic()
    load = LoadGenerator(
        port=stack.port,
        topic="limited",
        prefix="rl",
        threads=8,
        max_seconds=SERVE_RUN_S,
        pause_after_rejection_s=0.01,
        headers={"X-Api-Key": key},
    )
    load.start()
    result = load.wait()
    # Counted from the load's start: the bucket starts full (a second's burst).
    allowed = SERVE_RATE * (1.0 + result.duration)
    accepted = len(result.accepted)
    with capsys.disabled():
        print(
            f"\n[ratelimit] serve.py --processes 2, {SERVE_RATE} events/s, "
            f"{result.duration:.1f} s: accepted {accepted} events of {allowed:.0f} allowed "
            f"({100 * (accepted / allowed - 1):+.1f} %), 429s {result.statuses[429]}, "
            f"other errors {result.other_errors}; {time.monotonic() - started:.1f} s in all"
        )
    assert result.statuses[503] == 0 and result.other_errors == 0
    assert result.statuses[429] > 0
    assert allowed * 0.8 <= accepted <= allowed * 1.1
