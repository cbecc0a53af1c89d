"""Publish Celery task messages over a kept broker connection, without send_task's overhead."""

import logging
import os
import socket
from collections.abc import Callable

from kombu import Connection, Producer, Queue

from celery_app.serialization import dumps_body

logger = logging.getLogger(__name__)

# Celery's task message protocol 2: the body is [args, kwargs, embed].
NO_CALLBACKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class MessageReturned(Exception):
    """The broker returned a published message: no queue is bound to take it."""


def connect_to_any_node(connection: Connection) -> None:
    """Connect to the first broker URL that answers, trying each of a `;` list once.

    kombu's connect() tries at most two URLs; a cluster whose first two nodes are down would
    then look unreachable. Each URL gets the connection timeout; nothing sleeps in between.
    """
    connection.ensure_connection(
        max_retries=max(len(connection.alt), 1) - 1, reraise_as_library_errors=False
    )


class TaskPublisher:
    """Send one task's messages to one queue and wait for each confirm; not shared by threads.

    Celery's apply_async spends most of its CPU per message in the producer pool, re-binding
    the queue for maybe_declare and a 19-entry header table; this skips them (bench/publish_cost.py,
    figures in docs/BENCHMARKS.md). The messages are ordinary protocol-2 task messages that any
    Celery worker runs.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], Connection],
        queue: Queue,
        task_name: str,
        timeout: float,
        serializer: str,
    ):
        self._connect = connect
        self._queue = queue
        self._task_name = task_name
        self._timeout = timeout
        self._serializer = serializer
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        self._returned: Exception | None = None

    def publish(self, *, task_id: str, kwargs: dict, kwargsrepr: str) -> None:
        """Publish a persistent message; on failure retry once on a fresh connection.

        The fresh connection declares the exchange, the queue and its binding again, so a
        message returned for want of a binding is published once more after the re-declare.
        With several broker URLs it goes to the first node that answers, so a message whose
        connection died unconfirmed with its node is published again on a surviving one.
        """
        try:
            self._send(task_id=task_id, kwargs=kwargs, kwargsrepr=kwargsrepr)
        except Exception as error:  # a dropped or half-open connection, a returned message
            logger.info("publishing task %s failed (%r); reconnecting once", task_id, error)
            self.close()
            self._send(task_id=task_id, kwargs=kwargs, kwargsrepr=kwargsrepr)

    def close(self) -> None:
        """Drop the broker connection; the next publish opens a new one."""
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception as error:  # already broken; nothing is left to release
                logger.debug("closing the publisher connection failed: %r", error)

    def _send(self, *, task_id: str, kwargs: dict, kwargsrepr: str) -> None:
        producer = self._producer or self._open()
        self._returned = None
        content_type, content_encoding, body = dumps_body(
            ((), kwargs, NO_CALLBACKS), serializer=self._serializer
        )
        producer.publish(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            # Only what the worker reads: each header costs py-amqp's table encoder several
            # microseconds, and Celery's defaults fill in the rest (no parent, group or retries).
            headers={
                "lang": "py",
                "task": self._task_name,
                "id": task_id,
                "root_id": task_id,
                "kwargsrepr": kwargsrepr,
                "origin": self._origin,
            },
            correlation_id=task_id,
            reply_to="",
            delivery_mode=2,
            # Without it RabbitMQ confirms a message no queue takes (a binding deleted) and
            # drops it. It sends the basic.return before the confirm, so by the time the
            # confirm is read, _on_return has seen the return.
            mandatory=True,
            timeout=self._timeout,
            confirm_timeout=self._timeout,
        )
        if self._returned is not None:
            raise MessageReturned(f"task {task_id} was returned: {self._returned}")

    def _on_return(self, error, exchange, routing_key, message) -> None:
        # A registered handler keeps py-amqp from raising inside the confirm wait, which would
        # leave that message's confirm unread on the channel for the next publish to take.
        self._returned = error

    def _open(self) -> Producer:
        connection = self._connect()
        try:
            connect_to_any_node(connection)
            channel = connection.channel()
            # kombu's virtual transports (standalone mode's file broker) send no basic.return
            # and have no events table; an AMQP channel does.
            if hasattr(channel, "events"):
                channel.events["basic_return"].add(self._on_return)
            self._queue.bind(channel).declare()
        except Exception:
            connection.close()
            raise
        self._connection = connection
        self._producer = Producer(
            channel,
            exchange=self._queue.exchange,
            routing_key=self._queue.routing_key,
            auto_declare=False,
        )
        return self._producer
