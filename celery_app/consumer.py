"""The worker's consumer: Celery's own, without the native delayed delivery bootstep."""

from celery.worker.consumer import Consumer as CeleryConsumer

DELAYED_DELIVERY_STEP = "celery.worker.consumer.delayed_delivery:DelayedDelivery"


class Consumer(CeleryConsumer):
    """Consume as Celery does, minus native delayed delivery, which quorum queues switch on.

    That step routes countdowns through topic exchanges, and the delivery queue's exchange is
    direct, so it would never carry a re-sent batch: a countdown stays in the worker until due, as
    with a classic queue. Yet at every reconnect it declares 28 queues on each broker URL and
    retries an unreachable one with backoff before the consumer starts again: 17 s without
    delivery after a cluster node died (tests/faults/test_rabbitmq_cluster.py).
    """

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY_STEP
        ]
