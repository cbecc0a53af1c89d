"""The tests' own wait_until helper."""

import time

import pytest

from tests.waiting import wait_until


def test_returns_the_first_truthy_value_as_soon_as_it_comes():
    answers = iter([None, 0, [], "ready", "later"])
    started = time.monotonic()
    assert wait_until(lambda: next(answers), timeout=5, message="never", interval=0.01) == "ready"
    assert time.monotonic() - started < 1


def test_fails_with_the_message_once_the_timeout_passes():
    calls = []
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"asked \d+ times"):
        wait_until(
            lambda: calls.append(1),
            timeout=0.2,
            message=lambda: f"asked {len(calls)} times",  # built when the wait fails
            interval=0.05,
        )
    assert 0.2 <= time.monotonic() - started < 1
    assert len(calls) >= 2  # asked again after waiting, and once more at the deadline
