"""Rate limits shared by every process and host: a token bucket per source and unit in Redis.

Each process leases small slices of a source's budget from the Redis bucket and spends them in
its own memory, so requests do not wait for Redis. Once a slice is half spent, a background
thread leases the next one; a request waits for a lease only when its process holds too little
for it (its first request, or a burst faster than the refills), and that lease takes what the
request lacks plus a slice ahead. A slice is 1/20 of a second's rate (at most the burst), so a
source sending at its limit costs each process about 20 leases a second, whatever its request
rate. Unused slices are not given back: a slice leased now may be spent a while later, when the
bucket has refilled meanwhile, so over any window a source gets at most about two slices per
process (a refill and a request's lease may cross) more than its limit, and never more than its
limit in the long run.

A denied lease is remembered: the process answers 429 without asking Redis again until the
bucket can have refilled, or RECHECK_S at most, so a flood over the limit costs Redis at most
1 / RECHECK_S calls a second per source and process.

While Redis is unreachable or slower than INGEST_RATE_LIMIT_REDIS_TIMEOUT_S, requests that need
a lease are limited in this process's memory to 1 / INGEST_RATE_LIMIT_PROCESSES of each limit
(never unlimited, never a 5xx); the process tries Redis again at most once per RETRY_S and logs
once per outage.
"""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..keys import SourceInfo
from .base import RateLimiter, limits, over_limit
from .local import LocalRateLimiter

logger = logging.getLogger(__name__)

# A slice is this share of a second's rate (and at most the burst).
SLICE_SHARE = 1 / 20
# A denied source is asked about again after at most this many seconds.
RECHECK_S = 0.05
# While Redis is away, one request a second tries it again.
RETRY_S = 1.0

# KEYS: the buckets of one request (its events, its bytes); ARGV: five numbers per bucket, rate,
# capacity, need, take, extra. Refill each bucket by the time since its last lease (Redis's clock,
# the same for every host); then, if it holds `need`, grant `take` (which may leave a debt, for a
# request larger than the whole bucket) plus up to `extra` more that it still holds; else grant
# nothing and say how long until it holds `need`. A bucket that would be full again expires, so
# idle sources cost no memory. Numbers go back as strings: Redis would truncate Lua numbers.
LEASE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local stamp = clock[1] .. '.' .. string.format('%06d', clock[2])
local answers = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[i * 5 - 4])
  local capacity = tonumber(ARGV[i * 5 - 3])
  local need = tonumber(ARGV[i * 5 - 2])
  local take = tonumber(ARGV[i * 5 - 1])
  local extra = tonumber(ARGV[i * 5])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
  local granted = 0
  local wait = 0
  if tokens < need then
    wait = (need - tokens) / rate
  else
    granted = take + math.max(0, math.min(extra, tokens - take))
    tokens = tokens - granted
  end
  redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', stamp)
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / rate * 1000) + 1000)
  answers[i * 2 - 1] = string.format('%.17g', granted)
  answers[i * 2] = string.format('%.17g', wait)
end
return answers
"""


@dataclass
class Slice:
    """What a process holds of one source's budget in one unit."""

    capacity: float
    size: float
    held: float = 0.0
    refilling: bool = False
    # After a denied lease: when the bucket will hold what was asked, and when to ask again.
    retry_at: float = 0.0
    recheck_at: float = 0.0


@dataclass(frozen=True)
class Lease:
    """What a process asks of one bucket (LEASE_SCRIPT's arguments)."""

    key: str
    rate: int
    capacity: float
    need: float
    take: float
    extra: float


@dataclass
class SourceSlices:
    """A source's slices, by unit and rate; the lock makes one thread at a time lease them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    slices: dict[tuple[str, int], Slice] = field(default_factory=dict)


class RedisUnavailable(Exception):
    """Redis did not answer a lease in time, or is in an outage."""


class RedisRateLimiter(RateLimiter):
    """Token buckets per source in Redis, spent by this process in leased slices."""

    def __init__(
        self,
        *,
        url: str,
        burst_s: float,
        processes: int,
        timeout_s: float,
        key_prefix: str,
    ):
        self._burst_s = burst_s
        self._key_prefix = key_prefix
        # One attempt per lease: a retry would double the time a request waits for a Redis
        # that is away, and the fallback already covers it.
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._lease = self._client.register_script(LEASE_SCRIPT)
        self._processes = processes
        self._fallback = LocalRateLimiter(burst_s=burst_s, share=1 / processes)
        self._lock = threading.Lock()
        self._sources: dict[str, SourceSlices] = {}
        self._outage = False
        self._next_try = 0.0
        # One thread leases ahead for every source; each slice has at most one refill queued.
        self._refills = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ratelimit-refill")

    @classmethod
    def from_settings(cls) -> "RedisRateLimiter":
        return cls(
            url=settings.REDIS_URL,
            burst_s=settings.INGEST_RATE_BURST_S,
            processes=settings.INGEST_RATE_LIMIT_PROCESSES,
            timeout_s=settings.INGEST_RATE_LIMIT_REDIS_TIMEOUT_S,
            key_prefix=settings.INGEST_RATE_LIMIT_KEY_PREFIX,
        )

    def admit(self, source: SourceInfo, *, declared_bytes: int) -> None:
        if not self._pass(source, events=1, nbytes=declared_bytes, spend=False):
            self._fallback.admit(source, declared_bytes=declared_bytes)

    def check(self, source: SourceInfo, *, events: int, nbytes: int) -> None:
        if not self._pass(source, events=events, nbytes=nbytes, spend=True):
            self._fallback.check(source, events=events, nbytes=nbytes)

    def _pass(self, source: SourceInfo, *, events: int, nbytes: int, spend: bool) -> bool:
        """Admit or spend from the leased slices, leasing what is short; raise RateLimited.

        Return False, having spent nothing, if that needs Redis and Redis is unavailable.
        """
        wanted = limits(source, events=events, nbytes=nbytes)
        if not wanted:
            return True
        slices = self._slices(source.name)
        with slices.lock:
            now = time.monotonic()
            held = [self._slice(slices, unit, rate) for unit, rate, _ in wanted]
            short = []
            for piece, (unit, rate, amount) in zip(held, wanted, strict=True):
                # A request larger than the whole bucket passes once the bucket is full.
                needed = min(amount, piece.capacity)
                if piece.held >= (amount if spend else needed):
                    continue
                if now < piece.recheck_at:
                    raise over_limit(source, unit=unit, rate=rate, wait=piece.retry_at - now)
                # Admission leases a slice without spending; a check leases what it spends.
                lease = Lease(
                    key=f"{self._key_prefix}{source.name}:{unit}",
                    rate=rate,
                    capacity=piece.capacity,
                    need=max(0.0, needed - piece.held),
                    take=amount - piece.held if spend else 0.0,
                    extra=piece.size,
                )
                short.append((piece, unit, lease))
            if short:
                try:
                    answers = self._lease_from_redis([lease for _, _, lease in short])
                except RedisUnavailable:
                    return False
                denied = None
                for (piece, unit, lease), (granted, wait) in zip(short, answers, strict=True):
                    if wait > 0:
                        piece.retry_at = now + wait
                        piece.recheck_at = now + min(wait, RECHECK_S)
                        if denied is None or wait > denied[2]:
                            denied = (unit, lease.rate, wait)
                    else:
                        piece.held += granted
                if denied is not None:
                    unit, rate, wait = denied
                    raise over_limit(source, unit=unit, rate=rate, wait=wait)
            if not spend:
                return True
            refills = []
            for piece, (unit, rate, amount) in zip(held, wanted, strict=True):
                piece.held -= amount
                # Not while Redis is away: the requests' own tries probe it once a second.
                if (
                    piece.held < piece.size / 2
                    and not piece.refilling
                    and not self._outage
                    and now >= piece.recheck_at
                ):
                    piece.refilling = True
                    lease = Lease(
                        key=f"{self._key_prefix}{source.name}:{unit}",
                        rate=rate,
                        capacity=piece.capacity,
                        need=0.0,
                        take=0.0,
                        extra=piece.size - piece.held,
                    )
                    refills.append((piece, lease))
        if refills:
            try:
                self._refills.submit(self._refill, slices, refills)
            except RuntimeError:  # the interpreter is exiting: a request leases if it must
                with slices.lock:
                    for piece, _ in refills:
                        piece.refilling = False
        return True

    def _refill(self, slices: SourceSlices, refills: list[tuple[Slice, Lease]]) -> None:
        """Lease the next slices ahead, off the request path; a failure only leaves them."""
        granted = [0.0] * len(refills)
        leases = [lease for _, lease in refills]
        try:
            granted = [amount for amount, _ in self._lease_from_redis(leases)]
        except RedisUnavailable:
            logger.debug("rate limits: a refill found Redis unavailable")
        finally:
            with slices.lock:
                for (piece, _), amount in zip(refills, granted, strict=True):
                    piece.refilling = False
                    piece.held += amount

    def _slices(self, name: str) -> SourceSlices:
        slices = self._sources.get(name)
        if slices is None:
            with self._lock:
                slices = self._sources.setdefault(name, SourceSlices())
        return slices

    def _slice(self, slices: SourceSlices, unit: str, rate: int) -> Slice:
        # The rate is part of the key so an edited limit takes effect with the next cache load.
        piece = slices.slices.get((unit, rate))
        if piece is None:
            capacity = max(1.0, rate * self._burst_s)
            piece = slices.slices[(unit, rate)] = Slice(
                capacity=capacity, size=min(capacity, max(1.0, rate * SLICE_SHARE))
            )
        return piece

    def _lease_from_redis(self, leases: list[Lease]) -> list[tuple[float, float]]:
        """Return (granted, wait) for each lease, in one round trip; raise RedisUnavailable."""
        if not self._may_try():
            raise RedisUnavailable
        args = []
        for lease in leases:
            args += [lease.rate, lease.capacity, lease.need, lease.take, lease.extra]
        try:
            answer = self._lease(keys=[lease.key for lease in leases], args=args)
        except (redis.RedisError, OSError) as error:
            self._failed(error)
            raise RedisUnavailable from error
        self._answered()
        return [(float(answer[i]), float(answer[i + 1])) for i in range(0, len(answer), 2)]

    def _may_try(self) -> bool:
        """Return whether to ask Redis: always while it answers, once per RETRY_S while not."""
        if not self._outage:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + RETRY_S
            return True

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self._next_try = time.monotonic() + RETRY_S
            if self._outage:
                return
            self._outage = True
        logger.warning(
            "rate limits: Redis is unavailable (%s: %s); each process allows 1/%d of each limit "
            "until it answers",
            type(error).__name__,
            error,
            self._processes,
        )

    def _answered(self) -> None:
        if not self._outage:
            return
        with self._lock:
            self._outage = False
        logger.warning("rate limits: Redis answers again; limits are shared again")
