"""The task publisher's connections: every broker URL of a cluster, the queue's own arguments."""

import time

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import memory

from ingest.pipeline.publisher import TaskPublisher, connect_to_any_node

# Port 9 (discard) has no listener here: a connection is refused at once. Not imported from
# tests/settings_quick.py: importing a settings module rewrites the environment and DATABASES.
DOWN = "amqp://guest:guest@127.0.0.1:9//"
QUORUM = {"x-queue-type": "quorum"}


@pytest.fixture
def declared(monkeypatch):
    """Record each queue declared on kombu's in-memory transport, with its arguments."""
    calls = []
    declare = memory.Channel.queue_declare

    def record(channel, queue=None, passive=False, **options):
        calls.append((queue, options.get("arguments")))
        return declare(channel, queue, passive, **options)

    monkeypatch.setattr(memory.Channel, "queue_declare", record)
    return calls


@pytest.mark.parametrize("urls", [[DOWN, DOWN, "memory://"], [DOWN, "memory://", DOWN]])
def test_connect_tries_every_url_once_until_one_answers(urls):
    connection = Connection(";".join(urls), connect_timeout=1)
    started = time.monotonic()
    connect_to_any_node(connection)
    assert connection.connected
    assert connection.transport_cls == "memory"
    assert time.monotonic() - started < 1, "no sleep between two URLs"


@pytest.mark.parametrize("urls", [[DOWN], [DOWN, DOWN, DOWN]])
def test_connect_fails_once_every_url_is_down(urls):
    with pytest.raises(ConnectionRefusedError):
        connect_to_any_node(Connection(";".join(urls), connect_timeout=1))


@pytest.mark.parametrize("arguments", [None, QUORUM])
def test_a_new_connection_declares_the_queue_with_its_arguments(declared, arguments):
    queue = Queue(
        "deliveries", Exchange("deliveries", "direct"), "deliveries", queue_arguments=arguments
    )
    publisher = TaskPublisher(
        connect=lambda: Connection(f"{DOWN};memory://", connect_timeout=1),
        queue=queue,
        task_name="ingest.deliver_batch",
        timeout=1,
        serializer="json",
    )
    try:
        publisher.publish(task_id="t1", kwargs={}, kwargsrepr="{}")
    finally:
        publisher.close()
    assert declared == [("deliveries", arguments or {})]
