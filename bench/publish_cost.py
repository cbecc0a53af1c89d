"""Measure the CPU one batch publish costs: Celery's apply_async against ingest's TaskPublisher.

    .venv/bin/python bench/publish_cost.py [--broker amqp://...] [--publishes 2000] [--events 20]

Publishes --publishes persistent messages of one batch of --events ~200-byte events each, with
publisher confirms, to a throwaway queue on the local RabbitMQ (deleted afterwards), once through
Celery's apply_async (the gateway's publish before TaskPublisher, JSON) and once through
TaskPublisher with each task serializer (msgpack, the default, and json), alternating for
--rounds rounds. Prints the calling thread's CPU time and the wall time per publish (the wall
time includes waiting for the broker's confirm), and the CPU a worker spends decoding each
message body.
"""

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from celery import Celery
from kombu import Exchange, Queue
from kombu.serialization import dumps, loads

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from celery_app.serialization import TASK_SERIALIZERS, register_msgpack  # noqa: E402
from ingest.pipeline.publisher import TaskPublisher  # noqa: E402

TASK_NAME = "bench.deliver_batch"
EVENT = (
    '{"id":"cost-0","key":"user-1","type":"page_view","page":"/products/shoes/item-1234",'
    '"ref":"/search?q=run","ts":1764316800123,"ua":"Mozilla/5.0 (X11; Linux x86_64)"}'
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--publishes", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def timed(publish_one, count: int) -> tuple[float, float]:
    """Return (CPU, wall) microseconds per call of publish_one after one warm-up call."""
    publish_one()
    cpu_started, wall_started = time.thread_time(), time.monotonic()
    for _ in range(count):
        publish_one()
    return (
        (time.thread_time() - cpu_started) / count * 1e6,
        (time.monotonic() - wall_started) / count * 1e6,
    )


def main() -> None:
    args = parse_args()
    queue_name = f"bench-publish-{uuid.uuid4().hex[:8]}"
    app = Celery("bench", broker=args.broker)
    app.conf.update(
        broker_transport_options={"confirm_publish": True},
        broker_connection_timeout=2.0,
        task_default_queue=queue_name,
    )

    @app.task(name=TASK_NAME, ignore_result=True)
    def deliver_batch(batch_id: str, records: list, accepted_at: float) -> None:
        """Never runs: the messages are deleted with their queue."""

    records = [["bench", f"ev-{n}", None, EVENT] for n in range(args.events)]

    def kwargs() -> tuple[str, dict]:
        batch_id = str(uuid.uuid4())
        return batch_id, {"batch_id": batch_id, "records": records, "accepted_at": time.time()}

    def with_celery() -> None:
        batch_id, task_kwargs = kwargs()
        deliver_batch.apply_async(
            kwargs=task_kwargs,
            task_id=batch_id,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
            timeout=5.0,
            confirm_timeout=5.0,
            argsrepr="()",
            kwargsrepr=f"<{len(records)} records>",
        )

    register_msgpack()
    queue = Queue(queue_name, Exchange(queue_name), routing_key=queue_name, durable=True)
    publishers = {
        serializer: TaskPublisher(
            connect=app.connection_for_write,
            queue=queue,
            task_name=TASK_NAME,
            timeout=5.0,
            serializer=serializer,
        )
        for serializer in TASK_SERIALIZERS
    }

    def with_task_publisher(publisher: TaskPublisher) -> Callable[[], None]:
        def publish_one() -> None:
            batch_id, task_kwargs = kwargs()
            publisher.publish(
                task_id=batch_id, kwargs=task_kwargs, kwargsrepr=f"<{len(records)} records>"
            )

        return publish_one

    ways = {"celery apply_async": with_celery} | {
        f"TaskPublisher {serializer}": with_task_publisher(publisher)
        for serializer, publisher in publishers.items()
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for round_number in range(1, args.rounds + 1):
            for name, publish_one in ways.items():
                cpu, wall = timed(publish_one, args.publishes)
                results[name].append((cpu, wall))
                print(
                    f"round {round_number}: {name:22}  {cpu:7.1f} us CPU  {wall:7.1f} us wall"
                    f"  per publish of {args.events} events",
                    flush=True,
                )
    finally:
        for publisher in publishers.values():
            publisher.close()
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue_name)
    for name, costs in results.items():
        cpu = statistics.median(cost[0] for cost in costs)
        wall = statistics.median(cost[1] for cost in costs)
        print(f"median {name:22}  {cpu:7.1f} us CPU  {wall:7.1f} us wall")
    for serializer in TASK_SERIALIZERS:
        cpu = decode_cost(serializer, records)
        print(f"worker decode {serializer:8}  {cpu:7.1f} us CPU per message body")


def decode_cost(serializer: str, records: list, repeat: int = 200) -> float:
    """Return the CPU microseconds kombu takes to decode one batch's body, best of 5."""
    body = ((), {"batch_id": str(uuid.uuid4()), "records": records, "accepted_at": 0.0}, {})
    content_type, content_encoding, data = dumps(body, serializer=serializer)
    best = float("inf")
    for _ in range(5):
        started = time.thread_time()
        for _ in range(repeat):
            loads(data, content_type, content_encoding, accept=[content_type])
        best = min(best, (time.thread_time() - started) / repeat * 1e6)
    return best


if __name__ == "__main__":
    main()
