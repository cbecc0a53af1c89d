"""The Celery application; run workers with `celery -A celery_app worker --pool threads`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

app = Celery("ingest")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Autodiscovery looks only for a `tasks` module at the top of each Django app, and the delivery
# task lives in the ingest app's delivery package: name that package too.
app.autodiscover_tasks(["ingest.delivery"])

__all__ = ("app",)
