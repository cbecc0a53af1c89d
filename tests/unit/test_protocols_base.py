"""What every protocol adapter shares: its error shape, its rejections counted by protocol, and
the topic a source's events of a protocol go to."""

import json

import pytest
from django.http import JsonResponse
from django.test import RequestFactory

from ingest.control.keys import ANONYMOUS, SourceInfo
from ingest.control.ratelimit import RateLimited
from ingest.edge.errors import ApiError
from ingest.edge.protocols.base import Protocol, protocol_view, source_topic, with_retry_after


def render_teapot_shape(error: ApiError):
    """A protocol whose errors are {"oops": code} and always 418, except rate limits."""
    status = error.status if error.status == 429 else 418
    return with_retry_after(JsonResponse({"oops": error.code}, status=status), error)


TEAPOT = Protocol(name="teapot", default_topic="tea", render_error=render_teapot_shape)


@protocol_view(TEAPOT, "POST")
def teapot_view(request, *, raised: Exception | None = None):
    request.ingest_topic = "tea"
    request.ingest_source = "kettle"
    if raised is not None:
        raise raised
    return JsonResponse({"ok": True})


@pytest.fixture
def factory():
    return RequestFactory()


def test_other_methods_get_405_in_the_protocols_shape(factory):
    response = teapot_view(factory.get("/tea"))
    assert response.status_code == 418
    assert json.loads(response.content) == {"oops": "method_not_allowed"}
    assert response["Allow"] == "POST"


def test_domain_errors_are_answered_in_the_protocols_shape_with_retry_after(factory):
    response = teapot_view(factory.post("/tea"), raised=RateLimited("too fast", retry_after=3))
    assert response.status_code == 429
    assert json.loads(response.content) == {"oops": "rate_limited"}
    assert response["Retry-After"] == "3"


def test_rejections_are_counted_by_protocol(factory, recorder):
    teapot_view(factory.post("/tea"), raised=ApiError(400, "invalid_event", "bad"))
    counts = recorder.pending()
    assert [key[1:] for key in counts] == [("tea", "kettle", "teapot", "rejected:invalid_event")]


def test_an_exception_that_is_no_domain_error_is_not_swallowed(factory):
    with pytest.raises(ZeroDivisionError):
        teapot_view(factory.post("/tea"), raised=ZeroDivisionError())


def test_a_source_names_its_topic_per_protocol_or_gets_the_protocols_default():
    source = SourceInfo(
        name="shop",
        topics=frozenset({"web"}),
        max_events_per_s=None,
        max_bytes_per_s=None,
        protocol_topics={"teapot": "web"},
    )
    assert source_topic(source, TEAPOT) == "web"
    assert source_topic(ANONYMOUS, TEAPOT) == "tea"
