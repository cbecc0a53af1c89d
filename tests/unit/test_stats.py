import json
import logging
import math
import time
from datetime import UTC, datetime

import pytest

from ingest.control import metrics, readiness, stats
from ingest.control.logging import JsonFormatter, request_id_var
from ingest.models import EventStat
from tests.unit.conftest import FakeBacklog

NOON = datetime(2026, 1, 2, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def recorder(settings):
    """This process's recorder, switched on, flushed only when the test says."""
    settings.INGEST_STATS_ENABLED = True
    instance = stats.StatsRecorder(interval_s=3_600, retention_s=86_400)
    stats.get_recorder.replace(instance)
    yield instance
    stats.get_recorder.replace(None)


def values(**filters) -> dict[str, int]:
    return {row.metric: row.value for row in EventStat.objects.filter(**filters).order_by("metric")}


@pytest.mark.django_db
def test_flushes_add_to_existing_rows(recorder):
    recorder.add(topic="t", source="s", values={"accepted": 3, "accepted_bytes": 30}, at=NOON)
    assert recorder.flush() == 2
    recorder.add(topic="t", source="s", values={"accepted": 4}, at=NOON + 59)
    recorder.add(topic="t", source="s", values={"accepted": 1}, at=NOON + 60)
    recorder.flush()
    noon = datetime.fromtimestamp(NOON, tz=UTC)
    assert values(minute=noon) == {"accepted": 7, "accepted_bytes": 30}
    assert values(minute__gt=noon) == {"accepted": 1}
    assert recorder.flush() == 0


@pytest.mark.django_db
def test_two_processes_counting_the_same_minute_add_up(recorder):
    other = stats.StatsRecorder(interval_s=3_600, retention_s=86_400)
    recorder.add(topic="t", source="", values={"delivered": 5}, at=NOON)
    other.add(topic="t", source="", values={"delivered": 6}, at=NOON)
    recorder.flush()
    other.flush()
    assert values(topic="t") == {"delivered": 11}


@pytest.mark.django_db
def test_a_failed_flush_keeps_the_counts_for_the_next(recorder, monkeypatch):
    recorder.add(topic="t", source="", values={"accepted": 2}, at=NOON)

    def fail(counts):
        raise RuntimeError("database away")

    monkeypatch.setattr(stats, "upsert", fail)
    with pytest.raises(RuntimeError):
        recorder.flush()
    monkeypatch.undo()
    recorder.add(topic="t", source="", values={"accepted": 1}, at=NOON)
    recorder.flush()
    assert values(topic="t") == {"accepted": 3}


def test_counting_is_off_without_the_setting(settings):
    settings.INGEST_STATS_ENABLED = False
    stats.count_accepted(topic="t", source="", events=1, nbytes=1)
    assert stats.get_recorder.current() is None


def test_latency_histogram_and_percentiles():
    assert stats.latency_metric(0.004) == "latency_le_5"
    assert stats.latency_metric(0.3) == "latency_le_500"
    assert stats.latency_metric(120) == "latency_le_inf"
    histogram = {"latency_le_10": 90, "latency_le_250": 9, "latency_le_inf": 1}
    assert stats.percentile_ms(histogram, 0.5) == 10
    assert stats.percentile_ms(histogram, 0.95) == 250
    assert stats.percentile_ms(histogram, 0.999) == math.inf
    assert stats.percentile_ms({}, 0.5) is None


def count_a_run(recorder, *, at: float):
    recorder.add(topic="a", source="s", values={"accepted": 10, "accepted_bytes": 100}, at=at)
    recorder.add(topic="a", source="s", values={"rejected:rate_limited": 2}, at=at)
    recorder.add(topic="a", source="", values={"delivered": 9, "latency_le_50": 9}, at=at + 60)
    recorder.add(topic="b", source="", values={"dead_lettered": 1}, at=at + 60)
    recorder.add(topic="", source="", values={"producer_errors": 3}, at=at + 60)
    recorder.flush()


@pytest.mark.django_db
def test_overview_has_chart_points_and_totals_by_topic(recorder):
    count_a_run(recorder, at=NOON - 600)
    overview = stats.overview(span_s=3_600, step_s=60, now=NOON)
    points = overview["points"]
    assert len(points["accepted"]) == 60
    assert sum(points["accepted"]) == 10 and points["accepted"].count(10) == 1
    assert sum(points["delivered"]) == 9 and sum(points["rejected"]) == 2
    assert points["accepted"].index(10) + 1 == points["delivered"].index(9)
    rows = {row["topic"]: row for row in overview["by_topic"]}
    assert rows["a"]["accepted"] == 10 and rows["a"]["bytes"] == 100
    assert rows["a"]["rejected"] == 2 and rows["a"]["delivered"] == 9
    assert rows["a"]["p99_ms"] == 50
    assert rows["b"]["dead_lettered"] == 1
    assert overview["totals"]["accepted"] == 10
    assert overview["totals"]["producer_errors"] == 3
    assert stats.overview(span_s=3_600, step_s=60, now=NOON + 7_200)["totals"]["accepted"] == 0


@pytest.mark.django_db
def test_admin_stats_page_draws_the_chart_and_the_backlog(admin_client, recorder, monkeypatch):
    from ingest import admin

    count_a_run(recorder, at=time.time() - 120)
    monkeypatch.setattr(admin, "queue_depth", lambda: 17)
    response = admin_client.get("/admin/ingest/eventstat/")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('class="point point-accepted"') == 1
    assert 'data-value="10"' in page
    assert '<td id="backlog-depth">17</td>' in page
    assert '<th id="total-accepted">10</th>' in page
    assert "<script" not in page.split('id="chart"')[1].split("</div>")[0]
    assert admin_client.get("/admin/ingest/eventstat/?range=day").status_code == 200


@pytest.mark.django_db
def test_admin_source_creation_shows_the_key_once(admin_client):
    from ingest.control import keys
    from ingest.models import Source

    response = admin_client.post(
        "/admin/ingest/source/add/",
        {"name": "web", "allowed_topics": "clicks", "enabled": "on"},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    (message,) = [message for message in messages if "API key" in message]
    key = message.rsplit(": ", 1)[1]
    assert Source.objects.get(name="web").key_hash == keys.hash_key(key)
    listing = admin_client.get("/admin/ingest/source/").content.decode()
    assert key not in listing and key[:8] in listing


@pytest.mark.django_db
def test_metrics_sum_what_every_process_flushed(client, gateway, recorder, monkeypatch):
    monkeypatch.setattr(metrics, "totals", metrics._Totals())
    client.post("/api/v1/events/clicks", b'[{"n": 1}, {"n": 2}]', content_type="application/json")
    client.post("/api/v1/events/clicks", b"nope", content_type="application/json")
    stats.count_delivered(records=[["clicks", "a", None, "{}"]], accepted_at=time.time() - 0.03)
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
    assert "ingest_stats_readable 1" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2, line


@pytest.mark.django_db
def test_pruning_folds_old_rows_into_totals(recorder):
    old = time.time() - 3 * 86_400
    recorder.add(topic="t", source="", values={"accepted": 5}, at=old)
    recorder.add(topic="t", source="", values={"accepted": 2}, at=time.time())
    recorder.flush()
    assert stats.prune(older_than_s=86_400) == 1
    recorder.add(topic="t", source="", values={"accepted": 1}, at=old - 60)
    recorder.flush()
    stats.prune(older_than_s=86_400)
    assert values(topic="t", minute=datetime.fromtimestamp(0, tz=UTC)) == {"accepted": 6}
    assert sum(row.value for row in EventStat.objects.filter(topic="t")) == 8
    assert stats.overview(span_s=3_600, step_s=60)["totals"]["accepted"] == 2


def probe(**results):
    def check(result):
        def run():
            if isinstance(result, Exception):
                raise result
            if result == "hang":
                time.sleep(1)
            return result

        return run

    return readiness.ReadinessProbe(
        checks={name: check(result) for name, result in results.items()},
        timeout_s=0.2,
        cache_s=0.0,
    )


def backlog(*, depth=None, error=None, read=True):
    """The runtime's backlog monitor as the probe sees it, after a reading or before the first."""
    state = FakeBacklog()
    state.depth, state.error, state.high_water = depth, error, 10
    if not read:
        state.first_read.clear()
    return state


def test_readiness_names_the_failed_checks():
    ok = probe(database={}, kafka={"topics": 1}).report(backlog=backlog(depth=3))
    assert ok["failed"] == [] and ok["status"] == "ready"
    assert list(ok["checks"]) == ["database", "broker", "kafka", "backlog"]
    assert ok["checks"]["broker"] == {"ok": True, "depth": 3}
    report = probe(database={}, kafka=OSError("refused")).report(backlog=backlog(depth=11))
    assert report["failed"] == ["kafka", "backlog"]
    assert report["checks"]["kafka"]["error"] == "OSError: refused"
    assert report["checks"]["backlog"] == {"ok": False, "depth": 11, "high_water": 10}
    started = time.monotonic()
    report = probe(database="hang", kafka={}).report(backlog=backlog(depth=0))
    assert time.monotonic() - started < 0.5
    assert report["failed"] == ["database"]


def test_readiness_reports_what_the_backlog_monitor_read():
    unreachable = backlog(depth=3, error="OSError: refused")
    report = probe(database={}, kafka={}).report(backlog=unreachable)
    assert report["failed"] == ["broker", "backlog"]
    assert report["checks"]["broker"]["error"] == "OSError: refused"
    assert report["checks"]["backlog"]["depth"] is None  # a stale depth is not reported
    started = time.monotonic()
    report = probe(database={}, kafka={}).report(backlog=backlog(read=False))
    assert time.monotonic() - started < 0.5  # waits for a first reading only within the bound
    assert report["failed"] == ["broker", "backlog"]


def test_readyz_answers_503_with_the_failed_check(client, gateway):
    readiness.get_probe.replace(probe(database={}, kafka={}))
    gateway.backlog.error = "OSError: x"
    try:
        response = client.get("/readyz")
    finally:
        readiness.get_probe.replace(None)
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker", "backlog"]


def test_json_log_lines_carry_the_request_id():
    record = logging.makeLogRecord(
        {
            "name": "ingest",
            "levelname": "INFO",
            "msg": "hello %s",
            "args": ("you",),
            "n": 3,
            "data": {"kwargs": "a whole task payload"},
        }
    )
    token = request_id_var.set("req-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "req-1" and line["n"] == 3
    assert "data" not in line


def test_responses_carry_a_request_id(client, gateway):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-Id"] == "abc-123"
    generated = client.get("/healthz", HTTP_X_REQUEST_ID="bad id!")["X-Request-Id"]
    assert len(generated) == 32


def test_openapi_document_is_served(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/api/v1/events/{topic}" in document["paths"]


def test_admin_assets_are_served_without_a_cdn(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")
    assert client.get("/static/admin/css/missing.css").status_code == 404
    outside = client.get("/static/../ingestsite/settings.py")
    assert outside.status_code in (400, 404) and b"SECRET_KEY" not in outside.content


@pytest.mark.django_db
def test_dead_letters_list_their_reason_and_a_payload_preview(admin_client):
    from ingest.models import DeadLetter

    DeadLetter.objects.create(
        batch_id="b1",
        topic="orders",
        reason="MessageSizeTooLargeError: too big",
        event_ids=["e1"],
        records=[["e1", None, '{"id":"e1","sku":"' + "x" * 300 + '"}']],
    )
    page = admin_client.get("/admin/ingest/deadletter/").content.decode()
    assert "MessageSizeTooLargeError: too big" in page
    assert "{&quot;id&quot;:&quot;e1&quot;,&quot;sku&quot;:&quot;xxx" in page
    assert "x" * 200 not in page
    assert 'value="replay"' in page and 'value="purge"' in page


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
