"""SIGTERM under load: serve.py answers what it accepted, a worker requeues what it holds."""

import signal
import subprocess
import time
from collections import Counter

import pytest

from .conftest import assert_nothing_lost, drain_and_count, log_since, log_size
from .loadgen import LoadGenerator
from .test_faults import WARMUP_ACCEPTS, wait_for_accepts

pytestmark = pytest.mark.faults

SERVER_SHUTDOWN_TIMEOUT_S = 8.0
KAFKA_FROZEN_BEFORE_SIGTERM_S = 4.0
# A delivery attempt in flight ends within KAFKA_DELIVERY_TIMEOUT_S (8 s in FAULT_ENV); the
# producer flush at shutdown is bounded by ingest.delivery.tasks.PRODUCER_FLUSH_TIMEOUT_S (10 s).
WORKER_STOP_BOUND_S = 30.0


def test_sigterm_server_answers_every_request_it_took(fault_stack, topic, report):
    stack = fault_stack()
    stack.start_worker()
    server = stack.start_server("--shutdown-timeout", str(SERVER_SHUTDOWN_TIMEOUT_S))
    with LoadGenerator(
        port=stack.port, topic=topic, prefix="sigterm-server", max_seconds=20
    ) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            returncode = server.wait(SERVER_SHUTDOWN_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            returncode = None
        stop_seconds = time.monotonic() - signalled
        result = load.stop()
    figures = drain_and_count(stack, topic, result, scenario="SIGTERM serve.py")
    after = Counter(name for started, name in result.failures if started >= signalled)
    report(
        figures,
        f"serve.py exited {returncode} {stop_seconds:.2f}s after SIGTERM; requests started "
        f"after SIGTERM that got no answer: {dict(after) or '-'}",
    )
    assert returncode == 0
    assert stop_seconds < SERVER_SHUTDOWN_TIMEOUT_S
    assert_nothing_lost(figures)
    unanswered = Counter(name for started, name in result.failures if started < signalled)
    # A request the application read and then dropped ends in a FIN or a timeout, never in a
    # reset; those would be a bug in the gateway's own shutdown. A reset that reaches a client
    # still writing its request shows as BrokenPipeError: that request was never read either.
    never_read = ("ConnectionResetError", "BrokenPipeError")
    dropped = {name: n for name, n in unanswered.items() if name not in never_read}
    assert not dropped, f"requests in flight at SIGTERM got no answer: {dropped}"
    if unanswered:
        # Connections still in the kernel's accept queue when cheroot closes its listener are
        # reset: cheroot stops accepting up to 0.5 s before it closes the socket, and serve.py
        # does not drain the queue. Known defect of serve.py, reported; not the gateway losing
        # an accepted event (the client got no 2xx and retries).
        pytest.xfail(
            f"{unanswered['ConnectionResetError']} connections made before SIGTERM were reset "
            "in the accept queue (serve.py does not drain it on stop)"
        )


def test_sigterm_worker_requeues_the_batches_it_holds(tansu, fault_stack, topic, report):
    stack = fault_stack()
    worker_log = stack.log_dir / "worker.log"
    log_start = log_size(worker_log)
    worker = stack.start_worker()
    stack.start_server()
    with LoadGenerator(
        port=stack.port, topic=topic, prefix="sigterm-worker", max_seconds=20
    ) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        tansu.freeze()  # the worker now holds batches it cannot deliver, retrying them
        try:
            time.sleep(KAFKA_FROZEN_BEFORE_SIGTERM_S)
            result = load.stop()
            signalled = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            try:
                returncode = worker.wait(WORKER_STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                returncode = None
            stop_seconds = time.monotonic() - signalled
        finally:
            tansu.thaw()
    requeued = log_since(worker_log, log_start).count("goes back to the queue")
    stack.start_worker()
    figures = drain_and_count(stack, topic, result, scenario="SIGTERM worker, Kafka frozen")
    report(
        figures,
        f"worker exited {returncode} {stop_seconds:.1f}s after SIGTERM; "
        f"{requeued} batches requeued",
    )
    assert returncode == 0, "the worker did not stop by itself in time"
    assert requeued > 0, "the worker held no batch: the scenario proves nothing"
    assert_nothing_lost(figures)
