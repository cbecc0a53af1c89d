"""A running gateway for the client SDKs to talk to, and sources to send as."""

import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import ARTIFACTS
from tests.stack import Stack


@dataclass(frozen=True)
class SdkSource:
    """A source an SDK sends as: its name, its API key, and the topic its events go to."""

    name: str
    key: str
    topic: str


def create_source(stack: Stack, *, protocol_topics: dict[str, str]) -> SdkSource:
    """Create a source allowed to write one fresh topic, which each named protocol sends to;
    "{topic}" in a protocol's topic stands for that fresh topic."""
    name = f"sdk-{uuid.uuid4().hex[:10]}"
    topic = f"sdk-{uuid.uuid4().hex[:10]}"
    pairs = [
        f"--protocol-topic={protocol}={protocol_topic.format(topic=topic)}"
        for protocol, protocol_topic in protocol_topics.items()
    ]
    result = stack.run_manage("create_source", name, "--topics", topic, *pairs)
    return SdkSource(name=name, key=result.stdout.strip(), topic=topic)


@pytest.fixture(scope="module")
def sdk_stack(kafka_address, request):
    """serve.py and a worker in production mode, shared by one test module's SDK tests."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    stack = Stack(
        kafka_address=kafka_address,
        log_dir=ARTIFACTS / f"{module}-{uuid.uuid4().hex[:6]}",
        # A source made for a test is known to the server within a second, not a cache TTL.
        extra_env={"LOG_LEVEL": "WARNING", "INGEST_KEY_CACHE_TTL_S": "1"},
    )
    try:
        stack.start_server()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def make_source(sdk_stack):
    """Create sources on the module's stack: make_source({"segment": "{topic}"})."""

    def make(protocol_topics: dict[str, str]) -> SdkSource:
        return create_source(sdk_stack, protocol_topics=protocol_topics)

    return make
