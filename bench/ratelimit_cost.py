"""Measure what a rate-limit check costs on the hot path: the local buckets against Redis leases.

    .venv/bin/python bench/ratelimit_cost.py [--checks 20000] [--rounds 3] [--redis-url URL]

In one run, alternating for --rounds rounds, times RateLimiter.check of one event of 200 bytes:
- local: the per-process buckets (ingest.control.ratelimit.local);
- redis, slice in memory: the Redis backend spending a slice it leased (no round trip);
- redis, denied from memory: a source over its limit, answered 429 without asking Redis;
- redis, lease: a check that must lease from Redis (each on a source of its own; its events
  and bytes in one round trip), as the request that spends a process's slice does: one in
  every rate/20 events of a source at its limit;
and prints microseconds per check (wall clock, which counts the round trip, and this thread's
CPU), best round. Redis keys go under a prefix of the run's own and are deleted after.
"""

import argparse
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

import django  # noqa: E402

django.setup()  # the control plane reads ingest.models

import redis  # noqa: E402

from ingest.control.keys import SourceInfo  # noqa: E402
from ingest.control.ratelimit import RateLimited  # noqa: E402
from ingest.control.ratelimit.local import LocalRateLimiter  # noqa: E402
from ingest.control.ratelimit.redis import RedisRateLimiter  # noqa: E402

EVENT_BYTES = 200
# High enough that no round of checks runs out: the passing path is what is timed.
OPEN_RATE = 10**9


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20_000, help="checks per round and case")
    parser.add_argument("--leases", type=int, default=2_000, help="leasing checks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser.parse_args()


def source(name: str, rate: int) -> SourceInfo:
    return SourceInfo(
        name=name,
        topics=frozenset(),
        max_events_per_s=rate,
        max_bytes_per_s=rate * EVENT_BYTES,
    )


def timed(check, sources: list[SourceInfo]) -> tuple[float, float]:
    """Return (wall us, CPU us) per check of one event on each of `sources` in turn."""
    wall, cpu = time.perf_counter(), time.thread_time()
    for info in sources:
        with contextlib.suppress(RateLimited):
            check(info, events=1, nbytes=EVENT_BYTES)
    count = len(sources)
    return (time.perf_counter() - wall) / count * 1e6, (time.thread_time() - cpu) / count * 1e6


def main() -> int:
    args = parse_args()
    prefix = f"bench:ratelimit:{uuid.uuid4().hex}:"
    local = LocalRateLimiter(burst_s=1.0)
    shared = RedisRateLimiter(
        url=args.redis_url, burst_s=1.0, processes=1, timeout_s=1.0, key_prefix=prefix
    )
    open_source = source("open", OPEN_RATE)
    denied = source("denied", 1)
    shared.check(denied, events=1, nbytes=EVENT_BYTES)  # spends its whole bucket
    cases = {
        "local": (local.check, lambda _: [open_source] * args.checks),
        "redis, slice in memory": (shared.check, lambda _: [open_source] * args.checks),
        "redis, denied from memory": (shared.check, lambda _: [denied] * args.checks),
        "redis, lease": (
            shared.check,
            lambda round_: [source(f"lease-{round_}-{n}", 1_000) for n in range(args.leases)],
        ),
    }
    best = {name: (float("inf"), float("inf")) for name in cases}
    try:
        for round_ in range(args.rounds):
            for name, (check, sources) in cases.items():
                wall, cpu = timed(check, sources(round_))
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    finally:
        client = redis.Redis.from_url(args.redis_url, socket_timeout=5)
        for key in client.scan_iter(match=f"{prefix}*", count=1_000):
            client.delete(key)
        client.close()
    print(f"{'check of one event':<28} {'wall us':>8} {'CPU us':>7}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<28} {wall:>8.2f} {cpu:>7.2f}")
    lease = best["redis, lease"][0]
    in_memory = best["redis, slice in memory"][0]
    # A source at its limit leases once per slice: rate/20 events, at least one.
    for rate in (100, 1_000, 10_000):
        per_slice = max(1, rate // 20)
        mean = (lease + (per_slice - 1) * in_memory) / per_slice
        print(f"redis at a source's limit of {rate} events/s, 1 event a request: {mean:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
