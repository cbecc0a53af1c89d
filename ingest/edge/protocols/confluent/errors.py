"""Confluent REST Proxy error answers: {"error_code": ..., "message": ...} with its codes."""

import json

from django.http import HttpResponse

from ...errors import ApiError
from ..base import with_retry_after

V2_CONTENT_TYPE = "application/vnd.kafka.v2+json"
V3_CONTENT_TYPE = "application/json"

# The REST Proxy's own codes for the gateway's refusals (kafka-rest Errors and
# KafkaExceptionMapper); any other refusal carries its HTTP status as its code, as rest-utils does.
UNAUTHORIZED = 40101
FORBIDDEN = 40301
V2_TOPIC_NOT_FOUND = 40401
V3_TOPIC_NOT_FOUND = 40403
JSON_CONVERSION = 42203
KAFKA_ERROR = 50002
KAFKA_RETRIABLE = 50003
SHARED_CODES = {"unauthorized": UNAUTHORIZED, "forbidden_topic": FORBIDDEN}


class ConfluentError(ApiError):
    """A refusal that names the REST Proxy error code it is answered with."""

    def __init__(self, status: int, code: str, message: str, *, error_code: int | None = None):
        super().__init__(status, code, message)
        self.error_code = status if error_code is None else error_code


def v2_error_code(error: ApiError) -> int:
    """Return the v2 error_code for a refusal."""
    return _error_code(error, topic_not_found=V2_TOPIC_NOT_FOUND)


def v3_error_code(error: ApiError) -> int:
    """Return the v3 error_code for a refusal."""
    return _error_code(error, topic_not_found=V3_TOPIC_NOT_FOUND)


def _error_code(error: ApiError, *, topic_not_found: int) -> int:
    if isinstance(error, ConfluentError):
        return error.error_code
    if error.code == "unknown_topic":
        return topic_not_found
    if error.status == 503:
        return KAFKA_RETRIABLE  # what the proxy answers while Kafka is away: retry later
    return SHARED_CODES.get(error.code, error.status)


def render_v2_error(error: ApiError) -> HttpResponse:
    """Answer a refusal as REST Proxy v2 does, keeping Retry-After."""
    return error_response(error, error_code=v2_error_code(error), content_type=V2_CONTENT_TYPE)


def render_v3_error(error: ApiError) -> HttpResponse:
    """Answer a refusal as REST Proxy v3 does, keeping Retry-After."""
    return error_response(error, error_code=v3_error_code(error), content_type=V3_CONTENT_TYPE)


def error_response(error: ApiError, *, error_code: int, content_type: str) -> HttpResponse:
    body = {"error_code": error_code, "message": error.message}
    return with_retry_after(
        json_answer(body, status=error.status, content_type=content_type), error
    )


def json_answer(body: dict | list, *, status: int = 200, content_type: str) -> HttpResponse:
    return bytes_answer(
        json.dumps(body, separators=(",", ":")).encode(), status=status, content_type=content_type
    )


def bytes_answer(body: bytes, *, status: int = 200, content_type: str) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    return response
