"""Per-minute counters by topic, source and protocol: counted in memory, added to the database
in bulk."""

import atexit
import logging
import math
import operator
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Sum

from ..records import BatchRecord
from ..state import per_process

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the delivery-latency histogram buckets; the last one catches the rest.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000)
LATENCY_OVERFLOW = "latency_le_inf"
PRUNE_INTERVAL_S = 600.0

Key = tuple[int, str, str, str, str]  # (minute as unix seconds, topic, source, protocol, metric)


def latency_metric(seconds: float) -> str:
    milliseconds = seconds * 1000
    for bound in LATENCY_BUCKETS_MS:
        if milliseconds <= bound:
            return f"latency_le_{bound}"
    return LATENCY_OVERFLOW


def latency_label(milliseconds: float | None) -> str:
    if milliseconds is None:
        return "–"
    if milliseconds == math.inf:
        return f"> {LATENCY_BUCKETS_MS[-1]}"
    return f"≤ {milliseconds:.0f}"


def percentile_ms(histogram: dict[str, int], fraction: float) -> float | None:
    """Estimate a latency percentile as the upper bound of the bucket it falls into."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = math.ceil(total * fraction)
    seen = 0
    for bound in LATENCY_BUCKETS_MS:
        seen += histogram.get(f"latency_le_{bound}", 0)
        if seen >= rank:
            return float(bound)
    return math.inf


class StatsRecorder:
    """Add to counters under a lock; a daemon thread upserts and clears them every few seconds."""

    def __init__(self, *, interval_s: float, retention_s: float):
        self._interval_s = interval_s
        self._retention_s = retention_s
        self._lock = threading.Lock()
        self._counts: Counter[Key] = Counter()
        self._flush_lock = threading.Lock()
        self._pruned_at = 0.0
        self._thread = threading.Thread(target=self._run, name="ingest-stats", daemon=True)
        self._thread.start()

    def add(
        self,
        *,
        topic: str,
        source: str,
        values: dict[str, int],
        protocol: str = "",
        at: float | None = None,
    ):
        minute = int((time.time() if at is None else at) // 60 * 60)
        with self._lock:
            for metric, value in values.items():
                if value:
                    self._counts[(minute, topic, source, protocol, metric)] += value

    def pending(self) -> dict[Key, int]:
        with self._lock:
            return dict(self._counts)

    def flush(self) -> int:
        """Add what was counted since the last flush to the database; return the rows written."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, Counter()
            if not counts:
                return 0
            try:
                upsert(counts)
            except Exception:
                with self._lock:  # keep the counts for the next try
                    self._counts.update(counts)
                raise
            return len(counts)

    def _run(self) -> None:
        while True:
            time.sleep(self._interval_s)
            try:
                self.flush()
                if time.monotonic() - self._pruned_at > PRUNE_INTERVAL_S:
                    self._pruned_at = time.monotonic()
                    prune(older_than_s=self._retention_s)
            except Exception as error:  # the database may come back; the counts wait in memory
                logger.warning("flushing stats failed: %r", error)
                close_old_connections()


def upsert(counts: dict[Key, int]) -> None:
    """Add each count to its row, creating rows as needed (PostgreSQL and SQLite alike)."""
    # Imported here: logging's middleware imports this module while Django configures
    # logging, before the app registry is ready for models.
    from ..models import EventStat

    table = connection.ops.quote_name(EventStat._meta.db_table)
    sql = (
        f"INSERT INTO {table} (minute, topic, source, protocol, metric, value) "
        f"VALUES (%s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (minute, topic, source, protocol, metric) "
        f"DO UPDATE SET value = {table}.value + excluded.value"
    )
    rows = [
        (minute_value(minute), topic, source, protocol, metric, value)
        for (minute, topic, source, protocol, metric), value in sorted(counts.items())
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def minute_value(minute: int):
    return connection.ops.adapt_datetimefield_value(datetime.fromtimestamp(minute, tz=UTC))


def prune(*, older_than_s: float) -> int:
    """Fold rows past the retention into one row per counter at the epoch, so totals never drop."""
    from ..models import EventStat  # see upsert: no models while logging is configured

    table = connection.ops.quote_name(EventStat._meta.db_table)
    cutoff = minute_value(int(time.time() - older_than_s) // 60 * 60)
    epoch = minute_value(0)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (minute, topic, source, protocol, metric, value) "
            f"SELECT %s, topic, source, protocol, metric, SUM(value) FROM {table} "
            f"WHERE minute < %s AND minute > %s GROUP BY topic, source, protocol, metric "
            f"ON CONFLICT (minute, topic, source, protocol, metric) "
            f"DO UPDATE SET value = {table}.value + excluded.value",
            [epoch, cutoff, epoch],
        )
        cursor.execute(f"DELETE FROM {table} WHERE minute < %s AND minute > %s", [cutoff, epoch])
        return cursor.rowcount


@per_process
def get_recorder() -> StatsRecorder | None:
    """Return this process's recorder, started on first use; None when stats are off."""
    if not settings.INGEST_STATS_ENABLED:
        return None
    recorder = StatsRecorder(
        interval_s=settings.INGEST_STATS_FLUSH_INTERVAL_S,
        retention_s=settings.INGEST_STATS_RETENTION_DAYS * 86_400,
    )
    atexit.register(flush_quietly)
    return recorder


def flush_quietly() -> None:
    """Flush this process's counters at shutdown; a failure is logged, never raised."""
    recorder = get_recorder.current()
    if recorder is None:
        return
    try:
        recorder.flush()
    except Exception as error:
        logger.warning("flushing stats at shutdown failed: %r", error)


def _add(*, topic: str, source: str, values: dict[str, int], protocol: str = "") -> None:
    recorder = get_recorder()
    if recorder is not None:
        recorder.add(topic=topic, source=source, protocol=protocol, values=values)


def count_accepted(*, topic: str, source: str, protocol: str, events: int, nbytes: int) -> None:
    _add(
        topic=topic,
        source=source,
        protocol=protocol,
        values={"accepted": events, "accepted_bytes": nbytes},
    )


def count_rejected(*, topic: str, source: str, protocol: str, code: str) -> None:
    _add(topic=topic, source=source, protocol=protocol, values={f"rejected:{code}": 1})


_ORIGIN = operator.itemgetter(
    *(BatchRecord._fields.index(name) for name in ("topic", "source", "protocol"))
)


def _by_origin(records: list[BatchRecord]) -> Counter:
    return Counter(map(_ORIGIN, records))


def count_delivered(*, records: list[BatchRecord], accepted_at: float) -> None:
    """Count delivered events per topic, source and protocol with their accept-to-Kafka-ack
    latency."""
    seconds = max(0.0, time.time() - accepted_at)
    latency = latency_metric(seconds)
    for (topic, source, protocol), events in _by_origin(records).items():
        values = {"delivered": events, latency: events}
        _add(
            topic=topic,
            source=source,
            protocol=protocol,
            values={**values, "latency_ms_sum": round(seconds * 1000 * events)},
        )


def count_dead_lettered(*, records: list[BatchRecord]) -> None:
    for (topic, source, protocol), events in _by_origin(records).items():
        _add(topic=topic, source=source, protocol=protocol, values={"dead_lettered": events})


def count_producer_error() -> None:
    _add(topic="", source="", values={"producer_errors": 1})


def count_process_metrics(values: dict[str, int]) -> None:
    """Count gateway-wide facts that belong to no topic (HTTP statuses, publishes)."""
    _add(topic="", source="", values=values)


RANGES = {"hour": (3_600, 60), "day": (86_400, 600)}  # name: (span, seconds per point)
CHART_METRICS = ("accepted", "delivered", "rejected")
TOPIC_SERIES = (*CHART_METRICS, "accepted_bytes", "dead_lettered", "producer_errors")
TOTALS = ("accepted", "rejected", "delivered", "dead_lettered", "bytes")


def _series_metric(metric: str) -> str:
    return "rejected" if metric.startswith("rejected:") else metric


def overview(*, span_s: int, step_s: int, now: float | None = None) -> dict:
    """Sum the stats of the last `span_s` seconds: points for the chart and totals by topic."""
    from ..models import EventStat  # see upsert: no models while logging is configured

    now = time.time() if now is None else now
    end = int(now // step_s * step_s) + step_s
    start = end - span_s
    rows = (
        EventStat.objects.filter(minute__gte=datetime.fromtimestamp(start, tz=UTC))
        .values("minute", "topic", "metric")
        .annotate(total=Sum("value"))
    )
    points = {name: [0] * (span_s // step_s) for name in CHART_METRICS}
    topics: dict[str, Counter] = {}
    latency: dict[str, dict[str, int]] = {}
    producer_errors = 0
    for row in rows:
        metric, total = row["metric"], row["total"]
        series = _series_metric(metric)
        if series in points:
            index = (int(row["minute"].timestamp()) - start) // step_s
            if 0 <= index < len(points[series]):
                points[series][index] += total
        if series not in TOPIC_SERIES and not metric.startswith("latency_le_"):
            continue
        if metric.startswith("latency_le_"):
            histogram = latency.setdefault(row["topic"], {})
            histogram[metric] = histogram.get(metric, 0) + total
        elif series == "producer_errors":
            producer_errors += total
        else:
            topics.setdefault(row["topic"], Counter())[series] += total
    by_topic = []
    for topic in sorted(topics):
        counts = topics[topic]
        histogram = latency.get(topic, {})
        by_topic.append(
            {
                "topic": topic or "(none)",
                **{name: counts[name] for name in ("accepted", "rejected", "delivered")},
                "dead_lettered": counts["dead_lettered"],
                "bytes": counts["accepted_bytes"],
                "p50_ms": percentile_ms(histogram, 0.50),
                "p95_ms": percentile_ms(histogram, 0.95),
                "p99_ms": percentile_ms(histogram, 0.99),
            }
        )
        by_topic[-1].update(
            {
                f"{name}_label": latency_label(by_topic[-1][f"{name}_ms"])
                for name in ("p50", "p95", "p99")
            }
        )
    totals = Counter(dict.fromkeys(TOTALS, 0))
    for row in by_topic:
        totals.update({name: row[name] for name in TOTALS})
    return {
        "start": start,
        "step_s": step_s,
        "points": points,
        "by_topic": by_topic,
        "by_origin": _by_protocol_and_source(since=start),
        "totals": {**totals, "producer_errors": producer_errors},
    }


ORIGIN_COUNTS = ("accepted", "rejected", "delivered", "dead_lettered")


def _by_protocol_and_source(*, since: int) -> list[dict]:
    """Sum events by the protocol and source they came in by, since a unix time."""
    from ..models import EventStat  # see upsert: no models while logging is configured

    rows = (
        EventStat.objects.filter(minute__gte=datetime.fromtimestamp(since, tz=UTC))
        .exclude(protocol="")
        .values("protocol", "source", "metric")
        .annotate(total=Sum("value"))
    )
    origins: dict[tuple[str, str], Counter] = {}
    for row in rows:
        series = _series_metric(row["metric"])
        if series in ORIGIN_COUNTS:
            origins.setdefault((row["protocol"], row["source"]), Counter())[series] += row["total"]
    return [
        {
            "protocol": protocol,
            "source": source or "(anonymous)",
            **{name: counts[name] for name in ORIGIN_COUNTS},
        }
        for (protocol, source), counts in sorted(origins.items())
    ]
