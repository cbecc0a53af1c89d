"""bench/sizing.py: the sizing model's arithmetic and what it says saturates first."""

import pytest

from bench import sizing


def inputs(**changes) -> sizing.Inputs:
    """Return the model's inputs: the defaults, with `changes` passed as options."""
    options = [f"--{name.replace('_', '-')}={value}" for name, value in changes.items()]
    return sizing.inputs_from(sizing.parse_args(options))


def test_gateway_cores_pay_per_request_and_per_event():
    model = inputs(server_request_us=400, server_event_us=6, utilization=1)
    # 10 us per event in requests of 100: 100,000 events/s take exactly one core.
    assert sizing.size(model, rate=100_000, shape="batches of 100").gateway_cores == 1
    # 406 us per single-event request: 10,000 events/s take 4.06 cores, so 5.
    assert sizing.size(model, rate=10_000, shape="single events").gateway_cores == 5


def test_batches_fill_the_window_up_to_the_batch_limit():
    model = inputs(server_request_us=400, server_event_us=6, utilization=1)
    quiet = sizing.size(model, rate=10_000, shape="single events")
    # 5 gateway processes of 2,000 events/s each publish 100 events per 50 ms window.
    assert quiet.events_per_batch == pytest.approx(100)
    assert quiet.batches_per_s == pytest.approx(100)
    busy = sizing.size(model, rate=1_000_000, shape="batches of 100")
    assert busy.events_per_batch == 2_000


def test_worker_cores_pay_per_batch_and_per_record_with_each_client():
    model = inputs(
        worker_batch_ms=10,
        worker_record_us_kafka_python=40,
        worker_record_us_confluent=15,
        batch_max_events=1_000,
        utilization=1,
    )
    size = sizing.size(model, rate=100_000, shape="batches of 100")
    assert size.events_per_batch == 1_000
    # 100 batches/s x 10 ms = 1 core, plus 100,000 records/s x 40 or 15 us.
    assert size.worker_cores == {"kafka-python": 5, "confluent": 3}


def test_one_queue_carries_every_batch_until_its_limit():
    model = inputs(message_bytes_per_event=500, rabbitmq_queue_mb_s=50)
    assert sizing.size(model, rate=100_000, shape="batches of 100").rabbitmq_nodes == 3
    size = sizing.size(model, rate=1_000_000, shape="batches of 100")
    assert (size.rabbitmq_queues, size.rabbitmq_nodes) == (10, 10)
    assert size.saturates_first.startswith("the RabbitMQ queue")


def test_partitions_follow_the_bytes_into_kafka():
    model = inputs(kafka_bytes_per_event=250, kafka_partition_mb_s=10)
    assert sizing.size(model, rate=100_000, shape="single events").kafka_partitions == 3


def test_what_saturates_first_follows_the_cost_per_event():
    model = inputs()
    assert sizing.size(model, rate=10_000, shape="single events").saturates_first.startswith(
        "the gateway"
    )
    assert sizing.size(model, rate=10_000, shape="batches of 100").saturates_first.startswith(
        "the workers"
    )


def test_the_table_has_a_row_per_rate_and_shape(capsys):
    sizing.main(["--rates", "10000", "20000"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ")[:2] for line in lines if line.startswith(("| 10,000", "| 20,000"))]
    assert rows == [
        ["| 10,000", "batches of 100"],
        ["| 10,000", "single events"],
        ["| 20,000", "batches of 100"],
        ["| 20,000", "single events"],
    ]
