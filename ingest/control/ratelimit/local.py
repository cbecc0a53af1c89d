"""Rate limits in this process's memory: token buckets for events and bytes per source."""

import threading
import time

from django.conf import settings

from ..keys import SourceInfo
from .base import RateLimiter, limits, over_limit


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


class LocalRateLimiter(RateLimiter):
    """Token buckets for events and bytes per source, in this process's memory.

    `share` scales every source's rate: the Redis backend's fallback gives each process its
    share of a limit that INGEST_RATE_LIMIT_PROCESSES processes share.
    """

    def __init__(self, *, burst_s: float, share: float = 1.0):
        self._burst_s = burst_s
        self._share = share
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, int], TokenBucket] = {}

    @classmethod
    def from_settings(cls) -> "LocalRateLimiter":
        return cls(burst_s=settings.INGEST_RATE_BURST_S)

    def admit(self, source: SourceInfo, *, declared_bytes: int) -> None:
        self._pass(source, events=1, nbytes=declared_bytes, take=False)

    def check(self, source: SourceInfo, *, events: int, nbytes: int) -> None:
        self._pass(source, events=events, nbytes=nbytes, take=True)

    def _pass(self, source: SourceInfo, *, events: int, nbytes: int, take: bool) -> None:
        wanted = limits(source, events=events, nbytes=nbytes)
        if not wanted:
            return
        now = time.monotonic()
        with self._lock:
            buckets = [self._bucket(source.name, unit, rate) for unit, rate, _ in wanted]
            for bucket, (unit, rate, amount) in zip(buckets, wanted, strict=True):
                wait = bucket.wait_for(amount, now=now)
                if wait > 0:
                    raise over_limit(source, unit=unit, rate=rate, wait=wait)
            if take:
                for bucket, (_, _, amount) in zip(buckets, wanted, strict=True):
                    bucket.take(amount)

    def _bucket(self, name: str, unit: str, rate: int) -> TokenBucket:
        # The rate is part of the key so an edited limit takes effect with the next cache load.
        key = (name, unit, rate)
        bucket = self._buckets.get(key)
        if bucket is None:
            share = rate * self._share
            bucket = self._buckets[key] = TokenBucket(
                rate=share, capacity=max(1.0, share * self._burst_s)
            )
        return bucket
