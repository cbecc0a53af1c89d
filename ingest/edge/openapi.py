"""The OpenAPI 3 description of the ingest API, served at /api/v1/openapi.json."""

from django.conf import settings

from .openapi_fragments import answer
from .protocols import registry


def _error(description: str, *, retry_after: bool = False) -> dict:
    schema = {"$ref": "#/components/schemas/Error"}
    return answer(description, schema=schema, retry_after=retry_after)


ERRORS = {
    "400": _error(
        "The request or one of its events is invalid (the message names the event and field);"
        " nothing was accepted."
    ),
    "401": _error("The API key is missing (where keys are required) or not valid."),
    "403": _error("The source may not send to this topic."),
    "404": _error("No such endpoint, or the topic is not accepted by this gateway."),
    "405": _error("The method is not allowed on this endpoint."),
    "408": _error("The request did not arrive whole within the server's request deadline."),
    "413": _error("The body, the number of events or one event's size is over the limit."),
    "415": _error("Unsupported Content-Type or Content-Encoding."),
    "429": _error("The source is over its rate limit.", retry_after=True),
    "503": _error("The broker is unreachable or backlogged; retry later.", retry_after=True),
}
INGEST_ERRORS = ("400", "401", "403", "404", "405", "408", "413", "415", "429", "503")
ACCEPTED = {
    "description": "Accepted: durable in the broker (or as the ack level says).",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Acceptance"}}},
}
INGEST_RESPONSES = {"202": ACCEPTED, **{code: ERRORS[code] for code in INGEST_ERRORS}}
SECURITY = [{}, {"bearer": []}, {"apiKey": []}]
ACK_HEADER = {
    "name": "X-Ingest-Ack",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["durable", "delivered", "none"]},
}


def document() -> dict:
    """Return the OpenAPI document, with this gateway's limits filled in."""
    max_events = settings.INGEST_MAX_EVENTS_PER_REQUEST
    topic_pattern = f"^{settings.KAFKA_TOPIC_PATTERN}$"
    event = {
        "type": "object",
        "description": "Any JSON object; `id` and `key` have a meaning for the gateway.",
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": settings.INGEST_MAX_ID_LENGTH,
                "description": "Event id; generated (UUIDv7) when absent.",
            },
            "key": {"type": "string", "description": "Kafka record key."},
        },
        "additionalProperties": True,
    }
    document = {
        "openapi": "3.0.3",
        "info": {
            "title": "Event ingest gateway",
            "version": "1",
            "description": "Accepts events over HTTP and delivers them to Kafka. A 2xx answer "
            "means the events are durable in the broker (ack=durable, the default).",
        },
        "paths": {
            "/api/v1/events/{topic}": {
                "post": {
                    "operationId": "postEvents",
                    "summary": "Accept one event or a batch of events for a topic",
                    "security": SECURITY,
                    "parameters": [
                        {
                            "name": "topic",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": topic_pattern},
                        },
                        {
                            "name": "ack",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["durable", "delivered", "none"]},
                        },
                        ACK_HEADER,
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "anyOf": [
                                        {"$ref": "#/components/schemas/Event"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Event"},
                                            "minItems": 1,
                                            "maxItems": max_events,
                                        },
                                        {
                                            "type": "object",
                                            "required": ["events"],
                                            "properties": {
                                                "events": {
                                                    "type": "array",
                                                    "items": {"$ref": "#/components/schemas/Event"},
                                                    "minItems": 1,
                                                    "maxItems": max_events,
                                                }
                                            },
                                            "additionalProperties": False,
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": INGEST_RESPONSES,
                }
            },
            "/api/v1/show/": {
                "get": {
                    "operationId": "showEvent",
                    "summary": "Accept the query parameters as one event on the default topic",
                    "security": SECURITY,
                    "parameters": [
                        {
                            "name": "params",
                            "in": "query",
                            "required": False,
                            "style": "form",
                            "explode": True,
                            "schema": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                        ACK_HEADER,
                    ],
                    "responses": INGEST_RESPONSES,
                }
            },
            "/api/v1/receipts/{receipt_id}": {
                "get": {
                    "operationId": "getReceipt",
                    "summary": "Say whether the events behind a receipt reached Kafka",
                    "security": SECURITY,
                    "parameters": [
                        {
                            "name": "receipt_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "What became of the events.",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Receipt"}
                                }
                            },
                        },
                        "401": ERRORS["401"],
                        "404": ERRORS["404"],
                        "405": ERRORS["405"],
                        "503": ERRORS["503"],
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
            "schemas": {
                "Event": event,
                "Error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                },
                "Acceptance": {
                    "type": "object",
                    "required": ["accepted", "ids", "receipt", "ack"],
                    "properties": {
                        "accepted": {"type": "integer", "minimum": 1},
                        "ids": {"type": "array", "items": {"type": "string"}},
                        "receipt": {"type": "string"},
                        "ack": {
                            "type": "string",
                            "enum": [
                                "durable",
                                "delivered",
                                "none",
                                "dead_lettered",
                                "partially_delivered",
                            ],
                        },
                        "offsets": {
                            "type": "array",
                            "description": "Per event: its partition and offset, or why it "
                            "became a dead letter.",
                            "items": {
                                "type": "object",
                                "required": ["id"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "partition": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                    "dead_lettered": {"type": "string"},
                                },
                            },
                        },
                        "pending_ids": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Receipt": {
                    "type": "object",
                    "required": ["receipt", "status"],
                    "properties": {
                        "receipt": {"type": "string"},
                        "status": {
                            "type": "string",
                            "enum": [
                                "pending",
                                "unknown",
                                "delivered",
                                "dead_lettered",
                                "partially_delivered",
                            ],
                        },
                        "attempts": {"type": "integer"},
                        "reason": {"type": "string"},
                        "offsets": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["partition", "offset"],
                                "properties": {
                                    "partition": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                },
                            },
                        },
                        "events": {
                            "type": "array",
                            "description": "partially_delivered: per event, its partition and "
                            "offset or why it became a dead letter.",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "partition": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                    "dead_lettered": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
    for protocol in registry.protocols():
        document["paths"].update(protocol.openapi_paths)
    return document
