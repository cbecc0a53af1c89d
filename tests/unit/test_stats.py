"""The stats recorder: per-minute counters, their flushes, the overview and pruning."""

import math
import time
from datetime import UTC, datetime

import pytest

from ingest.control import stats
from ingest.models import EventStat

NOON = datetime(2026, 1, 2, 12, 0, tzinfo=UTC).timestamp()


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
    stats.count_accepted(topic="t", source="", protocol="native", events=1, nbytes=1)
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


@pytest.mark.django_db
def test_overview_has_chart_points_and_totals_by_topic(count_a_run):
    count_a_run(at=NOON - 600)
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
