"""Readiness: can this gateway take events now? Bounded in time, cached for a moment.

A process that is stopping drains: it answers not ready at once, uncached, while it still serves,
so a load balancer takes it out before it stops listening (serve.py --drain-seconds).

The database and Kafka are asked; the broker is not: the runtime's backlog monitor already
reads its queue depth every INGEST_BACKLOG_CHECK_INTERVAL_S, and the probe reports that reading.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

from django.conf import settings
from django.db import connection
from kafka import KafkaConsumer

from ..state import per_process

# The order checks appear in a report and its "failed" list.
REPORT_ORDER = ("database", "broker", "kafka", "backlog")


class BacklogState(Protocol):
    """What the runtime's backlog monitor knows of the broker (pipeline.runtime.BacklogMonitor)."""

    depth: int | None
    error: str | None
    first_read: threading.Event
    high_water: int

    def backlogged(self) -> bool: ...


def check_database() -> dict:
    connection.close_if_unusable_or_obsolete()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        connection.close()
        raise
    return {}


def check_kafka() -> dict:
    timeout_ms = int(settings.INGEST_READYZ_TIMEOUT_S * 1000)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        client_id="ingest-readyz",
        enable_auto_commit=False,
        request_timeout_ms=timeout_ms + 500,
        bootstrap_timeout_ms=timeout_ms,
        connections_max_idle_ms=timeout_ms + 1_000,
    )
    try:
        return {"topics": len(consumer.topics())}
    finally:
        consumer.close()


CHECKS = {"database": check_database, "kafka": check_kafka}


class ReadinessProbe:
    """Run every check at most once at a time, each in its own thread, answering within a bound."""

    def __init__(self, *, checks: dict, timeout_s: float, cache_s: float):
        self._checks = checks
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._executor = ThreadPoolExecutor(len(checks), thread_name_prefix="ingest-readyz")
        self._lock = threading.Lock()
        self._running: dict = {}
        self._report: dict | None = None
        self._reported_at = 0.0
        self._draining = threading.Event()

    def drain(self) -> None:
        """Report not ready from now on, whatever the checks say."""
        self._draining.set()

    def report(self, *, backlog: BacklogState) -> dict:
        """Say which checks fail; the broker's and the backlog's come from `backlog`."""
        if self._draining.is_set():
            return {"status": "draining", "failed": ["draining"], "checks": {}}
        with self._lock:
            if self._report is not None and time.monotonic() - self._reported_at < self._cache_s:
                return self._report
            for name, check in self._checks.items():
                # A check still stuck from an earlier call is waited on, not started again.
                if name not in self._running or self._running[name].done():
                    self._running[name] = self._executor.submit(check)
            running = dict(self._running)
        deadline = time.monotonic() + self._timeout_s
        checks = {}
        for name, future in running.items():
            started = time.monotonic()
            try:
                detail = future.result(timeout=max(0.0, deadline - time.monotonic()))
                checks[name] = {"ok": True, **detail}
            except FutureTimeout:
                checks[name] = {"ok": False, "error": f"no answer within {self._timeout_s}s"}
            except Exception as error:
                checks[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            checks[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
        # A monitor started by this very probe gets what is left of the bound for its first read.
        backlog.first_read.wait(max(0.0, deadline - time.monotonic()))
        checks.update(backlog_checks(backlog))
        ordered = {name: checks[name] for name in REPORT_ORDER if name in checks}
        checks = {**ordered, **checks}
        failed = [name for name, result in checks.items() if not result["ok"]]
        report = {"status": "unavailable" if failed else "ready", "failed": failed}
        report["checks"] = checks
        with self._lock:
            self._report, self._reported_at = report, time.monotonic()
        return report


def backlog_checks(backlog: BacklogState) -> dict:
    """Report the monitor's last reading as the broker and backlog checks."""
    error, depth = backlog.error, backlog.depth
    if error is not None:
        broker, depth = {"ok": False, "error": error}, None
    elif depth is None:
        broker = {"ok": False, "error": "the queue depth was not read yet"}
    else:
        broker = {"ok": True, "depth": depth}
    return {
        "broker": broker,
        "backlog": {
            "ok": depth is not None and not backlog.backlogged(),
            "depth": depth,
            "high_water": backlog.high_water,
        },
    }


@per_process
def get_probe() -> ReadinessProbe:
    """Return this process's readiness probe."""
    return ReadinessProbe(
        checks=CHECKS,
        timeout_s=settings.INGEST_READYZ_TIMEOUT_S,
        cache_s=settings.INGEST_READYZ_CACHE_S,
    )
