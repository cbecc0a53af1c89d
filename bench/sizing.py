"""Size a deployment: gateway cores, worker cores, RabbitMQ nodes and Kafka partitions per rate.

    .venv/bin/python bench/sizing.py [--rates 10000 100000 1000000] [--option value ...]

Every input is an option whose default is a figure measured in this repository (the command that
measured it is in its help) or, where nothing here can measure it, a labelled assumption with its
source. The model, per event rate R and request shape (k events a request):

- gateway: a server process costs REQUEST_US per request plus EVENT_US per event, and is bound
  by its GIL to one core, run at most --utilization busy: cores = R x (REQUEST_US / k + EVENT_US)
  / utilization;
- batches: each busy gateway process publishes one batch per --batch-window-ms, of at most
  --batch-max-events events, so batches/s = R / events per batch;
- workers: a worker process costs BATCH_MS per batch plus RECORD_US per record with the chosen
  producer client, one core each: cores = (batches/s x BATCH_MS + R x RECORD_US) / utilization;
- RabbitMQ: the gateway publishes to one quorum queue, whose leader node carries all of it; one
  queue takes --rabbitmq-queue-mb-s; past that, several queues (several gateway and worker
  groups, each with its own CELERY_TASK_DEFAULT_QUEUE), each led by its own node, each replicated
  on --rabbitmq-replicas nodes;
- Kafka: partitions = R x bytes per record / --kafka-partition-mb-s.
"""

import argparse
import math
from dataclasses import dataclass

CLIENTS = ("kafka-python", "confluent")
SHAPES = {"batches of 100": 100, "single events": 1}
MB = 1_000_000


@dataclass(frozen=True)
class Inputs:
    """The measured costs and assumed capacities the model works from."""

    server_request_us: float
    server_event_us: float
    worker_batch_ms: float
    worker_record_us: dict[str, float]
    batch_window_ms: float
    batch_max_events: int
    message_bytes_per_event: float
    kafka_bytes_per_event: float
    rabbitmq_queue_mb_s: float
    rabbitmq_replicas: int
    kafka_partition_mb_s: float
    utilization: float


@dataclass(frozen=True)
class Size:
    """What one event rate and request shape needs."""

    rate: int
    shape: str
    gateway_cores: int
    events_per_batch: float
    batches_per_s: float
    worker_cores: dict[str, int]
    rabbitmq_queues: int
    rabbitmq_nodes: int
    kafka_partitions: int
    saturates_first: str


def gateway_event_us(inputs: Inputs, *, events_per_request: int) -> float:
    """Return a gateway process's CPU microseconds per event at this request size."""
    return inputs.server_request_us / events_per_request + inputs.server_event_us


def worker_event_us(inputs: Inputs, *, client: str, events_per_batch: float) -> float:
    """Return a worker process's CPU microseconds per event at this batch size."""
    return inputs.worker_batch_ms * 1000 / events_per_batch + inputs.worker_record_us[client]


def size(inputs: Inputs, *, rate: int, shape: str) -> Size:
    """Return the cores, nodes and partitions that serve `rate` events/s of this shape."""
    per_event_us = gateway_event_us(inputs, events_per_request=SHAPES[shape])
    gateway_cores = math.ceil(rate * per_event_us / 1e6 / inputs.utilization)
    per_process = rate / gateway_cores
    events_per_batch = min(
        inputs.batch_max_events, max(1.0, per_process * inputs.batch_window_ms / 1000)
    )
    worker_cores = {
        client: math.ceil(
            rate
            * worker_event_us(inputs, client=client, events_per_batch=events_per_batch)
            / 1e6
            / inputs.utilization
        )
        for client in CLIENTS
    }
    queues = math.ceil(rate * inputs.message_bytes_per_event / MB / inputs.rabbitmq_queue_mb_s)
    return Size(
        rate=rate,
        shape=shape,
        gateway_cores=gateway_cores,
        events_per_batch=events_per_batch,
        batches_per_s=rate / events_per_batch,
        worker_cores=worker_cores,
        rabbitmq_queues=queues,
        rabbitmq_nodes=max(inputs.rabbitmq_replicas, queues),
        kafka_partitions=math.ceil(
            rate * inputs.kafka_bytes_per_event / MB / inputs.kafka_partition_mb_s
        ),
        saturates_first=saturates_first(
            inputs,
            events_per_request=SHAPES[shape],
            events_per_batch=events_per_batch,
            queues=queues,
        ),
    )


def saturates_first(
    inputs: Inputs, *, events_per_request: int, events_per_batch: float, queues: int
) -> str:
    """Say which part runs out first as the rate grows, and why."""
    if queues > 1:
        return (
            "the RabbitMQ queue: one quorum queue's leader takes every batch, and no node added "
            f"helps it; {queues} queues (gateway and worker groups) are needed"
        )
    gateway_us = gateway_event_us(inputs, events_per_request=events_per_request)
    worker_us = worker_event_us(inputs, client="kafka-python", events_per_batch=events_per_batch)
    if gateway_us >= worker_us:
        return (
            f"the gateway: {gateway_us:.0f} us of CPU per event against a worker's "
            f"{worker_us:.0f}; with {events_per_request} event(s) a request, HTTP and the "
            "view's per-request work dominate"
        )
    return (
        f"the workers: {worker_us:.0f} us per event with kafka-python against the gateway's "
        f"{gateway_us:.0f}: producing each record costs more than accepting it in a batch"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    measured = "measured by `bench/stack_cost.py` (2026-12-01, docs/DEPLOYMENT.md)"
    parser.add_argument(
        "--server-request-us",
        type=float,
        default=470.0,
        help=f"gateway CPU per request: {measured}, solved from its single and batch runs",
    )
    parser.add_argument(
        "--server-event-us",
        type=float,
        default=8.2,
        help=f"gateway CPU per event of a request: {measured}, as above",
    )
    parser.add_argument(
        "--worker-batch-ms",
        type=float,
        default=8.0,
        help=f"worker CPU per batch (Celery's message handling, the outcome write): {measured}",
    )
    parser.add_argument(
        "--worker-record-us-kafka-python",
        type=float,
        default=40.0,
        help=f"worker CPU per record with kafka-python: {measured}",
    )
    parser.add_argument(
        "--worker-record-us-confluent",
        type=float,
        default=16.0,
        help=f"worker CPU per record with confluent-kafka: {measured}",
    )
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=50.0,
        help="INGEST_BATCH_MAX_WAIT_MS: a busy gateway process publishes one batch per window",
    )
    parser.add_argument(
        "--batch-max-events", type=int, default=2_000, help="INGEST_BATCH_MAX_EVENTS"
    )
    parser.add_argument(
        "--message-bytes-per-event",
        type=float,
        default=330.0,
        help="bytes of a task message per ~213-byte event (the JSON body of 1,000 records)",
    )
    parser.add_argument(
        "--kafka-bytes-per-event",
        type=float,
        default=300.0,
        help="bytes of a Kafka record: the 213-byte value, key, the three headers, overhead",
    )
    parser.add_argument(
        "--rabbitmq-queue-mb-s",
        type=float,
        default=50.0,
        help=(
            "ASSUMED, not measured here: MB/s one quorum queue takes, replicated on 3 nodes "
            "with confirms; measure yours with RabbitMQ's PerfTest"
        ),
    )
    parser.add_argument(
        "--rabbitmq-replicas", type=int, default=3, help="quorum queue replicas (RabbitMQ's 3)"
    )
    parser.add_argument(
        "--kafka-partition-mb-s",
        type=float,
        default=10.0,
        help="ASSUMED, not measured here: MB/s one partition takes (Confluent's conservative)",
    )
    parser.add_argument(
        "--utilization",
        type=float,
        default=0.7,
        help="the share of each core to plan for (the autoscaler's CPU target)",
    )
    return parser.parse_args(argv)


def inputs_from(args: argparse.Namespace) -> Inputs:
    return Inputs(
        server_request_us=args.server_request_us,
        server_event_us=args.server_event_us,
        worker_batch_ms=args.worker_batch_ms,
        worker_record_us={
            "kafka-python": args.worker_record_us_kafka_python,
            "confluent": args.worker_record_us_confluent,
        },
        batch_window_ms=args.batch_window_ms,
        batch_max_events=args.batch_max_events,
        message_bytes_per_event=args.message_bytes_per_event,
        kafka_bytes_per_event=args.kafka_bytes_per_event,
        rabbitmq_queue_mb_s=args.rabbitmq_queue_mb_s,
        rabbitmq_replicas=args.rabbitmq_replicas,
        kafka_partition_mb_s=args.kafka_partition_mb_s,
        utilization=args.utilization,
    )


def table(sizes: list[Size]) -> str:
    """Return the sizes as a Markdown table."""
    lines = [
        "| events/s | requests | gateway cores | events per batch | worker cores, kafka-python "
        "| worker cores, confluent | RabbitMQ queues / nodes | Kafka partitions "
        "| saturates first |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for each in sizes:
        lines.append(
            f"| {each.rate:,} | {each.shape} | {each.gateway_cores:,} "
            f"| {each.events_per_batch:,.0f} | {each.worker_cores['kafka-python']:,} "
            f"| {each.worker_cores['confluent']:,} "
            f"| {each.rabbitmq_queues} / {each.rabbitmq_nodes} | {each.kafka_partitions:,} "
            f"| {each.saturates_first} |"
        )
    return "\n".join(lines)


def ceilings(inputs: Inputs) -> list[str]:
    """Say what one core of each part and one queue and partition take, in events/s."""
    lines = [
        f"- one gateway core, {shape}: "
        f"{inputs.utilization * 1e6 / gateway_event_us(inputs, events_per_request=k):,.0f}"
        for shape, k in SHAPES.items()
    ]
    for client in CLIENTS:
        full = worker_event_us(inputs, client=client, events_per_batch=inputs.batch_max_events)
        lines.append(
            f"- one worker core, {client}, full batches: {inputs.utilization * 1e6 / full:,.0f}"
        )
    lines.append(
        "- one RabbitMQ quorum queue: "
        f"{inputs.rabbitmq_queue_mb_s * MB / inputs.message_bytes_per_event:,.0f}"
    )
    lines.append(
        "- one Kafka partition: "
        f"{inputs.kafka_partition_mb_s * MB / inputs.kafka_bytes_per_event:,.0f}"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    inputs = inputs_from(args)
    sizes = [size(inputs, rate=rate, shape=shape) for rate in args.rates for shape in SHAPES]
    print(table(sizes))
    print()
    print(f"Events/s, at {args.utilization:.0%} of each core:")
    print("\n".join(ceilings(inputs)))
    print()
    print("Inputs:")
    for name, value in sorted(vars(args).items()):
        print(f"- `--{name.replace('_', '-')}` {value}")


if __name__ == "__main__":
    main()
