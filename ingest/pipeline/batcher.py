"""Group commit: concurrent requests share one broker publish, bounded in events and bytes.

A batch forms while the previous publish waits for its confirm, and is taken as soon as that
confirm comes (natural group commit), unless a window is set: then at most one batch is taken
per window. The window comes from the caller (pipeline.window: none while the workers keep up,
up to max_wait_s while they fall behind), because each batch costs a worker about the same CPU
whatever its size (docs/BENCHMARKS.md, "Why the window matters"). No event waits for others
longer than max_wait_s after the previous take.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ids import uuid7
from ..records import NATIVE_PROTOCOL, Event

logger = logging.getLogger(__name__)


class BatcherFull(Exception):
    """The pending events or bytes are at their bound; the caller should shed load."""


class BatcherClosed(Exception):
    """The batcher is shutting down and takes no new events."""


class PublishAbandoned(Exception):
    """A batch waited for a flusher past its start deadline; it was never published."""


@dataclass
class Batch:
    """Events from one or more requests that are published as one broker message."""

    batch_id: str
    # Plain tuples in BatchRecord's field order, which encode as BatchRecords do: a NamedTuple
    # costs three times as much to build, and the garbage collector never untracks one, so each
    # collection would scan every record waiting in a batch (docs/BENCHMARKS.md, "Server cost
    # per event (issue 14)").
    records: list[tuple] = field(default_factory=list)
    nbytes: int = 0
    published: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    opened_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Ticket:
    """Where one request's events sit inside a batch."""

    batch: Batch
    first_index: int
    count: int


class Batcher:
    """Collect events from request threads and publish them in batches from flusher threads."""

    def __init__(
        self,
        *,
        publish: Callable[[Batch], None],
        max_events: int,
        max_bytes: int,
        max_wait_s: float,
        pending_max_events: int,
        pending_max_bytes: int,
        flushers: int = 2,
        start_deadline_s: float = float("inf"),
        window_s: Callable[[], float] | None = None,
    ):
        self._publish = publish
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._max_wait_s = max_wait_s
        self._pending_max_events = pending_max_events
        self._pending_max_bytes = pending_max_bytes
        self._start_deadline_s = start_deadline_s
        self._window_s = window_s or (lambda: max_wait_s)
        self._condition = threading.Condition()
        self._open: Batch | None = None
        self._sealed: deque[Batch] = deque()
        self._pending_events = 0
        self._pending_bytes = 0
        self._closing = False
        self._last_taken_at = float("-inf")
        self._in_flight = 0
        self._threads = [
            threading.Thread(target=self._flush_forever, name=f"ingest-flusher-{n}", daemon=True)
            for n in range(flushers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> tuple[int, int]:
        """Return the events and bytes accepted but not yet published."""
        with self._condition:
            return self._pending_events, self._pending_bytes

    @property
    def window_s(self) -> float:
        """Return the least time between two takes of the open batch, as it stands now."""
        return self._window_s()

    def submit(
        self,
        *,
        topic: str,
        events: list[Event],
        source: str = "",
        protocol: str = NATIVE_PROTOCOL,
    ) -> Ticket:
        """Add one request's events to a batch; they are never split across batches."""
        nbytes = sum(len(event.value) for event in events)
        count = len(events)
        # Built before the lock is taken, so request threads hold it only to append.
        records = [
            (topic, event_id, key, value, source, protocol) for event_id, key, value in events
        ]
        with self._condition:
            if self._closing:
                raise BatcherClosed("the gateway is shutting down")
            if (
                self._pending_events + count > self._pending_max_events
                or self._pending_bytes + nbytes > self._pending_max_bytes
            ):
                raise BatcherFull(
                    f"{self._pending_events} events ({self._pending_bytes} bytes) already wait "
                    "for the broker"
                )
            batch = self._open
            if batch is not None and (
                len(batch.records) + count > self._max_events
                or batch.nbytes + nbytes > self._max_bytes
            ):
                self._sealed.append(batch)
                batch = None
            if batch is None:
                batch = self._open = Batch(batch_id=uuid7())
            first_index = len(batch.records)
            batch.records += records
            batch.nbytes += nbytes
            self._pending_events += count
            self._pending_bytes += nbytes
            if self._sealed or len(batch.records) >= self._max_events or first_index == 0:
                self._condition.notify()
        return Ticket(batch, first_index, count)

    def close(self, *, timeout: float) -> bool:
        """Publish what is pending, stop the flushers, and say whether they all finished."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _next_batch(self) -> Batch | None:
        with self._condition:
            while True:
                if self._sealed:
                    return self._take(self._sealed.popleft())
                batch = self._open
                if batch is None:
                    if self._closing:
                        return None
                    self._condition.wait()
                    continue
                if self._closing or len(batch.records) >= self._max_events:
                    self._open = None
                    return self._take(batch)
                # While a publish waits for its confirm the next batch keeps growing; a broker
                # slow to confirm still gets the next one once the longest window is over.
                spacing = self._window_s() if self._in_flight == 0 else self._max_wait_s
                remaining = self._last_taken_at + spacing - time.monotonic()
                if remaining <= 0:
                    self._open = None
                    return self._take(batch)
                self._condition.wait(remaining)

    def _take(self, batch: Batch) -> Batch:
        self._last_taken_at = time.monotonic()
        self._in_flight += 1
        return batch

    def _flush_forever(self) -> None:
        while (batch := self._next_batch()) is not None:
            waited = time.monotonic() - batch.opened_at
            try:
                # Its requests stop waiting at a bound and are answered 503; a batch that could
                # not even start publishing by then must never reach the broker after that 503.
                if waited > self._start_deadline_s:
                    raise PublishAbandoned(f"no flusher was free for {waited:.1f}s")
                self._publish(batch)
            except Exception as error:  # every failure must reach the waiting requests
                logger.warning("publishing batch %s failed: %r", batch.batch_id, error)
                batch.error = error
            with self._condition:
                self._pending_events -= len(batch.records)
                self._pending_bytes -= batch.nbytes
                self._in_flight -= 1
                # A flusher holding the open batch back for this confirm may take it now.
                self._condition.notify_all()
            batch.published.set()
