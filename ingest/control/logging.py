"""JSON-lines logs that carry the request id, and the middleware that assigns it."""

import contextvars
import json
import logging
import re
import time
import traceback
import uuid
from datetime import UTC, datetime

from django.conf import settings

from . import metrics

REQUEST_ID_HEADER = "HTTP_X_REQUEST_ID"
# A client may pass its own id for correlation; anything else gets a fresh one.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has; anything else was passed with extra= and is logged as a field.
MAX_FIELD_CHARS = 1_000
STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
access_logger = logging.getLogger("ingest.access")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Read at format time: the handlers here write synchronously, in the logging thread.
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for name, value in record.__dict__.items():
            # Scalars passed with extra= become fields; containers (Celery passes whole task
            # payloads as `data`) would flood the log with event contents, so they are left out.
            if name not in STANDARD_ATTRIBUTES and not name.startswith("_"):
                if isinstance(value, str):
                    entry[name] = value[:MAX_FIELD_CHARS]
                elif isinstance(value, (int, float, bool)) or value is None:
                    entry[name] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str)


class RequestContextMiddleware:
    """Give each request an id (X-Request-Id), count its status, and log it if asked."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.META.get(REQUEST_ID_HEADER, "")
        request_id = offered if CLIENT_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request_id
            metrics.count_request(response.status_code)
            if settings.INGEST_ACCESS_LOG:
                access_logger.info(
                    "%s %s %s",
                    request.method,
                    request.path,
                    response.status_code,
                    extra={
                        "request_id": request_id,
                        "method": request.method,
                        "path": request.path,
                        "status": response.status_code,
                        "duration_ms": round((time.monotonic() - started) * 1000, 2),
                    },
                )
            return response
        finally:
            request_id_var.reset(token)
