"""Find a client's events in Kafka by id: every one, with the headers its origin gives it."""

import time
from collections import Counter

from ingest.control.topics import TopicRecord
from tests.stack import Stack

TOPIC_IDLE_S = 1.0
POLL_S = 0.5


def wait_for_ids(
    stack: Stack,
    topic: str,
    ids: list[str],
    *,
    timeout_s: float,
    source: str,
    protocol: str,
    allow_duplicates: bool = False,
) -> list[TopicRecord]:
    """Read `topic` until every id is there; assert each arrived once (or, with
    `allow_duplicates`, at least once), nothing foreign arrived, and each record carries
    event-id, source and protocol headers."""
    deadline = time.monotonic() + timeout_s
    wanted = set(ids)
    while True:
        records = stack.read_topic(topic, idle_timeout_s=TOPIC_IDLE_S)
        found = {record.event_id for record in records}
        if wanted <= found:
            break
        if time.monotonic() > deadline:
            missing = sorted(wanted - found)
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} events missing from {topic} after "
                f"{timeout_s:.0f}s: {missing[:10]}"
            )
        time.sleep(POLL_S)
    counts = Counter(record.event_id for record in records)
    foreign = sorted(found - wanted)
    assert not foreign, f"ids nobody sent reached {topic}: {foreign[:10]}"
    if not allow_duplicates:
        duplicated = sorted(event_id for event_id, n in counts.items() if n > 1)
        assert not duplicated, f"{len(duplicated)} ids arrived more than once: {duplicated[:10]}"
    expected_headers = {"source": source.encode(), "protocol": protocol.encode()}
    for record in records:
        assert record.headers.get("event-id") == record.event_id.encode()
        headers = {name: record.headers.get(name) for name in expected_headers}
        assert headers == expected_headers, f"record {record.event_id} has headers {headers}"
    return records
