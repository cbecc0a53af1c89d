import io
import threading
import time

import pytest

from ingest.pipeline import runtime
from ingest.pipeline.batcher import Batcher


class FakeBacklog:
    """A backlog monitor whose state the test sets."""

    def __init__(self):
        self.error = None
        self.depth = 0
        self.high_water = 100
        self.first_read = threading.Event()
        self.first_read.set()

    check = runtime.BacklogMonitor.check
    backlogged = runtime.BacklogMonitor.backlogged

    @property
    def _high_water(self):
        return self.high_water


class FakeOutcomes:
    def __init__(self):
        self.outcomes = {}

    def wait(self, batch_id, *, timeout):
        return self.outcomes.get(batch_id)


class RecordingPublisher:
    """Stands in for the broker: records published batches, or fails when told to."""

    def __init__(self):
        self.batches = []
        self.error = None
        self.delay_s = 0.0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch):
        self.gate.wait(5)
        time.sleep(self.delay_s)  # a broker that is slow to confirm
        if self.error is not None:
            raise self.error
        self.batches.append(batch)

    @property
    def records(self):
        return [record for batch in self.batches for record in batch.records]


@pytest.fixture
def publisher():
    return RecordingPublisher()


@pytest.fixture
def gateway(publisher, settings):
    """Replace the process gateway with one that publishes to a recording fake."""
    settings.INGEST_BATCH_MAX_WAIT_MS = 1
    settings.INGEST_PUBLISH_TIMEOUT_S = 1
    batcher = Batcher(
        publish=publisher,
        max_events=settings.INGEST_BATCH_MAX_EVENTS,
        max_bytes=settings.INGEST_BATCH_MAX_BYTES,
        max_wait_s=0.001,
        pending_max_events=50,
        pending_max_bytes=100_000,
        flushers=1,
    )
    fake = runtime.Gateway(batcher=batcher, backlog=FakeBacklog(), outcomes=FakeOutcomes())
    runtime.get_gateway.replace(fake)
    yield fake
    runtime.get_gateway.replace(None)
    batcher.close(timeout=2)


class UnreadableBody(io.BytesIO):
    """A request body the view must not read."""

    def read(self, *args):
        raise AssertionError("the body was read")


@pytest.fixture
def unreadable_body():
    """A wsgi.input that fails the test if a view reads it."""
    return UnreadableBody()
