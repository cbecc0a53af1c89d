"""The one error shape every non-2xx answer of the API uses."""

import json

from django.http import HttpResponse


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
