"""The worker's consumer is Celery's, without native delayed delivery."""

from celery.worker.consumer import Consumer as CeleryConsumer

from celery_app import app
from celery_app.consumer import DELAYED_DELIVERY_STEP, Consumer


def test_the_worker_runs_our_consumer():
    assert app.conf.worker_consumer == "celery_app.consumer:Consumer"


def test_every_step_of_celerys_consumer_but_delayed_delivery():
    assert DELAYED_DELIVERY_STEP in CeleryConsumer.Blueprint.default_steps
    assert Consumer.Blueprint.default_steps == [
        step for step in CeleryConsumer.Blueprint.default_steps if step != DELAYED_DELIVERY_STEP
    ]
