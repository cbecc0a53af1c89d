"""The OpenAPI 3 description of the PostHog capture endpoints."""

from ...openapi_fragments import answer

# As PostHog spells them: with the trailing slash, which its SDKs send.
CAPTURE_PATHS = ("/batch/", "/capture/", "/e/", "/i/v0/e/")

EVENT = {
    "type": "object",
    "description": (
        "A PostHog event, produced to Kafka as sent. `uuid` is the event id (a UUIDv7 is made"
        " for an event without one); the distinct id, cut to 200 characters, is the key."
    ),
    "required": ["event"],
    "properties": {
        "event": {"type": "string", "minLength": 1},
        "distinct_id": {"description": "or `properties.distinct_id`; a string or a number"},
        "uuid": {"type": "string", "format": "uuid"},
        "properties": {"type": "object"},
        "timestamp": {"type": "string", "format": "date-time"},
        "api_key": {"type": "string", "description": "or `token`, `$token`, `properties.token`"},
    },
}
BATCH = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "api_key": {"type": "string", "description": "the source's API key (or `token`)"},
        "batch": {"type": "array", "items": EVENT},
        "sent_at": {"type": "string", "format": "date-time"},
        "historical_migration": {"type": "boolean"},
    },
}
DATA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "api_key": {"type": "string"},
        "data": {
            "oneOf": [
                {"type": "array", "items": EVENT},
                EVENT,
                {"type": "string", "description": "JSON text of events, or its base64"},
            ]
        },
    },
}
BODY = {"oneOf": [BATCH, DATA, EVENT, {"type": "array", "items": EVENT}]}
ERROR = {
    "type": "object",
    "required": ["type", "code", "detail", "attr"],
    "properties": {
        "type": {
            "type": "string",
            "enum": [
                "validation_error",
                "authentication_error",
                "invalid_request",
                "throttled_error",
                "server_error",
            ],
        },
        "code": {"type": "string", "example": "invalid_api_key"},
        "detail": {"type": "string"},
        "attr": {"type": "string", "nullable": True},
    },
}


def _error(description: str, *, retry_after: bool = False) -> dict:
    return answer(description, schema=ERROR, retry_after=retry_after)


RESPONSES = {
    "200": {
        "description": "Every event is durable in the broker. PostHog's SDKs take any other"
        " status, 201 and 202 included, as a failure.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"status": {"type": "integer", "enum": [1]}},
                }
            }
        },
    },
    "400": _error("The body or one of its events is invalid; nothing was accepted."),
    "401": _error("No API key (where keys are required), a key no source has, or several."),
    "403": _error("The source may not send to its PostHog topic."),
    "408": _error("The body did not arrive in time."),
    "413": _error("The body, the number of events or one event is over the limit."),
    "415": _error("Unsupported Content-Encoding."),
    "429": _error("The source is over its rate limit.", retry_after=True),
    "503": _error("The broker is unreachable or backlogged; retry later.", retry_after=True),
}
OPERATION = {
    "summary": "Capture PostHog events (posthog-python, posthog-node, posthog-js)",
    "tags": ["PostHog"],
    "parameters": [
        {
            "name": "compression",
            "in": "query",
            "required": False,
            "description": "gzip-js or gzip: the body is gzip; base64: the body is base64."
            " lz64 is not supported. gzip is also found by its magic bytes.",
            "schema": {"type": "string", "enum": ["gzip-js", "gzip", "base64"]},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": BODY},
            "text/plain": {"schema": BODY},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {"type": "string", "description": "base64 (or plain) JSON"},
                        "compression": {"type": "string"},
                    },
                }
            },
        },
    },
    "responses": RESPONSES,
}


def paths(routes: tuple[str, ...]) -> dict:
    """Return the OpenAPI "paths" fragment: the same capture operation at every route."""
    return {
        route: {"post": {**OPERATION, "operationId": "posthog" + route.replace("/", "_")[:-1]}}
        for route in routes
    }
