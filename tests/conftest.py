import os
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings

from ingestsite import embedded
from tests.stack import ROOT, Stack, Tansu

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts"))


@pytest.fixture(scope="session")
def kafka_address():
    """The test Kafka: KAFKA_BOOTSTRAP_SERVERS if something listens there, else a new Tansu."""
    address = settings.KAFKA_BOOTSTRAP_SERVERS[0]
    host, port = address.rsplit(":", 1)
    if embedded.is_listening(host, int(port)):
        yield address
        return
    process = embedded.start_tansu(address, log_path=ARTIFACTS / "tansu-session.log")
    yield address
    embedded.stop_process(process, timeout=5)


@pytest.fixture
def tansu(tmp_path):
    """A Tansu of the test's own, for tests that freeze or restart Kafka."""
    broker = Tansu(ARTIFACTS / tmp_path.name)
    yield broker
    broker.stop()


@pytest.fixture
def stack_factory(kafka_address, tmp_path):
    """Build end-to-end stacks (serve.py + worker, production mode); all are stopped after."""
    stacks = []

    def build(*, kafka: str | None = None, extra_env: dict | None = None) -> Stack:
        stack = Stack(
            kafka_address=kafka or kafka_address,
            log_dir=ARTIFACTS / tmp_path.name,
            extra_env=extra_env,
        )
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


@pytest.fixture
def redis_limits(settings):
    """Switch to the Redis rate limiter, under a key prefix of the test's own; return the prefix.

    Redis is shared by every run on the machine: a test deletes its own keys, never flushes.
    """
    prefix = f"ingest-tests:ratelimit:{uuid.uuid4().hex}:"
    settings.INGEST_RATE_LIMIT_BACKEND = "ingest.control.ratelimit.redis.RedisRateLimiter"
    settings.INGEST_RATE_LIMIT_KEY_PREFIX = prefix
    yield prefix
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()
