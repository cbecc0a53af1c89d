"""Measure the worker-side CPU of delivering a batch: the Kafka produce and the outcome write.

    .venv/bin/python bench/delivery_cost.py [--calls 300] [--large 1000]

Starts a Tansu on a free port and a throwaway PostgreSQL database (both removed afterwards),
then calls the delivery services in this process with KAFKA_CLIENT's producer (kafka-python by
default) and prints the process's CPU time (all threads: the producer's I/O thread included)
and the wall time per call: producing a one-record batch, producing a --large-record batch,
recording an outcome, and `delivery.service.deliver_batch` of one record (produce plus outcome).
Celery's own per-message work (receive, decode, trace, ack) is not included.
"""

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stack import Database, Tansu  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per small measurement")
    parser.add_argument("--large", type=int, default=1_000, help="records in the large batch")
    return parser.parse_args()


def per_call(function, calls: int) -> tuple[float, float]:
    """Return (CPU, wall) milliseconds per call of function, after one warm-up call."""
    function()
    cpu_started, wall_started = time.process_time(), time.monotonic()
    for _ in range(calls):
        function()
    return (
        (time.process_time() - cpu_started) / calls * 1e3,
        (time.monotonic() - wall_started) / calls * 1e3,
    )


def measure(args: argparse.Namespace, *, kafka_address: str, database_url: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="ingestsite.settings",
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_address,
        CELERY_BROKER_URL=os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1//"),
        SECRET_KEY=os.environ.get("SECRET_KEY", "bench-only-secret"),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        INGEST_STATS_ENABLED="false",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    from ingest.delivery import outcomes, producers, service
    from ingest.ids import uuid7
    from ingest.records import BatchRecord

    call_command("migrate", verbosity=0)
    stopping = threading.Event()

    def records(count: int) -> list:
        return [
            BatchRecord("bench-delivery", uuid7(), f"user-{n % 97}", '{"n":1}')
            for n in range(count)
        ]

    ways = {
        "produce 1 record": (lambda: producers.produce(records=records(1), timeout=10), args.calls),
        f"produce {args.large} records": (
            lambda: producers.produce(records=records(args.large), timeout=30),
            max(3, args.calls // 30),
        ),
        "write_outcome": (
            lambda: outcomes.write_outcome(
                batch_id=uuid7(),
                records=records(1),
                accepted_at=time.time(),
                offsets=[[0, 1]],
                failures={},
                attempts=1,
            ),
            args.calls,
        ),
        "deliver_batch, 1 record": (
            lambda: service.deliver_batch(
                batch_id=uuid7(), records=records(1), accepted_at=time.time(), stopping=stopping
            ),
            args.calls,
        ),
    }
    try:
        for name, (function, calls) in ways.items():
            cpu, wall = per_call(function, calls)
            print(f"{name:26} {cpu:8.2f} ms CPU  {wall:8.2f} ms wall per call ({calls} calls)")
    finally:
        producers.close_producer(timeout=5)
        connections.close_all()


def main() -> None:
    args = parse_args()
    tansu = Tansu(ROOT / "test-artifacts" / "delivery-cost")
    database = Database()
    try:
        measure(args, kafka_address=tansu.address, database_url=database.url)
    finally:
        database.drop()
        tansu.stop()


if __name__ == "__main__":
    main()
