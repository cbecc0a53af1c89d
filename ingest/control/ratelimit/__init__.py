"""Rate limits per source, kept by the backend that settings.INGEST_RATE_LIMIT_BACKEND names.

The setting is the dotted path of a base.RateLimiter class, as Django's SESSION_ENGINE names a
session backend: local.LocalRateLimiter (the default) keeps each process's own buckets,
redis.RedisRateLimiter shares one budget per source among every process and host.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ...state import per_process
from .base import RateLimited, RateLimiter

__all__ = ["RateLimited", "RateLimiter", "backend", "get_limiter"]


def backend() -> type[RateLimiter]:
    """Return the limiter class that settings.INGEST_RATE_LIMIT_BACKEND names."""
    path = settings.INGEST_RATE_LIMIT_BACKEND
    try:
        return import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"INGEST_RATE_LIMIT_BACKEND must be the dotted path of a RateLimiter class, "
            f"got {path!r}: {error}"
        ) from error


@per_process
def get_limiter() -> RateLimiter:
    """Return this process's rate limiter."""
    return backend().from_settings()
