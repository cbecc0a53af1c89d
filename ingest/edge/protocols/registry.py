"""The client protocols this gateway speaks besides its own API; each package is an adapter."""

from .confluent import views as confluent
from .posthog import views as posthog
from .segment import views as segment
from .snowplow import views as snowplow

# Each adapter's views module defines PROTOCOL (a base.Protocol) and urlpatterns (paths at the
# site root).
PROTOCOL_MODULES = [confluent, posthog, segment, snowplow]


def protocols() -> list:
    """Return the Protocol of every adapter."""
    return [module.PROTOCOL for module in PROTOCOL_MODULES]
