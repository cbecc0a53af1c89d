import io
import threading
import time

import pytest

from ingest.control import stats
from ingest.delivery import producers, service, tasks
from ingest.pipeline import runtime
from ingest.pipeline.batcher import Batcher
from ingest.records import BatchRecord
from tests.unit.fake_kafka import FakeKafka


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
        if self.delay_s:
            time.sleep(self.delay_s)  # a broker that is slow to confirm
        if self.error is not None:
            raise self.error
        self.batches.append(batch)

    @property
    def records(self):
        return [BatchRecord(*record) for batch in self.batches for record in batch.records]


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


@pytest.fixture
def fresh_keys(settings):
    """A key cache and rate limiter of the test's own, with keys required.

    Changing a setting forgets every per-process object (ingest.state): both are built anew.
    """
    settings.INGEST_REQUIRE_API_KEYS = True


@pytest.fixture
def recorder(settings):
    """This process's stats recorder, switched on, flushed only when the test says."""
    settings.INGEST_STATS_ENABLED = True
    instance = stats.StatsRecorder(interval_s=3_600, retention_s=86_400)
    stats.get_recorder.replace(instance)
    yield instance
    stats.get_recorder.replace(None)


@pytest.fixture
def count_a_run(recorder):
    """Record a short run (accepted, rejected, delivered, dead-lettered) starting at `at`."""

    def count(*, at: float) -> None:
        recorder.add(topic="a", source="s", values={"accepted": 10, "accepted_bytes": 100}, at=at)
        recorder.add(topic="a", source="s", values={"rejected:rate_limited": 2}, at=at)
        recorder.add(topic="a", source="", values={"delivered": 9, "latency_le_50": 9}, at=at + 60)
        recorder.add(topic="b", source="", values={"dead_lettered": 1}, at=at + 60)
        recorder.add(topic="", source="", values={"producer_errors": 3}, at=at + 60)
        recorder.flush()

    return count


@pytest.fixture
def kafka(monkeypatch):
    """Produce to a fake Kafka, and retry deliveries and resends without backing off."""
    fake = FakeKafka()
    producers.get_producer.replace(fake)
    monkeypatch.setattr(service, "RETRY_BACKOFF_BASE_S", 0.0)
    monkeypatch.setattr(service, "OUTCOME_WRITE_BACKOFF_BASE_S", 0.0)
    monkeypatch.setattr(tasks, "RESEND_BACKOFF_BASE_S", 0.0)
    yield fake
    producers.get_producer.replace(None)
