"""Send events through the real posthog Python SDK, one per id, and wait until it sent them all."""

import threading
import time
import uuid

from posthog import Posthog

PROTOCOL = "posthog"


def check_ids(ids: list[str]) -> None:
    """Refuse ids that are not UUIDs: the SDK would send a generated uuid in their place."""
    for event_id in ids:
        try:
            uuid.UUID(event_id)
        except ValueError:
            raise AssertionError(
                f"PostHog event ids are UUIDs; the SDK replaces {event_id!r} with one of its own"
            ) from None


# The SDK sleeps max(2**attempt, Retry-After) between attempts (both capped at 30 s): five
# retries keep a batch trying for 1 + 2 + 4 + 8 + 16 = 31 s, through the outage tests' 25 s.
MAX_RETRIES = 5
REQUEST_TIMEOUT_S = 10
FLUSH_AT = 100


def send(*, url: str, key: str, ids: list[str], timeout_s: float) -> None:
    """Capture one event per id (its `uuid`), flush, and raise AssertionError if any was dropped."""
    check_ids(ids)
    failures = []
    failures_lock = threading.Lock()

    def on_error(error, batch):
        with failures_lock:
            failures.append((error, [message.get("uuid") for message in batch]))

    client = Posthog(
        key,
        host=url,
        flush_at=FLUSH_AT,
        flush_interval=0.2,
        max_retries=MAX_RETRIES,
        timeout=REQUEST_TIMEOUT_S,
        max_queue_size=len(ids) + FLUSH_AT,
        on_error=on_error,
        enable_local_evaluation=False,
    )
    deadline = time.monotonic() + timeout_s
    try:
        for number, event_id in enumerate(ids):
            captured = client.capture(
                "driver_event",
                distinct_id=f"user-{number % 50}",
                properties={"n": number},
                uuid=event_id,
            )
            assert captured == event_id, f"the SDK did not queue event {event_id}: {captured!r}"
        client.flush(timeout_seconds=max(0.0, deadline - time.monotonic()))
        pending = client.queue.unfinished_tasks
    finally:
        client.shutdown()
    assert not failures, f"the SDK gave up on events: {failures[:3]}"
    assert pending == 0, f"the SDK still held {pending} events after {timeout_s} s"
