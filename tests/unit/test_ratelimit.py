"""Rate limits: the backend the settings choose, and the 429 answer before and after the body."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from ingest.control import ratelimit
from ingest.control.ratelimit.local import LocalRateLimiter
from ingest.control.ratelimit.redis import RedisRateLimiter
from tests.unit.sources import make_source, post

REDIS_BACKEND = "ingest.control.ratelimit.redis.RedisRateLimiter"


def test_the_local_backend_is_the_default():
    assert isinstance(ratelimit.get_limiter(), LocalRateLimiter)


def test_the_backend_is_chosen_by_its_dotted_path(settings):
    settings.INGEST_RATE_LIMIT_BACKEND = REDIS_BACKEND
    assert isinstance(ratelimit.get_limiter(), RedisRateLimiter)


def test_a_backend_that_cannot_be_imported_is_a_configuration_error(settings):
    settings.INGEST_RATE_LIMIT_BACKEND = "ingest.control.ratelimit.nowhere.Limiter"
    with pytest.raises(ImproperlyConfigured, match="INGEST_RATE_LIMIT_BACKEND"):
        ratelimit.get_limiter()


@pytest.fixture(
    params=["local", pytest.param("redis", marks=pytest.mark.integration)],
)
def backend(request):
    """Each backend in turn: the Redis one with its own key prefix in the shared Redis."""
    if request.param == "redis":
        request.getfixturevalue("redis_limits")


@pytest.mark.django_db
def test_over_quota_is_429_with_retry_after(client, gateway, publisher, fresh_keys, backend):
    _, key = make_source(max_events_per_s=5)
    response = post(client, [{"n": n} for n in range(5)], HTTP_X_API_KEY=key)
    assert response.status_code == 202, response.content
    response = post(client, {"n": 6}, HTTP_X_API_KEY=key)
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert len(publisher.records) == 5


@pytest.mark.django_db
def test_a_source_over_its_limit_is_429_before_its_body_is_read(
    client, gateway, fresh_keys, unreadable_body, backend
):
    _, key = make_source(max_events_per_s=1)
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 202
    response = client.generic(
        "POST",
        "/api/v1/events/clicks",
        b"{}",
        content_type="application/json",
        HTTP_X_API_KEY=key,
        **{"wsgi.input": unreadable_body},
    )
    assert response.status_code == 429
    assert response["Retry-After"]
