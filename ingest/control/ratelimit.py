"""Rate limits per source: token buckets for events and bytes, in this process's memory."""

import math
import threading
import time

from django.conf import settings

from ..state import per_process
from .keys import SourceInfo


class RateLimited(Exception):
    """A source is over its events/s or bytes/s limit; `retry_after` says when to try again."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class TokenBucket:
    """Allow `rate` units a second with bursts up to `capacity`; not thread-safe on its own."""

    def __init__(self, *, rate: float, capacity: float):
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def wait_for(self, amount: float, *, now: float) -> float:
        """Return the seconds until `amount` tokens are there (0 if they are now)."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(now, self.updated)
        # A request larger than the whole bucket passes once the bucket is full, leaving a debt.
        needed = min(amount, self.capacity)
        return max(0.0, (needed - self.tokens) / self.rate)

    def take(self, amount: float) -> None:
        self.tokens -= amount


class RateLimiter:
    """Token buckets for events and bytes per source, in this process's memory."""

    def __init__(self, *, burst_s: float):
        self._burst_s = burst_s
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, int], TokenBucket] = {}

    def admit(self, source: SourceInfo, *, declared_bytes: int) -> None:
        """Before the body is read, raise RateLimited unless one event of that size could pass.

        The declared Content-Length counts up to the byte bucket's capacity, as in check().
        Nothing is taken: check() takes the exact amounts once the body is parsed.
        """
        self._pass(source, events=1, nbytes=declared_bytes, take=False)

    def check(self, source: SourceInfo, *, events: int, nbytes: int) -> None:
        """Take the request from the source's buckets, or raise RateLimited."""
        self._pass(source, events=events, nbytes=nbytes, take=True)

    def _pass(self, source: SourceInfo, *, events: int, nbytes: int, take: bool) -> None:
        limits = [
            (unit, rate, amount)
            for unit, rate, amount in (
                ("events", source.max_events_per_s, events),
                ("bytes", source.max_bytes_per_s, nbytes),
            )
            if rate
        ]
        if not limits:
            return
        now = time.monotonic()
        with self._lock:
            buckets = [self._bucket(source.name, unit, rate) for unit, rate, _ in limits]
            for bucket, (unit, rate, amount) in zip(buckets, limits, strict=True):
                wait = bucket.wait_for(amount, now=now)
                if wait > 0:
                    raise RateLimited(
                        f"source {source.name!r} is over its limit of {rate} {unit}/s",
                        retry_after=max(1, math.ceil(wait)),
                    )
            if take:
                for bucket, (_, _, amount) in zip(buckets, limits, strict=True):
                    bucket.take(amount)

    def _bucket(self, name: str, unit: str, rate: int) -> TokenBucket:
        # The rate is part of the key so an edited limit takes effect with the next cache load.
        key = (name, unit, rate)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(
                rate=rate, capacity=max(1.0, rate * self._burst_s)
            )
        return bucket


@per_process
def get_limiter() -> RateLimiter:
    """Return this process's rate limiter."""
    return RateLimiter(burst_s=settings.INGEST_RATE_BURST_S)
