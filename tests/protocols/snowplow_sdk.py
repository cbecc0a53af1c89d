"""Send events through the real snowplow-tracker SDK, in its POST or its GET emitter mode.

The SDK picks each event's `eid` itself (uuid4); IdentifiedTracker sets the one the test chose.
It ignores Retry-After: after a failure it waits its own exponential backoff, capped here by
`max_retry_delay_seconds`, and it retries every status but 400, 401, 403, 410 and 422.
"""

import logging
import threading
import time

import requests
from snowplow_tracker import Emitter, Tracker
from snowplow_tracker.event_store import InMemoryEventStore
from snowplow_tracker.events import StructuredEvent

from tests.waiting import wait_until

PROTOCOL = "snowplow"
APP_ID = "ingest-tests"
# Small batches: a POST of at most this many events, whatever piled up during an outage.
POST_BATCH = 100
# The GET emitter decides a batch's retry by its last request's status, so a batch of more
# than one could drop a failed event: one event per batch, several emitters at once.
GET_EMITTERS = 16
MAX_RETRY_DELAY_S = 2
REQUEST_TIMEOUT_S = (2.0, 15.0)

logger = logging.getLogger("snowplow_tracker.emitters")


class BatchLimitedStore(InMemoryEventStore):
    """The SDK's in-memory buffer, handing out at most `batch_limit` events per request."""

    def __init__(self, *, batch_limit: int, buffer_capacity: int):
        super().__init__(logger=logger, buffer_capacity=buffer_capacity)
        self.batch_limit = batch_limit

    def get_events_batch(self) -> list:
        batch = self.event_buffer[: self.batch_limit]
        self.event_buffer = self.event_buffer[self.batch_limit :]
        return batch


class IdentifiedTracker(Tracker):
    """A Tracker whose events carry the `eid` the caller gives."""

    def track_with_id(self, event_id: str, event) -> None:
        event.event_id = event_id
        self.track(event)

    def complete_payload(self, event):
        payload = super().complete_payload(event)
        payload.add("eid", event.event_id)
        return payload


class Outcome:
    """The events the SDK reported sent, and the failures it reported (retried or not)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent: set[str] = set()
        self.failures = 0

    def on_success(self, events: list[dict]) -> None:
        with self.lock:
            self.sent.update(event["eid"] for event in events)

    def on_failure(self, sent_count: int, events: list[dict]) -> None:
        with self.lock:
            self.failures += 1


def make_emitter(
    *, endpoint: str, method: str, outcome: Outcome, capacity: int, session: requests.Session
) -> Emitter:
    batch = POST_BATCH if method == "post" else 1
    return Emitter(
        endpoint,
        method=method,
        batch_size=batch,
        on_success=outcome.on_success,
        on_failure=outcome.on_failure,
        request_timeout=REQUEST_TIMEOUT_S,
        max_retry_delay_seconds=MAX_RETRY_DELAY_S,
        event_store=BatchLimitedStore(batch_limit=batch, buffer_capacity=capacity),
        session=session,
    )


def track_all(emitter: Emitter, ids: list[str]) -> None:
    tracker = IdentifiedTracker(namespace="ingest", emitters=emitter, app_id=APP_ID)
    for event_id in ids:
        tracker.track_with_id(event_id, StructuredEvent(category="test", action="send"))


def drain(emitter: Emitter, *, deadline: float) -> None:
    """Flush until the SDK holds nothing: no buffered event, no retry waiting."""

    def drained() -> bool:
        if not emitter.retry_timer.is_active():
            emitter.flush()  # sends one batch; a failure re-buffers it and arms the retry timer
        return emitter.event_store.size() == 0 and not emitter.retry_timer.is_active()

    wait_until(
        drained,
        timeout=max(0.0, deadline - time.monotonic()),
        message=lambda: f"the SDK still holds {emitter.event_store.size()} events",
        interval=0.02,
    )


def send_with(*, emitter: Emitter, ids: list[str], deadline: float) -> None:
    track_all(emitter, ids)
    drain(emitter, deadline=deadline)


def send(*, url: str, key: str, ids: list[str], timeout_s: float, method: str) -> Outcome:
    """Send one event per id; POST carries the key in a header, GET (a pixel) in the path."""
    deadline = time.monotonic() + timeout_s
    outcome = Outcome()
    capacity = max(10_000, len(ids) + POST_BATCH)
    if method == "post":
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        emitter = make_emitter(
            endpoint=url, method="post", outcome=outcome, capacity=capacity, session=session
        )
        send_with(emitter=emitter, ids=ids, deadline=deadline)
    else:
        _send_in_parallel(url=f"{url}/snowplow/{key}", ids=ids, outcome=outcome, deadline=deadline)
    missing = set(ids) - outcome.sent
    assert not missing, f"the SDK gave up on {len(missing)} events, e.g. {sorted(missing)[:3]}"
    return outcome


def _send_in_parallel(*, url: str, ids: list[str], outcome: Outcome, deadline: float) -> None:
    errors: list[BaseException] = []

    def run(chunk: list[str]) -> None:
        emitter = make_emitter(
            endpoint=url,
            method="get",
            outcome=outcome,
            capacity=max(10_000, len(chunk) + 1),
            session=requests.Session(),
        )
        try:
            send_with(emitter=emitter, ids=chunk, deadline=deadline)
        except BaseException as error:  # reported in the caller's thread
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(ids[index::GET_EMITTERS],), daemon=True)
        for index in range(GET_EMITTERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 5)
    if errors:
        raise errors[0]
