"""Serve kombu's `msgpack` serializer with msgspec, the task messages' compact format.

A batch's records hold JSON text; inside a JSON message each value is escaped into a JSON
string, and kombu's JSON costs about a microsecond of CPU per record to encode and as much to
decode. MessagePack carries str as str and bytes as bytes (Confluent's binary values),
unescaped, 15 % fewer bytes, and msgspec encodes a batch of 100 records in about 5 us
(docs/BENCHMARKS.md, "Server cost per event (issue 14)").
"""

import msgspec
from kombu.exceptions import EncodeError
from kombu.serialization import dumps, register

MSGPACK = "msgpack"
# The name and content type of kombu's own msgpack serializer: any Celery that accepts msgpack
# reads these messages.
MSGPACK_CONTENT_TYPE = "application/x-msgpack"
# Serializers a task message may use: JSON is how earlier versions published, so batches they
# left in the queue are still delivered.
TASK_SERIALIZERS = (MSGPACK, "json")


def register_msgpack() -> None:
    """Register msgspec's MessagePack under kombu's `msgpack` name; safe to call again."""
    register(
        MSGPACK,
        msgspec.msgpack.encode,
        msgspec.msgpack.decode,
        content_type=MSGPACK_CONTENT_TYPE,
        content_encoding="binary",
    )


def dumps_body(body, *, serializer: str) -> tuple[str, str, bytes]:
    """Return a task body's content type, content encoding and bytes, as JSON if it must be.

    A str with a lone surrogate (a poison record, replayed from a dead letter) has no UTF-8
    form, which MessagePack's strings need. JSON escapes it, and the worker makes that record
    alone a dead letter instead of the whole batch failing to publish.
    """
    try:
        return dumps(body, serializer=serializer)
    except EncodeError:
        return dumps(body, serializer="json")
