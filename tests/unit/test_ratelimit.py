"""Rate limits: token buckets per source, admission before the body, and the 429 answer."""

import pytest

from ingest.control import keys, ratelimit
from tests.unit.sources import make_source, post


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
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
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    limiter = ratelimit.RateLimiter(burst_s=1.0)
    source = source_info(events=10)
    for _ in range(10):
        limiter.check(source, events=1, nbytes=1)
    with pytest.raises(ratelimit.RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert raised.value.retry_after == 1
    assert "10 events/s" in raised.value.message
    clock[0] += 0.5  # five tokens back
    limiter.check(source, events=5, nbytes=1)
    with pytest.raises(ratelimit.RateLimited):
        limiter.check(source, events=1, nbytes=1)


def test_rate_limiter_limits_bytes_and_says_how_long_to_wait(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    limiter = ratelimit.RateLimiter(burst_s=1.0)
    source = source_info(bytes=1_000)
    limiter.check(source, events=1, nbytes=1_000)
    with pytest.raises(ratelimit.RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert raised.value.retry_after == 1
    # A request bigger than the whole bucket passes once the bucket is full, then owes.
    clock[0] += 1
    limiter.check(source, events=1, nbytes=3_000)
    with pytest.raises(ratelimit.RateLimited) as raised:
        limiter.check(source, events=1, nbytes=1_000)
    assert raised.value.retry_after == 3


def test_a_rejected_request_takes_no_tokens(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: clock[0])
    limiter = ratelimit.RateLimiter(burst_s=1.0)
    source = source_info(events=10, bytes=100)
    limiter.check(source, events=1, nbytes=100)
    with pytest.raises(ratelimit.RateLimited):
        limiter.check(source, events=1, nbytes=50)  # over bytes
    clock[0] += 1
    limiter.check(source, events=9, nbytes=100)  # the events bucket lost only the first one


def test_admission_takes_nothing_and_refuses_an_empty_event_bucket(clock):
    limiter = ratelimit.RateLimiter(burst_s=1.0)
    source = source_info(events=10)
    for _ in range(100):
        limiter.admit(source, declared_bytes=1_000_000)
    limiter.check(source, events=10, nbytes=1)  # the admissions took none of the ten
    with pytest.raises(ratelimit.RateLimited) as raised:
        limiter.admit(source, declared_bytes=1)
    assert raised.value.retry_after == 1
    clock[0] += 0.15  # one event back
    limiter.admit(source, declared_bytes=1)


def test_admission_weighs_the_declared_length_up_to_the_byte_buckets_capacity(clock):
    limiter = ratelimit.RateLimiter(burst_s=1.0)
    source = source_info(bytes=1_000)
    limiter.admit(source, declared_bytes=50_000)  # bigger than the bucket: passes while full
    limiter.check(source, events=1, nbytes=400)
    limiter.admit(source, declared_bytes=600)
    with pytest.raises(ratelimit.RateLimited) as raised:
        limiter.admit(source, declared_bytes=601)
    assert "1000 bytes/s" in raised.value.message
    with pytest.raises(ratelimit.RateLimited) as raised:
        limiter.admit(source, declared_bytes=50_000)  # capped at 1,000: 400 short, 0.4 s
    assert raised.value.retry_after == 1
    clock[0] += 0.4
    limiter.admit(source, declared_bytes=50_000)


def test_admission_of_a_source_without_limits_always_passes():
    limiter = ratelimit.RateLimiter(burst_s=1.0)
    for _ in range(10):
        limiter.admit(keys.ANONYMOUS, declared_bytes=10**9)


@pytest.mark.django_db
def test_over_quota_is_429_with_retry_after(client, gateway, publisher, fresh_keys):
    _, key = make_source(max_events_per_s=5)
    response = post(client, [{"n": n} for n in range(5)], HTTP_X_API_KEY=key)
    assert response.status_code == 202, response.content
    response = post(client, {"n": 6}, HTTP_X_API_KEY=key)
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert len(publisher.records) == 5


@pytest.mark.django_db
def test_a_source_over_its_limit_is_429_before_its_body_is_read(
    client, gateway, fresh_keys, unreadable_body
):
    _, key = make_source(max_events_per_s=1)
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 202
    response = client.generic(
        "POST",
        "/api/v1/events/clicks",
        b"{}",
        content_type="application/json",
        HTTP_X_API_KEY=key,
        **{"wsgi.input": unreadable_body},
    )
    assert response.status_code == 429
    assert response["Retry-After"]
