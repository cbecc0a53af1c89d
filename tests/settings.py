"""Test settings: production mode against the local PostgreSQL, RabbitMQ and a test Tansu."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ingest")
os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:29092")
os.environ.setdefault("SECRET_KEY", "test-only-secret")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")  # pytest-django adds testserver
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", "ingest-tests")
# Keys are off unless a test turns them on; tests/integration/test_control_plane.py does.
os.environ.setdefault("INGEST_REQUIRE_API_KEYS", "false")

from ingestsite.settings import *  # noqa: E402,F403

# The test process's own requests are not worth flushing; stats tests switch this on.
INGEST_STATS_ENABLED = False
