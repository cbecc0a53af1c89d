"""What every protocol adapter shares: its description, and the view decorator that answers
its errors in its own shape and counts them by protocol."""

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ...control import stats
from ...control.keys import SourceInfo
from ..errors import DOMAIN_ERRORS, ApiError, api_error


@dataclass(frozen=True)
class Protocol:
    """A client protocol the gateway speaks.

    `name` is what stats, /metrics and each record's `protocol` header carry. `render_error`
    answers an ApiError in the protocol's own shape (keeping its Retry-After). `openapi_paths`
    is the protocol's fragment of /openapi.json.
    """

    name: str
    default_topic: str
    render_error: Callable[[ApiError], HttpResponse]
    openapi_paths: dict = field(default_factory=dict, hash=False)


def with_retry_after(response: HttpResponse, error: ApiError) -> HttpResponse:
    """Return `response` with the error's Retry-After header, if it has one."""
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    return response


def source_topic(source: SourceInfo, protocol: Protocol) -> str:
    """Return the topic a source's events of this protocol go to (Source.protocol_topics)."""
    return source.protocol_topics.get(protocol.name) or protocol.default_topic


def protocol_view(protocol: Protocol, *methods: str):
    """Allow only `methods`, skip CSRF, and answer ApiError and domain errors in the protocol's
    shape, counting each rejection under the request's topic, source and protocol."""

    def decorate(view):
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            try:
                if request.method not in methods:
                    error = ApiError(
                        405, "method_not_allowed", f"{request.method} is not allowed here"
                    )
                    response = protocol.render_error(error)
                    response["Allow"] = ", ".join(methods)
                    return response
                return view(request, *args, **kwargs)
            except (ApiError, *DOMAIN_ERRORS) as raised:
                # Answered by another function: a local of this frame holding the exception
                # would make a cycle through its traceback, keeping every frame of the request,
                # its body among them (a decompressed 4 MiB), until the collector's next pass.
                return _rejected(request, protocol, raised)

        return wrapper

    return decorate


def _rejected(request, protocol: Protocol, raised: Exception) -> HttpResponse:
    """Count a rejected request under its topic, source and protocol; answer in its shape."""
    error = api_error(raised)
    topic = getattr(request, "ingest_topic", None)
    if topic is not None:  # only the ingest endpoints count their rejections
        stats.count_rejected(
            topic=topic,
            source=getattr(request, "ingest_source", ""),
            protocol=protocol.name,
            code=error.code,
        )
    return protocol.render_error(error)
