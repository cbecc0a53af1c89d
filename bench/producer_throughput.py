"""Compare the producer backends (KAFKA_CLIENT) writing batches to a Tansu on 127.0.0.1.

    .venv/bin/python bench/producer_throughput.py [--bootstrap HOST:PORT] [--batches 200]
        [--batch-size 100] [--threads 4] [--record-bytes 200] [--rounds 3]

Without --bootstrap it starts a Tansu (memory storage) of its own on a free port. Each round runs
every backend in turn on a fresh topic: --threads threads share the process's one producer and
each produce() call writes one batch and waits for every ack, as a Celery worker thread does.
Prints records/s and batch latency per round and the median round per backend.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings  # noqa: E402

from ingest.records import BatchRecord  # noqa: E402

BATCH_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 300.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="a Kafka to use instead of a Tansu of its own")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--record-bytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--linger-ms", type=int, default=5)
    return parser.parse_args()


def run_round(client: str, args: argparse.Namespace) -> dict:
    from ingest.delivery import producers

    settings.KAFKA_CLIENT = client
    producers.close_producer(timeout=5)
    topic = f"bench-{client}-{uuid.uuid4().hex[:8]}"
    padding = "x" * max(0, args.record_bytes - 40)
    producers.produce(records=[BatchRecord(topic, "warm-up", None, "{}")], timeout=BATCH_TIMEOUT_S)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    latencies = []
    lock = threading.Lock()

    def one_batch(number: int) -> None:
        if time.monotonic() > deadline:
            return
        records = [
            BatchRecord(
                topic, f"{number}-{i}", f"key-{i % 16}", json.dumps({"n": i, "pad": padding})
            )
            for i in range(args.batch_size)
        ]
        started = time.monotonic()
        producers.produce(records=records, timeout=BATCH_TIMEOUT_S)
        with lock:
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        list(pool.map(one_batch, range(args.batches)))
    elapsed = time.monotonic() - started
    producers.close_producer(timeout=5)
    latencies.sort()
    return {
        "client": client,
        "records": len(latencies) * args.batch_size,
        "seconds": round(elapsed, 3),
        "records_per_s": round(len(latencies) * args.batch_size / elapsed),
        "batch_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "batch_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
    }


def main() -> int:
    args = parse_args()
    from ingestsite import embedded

    tansu = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from tests.stack import free_port

        bootstrap = f"127.0.0.1:{free_port()}"
        log = Path(tempfile.gettempdir()) / "producer-throughput-tansu.log"
        tansu = embedded.start_tansu(bootstrap, log_path=log)
    settings.configure(
        KAFKA_CLIENT="kafka-python",
        KAFKA_BOOTSTRAP_SERVERS=[bootstrap],
        KAFKA_COMPRESSION_TYPE="none",
        KAFKA_LINGER_MS=args.linger_ms,
        KAFKA_REQUEST_TIMEOUT_MS=10_000,
        KAFKA_MAX_BLOCK_MS=5_000,
        KAFKA_DELIVERY_TIMEOUT_S=BATCH_TIMEOUT_S,
    )
    from ingest.delivery import producers

    print(
        f"kafka {bootstrap}; {args.batches} batches x {args.batch_size} records of "
        f"~{args.record_bytes} B from {args.threads} threads, linger {args.linger_ms} ms"
    )
    results = {client: [] for client in producers.BACKENDS}
    try:
        for round_number in range(args.rounds):
            for client in producers.BACKENDS:
                result = run_round(client, args)
                results[client].append(result)
                print(f"round {round_number + 1}: {json.dumps(result)}", flush=True)
    finally:
        if tansu is not None:
            embedded.stop_process(tansu, timeout=5)
    for client, rounds in results.items():
        median = statistics.median(result["records_per_s"] for result in rounds)
        p50 = statistics.median(result["batch_p50_ms"] for result in rounds)
        print(f"{client:13} median {median:>8.0f} records/s, batch p50 {p50:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
