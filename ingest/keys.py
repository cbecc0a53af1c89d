"""Sources and their API keys, checked against an in-process cache; rate limits per source."""

import hashlib
import math
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from .errors import ApiError

KEY_BYTES = 32
KEY_PREFIX_LENGTH = 8


@dataclass(frozen=True)
class SourceInfo:
    """What a request needs to know about its source, without touching the database."""

    name: str
    topics: frozenset[str]
    max_events_per_s: int | None
    max_bytes_per_s: int | None


ANONYMOUS = SourceInfo(name="", topics=frozenset(), max_events_per_s=None, max_bytes_per_s=None)


def generate_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(source) -> str:
    """Give `source` a new key, keeping only its hash; return the key to show once."""
    key = generate_key()
    source.key_hash = hash_key(key)
    source.key_prefix = key[:KEY_PREFIX_LENGTH]
    return key


class KeyCache:
    """Every enabled source by key hash, reloaded with one query once `ttl_s` has passed."""

    def __init__(self, *, ttl_s: float, load):
        self._ttl_s = ttl_s
        self._load = load
        self._sources: dict[str, SourceInfo] | None = None
        self._loaded_at = 0.0
        self._refresh_lock = threading.Lock()

    def lookup(self, key_hash: str) -> SourceInfo | None:
        sources = self._sources
        if sources is None or time.monotonic() - self._loaded_at > self._ttl_s:
            refreshed = self._refresh(blocking=sources is None)
            if refreshed is not None:
                sources = refreshed
        return sources.get(key_hash)

    def invalidate(self) -> None:
        self._loaded_at = 0.0

    def _refresh(self, *, blocking: bool) -> dict[str, SourceInfo] | None:
        # One thread reloads; the others keep answering from the previous table meanwhile.
        if not self._refresh_lock.acquire(blocking=blocking):
            return None
        try:
            if self._sources is not None and time.monotonic() - self._loaded_at <= self._ttl_s:
                return self._sources
            self._sources = self._load()
            self._loaded_at = time.monotonic()
            return self._sources
        finally:
            self._refresh_lock.release()


def load_sources() -> dict[str, SourceInfo]:
    from .models import Source

    return {
        source.key_hash: SourceInfo(
            name=source.name,
            topics=frozenset(source.topic_list()),
            max_events_per_s=source.max_events_per_s,
            max_bytes_per_s=source.max_bytes_per_s,
        )
        for source in Source.objects.filter(enabled=True)
    }


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

    def check(self, source: SourceInfo, *, events: int, nbytes: int) -> None:
        """Take the request from the source's buckets, or raise a 429 with Retry-After."""
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
                    raise ApiError(
                        429,
                        "rate_limited",
                        f"source {source.name!r} is over its limit of {rate} {unit}/s",
                        retry_after=max(1, math.ceil(wait)),
                    )
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


_lock = threading.Lock()
_cache: KeyCache | None = None
_limiter: RateLimiter | None = None


def get_cache() -> KeyCache:
    global _cache
    if _cache is None:
        with _lock:
            if _cache is None:
                _cache = KeyCache(ttl_s=settings.INGEST_KEY_CACHE_TTL_S, load=load_sources)
    return _cache


def get_limiter() -> RateLimiter:
    global _limiter
    if _limiter is None:
        with _lock:
            if _limiter is None:
                _limiter = RateLimiter(burst_s=settings.INGEST_RATE_BURST_S)
    return _limiter


def presented_key(meta: dict) -> str | None:
    authorization = meta.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return meta.get("HTTP_X_API_KEY", "").strip() or None


def authenticate(meta: dict) -> SourceInfo:
    """Return the request's source; a wrong key, or none where keys are required, is a 401."""
    key = presented_key(meta)
    if key is None:
        if settings.INGEST_REQUIRE_API_KEYS:
            raise ApiError(
                401, "unauthorized", "send an API key as 'Authorization: Bearer <key>' or X-Api-Key"
            )
        return ANONYMOUS
    source = get_cache().lookup(hash_key(key))
    if source is None:
        raise ApiError(401, "unauthorized", "the API key is not valid")
    return source


def authorize_topic(source: SourceInfo, topic: str) -> None:
    if source.topics and topic not in source.topics:
        raise ApiError(
            403, "forbidden_topic", f"source {source.name!r} may not send to topic {topic!r}"
        )
