"""The in-process runner: the cheroot server it builds, and its bounded stop."""

import http.client
import threading
import time

import pytest

from ingest.control import readiness
from ingestsite.server import runner
from ingestsite.server.connections import DeadlineServer
from ingestsite.server.options import OPTIONS, parse_args
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def no_serve_environment(monkeypatch):
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def test_the_server_reads_requests_under_the_deadline_and_the_share(monkeypatch):
    monkeypatch.setenv("SERVE_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("SERVE_SLOW_CLIENT_SHARE", "0.25")
    args = parse_args(["--bind", "127.0.0.1:0", "--processes", "1", "--threads", "10"])
    server = runner.build_server(args, reuse_port=False)
    assert isinstance(server, DeadlineServer)
    assert server.request_timeout == 2.5
    assert server.slow_client_slots.limit == 2


def test_stop_server_gives_up_on_a_server_that_never_stops():
    class Stuck:
        def stop(self):
            time.sleep(5)

    assert runner.stop_server(Stuck(), timeout=0.2) is False


def test_many_idle_keep_alive_connections_stay_open():
    """cheroot's own limit (10) would answer 'Connection: close' past ten idle connections."""
    args = parse_args(["--bind", "127.0.0.1:0", "--processes", "1", "--threads", "4"])
    server = runner.prepare_server(args, reuse_port=False)
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    port = server.bind_addr[1]
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(30)]
    try:
        for _ in range(2):
            for connection in connections:
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                assert response.getheader("Connection") != "close"
    finally:
        for connection in connections:
            connection.close()
        assert runner.stop_server(server, timeout=5)


def test_drain_keeps_serving_while_readyz_answers_503(gateway):
    """A load balancer checking /readyz takes the process out while it still answers."""
    readiness.get_probe.replace(
        readiness.ReadinessProbe(checks={"database": dict}, timeout_s=1, cache_s=60)
    )
    args = parse_args(["--bind", "127.0.0.1:0", "--processes", "1", "--threads", "4"])
    server = runner.prepare_server(args, reuse_port=False)
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    port = server.bind_addr[1]

    def get(path):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        assert get("/readyz") == 200  # cached for 60 s: the drain must not wait for the cache
        started = time.monotonic()
        draining = threading.Thread(target=runner.drain, kwargs={"seconds": 0.5, "name": ""})
        draining.start()
        wait_until(lambda: get("/readyz") == 503, timeout=2, message="/readyz stayed 200")
        assert get("/healthz") == 200
        draining.join(5)
        assert time.monotonic() - started >= 0.5
    finally:
        readiness.get_probe.replace(None)
        assert runner.stop_server(server, timeout=5)


def test_no_drain_by_default():
    assert parse_args(["--processes", "1"]).drain_seconds == 0.0
    with pytest.raises(SystemExit):
        parse_args(["--drain-seconds", "-1"])
