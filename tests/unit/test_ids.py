import time
import uuid

from ingest.ids import uuid7, uuid7_unix_seconds


def test_uuid7_is_version_7_with_the_current_time():
    value = uuid7()
    parsed = uuid.UUID(value)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert abs(uuid7_unix_seconds(value) - time.time()) < 1


def test_uuid7_sorts_by_creation_time():
    first = uuid7()
    time.sleep(0.002)  # into a later millisecond: two ids made at different times
    assert uuid7() > first


def test_uuid7_unix_seconds_rejects_other_ids():
    assert uuid7_unix_seconds(str(uuid.uuid4())) is None
    assert uuid7_unix_seconds("not-a-uuid") is None
