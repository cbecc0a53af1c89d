"""Every real client SDK at once through an outage: RabbitMQ paused 5 s, then Kafka frozen 10 s.

Each SDK sends half its events while the broker is paused (the gateway answers 503 with
Retry-After and the SDK must retry) and half while Kafka is frozen (the gateway keeps accepting:
Kafka is not on the request path). Afterwards every event is in Kafka; a duplicate is allowed
only as the same event id.
"""

import http.client
import importlib
import pkgutil
import threading
import time
import uuid
from collections import defaultdict

import pytest

from tests.conftest import ARTIFACTS
from tests.faults.conftest import FAULT_ENV
from tests.faults.rabbitmq import PrivateRabbitMQ, rabbitmq_available
from tests.stack import Stack, Tansu
from tests.waiting import wait_until

from . import drivers
from .conftest import create_source
from .ledger import wait_for_ids

pytestmark = pytest.mark.faults

EVENTS_PER_CLIENT = 200
RABBITMQ_PAUSE_S = 5.0
KAFKA_FREEZE_S = 10.0
SEND_TIMEOUT_S = 120.0
DELIVERY_TIMEOUT_S = 120.0
METRICS_TIMEOUT_S = 15.0


def all_drivers() -> list:
    return [
        importlib.import_module(f"{drivers.__name__}.{module.name}")
        for module in pkgutil.iter_modules(drivers.__path__)
    ]


class ClientRun:
    """One driver's sends on threads of their own; errors are kept for the test to raise."""

    def __init__(self, driver, *, url: str, key: str):
        self.driver = driver
        self.url = url
        self.key = key
        self.name = driver.__name__.rsplit(".", 1)[-1]
        # UUIDs: PostHog's SDKs replace an event uuid that is not one with their own.
        self.ids = [str(uuid.uuid4()) for _ in range(EVENTS_PER_CLIENT)]
        self.errors: list[str] = []
        self.skipped = ""
        self.threads: list[threading.Thread] = []

    def send(self, ids: list[str]) -> None:
        thread = threading.Thread(target=self._send, args=(ids,), name=self.name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _send(self, ids: list[str]) -> None:
        try:
            self.driver.send(url=self.url, key=self.key, ids=ids, timeout_s=SEND_TIMEOUT_S)
        except pytest.skip.Exception as skipped:  # a Node.js SDK without Node.js: its tests say
            self.skipped = str(skipped)
        except BaseException as error:  # reported by the test, with every other client's
            self.errors.append(f"{type(error).__name__}: {error}")

    def join(self) -> None:
        for thread in self.threads:
            thread.join(SEND_TIMEOUT_S + 10)
            if thread.is_alive():
                self.errors.append(f"still sending after {SEND_TIMEOUT_S + 10:.0f}s")


@pytest.fixture
def outage_stack():
    """serve.py and a worker on a RabbitMQ node and a Tansu of their own, to pause and freeze."""
    if not rabbitmq_available():
        pytest.skip("rabbitmq-server is not installed")
    log_dir = ARTIFACTS / f"sdk-outage-{uuid.uuid4().hex[:6]}"
    rabbitmq = PrivateRabbitMQ(log_dir / "rabbitmq")
    rabbitmq.start()
    tansu = Tansu(log_dir)
    stack = None
    try:
        stack = Stack(
            kafka_address=tansu.address,
            log_dir=log_dir,
            extra_env={**FAULT_ENV, "CELERY_BROKER_URL": rabbitmq.url},
        )
        stack.start_worker()
        stack.start_server()
        yield stack, rabbitmq, tansu
    finally:
        rabbitmq.resume()
        tansu.thaw()
        if stack is not None:
            stack.stop()
        tansu.stop()
        rabbitmq.stop()
        rabbitmq.remove_data()


def test_every_sdk_loses_nothing_through_a_broker_pause_and_a_kafka_freeze(outage_stack):
    stack, rabbitmq, tansu = outage_stack
    runs = []
    for driver in all_drivers():
        source = create_source(stack, protocol_topics={driver.PROTOCOL: "{topic}"})
        runs.append((ClientRun(driver, url=stack.url, key=source.key), source))
    assert runs, "no SDK driver in tests/protocols/drivers: the test proves nothing"
    half = EVENTS_PER_CLIENT // 2

    rabbitmq.pause()
    try:
        for run, _ in runs:
            run.send(run.ids[:half])
        time.sleep(RABBITMQ_PAUSE_S)  # the outage's length is the scenario, not a wait
    finally:
        rabbitmq.resume()
    tansu.freeze()
    try:
        for run, _ in runs:
            run.send(run.ids[half:])
        time.sleep(KAFKA_FREEZE_S)
    finally:
        tansu.thaw()
    for run, _ in runs:
        run.join()

    failures = {run.name: run.errors for run, _ in runs if run.errors}
    assert not failures, f"SDKs that gave up or failed: {failures}"
    runs = [(run, source) for run, source in runs if not run.skipped]
    assert runs, "every SDK was skipped: the test proves nothing"
    by_topic = defaultdict(list)
    for run, source in runs:
        by_topic[(source.topic, source.name, run.driver.PROTOCOL)].extend(run.ids)
    for (topic, source_name, protocol), ids in by_topic.items():
        wait_for_ids(
            stack,
            topic,
            ids,
            timeout_s=DELIVERY_TIMEOUT_S,
            source=source_name,
            protocol=protocol,
            allow_duplicates=True,
        )
    # The scenario really refused events (and the SDKs retried them): 503s were answered.
    wait_until(
        lambda: answered_503s(stack) > 0,
        timeout=METRICS_TIMEOUT_S,
        interval=0.5,
        message="no 503 was answered while RabbitMQ was paused: the outage proved nothing",
    )


def answered_503s(stack: Stack) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    prefix = 'ingest_http_requests_total{code="503"} '
    return sum(int(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))
