"""Measure the CPU a body's parsing costs per event: ingest.edge.parsing against the stdlib parser.

    .venv/bin/python bench/parse_cost.py [--events 1 100 1000] [--repeat 2000] [--rounds 3]

For each batch size, builds a body of that many ~200-byte events and times, on this thread's CPU
clock, ingest.edge.parsing.parse_events (msgspec: strict JSON, each event's bytes kept as sent) and
the parser before it (json.loads of the body, then json.dumps of each event), alternating for
--rounds rounds. Prints microseconds per event, best round.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

import django  # noqa: E402

django.setup()  # the edge's error map imports the control plane, which reads ingest.models

from ingest.edge import parsing  # noqa: E402

EVENT = {
    "key": "user-1",
    "type": "page_view",
    "page": "/products/shoes/item-1234",
    "ref": "/search?q=run",
    "ts": 1764316800123,
    "ua": "Mozilla/5.0 (X11; Linux x86_64)",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1, 100, 1_000])
    parser.add_argument("--repeat", type=int, default=2_000, help="parses of a 1-event body")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def stdlib_parse(body: bytes) -> list[str]:
    document = json.loads(body)
    events = document if isinstance(document, list) else [document]
    return [json.dumps(event, separators=(",", ":")) for event in events]


def msgspec_parse(body: bytes) -> list:
    return parsing.parse_events(
        body, max_events=10_000, max_id_length=128, max_record_bytes=1_048_576
    )


def cpu_us_per_event(parse, body: bytes, *, events: int, repeat: int) -> float:
    started = time.thread_time()
    for _ in range(repeat):
        parse(body)
    return (time.thread_time() - started) / repeat / events * 1e6


def main() -> int:
    args = parse_args()
    print(f"{'events':>7} {'stdlib us/event':>16} {'msgspec us/event':>17} {'ratio':>6}")
    for events in args.events:
        body = json.dumps([{**EVENT, "id": f"e-{n}"} for n in range(events)]).encode()
        repeat = max(1, args.repeat // events)
        best = {"stdlib": float("inf"), "msgspec": float("inf")}
        for _ in range(args.rounds):
            for name, parse in (("stdlib", stdlib_parse), ("msgspec", msgspec_parse)):
                cost = cpu_us_per_event(parse, body, events=events, repeat=repeat)
                best[name] = min(best[name], cost)
        ratio = best["stdlib"] / best["msgspec"]
        print(f"{events:>7} {best['stdlib']:>16.2f} {best['msgspec']:>17.2f} {ratio:>5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
