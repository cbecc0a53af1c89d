"""Prometheus metrics of the whole gateway, summed from the counters every process flushes.

Server processes share one port, so a scrape reaches any one of them: each process counts in
memory (ingest.control.stats), flushes to the stats table every few seconds, and /metrics sums the
table. Counters lag by the flush interval and never drop (pruning folds old rows into totals).
"""

import os
import threading
import time
from collections import Counter
from datetime import UTC, datetime

from django.db.models import Sum

from . import stats

BATCH_EVENTS_BUCKETS = (1, 5, 10, 50, 100, 500, 1_000, 2_000, 5_000)
CONFIRM_MS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000)
TOTALS_CACHE_S = 2.0
# A flush can still add to a minute this long after it ended (a database briefly away).
SETTLED_S = 600.0

COUNTERS = {
    # stats metric: (Prometheus name, help)
    "accepted": ("ingest_events_accepted_total", "Events answered with 2xx"),
    "accepted_bytes": ("ingest_event_bytes_accepted_total", "Bytes of the events answered 2xx"),
    "delivered": ("ingest_events_delivered_total", "Events acknowledged by Kafka"),
    "dead_lettered": ("ingest_events_dead_lettered_total", "Events given up on, kept in the DB"),
    "producer_errors": ("ingest_producer_errors_total", "Failed Kafka produce attempts"),
    "publish_errors": ("ingest_publish_errors_total", "Batches the broker did not confirm"),
}
LABELLED_COUNTERS = {
    # stats metric prefix: (Prometheus name, label, help)
    "http_requests:": ("ingest_http_requests_total", "code", "HTTP answers by status"),
    "rejected:": ("ingest_requests_rejected_total", "code", "Ingest requests refused, by error"),
}
# Events counted per protocol (native, segment, posthog, snowplow, confluent) and outcome.
PROTOCOL_PREFIX = "protocol:"
PROTOCOL_OUTCOMES = ("accepted", "rejected", "delivered", "dead_lettered")
PROTOCOL_COUNTER = (
    "ingest_protocol_events_total",
    "Events by the protocol they came in by and outcome (rejected: requests)",
)
HISTOGRAMS = {
    # stats metric prefix: (Prometheus name, bounds, scale to the unit, help)
    "batch_events": (
        "ingest_batch_events",
        BATCH_EVENTS_BUCKETS,
        1,
        "Events per batch published to the broker",
    ),
    "confirm_ms": (
        "ingest_publish_confirm_seconds",
        CONFIRM_MS_BUCKETS,
        0.001,
        "Seconds from publishing a batch to the broker's confirm",
    ),
    "latency": (
        "ingest_delivery_latency_seconds",
        stats.LATENCY_BUCKETS_MS,
        0.001,
        "Seconds from accepting an event to Kafka's acknowledgement",
    ),
}


def bucket_metric(prefix: str, bounds: tuple, value: float) -> str:
    for bound in bounds:
        if value <= bound:
            return f"{prefix}_le_{bound}"
    return f"{prefix}_le_inf"


def count_request(status: int) -> None:
    stats.count_process_metrics({f"http_requests:{status}": 1})


def observe_publish(*, events: int, seconds: float) -> None:
    milliseconds = seconds * 1000
    stats.count_process_metrics(
        {
            bucket_metric("batch_events", BATCH_EVENTS_BUCKETS, events): 1,
            "batch_events_sum": events,
            bucket_metric("confirm_ms", CONFIRM_MS_BUCKETS, milliseconds): 1,
            "confirm_ms_sum": round(milliseconds),
        }
    )


def count_publish_error() -> None:
    stats.count_process_metrics({"publish_errors": 1})


def _sum_by_metric(**filters) -> Counter:
    """Sum each metric, and each protocol's events by outcome as "protocol:<name>:<outcome>"."""
    from ..models import EventStat  # see stats.upsert: no models while logging is configured

    rows = (
        EventStat.objects.filter(**filters)
        .values("protocol", "metric")
        .annotate(total=Sum("value"))
    )
    sums = Counter()
    for row in rows:
        metric, total = row["metric"], row["total"]
        sums[metric] += total
        outcome = "rejected" if metric.startswith("rejected:") else metric
        if row["protocol"] and outcome in PROTOCOL_OUTCOMES:
            sums[f"{PROTOCOL_PREFIX}{row['protocol']}:{outcome}"] += total
    return sums


class _Totals:
    """Every counter of the stats table summed, read at most once per TOTALS_CACHE_S.

    Minutes older than SETTLED_S no longer change (pruning only folds them into other rows),
    so their sums are read once per SETTLED_S and each scrape adds only the recent minutes.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, int] | None = None
        self._read_at = 0.0
        self._settled: Counter | None = None
        self._settled_before: datetime | None = None
        self._settled_at = 0.0

    def get(self) -> dict[str, int]:
        with self._lock:
            now = time.monotonic()
            if self._values is not None and now - self._read_at <= TOTALS_CACHE_S:
                return self._values
            if self._settled is None or now - self._settled_at > SETTLED_S:
                cutoff = datetime.fromtimestamp((time.time() - SETTLED_S) // 60 * 60, tz=UTC)
                self._settled = _sum_by_metric(minute__lt=cutoff)
                self._settled_before, self._settled_at = cutoff, now
            self._values = dict(self._settled + _sum_by_metric(minute__gte=self._settled_before))
            self._read_at = now
            return self._values


totals = _Totals()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram(name: str, prefix: str, bounds: tuple, scale: float, values: dict) -> list[str]:
    lines, cumulative = [], 0
    for bound in (*bounds, "inf"):
        cumulative += values.get(f"{prefix}_le_{bound}", 0)
        label = "+Inf" if bound == "inf" else f"{bound * scale:g}"
        lines.append(f'{name}_bucket{{le="{label}"}} {cumulative}')
    total = values.get(f"{prefix}_ms_sum" if prefix == "latency" else f"{prefix}_sum", 0)
    lines += [f"{name}_sum {total * scale:g}", f"{name}_count {cumulative}"]
    return lines


def render(*, backlog: int | None, pending_events: int | None, batch_window_s: float) -> str:
    """Return the gateway's metrics as Prometheus text."""
    try:
        values, readable = totals.get(), 1
    except Exception:  # the database is away: the gauges still tell something
        values, readable = {}, 0
    name = "ingest_stats_readable"
    lines = [f"# HELP {name} Whether the counters below could be read from the stats table"]
    lines += [f"# TYPE {name} gauge", f"{name} {readable}"]
    for metric, (name, help_text) in COUNTERS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines.append(f"{name} {values.get(metric, 0)}")
    for prefix, (name, label, help_text) in LABELLED_COUNTERS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [
            f'{name}{{{label}="{_escape(metric[len(prefix) :])}"}} {value}'
            for metric, value in sorted(values.items())
            if metric.startswith(prefix)
        ]
    name, help_text = PROTOCOL_COUNTER
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for metric, value in sorted(values.items()):
        if metric.startswith(PROTOCOL_PREFIX):
            protocol, outcome = metric[len(PROTOCOL_PREFIX) :].rsplit(":", 1)
            lines.append(f'{name}{{protocol="{_escape(protocol)}",outcome="{outcome}"}} {value}')
    for prefix, (name, bounds, scale, help_text) in HISTOGRAMS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        lines += _histogram(name, prefix, bounds, scale, values)
    if backlog is not None:
        name = "ingest_backlog_batches"
        lines += [f"# HELP {name} Batches waiting in the broker for a worker"]
        lines += [f"# TYPE {name} gauge", f"{name} {backlog}"]
    if pending_events is not None:
        name = "ingest_pending_events"
        lines += [f"# HELP {name} Events accepted by the answering process, not yet published"]
        lines += [f"# TYPE {name} gauge", f'{name}{{pid="{os.getpid()}"}} {pending_events}']
    name = "ingest_batch_window_seconds"
    lines += [f"# HELP {name} The answering process's batch window; 0 while the workers keep up"]
    lines += [f"# TYPE {name} gauge", f'{name}{{pid="{os.getpid()}"}} {batch_window_s:g}']
    return "\n".join(lines) + "\n"
