"""The Celery application; run workers with `celery -A celery_app worker --pool threads`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

app = Celery("ingest")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

__all__ = ("app",)
