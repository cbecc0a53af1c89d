"""Read a request's body for any protocol: bounded, rate-limited before the read, gzip undone."""

from django.conf import settings

from ..control.keys import SourceInfo
from ..pipeline import accept
from . import parsing
from .errors import ApiError


def read_request_body(request, *, source: SourceInfo, max_bytes: int | None = None) -> bytes:
    """Return the body of an authenticated request, refusing a source over its rate limit first."""
    declared = declared_length(request, max_bytes=max_bytes)
    accept.admit_request(source=source, declared_bytes=declared or 0)
    return _read_and_decode(request, declared=declared, max_bytes=max_bytes)


def read_unauthenticated_body(request, *, max_bytes: int | None = None) -> bytes:
    """Return the body of a request whose key is inside it; admit its source once known."""
    declared = declared_length(request, max_bytes=max_bytes)
    return _read_and_decode(request, declared=declared, max_bytes=max_bytes)


def _read_and_decode(request, *, declared: int | None, max_bytes: int | None) -> bytes:
    return parsing.decode_body(
        read_body(request, declared, max_bytes=max_bytes),
        content_encoding=request.META.get("HTTP_CONTENT_ENCODING", ""),
        max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
    )


def body_limit(max_bytes: int | None) -> int:
    """Return the body limit: INGEST_MAX_BODY_BYTES, or a protocol's own if it is lower."""
    limit = settings.INGEST_MAX_BODY_BYTES
    return limit if max_bytes is None else min(limit, max_bytes)


def declared_length(request, *, max_bytes: int | None = None) -> int | None:
    """Return the Content-Length, None for a chunked body, refusing one over the body limit."""
    raw = request.META.get("CONTENT_LENGTH") or ""
    if not raw and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        declared = int(raw or 0)
    except ValueError as error:
        raise ApiError(400, "invalid_request", "Content-Length is not a number") from error
    limit = body_limit(max_bytes)
    if declared > limit:
        raise parsing.body_too_large(f"body of {declared} bytes exceeds {limit} bytes")
    return declared


def read_body(request, declared: int | None, *, max_bytes: int | None = None) -> bytes:
    """Read the body: Content-Length bytes, or a chunked body up to the body limit."""
    limit = body_limit(max_bytes)
    try:
        if declared is not None:
            return request.body
        # Django reads only Content-Length bytes; cheroot undoes the chunking on wsgi.input.
        body = request.environ["wsgi.input"].read(limit + 1)
    except OSError as error:  # the server cut a client too slow to send its body, or it left
        raise ApiError(
            408, "request_timeout", f"the request body did not arrive in time: {error}"
        ) from error
    if len(body) > limit:
        raise parsing.body_too_large(f"chunked body exceeds {limit} bytes")
    return body
