"""Outage driver: the snowplow-tracker SDK's GET (pixel) emitter, its key in the path."""

from tests.protocols import snowplow_sdk

PROTOCOL = snowplow_sdk.PROTOCOL


def send(*, url: str, key: str, ids: list[str], timeout_s: float) -> None:
    """Send one event per id (eid = id), flush, and return once the SDK holds nothing."""
    snowplow_sdk.send(url=url, key=key, ids=ids, timeout_s=timeout_s, method="get")
