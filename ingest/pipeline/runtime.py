"""Per-process machinery of the web side: the batcher, the backlog monitor, the outcome watcher."""

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from ..models import DeliveryOutcome
from ..state import per_process
from .batcher import Batcher
from .broker import QueueDepthReader, broker_url_count, close_publishers, enqueue_batch
from .errors import Backlogged, BrokerUnavailable
from .window import AdaptiveWindow

logger = logging.getLogger(__name__)

OUTCOME_POLL_INTERVAL_S = 0.05
OUTCOME_POLL_ERROR_BACKOFF_S = 1.0
# TaskPublisher tries a publish twice, the second time on a new connection.
PUBLISH_ATTEMPTS = 2
PUBLISH_WAIT_MARGIN_S = 1.0


def publish_start_deadline_s() -> float:
    """Return how long a batch may wait for a flusher before it is abandoned, unpublished."""
    return settings.INGEST_BATCH_MAX_WAIT_MS / 1000 + settings.INGEST_PUBLISH_TIMEOUT_S


def publish_wait_s() -> float:
    """Return how long a request waits for its batch: past it no publish can still succeed."""
    # A fresh connection may try every broker URL in turn, each within the connection timeout.
    connecting = settings.CELERY_BROKER_CONNECTION_TIMEOUT * broker_url_count()
    attempt = connecting + settings.INGEST_PUBLISH_TIMEOUT_S
    return publish_start_deadline_s() + PUBLISH_ATTEMPTS * attempt + PUBLISH_WAIT_MARGIN_S


class BacklogMonitor:
    """Poll the broker queue depth in the background so requests can shed load without I/O.

    Each reading also goes to `on_depth`: the batch window follows it (pipeline.window).
    """

    def __init__(self, *, read_depth, interval_s: float, high_water: int, on_depth):
        self._read_depth = read_depth
        self._on_depth = on_depth
        self._interval_s = interval_s
        self._high_water = high_water
        self.depth: int | None = None
        self.error: str | None = None
        self.first_read = threading.Event()  # set once the first reading succeeded or failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-backlog", daemon=True)
        self._thread.start()

    @property
    def high_water(self) -> int:
        return self._high_water

    def backlogged(self) -> bool:
        """Say whether the last reading was past the high-water mark."""
        return self.depth is not None and self.depth > self._high_water

    def check(self) -> None:
        """Raise BrokerUnavailable or Backlogged unless the last reading allows new events."""
        if self.error is not None:
            raise BrokerUnavailable(f"the broker is unreachable: {self.error}")
        if self.backlogged():
            raise Backlogged(
                f"{self.depth} batches wait for Kafka (high-water mark {self._high_water})"
            )

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.depth = self._read_depth()
                if self.error is not None:
                    logger.info("backlog check works again after: %s", self.error)
                self.error = None
                self._on_depth(self.depth)
            except Exception as error:  # any failure to reach the broker means shed load
                failing, self.error = self.error, f"{type(error).__name__}: {error}"
                # Readings come several times a second: one line per outage, not per reading.
                if self.error != failing:
                    logger.warning("backlog check failed: %s", self.error)
            self.first_read.set()
            self._stop.wait(self._interval_s)


class OutcomeWatcher:
    """Wait for batch outcomes with one query per poll for all waiting requests together."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting: dict[str, list] = {}
        self._wakeup = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-outcomes", daemon=True)
        self._thread.start()

    def wait(self, batch_id: str, *, timeout: float):
        """Return the batch's DeliveryOutcome, or None if none is recorded within `timeout`."""
        done = threading.Event()
        slot = [done, None]
        with self._lock:
            self._waiting.setdefault(batch_id, []).append(slot)
        self._wakeup.set()
        done.wait(timeout)
        with self._lock:
            slots = self._waiting.get(batch_id, [])
            if slot in slots:
                slots.remove(slot)
                if not slots:
                    del self._waiting[batch_id]
        return slot[1]

    def _run(self) -> None:
        while True:
            self._wakeup.wait()
            with self._lock:
                batch_ids = list(self._waiting)
                if not batch_ids:
                    self._wakeup.clear()
                    continue
            try:
                outcomes = list(DeliveryOutcome.objects.filter(batch_id__in=batch_ids))
            except Exception as error:  # the database may come back; waiters time out meanwhile
                logger.warning("reading outcomes failed: %r", error)
                close_old_connections()
                time.sleep(OUTCOME_POLL_ERROR_BACKOFF_S)
                continue
            with self._lock:
                for outcome in outcomes:
                    for slot in self._waiting.pop(outcome.batch_id, []):
                        slot[1] = outcome
                        slot[0].set()
            time.sleep(OUTCOME_POLL_INTERVAL_S)


@dataclass
class Gateway:
    """The web side's long-lived objects; one per process, from get_gateway."""

    batcher: Batcher
    backlog: BacklogMonitor
    outcomes: OutcomeWatcher


@per_process
def get_gateway() -> Gateway:
    """Return this process's gateway, started on first use."""
    window = AdaptiveWindow(
        max_s=settings.INGEST_BATCH_MAX_WAIT_MS / 1000,
        min_s=settings.INGEST_BATCH_MIN_WAIT_MS / 1000,
        grow_depth=settings.INGEST_BATCH_WINDOW_GROW_DEPTH,
        shrink_depth=settings.INGEST_BATCH_WINDOW_SHRINK_DEPTH,
    )
    return Gateway(
        batcher=Batcher(
            publish=enqueue_batch,
            max_events=settings.INGEST_BATCH_MAX_EVENTS,
            max_bytes=settings.INGEST_BATCH_MAX_BYTES,
            max_wait_s=settings.INGEST_BATCH_MAX_WAIT_MS / 1000,
            pending_max_events=settings.INGEST_PENDING_MAX_EVENTS,
            pending_max_bytes=settings.INGEST_PENDING_MAX_BYTES,
            flushers=settings.INGEST_FLUSHERS,
            start_deadline_s=publish_start_deadline_s(),
            window_s=lambda: window.seconds,
        ),
        backlog=BacklogMonitor(
            read_depth=QueueDepthReader(),
            interval_s=settings.INGEST_BACKLOG_CHECK_INTERVAL_S,
            high_water=settings.INGEST_BACKLOG_HIGH_WATER,
            on_depth=window.observe,
        ),
        outcomes=OutcomeWatcher(),
    )


def shutdown_gateway(*, timeout: float) -> bool:
    """Publish every pending batch so waiting requests get their answer; True if all made it."""
    gateway = get_gateway.current()
    if gateway is None:
        return True
    gateway.backlog.stop()
    finished = gateway.batcher.close(timeout=timeout)
    if finished:
        close_publishers()
    return finished
