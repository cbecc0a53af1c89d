"""The client protocols this gateway speaks besides its own API; each module is an adapter."""

from . import confluent, posthog, snowplow

# Each module defines PROTOCOL (a base.Protocol) and urlpatterns (paths at the site root).
PROTOCOL_MODULES = [confluent, posthog, snowplow]


def protocols() -> list:
    """Return the Protocol of every adapter."""
    return [module.PROTOCOL for module in PROTOCOL_MODULES]
