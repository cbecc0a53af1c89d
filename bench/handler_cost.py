"""Measure the CPU one event POST costs inside the WSGI application, fast path on and off.

    .venv/bin/python bench/handler_cost.py [--requests 20000] [--rounds 3] [--events 1]

Calls the gateway's WSGI application directly (no HTTP server, no broker: batches are handed
to a publisher that drops them), with --events of the ~200-byte event of bench/wrk/load.lua per
request (a JSON array when more than one) and ack=none, and prints the calling thread's CPU time
per request and per event for INGEST_FAST_PATH=true and false, each in a fresh process,
alternating for --rounds rounds. What it leaves out: cheroot's parsing and writing, the wait for
the broker, and the publish itself.
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 300.0
WARMUP_REQUESTS = 2_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1, help="events in each request's body")
    parser.add_argument("--measure", choices=("true", "false"), help=argparse.SUPPRESS)
    return parser.parse_args()


def event_body(n: int, *, events: int) -> bytes:
    """Return a request body of `events` ~200-byte events: one object, or an array of them."""
    items = [
        f'{{"id":"cost-{n}-{index}","key":"user-{index % 97}","type":"page_view",'
        '"page":"/products/shoes/item-1234","ref":"/search?q=run","ts":1764316800123,'
        '"ua":"Mozilla/5.0 (X11; Linux x86_64)","props":{"ab":"B"}}'
        for index in range(events)
    ]
    return (items[0] if events == 1 else "[" + ",".join(items) + "]").encode()


def event_environ(n: int, *, events: int) -> dict:
    body = event_body(n, events=events)
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/events/bench",
        "QUERY_STRING": "ack=none",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "handler_cost",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }


def measure(requests: int, *, events: int) -> float:
    """Return microseconds of this thread's CPU per request (runs in a child process)."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()  # the runtime reads ingest.models, which needs the app registry
    from ingest.pipeline import runtime
    from ingest.pipeline.batcher import Batcher
    from ingestsite.wsgi import application

    class IdleBacklog:
        depth = 0

        def check(self) -> None:
            pass

    runtime.get_gateway.replace(
        runtime.Gateway(
            batcher=Batcher(
                publish=lambda batch: None,
                max_events=2_000,
                max_bytes=1_048_576,
                max_wait_s=0.02,
                pending_max_events=1_000_000,
                pending_max_bytes=1 << 30,
            ),
            backlog=IdleBacklog(),
            outcomes=None,
        )
    )

    def start_response(status, headers):
        if not status.startswith("202"):
            raise RuntimeError(f"the gateway answered {status}")

    def call(n: int) -> None:
        body = application(event_environ(n, events=events), start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()

    for n in range(WARMUP_REQUESTS):
        call(n)
    started = time.thread_time()
    for n in range(requests):
        call(n)
    return (time.thread_time() - started) / requests * 1e6


def main() -> None:
    args = parse_args()
    if args.measure:
        print(json.dumps(measure(args.requests, events=args.events)))
        return
    results: dict[str, list[float]] = {"true": [], "false": []}
    with tempfile.TemporaryDirectory() as data_dir:
        for round_number in range(1, args.rounds + 1):
            for fast_path in results:
                env = {
                    **os.environ,
                    "DJANGO_SETTINGS_MODULE": "ingestsite.settings",
                    "INGEST_FAST_PATH": fast_path,
                    "INGEST_DATA_DIR": data_dir,
                    # Nothing to flush to: the counting is measured, the flush is not.
                    "INGEST_STATS_FLUSH_INTERVAL_S": "3600",
                    "LOG_LEVEL": "ERROR",
                }
                completed = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--measure",
                        fast_path,
                        "--requests",
                        str(args.requests),
                        "--events",
                        str(args.events),
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=RUN_TIMEOUT_S,
                    check=True,
                )
                cost = json.loads(completed.stdout.strip().splitlines()[-1])
                results[fast_path].append(cost)
                print(
                    f"round {round_number}: INGEST_FAST_PATH={fast_path:5}  {cost:6.1f} us/request"
                )
    for fast_path, costs in results.items():
        median = statistics.median(costs)
        print(
            f"median INGEST_FAST_PATH={fast_path:5} {median:6.1f} us/request, "
            f"{median / args.events:6.1f} us/event ({args.events} events a request)"
        )


if __name__ == "__main__":
    main()
