"""Kill, freeze and restart each dependency under load: nothing the gateway accepted is lost."""

import os
import signal
import time

import pytest

from .conftest import assert_nothing_lost, drain_and_count
from .loadgen import LoadGenerator

pytestmark = pytest.mark.faults

WARMUP_ACCEPTS = 200
WARMUP_TIMEOUT_S = 30.0
KAFKA_FREEZE_S = 20.0


def wait_for_accepts(load: LoadGenerator, count: int, *, timeout: float = WARMUP_TIMEOUT_S) -> int:
    """Wait until `count` more events are accepted, so the fault hits a stack under load."""
    target = load.accepted_count() + count
    deadline = time.monotonic() + timeout
    while load.accepted_count() < target:
        assert time.monotonic() < deadline, f"only {load.accepted_count()} of {target} accepted"
        time.sleep(0.05)
    return load.accepted_count()


def kill_hard(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


def test_kill_9_server_under_load(fault_stack, topic, report):
    stack = fault_stack()
    stack.start_worker()
    stack.start_server()
    with LoadGenerator(port=stack.port, topic=topic, prefix="kill-server", max_seconds=10) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        kill_hard(stack.server)
        stack.start_server()
        restarted = load.accepted_count()
        wait_for_accepts(load, WARMUP_ACCEPTS)
        result = load.wait()
    figures = drain_and_count(stack, topic, result, scenario="kill -9 serve.py")
    report(figures)
    assert len(result.accepted) > restarted, "the restarted server accepted nothing"
    assert_nothing_lost(figures)


def test_kill_9_worker_under_load(fault_stack, topic, report):
    stack = fault_stack()
    stack.start_worker()
    stack.start_server()
    with LoadGenerator(port=stack.port, topic=topic, prefix="kill-worker", max_seconds=10) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        time.sleep(2)  # let the worker take batches so the kill catches some mid-delivery
        kill_hard(stack.worker)
        time.sleep(1)
        stack.start_worker()
        result = load.wait()
    figures = drain_and_count(stack, topic, result, scenario="kill -9 worker")
    report(figures)
    assert result.rejected == 0, "the web side shed load although only a worker died"
    assert_nothing_lost(figures)


def test_kafka_unresponsive_for_20s(tansu, fault_stack, topic, report):
    stack = fault_stack()
    stack.start_worker()
    stack.start_server()
    with LoadGenerator(
        port=stack.port, topic=topic, prefix="freeze-kafka", max_seconds=KAFKA_FREEZE_S + 6
    ) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        tansu.freeze()
        try:
            frozen_at = load.accepted_count()
            time.sleep(KAFKA_FREEZE_S)
            accepted_while_frozen = load.accepted_count() - frozen_at
        finally:
            tansu.thaw()
        result = load.wait()
    figures = drain_and_count(stack, topic, result, scenario="Kafka frozen 20s")
    report(figures)
    # Kafka is not on the request path: the gateway keeps accepting while it is frozen.
    assert accepted_while_frozen > WARMUP_ACCEPTS
    assert_nothing_lost(figures)


def test_restart_rabbitmq_under_load(private_rabbitmq, fault_stack, topic, report):
    stack = fault_stack(CELERY_BROKER_URL=private_rabbitmq.url)
    stack.start_worker()
    stack.start_server()
    with LoadGenerator(
        port=stack.port, topic=topic, prefix="restart-rabbit", max_seconds=30
    ) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        private_rabbitmq.restart()
        restarted = load.accepted_count()
        wait_for_accepts(load, WARMUP_ACCEPTS)
        result = load.wait()
    figures = drain_and_count(stack, topic, result, scenario="restart RabbitMQ")
    report(figures)
    assert len(result.accepted) > restarted, "the gateway did not recover after the restart"
    assert_nothing_lost(figures)
