"""The OpenAPI 3 paths of the Snowplow tracker protocol's endpoints."""

from ...openapi_fragments import answer

ERROR = {"type": "string", "example": "code: message"}


def _text(description: str, *, retry_after: bool = False) -> dict:
    return answer(description, schema=ERROR, media_type="text/plain", retry_after=retry_after)


ERRORS = {
    "400": _text("The envelope or an event is invalid (`e` missing, bad `eid`, not JSON)."),
    "401": _text("The key is missing (where keys are required) or not valid."),
    "403": _text("The source may not send to the event's topic."),
    "404": _text("The source's topic is not accepted by this gateway."),
    "408": _text("The request did not arrive whole in time."),
    "413": _text("The body, the number of events or one event is over the limit."),
    "415": _text("Unsupported Content-Type or Content-Encoding."),
    "429": _text("The source is over its rate limit.", retry_after=True),
    "503": _text("The broker is unreachable or backlogged; retry later.", retry_after=True),
}
KEY_IN_PATH = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The source's API key (trackers cannot send headers with a pixel).",
    "schema": {"type": "string"},
}
EVENT = {
    "type": "object",
    "description": "A tracker protocol event; it is the Kafka record value as sent.",
    "required": ["e"],
    "properties": {
        "e": {"type": "string", "description": "Event type: pv, pp, se, ue, tr, ti, ..."},
        "eid": {"type": "string", "description": "Event id; a UUIDv7 is assigned if absent."},
        "aid": {"type": "string", "description": "Application id; may choose the topic."},
    },
    "additionalProperties": {"type": "string"},
}
PAYLOAD_DATA = {
    "type": "object",
    "required": ["schema", "data"],
    "properties": {
        "schema": {
            "type": "string",
            "pattern": "^iglu:com\\.snowplowanalytics\\.snowplow/payload_data/jsonschema/1-0-",
        },
        "data": {"type": "array", "minItems": 1, "items": EVENT},
    },
}
POST = {
    "summary": "Snowplow tracker protocol batch (POST emitters)",
    "tags": ["snowplow"],
    "security": [{}, {"bearer": []}, {"apiKey": []}],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PAYLOAD_DATA}},
    },
    "responses": {
        "200": {
            "description": "Every event is durable in the broker.",
            "content": {"text/plain": {"schema": {"type": "string", "enum": ["ok"]}}},
        },
        **ERRORS,
    },
}
GET = {
    "summary": "Snowplow pixel: the query parameters are one event (GET emitters)",
    "tags": ["snowplow"],
    "security": [{}, {"bearer": []}, {"apiKey": []}],
    "parameters": [
        {"name": "e", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "eid", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "aid", "in": "query", "required": False, "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {
            "description": "The event is durable; a 1x1 GIF, never cached.",
            "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}},
        },
        **ERRORS,
    },
}


def _with_key(operation: dict) -> dict:
    return {**operation, "parameters": [KEY_IN_PATH, *operation.get("parameters", [])]}


PATHS = {
    "/com.snowplowanalytics.snowplow/tp2": {"post": POST},
    "/i": {"get": GET},
    "/snowplow/{key}/com.snowplowanalytics.snowplow/tp2": {"post": _with_key(POST)},
    "/snowplow/{key}/i": {"get": _with_key(GET)},
}
