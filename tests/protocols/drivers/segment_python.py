"""Send events through segment-analytics-python, the real SDK, as an application would."""

import threading

from segment.analytics import Client

PROTOCOL = "segment"
# The SDK's request timeout: a request the gateway holds while its broker is paused is
# answered within the publish wait (about 15 s), so it must not be cut before that.
REQUEST_TIMEOUT_S = 30


def send(*, url: str, key: str, ids: list[str], timeout_s: float) -> None:
    """Track one event per id (its messageId), flush, and fail if the SDK gave any up."""
    failures = []
    client = Client(
        key,
        host=url,
        on_error=lambda error, batch: failures.append((error, len(batch))),
        max_queue_size=len(ids) + 1,
        timeout=REQUEST_TIMEOUT_S,
        # 503s without Retry-After and network errors: backoff 0.5 s doubling to 60 s; with
        # Retry-After (429, 503) the SDK waits as told, bounded by max_rate_limit_duration.
        max_retries=20,
        max_total_backoff_duration=timeout_s,
        max_rate_limit_duration=timeout_s,
    )
    try:
        for number, event_id in enumerate(ids):
            queued, _ = client.track(
                user_id=f"user-{number % 50}",
                event="Driver Event",
                properties={"n": number},
                message_id=event_id,
            )
            assert queued, f"the SDK's queue refused event {event_id}"
        flusher = threading.Thread(target=client.flush, daemon=True)
        flusher.start()
        flusher.join(timeout_s)
        assert not flusher.is_alive(), (
            f"the SDK still had {client.queue.unfinished_tasks} events after {timeout_s} s"
        )
    finally:
        client.join()
    assert not failures, f"the SDK gave up on batches: {failures}"
