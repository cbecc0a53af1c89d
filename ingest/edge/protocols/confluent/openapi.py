"""The Confluent REST Proxy endpoints' part of /openapi.json."""

from ...openapi_fragments import answer

V2_MEDIA_TYPES = ("application/vnd.kafka.json.v2+json", "application/vnd.kafka.binary.v2+json")
ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
}


def _errors(media_type: str, statuses: dict[str, str]) -> dict:
    return {
        status: answer(
            description,
            schema=ERROR,
            media_type=media_type,
            retry_after=status in ("429", "503"),
        )
        for status, description in statuses.items()
    }


V2_ERRORS = _errors(
    "application/vnd.kafka.v2+json",
    {
        "400": "The body is not JSON (error_code 400).",
        "401": "The key is missing or not valid (40101).",
        "403": "The source may not send to this topic (40301).",
        "404": "The topic is not accepted by this gateway (40401).",
        "408": "The body did not arrive in time (408).",
        "413": "The body, the number of records or one record is over the limit (413).",
        "415": "Content-Type is neither the json nor the binary v2 type (415).",
        "422": "A record is invalid: a partition, a null value, an unknown field (422), a key or"
        " value that is not strict JSON or not base64 (42203). Nothing was accepted.",
        "429": "The source is over its rate limit (429).",
        "503": "The broker is unreachable or backlogged; nothing was accepted (50003).",
    },
)
V3_ERRORS = _errors(
    "application/json",
    {
        "400": "The body is not JSON objects, or its one record is invalid (400).",
        "401": "The key is missing or not valid (40101).",
        "403": "The source may not send to this topic (40301).",
        "404": "Unknown cluster id (404) or topic not accepted (40403).",
        "413": "The body, the number of records or one record is over the limit (413).",
        "415": "Content-Type is not application/json (415).",
        "429": "The source is over its rate limit (429).",
        "503": "The broker is unreachable or backlogged; nothing was accepted (50003).",
    },
)
AUTH_ERRORS = {status: V3_ERRORS[status] for status in ("401", "503")}

V2_RECORD = {
    "type": "object",
    "required": ["value"],
    "properties": {
        "key": {"description": "Any JSON (json) or a base64 string (binary); the record key."},
        "value": {"description": "Any JSON but null (json) or a base64 string (binary)."},
        "partition": {"type": "integer", "nullable": True, "description": "Must be absent."},
    },
    "additionalProperties": False,
}
V2_OFFSET = {
    "type": "object",
    "properties": {
        "partition": {"type": "integer", "nullable": True},
        "offset": {"type": "integer", "nullable": True},
        "error_code": {
            "type": "integer",
            "nullable": True,
            "description": "50002: dead-lettered. Null with an `error` text: durable, but Kafka"
            " had not acknowledged it in time; it will be delivered, do not resend.",
        },
        "error": {"type": "string", "nullable": True},
    },
}
V3_DATA = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["BINARY", "JSON", "STRING"]},
        "data": {"description": "base64 (BINARY), any JSON (JSON) or a string (STRING)."},
    },
    "additionalProperties": False,
}
V3_RECORD = {
    "type": "object",
    "required": ["value"],
    "properties": {
        "key": V3_DATA,
        "value": V3_DATA,
        "headers": {"type": "array", "maxItems": 0, "description": "Not supported: empty only."},
    },
}
V3_REPORT = {
    "type": "object",
    "required": ["error_code"],
    "properties": {
        "error_code": {"type": "integer", "description": "200, or the record's error code."},
        "message": {"type": "string"},
        "cluster_id": {"type": "string"},
        "topic_name": {"type": "string"},
        "partition_id": {"type": "integer", "nullable": True},
        "offset": {"type": "integer", "nullable": True},
        "timestamp": {"type": "string", "nullable": True},
        "key": {"type": "object", "nullable": True},
        "value": {"type": "object"},
    },
}
CLUSTER = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["KafkaCluster"]},
        "cluster_id": {"type": "string"},
        "metadata": {"type": "object"},
    },
}
TOPIC = {"name": "topic", "in": "path", "required": True, "schema": {"type": "string"}}
CLUSTER_ID = {"name": "cluster_id", "in": "path", "required": True, "schema": {"type": "string"}}
SECURITY = [{}, {"bearer": []}, {"apiKey": []}, {"basic": []}]

PATHS = {
    "/topics/{topic}": {
        "post": {
            "tags": ["confluent"],
            "summary": "REST Proxy v2: produce records, answered once Kafka acknowledged them",
            "parameters": [TOPIC],
            "security": SECURITY,
            "requestBody": {
                "required": True,
                "content": {
                    media_type: {
                        "schema": {
                            "type": "object",
                            "required": ["records"],
                            "properties": {
                                "records": {"type": "array", "minItems": 1, "items": V2_RECORD}
                            },
                        }
                    }
                    for media_type in V2_MEDIA_TYPES
                },
            },
            "responses": {
                "200": {
                    "description": "One offsets entry per record, in order.",
                    "content": {
                        "application/vnd.kafka.v2+json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "offsets": {"type": "array", "items": V2_OFFSET},
                                    "key_schema_id": {"nullable": True},
                                    "value_schema_id": {"nullable": True},
                                },
                            }
                        }
                    },
                },
                **V2_ERRORS,
            },
        }
    },
    "/v3/clusters": {
        "get": {
            "tags": ["confluent"],
            "summary": "REST Proxy v3: the one Kafka cluster (KAFKA_CLUSTER_ID)",
            "security": SECURITY,
            "responses": {
                "200": {
                    "description": "KafkaClusterList with one cluster.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/v3/clusters/{cluster_id}": {
        "get": {
            "tags": ["confluent"],
            "summary": "REST Proxy v3: the cluster, if cluster_id is KAFKA_CLUSTER_ID",
            "parameters": [CLUSTER_ID],
            "security": SECURITY,
            "responses": {
                "200": {
                    "description": "KafkaCluster.",
                    "content": {"application/json": {"schema": CLUSTER}},
                },
                "404": V3_ERRORS["404"],
                **AUTH_ERRORS,
            },
        }
    },
    "/v3/clusters/{cluster_id}/topics/{topic}/records": {
        "post": {
            "tags": ["confluent"],
            "summary": "REST Proxy v3: produce one record, or concatenated records (chunked)",
            "parameters": [CLUSTER_ID, TOPIC],
            "security": SECURITY,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": V3_RECORD}},
            },
            "responses": {
                "200": {
                    "description": "One delivery report per record, concatenated, in order.",
                    "content": {"application/json": {"schema": V3_REPORT}},
                },
                **V3_ERRORS,
            },
        }
    },
}
