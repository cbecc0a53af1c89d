"""The runtime: how long a request waits for its publish, and where backlog readings go."""

import threading

import pytest

from ingest.pipeline import runtime

ONE_NODE = "amqp://guest:guest@a:5672//"
THREE_NODES = "amqp://guest:guest@a:5672//;amqp://guest:guest@b:5672//;amqp://guest:guest@c:5672//"


@pytest.mark.parametrize(("url", "nodes"), [(ONE_NODE, 1), (THREE_NODES, 3)])
def test_a_request_waits_out_a_connection_to_every_node_in_both_attempts(settings, url, nodes):
    settings.CELERY_BROKER_URL = url
    settings.CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
    settings.INGEST_PUBLISH_TIMEOUT_S = 5.0
    settings.INGEST_BATCH_MAX_WAIT_MS = 50.0
    attempt = 2.0 * nodes + 5.0
    expected = 0.05 + 5.0 + runtime.PUBLISH_ATTEMPTS * attempt + runtime.PUBLISH_WAIT_MARGIN_S
    assert runtime.publish_wait_s() == pytest.approx(expected)


def test_the_backlog_monitor_hands_every_reading_to_the_window():
    readings = iter([3, 40, 41])
    seen = []
    done = threading.Event()

    def on_depth(depth):
        seen.append(depth)
        if len(seen) == 3:
            done.set()

    monitor = runtime.BacklogMonitor(
        read_depth=lambda: next(readings, 41), interval_s=0.01, high_water=100, on_depth=on_depth
    )
    assert done.wait(2)
    monitor.stop()
    assert seen[:3] == [3, 40, 41]


def test_a_broker_away_for_many_readings_is_logged_once(caplog):
    readings = iter([ConnectionError("refused")] * 5 + [7])
    done = threading.Event()

    def read_depth():
        reading = next(readings, 7)
        if isinstance(reading, Exception):
            raise reading
        return reading

    monitor = runtime.BacklogMonitor(
        read_depth=read_depth, interval_s=0.01, high_water=100, on_depth=lambda _: done.set()
    )
    assert done.wait(2)
    monitor.stop()
    failures = [r for r in caplog.records if r.getMessage().startswith("backlog check failed")]
    assert len(failures) == 1
    assert monitor.error is None and monitor.depth == 7
