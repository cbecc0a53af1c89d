"""The Celery application; run workers with `celery -A celery_app worker --pool threads`."""

import os

from celery import Celery

from .serialization import register_msgpack

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")
# Before any message is published or read: the task messages are MessagePack.
register_msgpack()

app = Celery("ingest")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Autodiscovery looks only for a `tasks` module at the top of each Django app, and the delivery
# task lives in the ingest app's delivery package: name that package too.
app.autodiscover_tasks(["ingest.delivery"])

__all__ = ("app",)
