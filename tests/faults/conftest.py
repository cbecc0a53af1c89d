"""Fixtures of the fault suite: stacks on their own Tansu, a private RabbitMQ, the loss check."""

import time
import uuid
from collections import Counter
from dataclasses import dataclass

import psycopg
import pytest

from tests.conftest import ARTIFACTS
from tests.stack import Stack, Tansu

from .loadgen import WRONG_IDS, LoadResult
from .rabbitmq import PrivateRabbitMQ, PrivateRabbitMQCluster, rabbitmq_available

DRAIN_TIMEOUT_S = 90.0
TOPIC_IDLE_S = 1.5
# A 503 may wait for one publish attempt (INGEST_PUBLISH_TIMEOUT_S below) but never hangs.
REJECTION_MAX_S = 8.0

# Small batches and a fast backlog check keep a fault's blast radius visible in a short run.
FAULT_ENV = {
    "INGEST_BACKLOG_CHECK_INTERVAL_S": "0.5",
    "INGEST_PUBLISH_TIMEOUT_S": "3",
    "KAFKA_DELIVERY_TIMEOUT_S": "8",
    "KAFKA_REQUEST_TIMEOUT_MS": "5000",
    "LOG_LEVEL": "WARNING",
}

_figures: list[str] = []


@dataclass
class Figures:
    """What became of one scenario's accepted events."""

    scenario: str
    accepted: int
    delivered: int
    lost: list
    duplicates: int
    foreign: list
    mismatched: list
    dead_letters: int
    result: LoadResult
    drain_seconds: float
    unsettled: str = ""

    def line(self) -> str:
        errors = ",".join(f"{name}={n}" for name, n in sorted(self.result.errors.items()))
        others = {s: n for s, n in self.result.statuses.items() if s not in (202, 503, 429)}
        return (
            f"[faults] {self.scenario}: accepted={self.accepted} delivered={self.delivered} "
            f"lost={len(self.lost)} duplicates={self.duplicates} "
            f"rejected(503/429)={self.result.rejected} "
            f"other_errors={self.result.other_errors} ({errors or '-'}; statuses {others or '-'}) "
            f"dead_letters={self.dead_letters} requests={self.result.requests} "
            f"load={self.result.duration:.1f}s drain={self.drain_seconds:.1f}s"
        )


def pytest_terminal_summary(terminalreporter):
    if _figures:
        terminalreporter.section("fault suite figures")
        for line in _figures:
            terminalreporter.write_line(line)


@pytest.fixture
def report(capsys):
    """Print a scenario's figures line now and again in the terminal summary."""

    def emit(figures: Figures, *notes: str) -> None:
        lines = [figures.line(), *(f"[faults]   {note}" for note in notes)]
        _figures.extend(lines)
        with capsys.disabled():
            print("\n" + "\n".join(lines), flush=True)

    return emit


@pytest.fixture
def topic():
    return f"faults-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def artifacts_dir(tmp_path):
    """A log directory of this run's own: other sessions may run the same test right now."""
    return ARTIFACTS / f"{tmp_path.name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def tansu(artifacts_dir):
    """A Tansu of the test's own, logging next to the test's stack."""
    broker = Tansu(artifacts_dir)
    yield broker
    broker.stop()


@pytest.fixture
def fault_stack(tansu, artifacts_dir):
    """Build stacks on the test's own Tansu with the fault-suite settings; stop them after."""
    stacks = []

    def build(**extra_env) -> Stack:
        stack = Stack(
            kafka_address=tansu.address,
            log_dir=artifacts_dir,
            extra_env={**FAULT_ENV, **extra_env},
        )
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


@pytest.fixture
def private_rabbitmq(artifacts_dir):
    """A RabbitMQ node of the test's own; the shared system broker is never restarted."""
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    node = PrivateRabbitMQ(artifacts_dir / "rabbitmq")
    node.start()
    yield node
    node.stop()
    node.remove_data()


@pytest.fixture
def rabbitmq_cluster(artifacts_dir):
    """Three RabbitMQ nodes of the test's own, joined in one cluster; stopped and wiped after."""
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    cluster = PrivateRabbitMQCluster(artifacts_dir / "rabbitmq-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.remove_data()


def log_size(path) -> int:
    return path.stat().st_size if path.exists() else 0


def log_since(path, offset: int) -> str:
    """Return what a log gained after `offset` (artifact logs outlive runs; count this one's)."""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def dead_letter_count(stack: Stack) -> int:
    with psycopg.connect(stack.database.url.replace("postgres://", "postgresql://")) as db:
        return db.execute("SELECT count(*) FROM ingest_deadletter").fetchone()[0]


def drain_and_count(
    stack: Stack, topic: str, result: LoadResult, *, scenario: str, timeout=DRAIN_TIMEOUT_S
) -> Figures:
    """Wait until the queue is empty and the topic stops growing, then compare with the ledger."""
    started = time.monotonic()
    deadline = started + timeout
    previous = -1
    unsettled = ""
    while True:
        try:
            depth = stack.queue_depth()
        except Exception:  # the broker may still be coming back; keep waiting
            depth = None
        records = stack.read_topic(topic, idle_timeout_s=TOPIC_IDLE_S)
        ids = {record.event_id for record in records}
        settled = depth == 0 and len(records) == previous
        if settled and result.accepted <= ids:
            break
        if time.monotonic() > deadline:
            unsettled = f"queue depth {depth}, topic {previous} -> {len(records)} records"
            break
        previous = len(records)
        time.sleep(0.5)
    counts = Counter(record.event_id for record in records)
    return Figures(
        scenario=scenario,
        accepted=len(result.accepted),
        delivered=len(result.accepted & ids),
        lost=sorted(result.accepted - ids),
        duplicates=len(records) - len(counts),
        foreign=sorted(ids - result.sent),
        mismatched=[
            record.event_id
            for record in records
            if not isinstance(record.value, dict) or record.value.get("id") != record.event_id
        ],
        dead_letters=dead_letter_count(stack),
        result=result,
        drain_seconds=time.monotonic() - started,
        unsettled=unsettled,
    )


def assert_nothing_lost(figures: Figures) -> None:
    """Every accepted id is in Kafka, and only ids we sent are there, each with its own payload."""
    assert figures.accepted > 0, "no event was accepted: the scenario proves nothing"
    late = f" (still draining at the deadline: {figures.unsettled})" if figures.unsettled else ""
    assert not figures.lost, (
        f"{len(figures.lost)} accepted events missing from Kafka{late}: {figures.lost[:10]}"
    )
    assert not figures.foreign, f"ids nobody sent reached Kafka: {figures.foreign[:10]}"
    assert not figures.mismatched, f"records whose payload has another id: {figures.mismatched[:5]}"
    assert figures.result.timeouts == 0, "requests hung until the client timeout"
    assert figures.result.errors[WRONG_IDS] == 0, "the gateway accepted other ids than were sent"
    assert_rejections_well_formed(figures.result)


def assert_rejections_well_formed(result: LoadResult, *, max_seconds=REJECTION_MAX_S) -> None:
    """Every 503/429 says when to retry, carries the JSON error shape, and comes fast."""
    for rejection in result.rejections:
        assert rejection.retry_after is not None and int(rejection.retry_after) >= 1, rejection
        assert isinstance(rejection.body, dict), rejection
        assert set(rejection.body) >= {"code", "message"}, rejection
        assert rejection.seconds < max_seconds, rejection
