"""What every rate-limit backend shares: the RateLimiter interface and its RateLimited answer."""

import math

from ..keys import SourceInfo


class RateLimited(Exception):
    """A source is over its events/s or bytes/s limit; `retry_after` says when to try again."""

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RateLimiter:
    """Token buckets for events and bytes per source; a backend's class in
    settings.INGEST_RATE_LIMIT_BACKEND subclasses this."""

    @classmethod
    def from_settings(cls) -> "RateLimiter":
        """Return a limiter configured from Django's settings."""
        raise NotImplementedError

    def admit(self, source: SourceInfo, *, declared_bytes: int) -> None:
        """Before the body is read, raise RateLimited unless one event of that size could pass.

        The declared Content-Length counts up to the byte bucket's capacity, as in check().
        Nothing is spent: check() spends the exact amounts once the body is parsed.
        """
        raise NotImplementedError

    def check(self, source: SourceInfo, *, events: int, nbytes: int) -> None:
        """Spend the request's events and bytes from the source's budget, or raise RateLimited."""
        raise NotImplementedError


def limits(source: SourceInfo, *, events: int, nbytes: int) -> list[tuple[str, int, int]]:
    """Return (unit, rate, amount) for each limit the source has."""
    return [
        (unit, rate, amount)
        for unit, rate, amount in (
            ("events", source.max_events_per_s, events),
            ("bytes", source.max_bytes_per_s, nbytes),
        )
        if rate
    ]


def over_limit(source: SourceInfo, *, unit: str, rate: int, wait: float) -> RateLimited:
    """Return the RateLimited of a source that may pass again in `wait` seconds."""
    return RateLimited(
        f"source {source.name!r} is over its limit of {rate} {unit}/s",
        retry_after=max(1, math.ceil(wait)),
    )
