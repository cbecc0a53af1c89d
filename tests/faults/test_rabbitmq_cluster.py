"""Kill -9 the RabbitMQ node that leads the quorum queue under load: nothing accepted is lost."""

import time
from collections import Counter

import pytest

from tests.waiting import wait_until

from .conftest import assert_nothing_lost, drain_and_count, log_since, log_size
from .loadgen import LoadGenerator

pytestmark = pytest.mark.faults

WARMUP_ACCEPTS = 200
RECOVERY_ACCEPTS = 200
# The bound: after the leader dies the gateway takes events again within this.
RECOVERY_MAX_S = 30.0
# Load after recovery, so the survivors are seen to carry it, not just to answer once.
AFTER_RECOVERY_S = 3.0
LOAD_MAX_S = 45.0
WORKER_CONNECT_TIMEOUT_S = 60.0
LOAD_POLL_S = 0.05
LOG_POLL_S = 0.2


def accepted_after(load: LoadGenerator, count: int, *, timeout: float) -> float:
    """Wait until `count` more events are accepted; return how long that took."""
    started = time.monotonic()
    target = load.accepted_count() + count
    wait_until(
        lambda: load.accepted_count() >= target,
        timeout=timeout,
        interval=LOAD_POLL_S,
        message=lambda: f"only {load.accepted_count()} of {target} accepted",
    )
    return time.monotonic() - started


def test_kill_9_quorum_queue_leader_under_load(rabbitmq_cluster, fault_stack, topic, report):
    began = time.monotonic()
    # INFO shows each publish the gateway retried over a new connection.
    stack = fault_stack(
        CELERY_BROKER_URL=rabbitmq_cluster.url, INGEST_QUEUE_TYPE="quorum", LOG_LEVEL="INFO"
    )
    worker_log, server_log = stack.log_dir / "worker.log", stack.log_dir / "serve.log"
    log_start, server_log_start = log_size(worker_log), log_size(server_log)
    stack.start_worker()
    stack.start_server()
    # The worker must consume before the kill, so that batches are in flight on its channel.
    wait_until(
        lambda: "Connected to amqp" in log_since(worker_log, log_start),
        timeout=WORKER_CONNECT_TIMEOUT_S,
        interval=LOG_POLL_S,
        message="the worker did not connect to the broker",
    )
    with LoadGenerator(
        port=stack.port, topic=topic, prefix="kill-leader", max_seconds=LOAD_MAX_S
    ) as load:
        accepted_after(load, WARMUP_ACCEPTS, timeout=RECOVERY_MAX_S)
        leader = rabbitmq_cluster.leader_of(stack.queue)
        killed_at = time.monotonic()
        beam = leader.kill_9()
        accepting_again_s = (time.monotonic() - killed_at) + accepted_after(
            load, RECOVERY_ACCEPTS, timeout=RECOVERY_MAX_S
        )
        time.sleep(AFTER_RECOVERY_S)  # the scenario itself: load goes on over two nodes
        result = load.stop()
    survivor = next(node for node in rabbitmq_cluster.nodes if node is not leader)
    new_leader = rabbitmq_cluster.leader_of(stack.queue, asking=survivor)
    figures = drain_and_count(stack, topic, result, scenario="kill -9 quorum queue leader")
    refused = [
        (rejection.started + rejection.seconds, rejection)
        for rejection in result.rejections
        if rejection.started + rejection.seconds >= killed_at
    ]
    failed = [started for started, _ in result.failures if started >= killed_at]
    last_refusal = max([end for end, _ in refused] + failed, default=killed_at)
    worker_losses = log_since(worker_log, log_start).count("Connection to broker lost")
    server_lines = log_since(server_log, server_log_start)
    retried = server_lines.count("; reconnecting once")
    given_up = server_lines.count("publishing batch ") - server_lines.count("PublishAbandoned")
    codes = Counter(
        rejection.body.get("code") if isinstance(rejection.body, dict) else "not JSON"
        for _, rejection in refused
    )
    report(
        figures,
        f"cluster of 3 started and joined in {rabbitmq_cluster.start_seconds:.1f}s; killed the "
        f"leader {leader.node} (beam pid {beam}); new leader {new_leader.node}",
        f"recovery: {len(refused)} 503s ({dict(codes) or '-'}) in the "
        f"{last_refusal - killed_at:.1f}s after the kill; {RECOVERY_ACCEPTS} events accepted "
        f"again {accepting_again_s:.1f}s after it; the worker lost its broker connection "
        f"{worker_losses} times",
        f"the gateway published {retried} batches again over a new connection; "
        f"{retried - given_up} of them were confirmed, {given_up} failed again (their requests "
        "got 503)",
        f"test wall time {time.monotonic() - began:.1f}s plus the cluster start",
    )
    assert_nothing_lost(figures)
    assert new_leader is not leader
    assert set(result.statuses) <= {202, 503}, result.statuses
    assert not result.errors, f"connection-level errors at the gateway: {result.errors}"
    assert last_refusal - killed_at < RECOVERY_MAX_S
