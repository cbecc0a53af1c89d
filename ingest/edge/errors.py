"""The one error shape every non-2xx answer of the API uses, and the one map from the domain's
exceptions to it."""

import json

from django.conf import settings
from django.http import HttpResponse

from ..control.keys import SourcesUnavailable, TopicForbidden, Unauthorized
from ..control.ratelimit import RateLimited
from ..control.receipts import ReceiptNotFound
from ..pipeline.errors import Backlogged, InvalidAckLevel, Overloaded, PipelineUnavailable


class ApiError(Exception):
    """A request the gateway answers with an error status and a JSON body."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def response(self) -> HttpResponse:
        response = json_response({"code": self.code, "message": self.message}, status=self.status)
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response


def json_response(body: dict, *, status: int = 200) -> HttpResponse:
    response = HttpResponse(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )
    # Set here because the event endpoints' short chain has no SecurityMiddleware.
    response["X-Content-Type-Options"] = "nosniff"
    return response


def bad_request(message: str, *, code: str = "invalid_event") -> ApiError:
    return ApiError(400, code, message)


def unavailable(message: str, *, retry_after: int, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, message, retry_after=retry_after)


# Every exception below the edge that a request may cause; api_error says how it is answered.
DOMAIN_ERRORS = (
    Unauthorized,
    TopicForbidden,
    SourcesUnavailable,
    RateLimited,
    ReceiptNotFound,
    InvalidAckLevel,
    PipelineUnavailable,
)

# The 503s whose cause a client may tell apart; every other one is "unavailable".
UNAVAILABLE_CODES = {Overloaded: "overloaded", Backlogged: "backlogged"}


def api_error(error: Exception) -> ApiError:
    """Return the answer to an ApiError or a domain exception (one of DOMAIN_ERRORS)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, Unauthorized):
        return ApiError(401, "unauthorized", str(error))
    if isinstance(error, TopicForbidden):
        return ApiError(403, "forbidden_topic", str(error))
    if isinstance(error, ReceiptNotFound):
        return ApiError(404, "not_found", "no such receipt")
    if isinstance(error, InvalidAckLevel):
        return bad_request(str(error), code="invalid_ack")
    if isinstance(error, RateLimited):
        return ApiError(429, "rate_limited", error.message, retry_after=error.retry_after)
    if isinstance(error, SourcesUnavailable | PipelineUnavailable):
        code = UNAVAILABLE_CODES.get(type(error), "unavailable")
        return unavailable(str(error), retry_after=settings.INGEST_RETRY_AFTER_S, code=code)
    raise TypeError(f"no answer is defined for {type(error).__name__}") from error
