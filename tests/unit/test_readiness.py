"""The readiness probe and /readyz."""

import time

from ingest import readiness


def probe(**results):
    def check(result):
        def run():
            if isinstance(result, Exception):
                raise result
            if result == "hang":
                time.sleep(1)  # a check that hangs past the probe's timeout is the scenario
            return result

        return run

    return readiness.ReadinessProbe(
        checks={name: check(result) for name, result in results.items()},
        timeout_s=0.2,
        cache_s=0.0,
        high_water=10,
    )


def test_readiness_names_the_failed_checks():
    ok = probe(database={}, broker={"depth": 3}, kafka={"topics": 1}).report()
    assert ok["failed"] == [] and ok["status"] == "ready"
    report = probe(database={}, broker={"depth": 11}, kafka=OSError("refused")).report()
    assert report["failed"] == ["kafka", "backlog"]
    assert report["checks"]["kafka"]["error"] == "OSError: refused"
    started = time.monotonic()
    report = probe(database="hang", broker={"depth": 0}, kafka={}).report()
    assert time.monotonic() - started < 0.5
    assert report["failed"] == ["database"]


def test_readyz_answers_503_with_the_failed_check(client, monkeypatch):
    monkeypatch.setattr(readiness, "_probe", probe(database={}, broker=OSError("x"), kafka={}))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker", "backlog"]
