"""Other designs on the same Django app, to compare the gateway with; never routed in production."""

import json
import threading
import time

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ingest.delivery.tasks import deliver_batch
from ingest.edge import parsing
from ingest.ids import uuid7
from ingest.records import BatchRecord, Event

_producer_lock = threading.Lock()
_producer = None


def _events(request) -> list[Event]:
    return parsing.parse_events(
        request.body,
        max_events=settings.INGEST_MAX_EVENTS_PER_REQUEST,
        max_id_length=settings.INGEST_MAX_ID_LENGTH,
        max_record_bytes=settings.KAFKA_MAX_REQUEST_SIZE,
    )


def _accepted(events: list[Event]) -> JsonResponse:
    ids = [event.event_id for event in events]
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
    events = _events(request)
    deliver_batch.delay(
        batch_id=uuid7(),
        records=[BatchRecord(topic, *event) for event in events],
        accepted_at=time.time(),
    )
    return _accepted(events)


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
    events = _events(request)
    producer = _fire_and_forget_producer()
    for event in events:
        producer.send(
            topic,
            value=event.value.encode(),
            key=None if event.key is None else event.key.encode(),
            headers=[("event-id", event.event_id.encode())],
        )
    return _accepted(events)
