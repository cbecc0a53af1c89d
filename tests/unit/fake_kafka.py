"""A fake Kafka for the delivery tests: the records it produced, and the failures it gives."""

import itertools
import json
from collections import Counter

from ingest.delivery import producers
from ingest.records import BatchRecord

POISON_KEY = "\ud800"


class FakeKafka:
    """Stands in for the process's producer: encodes like the real backends, acks the rest, fails
    the records it is told to, and remembers every record it was asked to produce."""

    def __init__(self):
        self.produced: list[str] = []
        self.calls = 0
        self.transient_failures: Counter = Counter()  # event id -> failures still to give
        self.error: Exception | None = None
        self._offsets = itertools.count()

    def produce(self, *, records, timeout):
        self.calls += 1
        if self.error is not None:
            raise self.error
        results = []
        for record in records:
            self.produced.append(record.event_id)
            encoded = producers.encode_record(record)
            if isinstance(encoded, producers.RecordFailure):
                results.append(encoded)
            elif self.transient_failures[record.event_id] > 0:
                self.transient_failures[record.event_id] -= 1
                results.append(producers.RecordFailure("KafkaTimeoutError: no ack", transient=True))
            else:
                results.append([0, next(self._offsets)])
        return results

    def close(self, *, timeout):
        pass


def batch_of(count, *, poison_at=()):
    return [
        BatchRecord(
            "clicks",
            f"ev-{n}",
            POISON_KEY if n in poison_at else f"k{n}",
            json.dumps({"n": n}),
        )
        for n in range(count)
    ]
