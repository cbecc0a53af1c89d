"""The /metrics endpoint and the gateway-wide totals it reports."""

import os
import time

import pytest

from ingest.control import metrics, stats
from ingest.records import BatchRecord


@pytest.mark.django_db
def test_metrics_sum_what_every_process_flushed(client, gateway, recorder, monkeypatch):
    monkeypatch.setattr(metrics, "totals", metrics._Totals())
    client.post("/api/v1/events/clicks", b'[{"n": 1}, {"n": 2}]', content_type="application/json")
    client.post("/api/v1/events/clicks", b"nope", content_type="application/json")
    stats.count_delivered(
        records=[BatchRecord("clicks", "a", None, "{}")], accepted_at=time.time() - 0.03
    )
    metrics.observe_publish(events=2, seconds=0.004)
    recorder.flush()
    other_process = stats.StatsRecorder(interval_s=3_600, retention_s=86_400)
    other_process.add(topic="", source="", values={"http_requests:202": 5, "delivered": 0})
    other_process.flush()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert 'ingest_http_requests_total{code="202"} 6' in text
    assert 'ingest_http_requests_total{code="400"} 1' in text
    assert 'ingest_requests_rejected_total{code="invalid_json"} 1' in text
    assert "ingest_events_accepted_total 2" in text
    assert "ingest_events_delivered_total 1" in text
    assert 'ingest_batch_events_bucket{le="1"} 0' in text
    assert 'ingest_batch_events_bucket{le="5"} 1' in text
    assert "ingest_batch_events_sum 2" in text
    assert 'ingest_delivery_latency_seconds_bucket{le="0.025"} 0' in text
    assert 'ingest_delivery_latency_seconds_bucket{le="0.05"} 1' in text
    assert "ingest_publish_confirm_seconds_count 1" in text
    assert "ingest_backlog_batches 0" in text
    # The fixture's batcher holds its whole 1 ms window.
    assert f'ingest_batch_window_seconds{{pid="{os.getpid()}"}} 0.001' in text
    assert "ingest_stats_readable 1" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2, line


@pytest.mark.django_db
def test_metric_totals_add_settled_and_recent_minutes(recorder, monkeypatch):
    monkeypatch.setattr(metrics, "TOTALS_CACHE_S", 0.0)
    totals = metrics._Totals()
    recorder.add(topic="t", source="", values={"delivered": 4}, at=time.time() - 3_600)
    recorder.add(topic="t", source="", values={"delivered": 3}, at=time.time())
    recorder.flush()
    assert totals.get()["delivered"] == 7
    recorder.add(topic="t", source="", values={"delivered": 2}, at=time.time())
    recorder.flush()
    assert totals.get()["delivered"] == 9
    stats.prune(older_than_s=1_800)  # folding old rows into the epoch changes no total
    recorder.add(topic="u", source="", values={"delivered": 1}, at=time.time())
    recorder.flush()
    assert metrics._Totals().get()["delivered"] == totals.get()["delivered"] == 10


@pytest.mark.django_db
def test_metrics_count_events_by_protocol_and_outcome(client, recorder, monkeypatch):
    monkeypatch.setattr(metrics, "totals", metrics._Totals())
    for protocol, accepted in (("native", 3), ("segment", 5)):
        stats.count_accepted(
            topic="t", source="s", protocol=protocol, events=accepted, nbytes=10 * accepted
        )
    stats.count_rejected(topic="t", source="s", protocol="segment", code="unauthorized")
    stats.count_delivered(
        records=[BatchRecord("t", "a", None, "{}", "s", "segment")] * 4, accepted_at=time.time()
    )
    stats.count_dead_lettered(records=[BatchRecord("t", "b", None, "{}", "s", "posthog")])
    recorder.flush()
    text = client.get("/metrics").content.decode()
    assert 'ingest_protocol_events_total{protocol="native",outcome="accepted"} 3' in text
    assert 'ingest_protocol_events_total{protocol="segment",outcome="accepted"} 5' in text
    assert 'ingest_protocol_events_total{protocol="segment",outcome="rejected"} 1' in text
    assert 'ingest_protocol_events_total{protocol="segment",outcome="delivered"} 4' in text
    assert 'ingest_protocol_events_total{protocol="posthog",outcome="dead_lettered"} 1' in text
    assert "ingest_events_accepted_total 8" in text
