"""Task messages published without send_task, on the real RabbitMQ, run by Celery's worker code."""

import json
import socket
import time
import uuid
from collections import Counter

import pytest
from celery.worker.request import Request
from django.conf import settings
from django.db import OperationalError
from kombu import Connection, Exchange, Queue

from celery_app import app
from celery_app.serialization import MSGPACK_CONTENT_TYPE, TASK_SERIALIZERS
from ingest.control.topics import read_topic
from ingest.delivery import outcomes, producers, service
from ingest.delivery.tasks import DELIVER_BATCH_TASK, batch_records
from ingest.ids import uuid7
from ingest.models import DeliveryOutcome
from ingest.pipeline.publisher import MessageReturned, TaskPublisher
from ingest.records import BatchRecord
from tests.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def queue():
    name = f"publisher-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name, durable=True)
    yield queue
    with app.connection_for_write() as connection:
        queue.bind(connection.default_channel).delete()


@pytest.fixture
def publisher(queue):
    yield from publisher_of(queue, serializer=settings.INGEST_MESSAGE_FORMAT)


@pytest.fixture(params=TASK_SERIALIZERS)
def any_publisher(request, queue):
    """A publisher of each task message format, JSON being the one earlier versions published."""
    yield from publisher_of(queue, serializer=request.param)


def publisher_of(queue, *, serializer):
    publisher = TaskPublisher(
        connect=app.connection_for_write,
        queue=queue,
        task_name=DELIVER_BATCH_TASK,
        timeout=5,
        serializer=serializer,
    )
    yield publisher
    publisher.close()


def publish_batch(publisher, records):
    batch_id = uuid7()
    publisher.publish(
        task_id=batch_id,
        kwargs={"batch_id": batch_id, "records": records, "accepted_at": time.time()},
        kwargsrepr=f"<{len(records)} records>",
    )
    return batch_id


def take_messages(queue, connection):
    channel = connection.default_channel
    messages = []
    # As a worker takes them: kombu decodes only the content types a consumer accepts.
    accept = app.conf.accept_content
    while (message := queue.bind(channel).get(no_ack=False, accept=accept)) is not None:
        messages.append(message)
    return messages


# The task ends as a worker's would, closing a connection left inside a transaction: no test one.
@pytest.mark.django_db(transaction=True)
def test_a_published_batch_is_a_task_celery_runs_and_its_events_reach_kafka(
    any_publisher, queue, kafka_address
):
    topic = f"publisher-{uuid.uuid4().hex[:8]}"
    records = [[topic, f"ev-{n}", None, json.dumps({"n": n})] for n in range(5)]
    batch_id = publish_batch(any_publisher, records)

    producers.close_producer(timeout=5)
    with app.connection_for_write() as connection:
        (message,) = take_messages(queue, connection)
        assert message.properties["delivery_mode"] == 2
        request = Request(message, app=app, task=app.tasks[DELIVER_BATCH_TASK])
        assert (request.id, request.name) == (batch_id, DELIVER_BATCH_TASK)
        assert "<5 records>" in request.kwargsrepr
        request.execute()
        message.ack()
    producers.close_producer(timeout=5)

    assert DeliveryOutcome.objects.get(batch_id=batch_id).status == "delivered"
    found = {record.event_id for record in read_topic(topic=topic, idle_timeout_s=2)}
    assert found == {record[1] for record in records}


def test_a_message_carries_str_as_str_and_bytes_as_bytes(publisher, queue):
    records = [
        BatchRecord("t", "ev-1", "user-1", '{"n":"\u00e9\\""}', "web", "native"),
        BatchRecord("t", "ev-2", b"\x00k", b"\x00\xffbinary", "kafka-team", "confluent"),
    ]
    publish_batch(publisher, records)

    with app.connection_for_write() as connection:
        (message,) = take_messages(queue, connection)
        message.ack()
    assert message.content_type == MSGPACK_CONTENT_TYPE
    # Not escaped into a JSON string: the value's bytes appear in the body as they are.
    assert records[0].value.encode() in message.body
    assert batch_records(message.decode()[1]["records"]) == records


def test_a_dropped_connection_is_replaced_and_the_batch_still_published(publisher, queue):
    publish_batch(publisher, [["t", "ev-1", None, "{}"]])
    # Cut the kept connection under the publisher, as a broker restart or a proxy would.
    publisher._connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)
    second = publish_batch(publisher, [["t", "ev-2", None, "{}"]])

    with app.connection_for_write() as connection:
        messages = take_messages(queue, connection)
        assert [message.headers["id"] for message in messages][-1] == second
        assert len(messages) == 2
        for message in messages:
            message.ack()


def test_an_unreachable_broker_fails_the_publish_quickly(queue):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    publisher = TaskPublisher(
        connect=lambda: Connection(url, connect_timeout=1),
        queue=queue,
        task_name=DELIVER_BATCH_TASK,
        timeout=1,
        serializer=settings.INGEST_MESSAGE_FORMAT,
    )
    started = time.monotonic()
    with pytest.raises(OSError):
        publish_batch(publisher, [["t", "ev-1", None, "{}"]])
    assert time.monotonic() - started < 5


def test_a_deleted_binding_never_confirms_and_drops_a_message(publisher, queue):
    publish_batch(publisher, [["t", "ev-1", None, "{}"]])  # connected and declared
    with app.connection_for_write() as connection:
        connection.default_channel.queue_unbind(
            queue=queue.name, exchange=queue.exchange.name, routing_key=queue.routing_key
        )
    # The kept connection's publish is returned; the retry re-declares the binding.
    second = publish_batch(publisher, [["t", "ev-2", None, "{}"]])

    with app.connection_for_write() as connection:
        messages = take_messages(queue, connection)
        assert [message.headers["id"] for message in messages][-1] == second
        assert len(messages) == 2
        for message in messages:
            message.ack()


def test_a_message_no_queue_takes_fails_the_publish(queue):
    with app.connection_for_write() as connection:
        queue.exchange.bind(connection.default_channel).declare()  # an exchange, nothing bound
    unbound = Queue(queue.name, queue.exchange, routing_key=queue.name, no_declare=True)
    publisher = TaskPublisher(
        connect=app.connection_for_write,
        queue=unbound,
        task_name=DELIVER_BATCH_TASK,
        timeout=5,
        serializer=settings.INGEST_MESSAGE_FORMAT,
    )
    try:
        with pytest.raises(MessageReturned, match="NO_ROUTE"):
            publish_batch(publisher, [["t", "ev-1", None, "{}"]])
        # After a return the publisher still confirms what the broker takes, and only that.
        with app.connection_for_write() as connection:
            queue.bind(connection.default_channel).declare()
        publish_batch(publisher, [["t", "ev-2", None, "{}"]])
        with app.connection_for_write() as connection:
            (message,) = take_messages(queue, connection)
            message.ack()
    finally:
        publisher.close()


@pytest.mark.django_db(transaction=True)
def test_a_task_whose_outcome_is_not_written_is_resent_with_its_settled_state(
    publisher, queue, kafka_address, monkeypatch
):
    write = outcomes.write_outcome

    def database_down(**kwargs):
        raise OperationalError("database down")

    monkeypatch.setattr(service, "OUTCOME_WRITE_BACKOFF_BASE_S", 0.0)
    monkeypatch.setattr(outcomes, "write_outcome", database_down)
    topic = f"resend-{uuid.uuid4().hex[:8]}"
    records = [[topic, f"ev-{n}", None, json.dumps({"n": n})] for n in range(3)]
    batch_id = publish_batch(publisher, records)

    producers.close_producer(timeout=5)
    with app.connection_for_write() as connection:
        (message,) = take_messages(queue, connection)
        Request(message, app=app, task=app.tasks[DELIVER_BATCH_TASK]).execute()
        message.ack()
        # Celery published the re-sent task, confirmed, to the queue the batch came from.
        (resent,) = take_messages(queue, connection)
        assert resent.headers["id"] == batch_id and resent.headers["retries"] == 1
        assert "<3 records>" in resent.headers["kwargsrepr"]
        settled = resent.decode()[1]["settled"]
        assert all(offset is not None for offset in settled["offsets"])

        monkeypatch.setattr(outcomes, "write_outcome", write)
        Request(resent, app=app, task=app.tasks[DELIVER_BATCH_TASK]).execute()
        resent.ack()
        assert take_messages(queue, connection) == []
    producers.close_producer(timeout=5)

    assert DeliveryOutcome.objects.get(batch_id=batch_id).status == "delivered"
    found = Counter(record.event_id for record in read_topic(topic=topic, idle_timeout_s=2))
    assert found == {record[1]: 1 for record in records}  # produced by the first run only
