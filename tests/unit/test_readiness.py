"""The readiness probe and /readyz."""

import time

from ingest.control import readiness
from tests.unit.conftest import FakeBacklog


def probe(**results):
    def check(result):
        def run():
            if isinstance(result, Exception):
                raise result
            if result == "hang":
                time.sleep(1)
            return result

        return run

    return readiness.ReadinessProbe(
        checks={name: check(result) for name, result in results.items()},
        timeout_s=0.2,
        cache_s=0.0,
    )


def backlog(*, depth=None, error=None, read=True):
    """The runtime's backlog monitor as the probe sees it, after a reading or before the first."""
    state = FakeBacklog()
    state.depth, state.error, state.high_water = depth, error, 10
    if not read:
        state.first_read.clear()
    return state


def test_readiness_names_the_failed_checks():
    ok = probe(database={}, kafka={"topics": 1}).report(backlog=backlog(depth=3))
    assert ok["failed"] == [] and ok["status"] == "ready"
    assert list(ok["checks"]) == ["database", "broker", "kafka", "backlog"]
    assert ok["checks"]["broker"] == {"ok": True, "depth": 3}
    report = probe(database={}, kafka=OSError("refused")).report(backlog=backlog(depth=11))
    assert report["failed"] == ["kafka", "backlog"]
    assert report["checks"]["kafka"]["error"] == "OSError: refused"
    assert report["checks"]["backlog"] == {"ok": False, "depth": 11, "high_water": 10}
    started = time.monotonic()
    report = probe(database="hang", kafka={}).report(backlog=backlog(depth=0))
    assert time.monotonic() - started < 0.5
    assert report["failed"] == ["database"]


def test_readiness_reports_what_the_backlog_monitor_read():
    unreachable = backlog(depth=3, error="OSError: refused")
    report = probe(database={}, kafka={}).report(backlog=unreachable)
    assert report["failed"] == ["broker", "backlog"]
    assert report["checks"]["broker"]["error"] == "OSError: refused"
    assert report["checks"]["backlog"]["depth"] is None  # a stale depth is not reported
    started = time.monotonic()
    report = probe(database={}, kafka={}).report(backlog=backlog(read=False))
    assert time.monotonic() - started < 0.5  # waits for a first reading only within the bound
    assert report["failed"] == ["broker", "backlog"]


def test_readyz_answers_503_with_the_failed_check(client, gateway):
    readiness.get_probe.replace(probe(database={}, kafka={}))
    gateway.backlog.error = "OSError: x"
    try:
        response = client.get("/readyz")
    finally:
        readiness.get_probe.replace(None)
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker", "backlog"]


def test_a_draining_probe_is_not_ready_whatever_the_checks_say(client, gateway):
    draining = probe(database={}, kafka={})
    assert draining.report(backlog=backlog(depth=0))["failed"] == []
    draining.drain()
    readiness.get_probe.replace(draining)
    try:
        response = client.get("/readyz")
    finally:
        readiness.get_probe.replace(None)
    assert response.status_code == 503
    assert response.json() == {"status": "draining", "failed": ["draining"], "checks": {}}
