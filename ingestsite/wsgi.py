"""WSGI entry point; serve.py runs it under cheroot."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

import celery_app  # noqa: E402,F401  (binds shared tasks to the configured app)

application = get_wsgi_application()
