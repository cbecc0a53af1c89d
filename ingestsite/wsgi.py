"""WSGI entry point; serve.py runs it under cheroot."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")
django.setup(set_prefix=False)

import celery_app  # noqa: E402,F401  (binds shared tasks to the configured app)
from ingest.edge.handlers import GatewayWSGIHandler  # noqa: E402

application = GatewayWSGIHandler()
