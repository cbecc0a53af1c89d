"""A WSGI handler that serves the event endpoints through a short middleware chain."""

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.db import close_old_connections
from django.http import HttpResponse
from django.urls import set_script_prefix
from django.utils.module_loading import import_string

from .errors import ApiError


class GatewayWSGIHandler(WSGIHandler):
    """Serve INGEST_FAST_PATHS with INGEST_FAST_PATH_MIDDLEWARE; anything else as Django does."""

    def __init__(self):
        super().__init__()
        self.fast_paths = tuple(settings.INGEST_FAST_PATHS)
        self.fast_path = FastPathHandler()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(self.fast_paths):
            return self.fast_path(environ, start_response)
        return super().__call__(environ, start_response)


class FastPathHandler(BaseHandler):
    """Run a request through the event views without the admin's middleware or request signals.

    The admin's middleware (sessions, CSRF, authentication, messages) and the request_started
    and request_finished receivers are a large share of the CPU the application spends on a
    small event (bench/handler_cost.py, figures in docs/BENCHMARKS.md), and the event endpoints
    need none of them: they read no cookie or session and touch the database only when the key
    cache reloads.
    """

    def __init__(self):
        super().__init__()
        self.load_middleware()

    def load_middleware(self, is_async=False):
        """Chain INGEST_FAST_PATH_MIDDLEWARE; plain middleware factories only, no hooks."""
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(settings.INGEST_FAST_PATH_MIDDLEWARE):
            handler = convert_exception_to_response(import_string(path)(handler))
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = handler

    def _get_response(self, request):
        # Inside the chain, so a refused host still gets a request id and is counted.
        return invalid_host_response(request) or super()._get_response(request)

    def __call__(self, environ, start_response):
        set_script_prefix(get_script_name(environ))
        request = WSGIRequest(environ)
        try:
            response = self.get_response(request)
        finally:
            # What request_finished would do for the database: a key-cache reload may have
            # opened this thread's connection, and CONN_MAX_AGE decides whether it stays.
            close_old_connections()
        if response.streaming:
            content = None
        else:
            content = response.content  # joined once: each read of .content joins again
            if not response.has_header("Content-Length"):
                # CommonMiddleware's job on the full chain; without it cheroot would send chunks.
                response["Content-Length"] = str(len(content))
        start_response(
            f"{response.status_code} {response.reason_phrase}",
            [
                *response.items(),
                *(("Set-Cookie", cookie.output(header="")) for cookie in response.cookies.values()),
            ],
        )
        if content is None:
            return response
        # Returning the content instead of the response skips response.close(), which would send
        # request_finished; the event views read only the body, so there are no uploads to close.
        return [content]


def invalid_host_response(request) -> HttpResponse | None:
    """Return a 400 invalid_host answer unless the request's host is in ALLOWED_HOSTS."""
    # Django's own check, which CommonMiddleware runs on the full chain: a precompiled regex and
    # string comparisons, nothing compiled per request.
    try:
        request.get_host()
    except DisallowedHost:
        return ApiError(
            400, "invalid_host", "the Host header names no host this gateway serves"
        ).response()
    return None
