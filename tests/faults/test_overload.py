"""Far more load than the stack can deliver: fast 503s, bounded memory, recovery by itself."""

import statistics
import threading
import time
import uuid

import pytest

from .conftest import assert_nothing_lost, assert_rejections_well_formed, drain_and_count
from .loadgen import LoadGenerator
from .procs import tree_rss_kib

pytestmark = pytest.mark.faults

HIGH_WATER_BATCHES = 20
OVERLOAD_SECONDS = 10.0
OVERLOAD_THREADS = 16
PADDING_BYTES = 2_000
# The resident memory of the serve.py process tree (a supervisor and its server processes) may
# grow by this much above its idle figure: 10 s of this load buffered without bound would pass
# it many times over (16 threads x ~500 requests/s x ~10 KB bodies).
RSS_GROWTH_BOUND_KIB = 100 * 1024
REJECTION_MEDIAN_MAX_S = 0.1
REJECTION_P99_MAX_S = 1.0
RECOVERY_TIMEOUT_S = 30.0


class RssSampler:
    """Record the peak resident memory of a process tree every few milliseconds."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        self.pid = pid
        self.peak_kib = tree_rss_kib(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(5)

    def _run(self):
        while not self._stop.wait(self._interval_s):
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))


def test_overload_sheds_fast_stays_bounded_and_recovers(fault_stack, topic, report):
    # No worker yet: the backlog grows past its small high-water mark within a second.
    stack = fault_stack(
        INGEST_BACKLOG_HIGH_WATER=str(HIGH_WATER_BATCHES),
        INGEST_BACKLOG_CHECK_INTERVAL_S="0.2",
        INGEST_PENDING_MAX_EVENTS="2000",
    )
    server = stack.start_server()
    idle_kib = tree_rss_kib(server.pid)
    load = LoadGenerator(
        port=stack.port,
        topic=topic,
        prefix="overload",
        threads=OVERLOAD_THREADS,
        max_seconds=OVERLOAD_SECONDS,
        padding_bytes=PADDING_BYTES,
        pause_after_rejection_s=0.0,  # clients that ignore Retry-After: the worst case
    )
    with RssSampler(server.pid) as rss, load:
        result = load.wait()
    rejected_seconds = sorted(rejection.seconds for rejection in result.rejections)
    codes = {
        rejection.body.get("code") if isinstance(rejection.body, dict) else None
        for rejection in result.rejections
    }

    stack.start_worker()
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    recovered_after = None
    while recovered_after is None and time.monotonic() < deadline:
        event = {"id": f"overload-probe-{uuid.uuid4().hex}"}
        status, _, _ = stack.post_json(f"/api/v1/events/{topic}", event)
        if status == 202:
            result.accepted.add(event["id"])
            recovered_after = RECOVERY_TIMEOUT_S - (deadline - time.monotonic())
        result.sent.add(event["id"])
        time.sleep(0.2)  # paces the probes: the recovery is timed, not the probe load

    figures = drain_and_count(stack, topic, result, scenario="overload (no worker, high water 20)")
    p99 = rejected_seconds[int(len(rejected_seconds) * 0.99)] if rejected_seconds else None
    report(
        figures,
        f"serve.py RSS idle {idle_kib // 1024} MiB, peak {rss.peak_kib // 1024} MiB "
        f"(bound idle + {RSS_GROWTH_BOUND_KIB // 1024} MiB)",
        f"503 latency median {statistics.median(rejected_seconds or [0]) * 1000:.1f} ms, "
        f"p99 {(p99 or 0) * 1000:.1f} ms; codes {sorted(codes)}; "
        f"202 again {recovered_after and round(recovered_after, 1)}s after the worker started",
    )
    assert result.rejected > result.requests / 2, "the overload was not shed"
    assert_rejections_well_formed(result)
    assert statistics.median(rejected_seconds) < REJECTION_MEDIAN_MAX_S
    assert p99 < REJECTION_P99_MAX_S
    assert rss.peak_kib < idle_kib + RSS_GROWTH_BOUND_KIB
    assert recovered_after is not None, "the gateway did not accept again once the worker ran"
    assert_nothing_lost(figures)
