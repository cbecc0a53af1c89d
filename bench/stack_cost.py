"""Measure a real stack's CPU: the gateway per request and event, a worker per batch and record.

    .venv/bin/python bench/stack_cost.py [--seconds 8] [--connections 50]

Starts a Tansu and a stack of tests/stack.py (serve.py --processes 1 in production mode on the
local PostgreSQL and RabbitMQ, one Celery worker of 16 threads), then drives it with wrk and
bench/wrk/load.lua, once with single-event POSTs and once with POSTs of 100 events, for each
producer backend (KAFKA_CLIENT: kafka-python, confluent; the worker is restarted with it). For
each run it reads the CPU time of the server's and the worker's processes from /proc, counts the
events accepted (wrk) and the batches delivered (rows of the outcome table), waits for the queue
to drain, and prints the server's CPU per request and per event, and the worker's per event and
per batch. From the two runs of each backend it solves gateway CPU = requests x per-request +
events x per-event and worker CPU = batches x per-batch + records x per-record (the inputs of
bench/sizing.py). Everything runs on the same cores, so the figures include contention.
"""

import argparse
import shutil
import sys
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from tests.stack import Stack, Tansu  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

DRAIN_TIMEOUT_S = 180.0
DRAIN_POLL_S = 0.5
WRK_TIMEOUT_S = 10.0
BACKENDS = ("kafka-python", "confluent")
MODES = {"single": 1, "batch": loadgen.PROTOCOL_BATCH_SIZE}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=50)
    return parser.parse_args()


def delivered(stack: Stack) -> tuple[int, int]:
    """Return the batches and the records the worker has settled so far."""
    with psycopg.connect(stack.database.url, connect_timeout=5) as connection:
        batches, records = connection.execute(
            "SELECT count(*), coalesce(sum(jsonb_array_length(offsets)), 0) "
            "FROM ingest_deliveryoutcome"
        ).fetchone()
    return batches, records


def measure(stack: Stack, *, mode: str, args: argparse.Namespace, out: Path) -> dict:
    """Run wrk in one mode, wait for the drain, and return the run's counts and CPU seconds."""
    server_before = loadgen.tree_cpu_seconds([stack.server.pid])
    worker_before = loadgen.tree_cpu_seconds([stack.worker.pid])
    batches_before, records_before = delivered(stack)
    run = loadgen.run_wrk(
        binary=shutil.which("wrk") or "wrk",
        base_url=stack.url,
        path="/api/v1/events/stack-cost",
        mode=mode,
        connections=args.connections,
        seconds=args.seconds,
        prefix=f"cost-{uuid.uuid4().hex[:8]}",
        out=out / mode,
        timeout_s=WRK_TIMEOUT_S,
        offset_s=0.0,
        api_key=None,
    )
    server_cpu = loadgen.tree_cpu_seconds([stack.server.pid]) - server_before
    # Requests still in flight when wrk stopped may be accepted too: wait for those records as
    # well, not only for the queue to empty (the last batches may be in the worker's hands).
    wait_until(
        lambda: (
            delivered(stack)[1] - records_before >= run.accepted_events and stack.queue_depth() == 0
        ),
        timeout=DRAIN_TIMEOUT_S,
        interval=DRAIN_POLL_S,
        message="the worker did not deliver every accepted event in time",
    )
    batches, records = delivered(stack)
    return {
        "requests": run.ok,
        "events": records - records_before,
        "batches": batches - batches_before,
        "server_cpu_s": server_cpu,
        "worker_cpu_s": loadgen.tree_cpu_seconds([stack.worker.pid]) - worker_before,
    }


def report(backend: str, mode: str, figures: dict) -> None:
    events, batches = figures["events"], max(1, figures["batches"])
    print(
        f"{backend:12} {mode:6} {figures['requests']:7} requests {events:8} events "
        f"{figures['batches']:6} batches ({events / batches:6.1f} events/batch) | server "
        f"{figures['server_cpu_s'] / max(1, figures['requests']) * 1e6:7.1f} us/request "
        f"{figures['server_cpu_s'] / max(1, events) * 1e6:6.1f} us/event | worker "
        f"{figures['worker_cpu_s'] / max(1, events) * 1e6:6.1f} us/event "
        f"{figures['worker_cpu_s'] / batches * 1e3:6.2f} ms/batch",
        flush=True,
    )


def solve(runs: dict, *, cpu: str, per: tuple[str, str]) -> tuple[float, float]:
    """Solve cpu = a x per[0] + b x per[1] from the single and the batch run; return (a, b)."""
    (x1, y1, c1), (x2, y2, c2) = ((run[per[0]], run[per[1]], run[cpu]) for run in runs.values())
    determinant = x1 * y2 - x2 * y1
    return (c1 * y2 - c2 * y1) / determinant, (x1 * c2 - x2 * c1) / determinant


def main() -> None:
    args = parse_args()
    out = ROOT / "test-artifacts" / "stack-cost"
    tansu = Tansu(out)
    stack = Stack(
        kafka_address=tansu.address,
        log_dir=out,
        extra_env={"LOG_LEVEL": "WARNING", "INGEST_REQUIRE_API_KEYS": "false"},
    )
    try:
        stack.start_server("--processes", "1", "--no-cpu-affinity")
        for backend in BACKENDS:
            stack.env["KAFKA_CLIENT"] = backend
            stack.start_worker(concurrency=16)
            runs = {}
            for mode in MODES:
                runs[mode] = measure(stack, mode=mode, args=args, out=out)
                report(backend, mode, runs[mode])
            per_request, per_event = solve(runs, cpu="server_cpu_s", per=("requests", "events"))
            per_batch, per_record = solve(runs, cpu="worker_cpu_s", per=("batches", "events"))
            print(
                f"{backend:12} gateway CPU: {per_request * 1e6:.0f} us per request + "
                f"{per_event * 1e6:.1f} us per event; worker CPU: {per_batch * 1e3:.2f} ms per "
                f"batch + {per_record * 1e6:.1f} us per record",
                flush=True,
            )
            stack.worker.terminate()
            stack.worker.wait(60)
    finally:
        stack.stop()
        tansu.stop()


if __name__ == "__main__":
    main()
