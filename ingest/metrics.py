"""This process's counters and histograms, rendered in the Prometheus text format."""

import bisect
import threading
import time
from collections import Counter

BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 500, 1_000, 2_000, 5_000)
CONFIRM_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CLUSTER_TOTALS_CACHE_S = 5.0


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{name}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for name, value in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


class CounterMetric:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labels = name, help_text, labels
        self._lock = threading.Lock()
        self._values: Counter[tuple] = Counter()

    def inc(self, *label_values, amount: int = 1) -> None:
        with self._lock:
            self._values[label_values] += amount

    def value(self, *label_values) -> int:
        with self._lock:
            return self._values[label_values]

    def render(self) -> list[str]:
        with self._lock:
            values = sorted(self._values.items())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not values and not self.labels:
            values = [((), 0)]
        lines += [f"{self.name}{_labels(self.labels, key)} {value}" for key, value in values]
        return lines


class HistogramMetric:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help_text, buckets
        self._lock = threading.Lock()
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def render(self) -> list[str]:
        with self._lock:
            counts, total_sum = list(self._counts), self._sum
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip((*self.buckets, "+Inf"), counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {cumulative}')
        lines += [f"{self.name}_sum {total_sum}", f"{self.name}_count {cumulative}"]
        return lines


REQUESTS = CounterMetric(
    "ingest_http_requests_total", "HTTP requests answered by this process, by status", ("code",)
)
EVENTS_ACCEPTED = CounterMetric(
    "ingest_events_accepted_total", "Events this process answered 2xx for"
)
REQUESTS_REJECTED = CounterMetric(
    "ingest_requests_rejected_total", "Ingest requests refused, by error code", ("code",)
)
BATCH_SIZE = HistogramMetric(
    "ingest_batch_events", "Events per batch published to the broker", BATCH_SIZE_BUCKETS
)
CONFIRM_SECONDS = HistogramMetric(
    "ingest_publish_confirm_seconds",
    "Seconds from publishing a batch to the broker's confirm",
    CONFIRM_SECONDS_BUCKETS,
)
PUBLISH_ERRORS = CounterMetric("ingest_publish_errors_total", "Batches the broker did not confirm")
LOCAL_METRICS = (
    REQUESTS,
    EVENTS_ACCEPTED,
    REQUESTS_REJECTED,
    BATCH_SIZE,
    CONFIRM_SECONDS,
    PUBLISH_ERRORS,
)

# Worker-side facts, read from the stats table that every process flushes to.
CLUSTER_TOTALS = (
    ("delivered", "ingest_events_delivered_total", "Events delivered to Kafka by all workers"),
    (
        "dead_lettered",
        "ingest_events_dead_lettered_total",
        "Events dead-lettered by all workers",
    ),
    ("producer_errors", "ingest_producer_errors_total", "Failed Kafka produce attempts"),
)


class _ClusterTotals:
    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, int] | None = None
        self._read_at = 0.0

    def get(self) -> dict[str, int] | None:
        with self._lock:
            if self._values is None or time.monotonic() - self._read_at > CLUSTER_TOTALS_CACHE_S:
                from django.db.models import Sum

                from .models import EventStat

                rows = (
                    EventStat.objects.filter(metric__in=[metric for metric, _, _ in CLUSTER_TOTALS])
                    .values("metric")
                    .annotate(total=Sum("value"))
                )
                self._values = {row["metric"]: row["total"] for row in rows}
                self._read_at = time.monotonic()
            return self._values


cluster_totals = _ClusterTotals()


def render(*, backlog: int | None, pending_events: int | None) -> str:
    """Return every metric as Prometheus text; worker totals as flushed to the stats table."""
    lines = []
    for metric in LOCAL_METRICS:
        lines += metric.render()
    for name, help_text, value in (
        ("ingest_backlog_batches", "Batches waiting in the broker for a worker", backlog),
        ("ingest_pending_events", "Events accepted, not yet published", pending_events),
    ):
        if value is not None:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    try:
        totals = cluster_totals.get()
    except Exception:  # the database being down must not hide this process's own metrics
        totals = None
    if totals is not None:
        for metric, name, help_text in CLUSTER_TOTALS:
            lines += [
                f"# HELP {name} {help_text} (as flushed to the stats table)",
                f"# TYPE {name} counter",
                f"{name} {totals.get(metric, 0)}",
            ]
    return "\n".join(lines) + "\n"
