"""Measure a Celery worker's CPU per batch and per record, without a web server on the cores.

    .venv/bin/python bench/worker_cost.py [--small 1 --small-batches 2000]
        [--large 1000 --large-batches 60] [--rounds 1] [--idle-seconds 10] [--rate R]
        [--backends ...]

Starts a Tansu and a worker of tests/stack.py (16 threads, production mode, the local PostgreSQL
and RabbitMQ), and for each producer backend (KAFKA_CLIENT): delivers one warm-up batch, reads
the worker's CPU while it idles for --idle-seconds, then, per batch size, freezes the worker
(SIGSTOP), publishes the batches straight to its queue with ingest.pipeline.broker.publish (as
the gateway does, confirmed), thaws it and waits until every batch has its outcome. The worker's
CPU from the thaw to the last outcome, over the two sizes, gives CPU = batches x per-batch +
records x per-record. With --rate the batches are published at that rate to the running worker
instead, one at a time as a gateway's flusher sends them, which costs a worker more per batch
than a backlog (it wakes for each). Idle CPU over the run is included, as in
bench/stack_cost.py.
"""

import argparse
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from tests.stack import Stack, Tansu  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

BACKENDS = ("kafka-python", "confluent")
PUBLISH_THREADS = 8
DRAIN_TIMEOUT_S = 300.0
DRAIN_POLL_S = 0.05
TOPIC = "worker-cost"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1, help="records per small batch")
    parser.add_argument("--small-batches", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=1_000, help="records per large batch")
    parser.add_argument("--large-batches", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1, help="measurements per size and backend")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--rate", type=float, help="batches a second, published to the running worker"
    )
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    return parser.parse_args()


def outcomes(stack: Stack) -> int:
    with psycopg.connect(stack.database.url, connect_timeout=5) as connection:
        return connection.execute("SELECT count(*) FROM ingest_deliveryoutcome").fetchone()[0]


def worker_cpu(stack: Stack) -> float:
    return loadgen.tree_cpu_seconds([stack.worker.pid])


def new_batch(size: int) -> list:
    from ingest.ids import uuid7
    from ingest.records import BatchRecord

    return [
        BatchRecord(TOPIC, uuid7(), f"user-{n % 97}", '{"page":"/home","n":1}') for n in range(size)
    ]


def publish(records: list) -> None:
    from ingest.ids import uuid7
    from ingest.pipeline import broker

    broker.publish(batch_id=uuid7(), records=records)


def publish_backlog(*, batches: int, size: int) -> None:
    """Publish `batches` batches of `size` records to the worker's queue, confirmed."""
    with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
        list(pool.map(lambda _: publish(new_batch(size)), range(batches)))


def deliver(stack: Stack, *, batches: int, size: int, rate: float | None = None) -> tuple:
    """Return the worker's CPU and wall seconds to record the outcomes of `batches` batches:
    published to it while frozen, then thawed; or, with `rate`, published at that rate
    (batches a second) to the running worker."""
    before = outcomes(stack)
    if rate:
        cpu_before, started = worker_cpu(stack), time.monotonic()
        for number in range(batches):
            publish(new_batch(size))
            time.sleep(max(0.0, started + (number + 1) / rate - time.monotonic()))
    else:
        stack.worker.send_signal(signal.SIGSTOP)
        try:
            publish_backlog(batches=batches, size=size)
        finally:
            cpu_before, started = worker_cpu(stack), time.monotonic()
            stack.worker.send_signal(signal.SIGCONT)
    wait_until(
        lambda: outcomes(stack) - before >= batches,
        timeout=DRAIN_TIMEOUT_S,
        interval=DRAIN_POLL_S,
        message="the worker did not record every batch's outcome in time",
    )
    return worker_cpu(stack) - cpu_before, time.monotonic() - started


def measure_backend(stack: Stack, backend: str, args: argparse.Namespace) -> None:
    stack.env["KAFKA_CLIENT"] = backend
    stack.start_worker(concurrency=16)
    try:
        deliver(stack, batches=1, size=1)  # the worker is up, its producer connected
        idle_before = worker_cpu(stack)
        time.sleep(args.idle_seconds)
        idle = (worker_cpu(stack) - idle_before) / args.idle_seconds
        print(f"{backend:12} idle: {idle * 1e3:.1f} ms CPU per second", flush=True)
        sizes = ((args.small, args.small_batches), (args.large, args.large_batches))
        for round_number in range(1, args.rounds + 1):
            runs = []
            for size, batches in sizes:
                cpu, wall = deliver(stack, batches=batches, size=size, rate=args.rate)
                runs.append((batches, batches * size, cpu))
                print(
                    f"{backend:12} round {round_number} {batches:5} batches x {size:5} records: "
                    f"{cpu / batches * 1e3:7.2f} ms per batch, "
                    f"{cpu / (batches * size) * 1e6:8.1f} us per record, {wall:.1f} s wall",
                    flush=True,
                )
            (b1, r1, c1), (b2, r2, c2) = runs
            determinant = b1 * r2 - b2 * r1
            per_batch = (c1 * r2 - c2 * r1) / determinant
            per_record = (b1 * c2 - b2 * c1) / determinant
            print(
                f"{backend:12} round {round_number} worker CPU: {per_batch * 1e3:.2f} ms per "
                f"batch + {per_record * 1e6:.1f} us per record",
                flush=True,
            )
    finally:
        stack.worker.terminate()
        stack.worker.wait(60)


def main() -> None:
    args = parse_args()
    out = ROOT / "test-artifacts" / "worker-cost"
    tansu = Tansu(out)
    stack = None
    try:
        stack = Stack(kafka_address=tansu.address, log_dir=out, extra_env={"LOG_LEVEL": "WARNING"})
        publish_as_gateway(stack)
        from ingest.pipeline import broker

        try:
            for backend in args.backends:
                measure_backend(stack, backend, args)
        finally:
            broker.close_publishers()
    finally:
        if stack is not None:
            stack.stop()
        tansu.stop()


def publish_as_gateway(stack: Stack) -> None:
    """Set up Django in this process to publish as a gateway does, to the stack's queue."""
    os.environ.update(
        {
            key: stack.env[key]
            for key in ("DATABASE_URL", "CELERY_BROKER_URL", "KAFKA_BOOTSTRAP_SERVERS")
        }
    )
    os.environ.update(
        CELERY_TASK_DEFAULT_QUEUE=stack.queue,
        SECRET_KEY="bench-only-secret",
        DJANGO_SETTINGS_MODULE="ingestsite.settings",
        INGEST_MODE="production",
        ALLOWED_HOSTS="127.0.0.1",
    )
    import django

    django.setup()


if __name__ == "__main__":
    main()
