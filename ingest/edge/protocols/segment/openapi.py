"""The OpenAPI 3 paths of Segment's HTTP Tracking API, merged into /api/v1/openapi.json."""

from ...openapi_fragments import answer
from .messages import MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES, MESSAGE_TYPES

TAG = "Segment HTTP Tracking API"
SECURITY = [{"segmentBasic": []}, {}]

MESSAGE = {
    "type": "object",
    "description": (
        "A Segment message as Segment's spec defines it; it becomes the Kafka record's value"
        " as sent. `messageId` is the event id (else one is assigned), `userId` (else"
        f" `anonymousId`) the Kafka key. At most {MAX_MESSAGE_BYTES} bytes."
    ),
    "properties": {
        "type": {"type": "string", "enum": list(MESSAGE_TYPES)},
        "messageId": {"type": "string"},
        "userId": {"type": "string"},
        "anonymousId": {"type": "string"},
        "writeKey": {
            "type": "string",
            "description": "The write key when no Basic auth is sent; removed from the value.",
        },
        "context": {"type": "object"},
        "integrations": {"type": "object"},
        "timestamp": {"type": "string"},
        "sentAt": {"type": "string"},
    },
    "additionalProperties": True,
}
BATCH = {
    "type": "object",
    "required": ["batch"],
    "description": (
        f"At most {MAX_BATCH_BYTES} bytes and {MAX_BATCH_MESSAGES} messages. `context`,"
        " `integrations` and `sentAt` apply to every message; a message's own members win."
    ),
    "properties": {
        "batch": {"type": "array", "items": MESSAGE, "maxItems": MAX_BATCH_MESSAGES},
        "writeKey": {"type": "string"},
        "context": {"type": "object"},
        "integrations": {"type": "object"},
        "sentAt": {"type": "string"},
    },
}
ERROR = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "code": {"type": "string"},
        "message": {"type": "string"},
    },
}


def _answer(description: str, body: dict, *, retry_after: bool = False) -> dict:
    return answer(description, schema=body, retry_after=retry_after)


RESPONSES = {
    "200": _answer(
        "Accepted and durable in the broker.",
        {"type": "object", "properties": {"success": {"type": "boolean", "enum": [True]}}},
    ),
    "400": _answer(
        "Malformed JSON, an invalid message, or over Segment's size limits (message starts"
        " with `Exceed payload limit`); nothing was accepted.",
        ERROR,
    ),
    "401": _answer("The write key is missing (where keys are required) or not valid.", ERROR),
    "403": _answer("The source may not send to its Segment topic.", ERROR),
    "404": _answer("The source's Segment topic is not accepted by this gateway.", ERROR),
    "405": _answer("Only POST is allowed.", ERROR),
    "408": _answer("The body did not arrive in time.", ERROR),
    "415": _answer("Unsupported Content-Type or Content-Encoding.", ERROR),
    "429": _answer("The source is over its rate limit.", ERROR, retry_after=True),
    "503": _answer("The gateway cannot take events now; retry.", ERROR, retry_after=True),
}


def _operation(summary: str, schema: dict) -> dict:
    return {
        "post": {
            "tags": [TAG],
            "summary": summary,
            "security": SECURITY,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            },
            "responses": RESPONSES,
        }
    }


PATHS = {
    "/v1/batch": _operation("Send a batch of Segment messages", BATCH),
    **{
        f"/v1/{message_type}": _operation(f"Send one Segment {message_type} message", MESSAGE)
        for message_type in MESSAGE_TYPES
    },
}
