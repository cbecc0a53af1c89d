"""UUIDv7 event ids: time-ordered, so ids sort by acceptance time."""

import os
import time
import uuid


def uuid7() -> str:
    """Return a new RFC 9562 version 7 UUID as a string."""
    unix_ms = time.time_ns() // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80 | random_bits
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def uuid7_unix_seconds(value: str) -> float | None:
    """Return the creation time encoded in a UUIDv7, or None if it is not one."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return (parsed.int >> 80) / 1000
