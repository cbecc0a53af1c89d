"""The local backend: token buckets per source in this process's memory."""

import pytest

from ingest.control import keys
from ingest.control.ratelimit import RateLimited, local


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(local.time, "monotonic", lambda: now[0])
    return now


def source_info(**limits) -> keys.SourceInfo:
    return keys.SourceInfo(
        name="s",
        topics=frozenset(),
        max_events_per_s=limits.get("events"),
        max_bytes_per_s=limits.get("bytes"),
    )


def test_rate_limiter_answers_429_with_retry_after_when_the_bucket_is_empty(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(local.time, "monotonic", lambda: clock[0])
    limiter = local.LocalRateLimiter(burst_s=1.0)
    source = source_info(events=10)
    for _ in range(10):
        limiter.check(source, events=1, nbytes=1)
    with pytest.raises(RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert raised.value.retry_after == 1
    assert "10 events/s" in raised.value.message
    clock[0] += 0.5  # five tokens back
    limiter.check(source, events=5, nbytes=1)
    with pytest.raises(RateLimited):
        limiter.check(source, events=1, nbytes=1)


def test_rate_limiter_limits_bytes_and_says_how_long_to_wait(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(local.time, "monotonic", lambda: clock[0])
    limiter = local.LocalRateLimiter(burst_s=1.0)
    source = source_info(bytes=1_000)
    limiter.check(source, events=1, nbytes=1_000)
    with pytest.raises(RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert raised.value.retry_after == 1
    # A request bigger than the whole bucket passes once the bucket is full, then owes.
    clock[0] += 1
    limiter.check(source, events=1, nbytes=3_000)
    with pytest.raises(RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1_000)
    assert raised.value.retry_after == 3


def test_a_rejected_request_takes_no_tokens(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(local.time, "monotonic", lambda: clock[0])
    limiter = local.LocalRateLimiter(burst_s=1.0)
    source = source_info(events=10, bytes=100)
    limiter.check(source, events=1, nbytes=100)
    with pytest.raises(RateLimited):
        limiter.check(source, events=1, nbytes=50)  # over bytes
    clock[0] += 1
    limiter.check(source, events=9, nbytes=100)  # the events bucket lost only the first one


def test_admission_takes_nothing_and_refuses_an_empty_event_bucket(clock):
    limiter = local.LocalRateLimiter(burst_s=1.0)
    source = source_info(events=10)
    for _ in range(100):
        limiter.admit(source, declared_bytes=1_000_000)
    limiter.check(source, events=10, nbytes=1)  # the admissions took none of the ten
    with pytest.raises(RateLimited) as raised:
        limiter.admit(source, declared_bytes=1)
    assert raised.value.retry_after == 1
    clock[0] += 0.15  # one event back
    limiter.admit(source, declared_bytes=1)


def test_admission_weighs_the_declared_length_up_to_the_byte_buckets_capacity(clock):
    limiter = local.LocalRateLimiter(burst_s=1.0)
    source = source_info(bytes=1_000)
    limiter.admit(source, declared_bytes=50_000)  # bigger than the bucket: passes while full
    limiter.check(source, events=1, nbytes=400)
    limiter.admit(source, declared_bytes=600)
    with pytest.raises(RateLimited) as raised:
        limiter.admit(source, declared_bytes=601)
    assert "1000 bytes/s" in raised.value.message
    with pytest.raises(RateLimited) as raised:
        limiter.admit(source, declared_bytes=50_000)  # capped at 1,000: 400 short, 0.4 s
    assert raised.value.retry_after == 1
    clock[0] += 0.4
    limiter.admit(source, declared_bytes=50_000)


def test_admission_of_a_source_without_limits_always_passes():
    limiter = local.LocalRateLimiter(burst_s=1.0)
    for _ in range(10):
        limiter.admit(keys.ANONYMOUS, declared_bytes=10**9)


def test_a_share_of_the_limit_scales_every_bucket(clock):
    limiter = local.LocalRateLimiter(burst_s=1.0, share=1 / 4)
    source = source_info(events=40, bytes=4_000)
    limiter.check(source, events=10, nbytes=1_000)
    with pytest.raises(RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert "40 events/s" in raised.value.message  # the message names the source's own limit
    clock[0] += 0.15  # one event back at 10/s
    limiter.check(source, events=1, nbytes=1)
