"""Serve kombu's `msgpack` serializer with msgspec, the task messages' compact format.

A batch's records hold JSON text; inside a JSON message each value is escaped into a JSON
string, about 1.5 times its size and a microsecond of CPU per record on each side. MessagePack
carries str as str and bytes as bytes (Confluent's binary values), unescaped, and msgspec
encodes and decodes a batch in a few microseconds (docs/BENCHMARKS.md, "Server cost per event").
"""

import msgspec
from kombu.serialization import register

MSGPACK = "msgpack"
# The name and content type kombu's own msgpack serializer uses, so any Celery reads the messages.
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
