"""Other designs on the same Django app, to compare the gateway with; never routed in production."""

import json
import threading
import time

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ingest import parsing
from ingest.delivery.tasks import deliver_batch
from ingest.ids import uuid7

_producer_lock = threading.Lock()
_producer = None


def _records(request) -> list[parsing.Record]:
    return parsing.parse_records(
        request.body,
        max_events=settings.INGEST_MAX_EVENTS_PER_REQUEST,
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )


def _accepted(records: list[parsing.Record]) -> JsonResponse:
    ids = [record.event_id for record in records]
    return JsonResponse({"accepted": len(ids), "ids": ids}, status=202)


@csrf_exempt
def bare(request, topic: str):
    """Parse the body and answer 202 with its id: the ceiling of Django under the same server."""
    # The id in the answer lets the load generator time each request; parsing ~200 bytes of
    # JSON costs microseconds against Django's hundreds.
    event = json.loads(request.body)
    return JsonResponse({"accepted": 1, "ids": [event.get("id")]}, status=202)


@csrf_exempt
def delay_per_request(request, topic: str):
    """The seed design: one Celery task per request, published with confirms before the 202."""
    records = _records(request)
    deliver_batch.delay(
        batch_id=uuid7(),
        records=[[topic, record.event_id, record.key, record.value] for record in records],
        accepted_at=time.time(),
    )
    return _accepted(records)


def _fire_and_forget_producer():
    global _producer
    with _producer_lock:
        if _producer is None:
            from kafka import KafkaProducer

            # kafka-python defaults (acks=1), as the seed used it; nobody waits for the result.
            _producer = KafkaProducer(bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS)
        return _producer


@csrf_exempt
def fire_and_forget(request, topic: str):
    """The other seed design: send to Kafka from the view and answer without waiting."""
    records = _records(request)
    producer = _fire_and_forget_producer()
    for record in records:
        producer.send(
            topic,
            value=record.value.encode(),
            key=None if record.key is None else record.key.encode(),
            headers=[("event-id", record.event_id.encode())],
        )
    return _accepted(records)
