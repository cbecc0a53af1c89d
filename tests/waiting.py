"""Wait for a condition instead of sleeping a fixed time: tests finish as soon as it holds."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.05


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    message: str | Callable[[], str],
    interval: float = POLL_INTERVAL_S,
) -> T:
    """Return the predicate's first truthy value; fail the test if none comes within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
