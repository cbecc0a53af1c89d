"""Turn wrk runs and open-loop samples into the figures of the report."""

import bisect
import math
from collections import Counter

from .loadgen import OpenLoopRun, WrkRun

REPORTED_PERCENTILES = (50, 90, 95, 99, 99.9)
HISTOGRAM_BINS = 40


def _cdf(run: WrkRun) -> list[tuple[float, float]]:
    """(latency ms, fraction at most) points of one run, from wrk's exact percentiles."""
    return [(run.min_ms, 0.0), *((ms, p / 100) for p, ms in run.percentiles), (run.max_ms, 1.0)]


def _fraction_at_most(points: list[tuple[float, float]], latency_ms: float) -> float:
    if latency_ms < points[0][0]:
        return 0.0
    for (x0, f0), (x1, f1) in zip(points, points[1:], strict=False):
        if latency_ms <= x1:
            return f1 if x1 == x0 else f0 + (f1 - f0) * (latency_ms - x0) / (x1 - x0)
    return 1.0


class MergedLatency:
    """The latency distribution of several wrk runs, weighted by their request counts."""

    def __init__(self, runs: list[WrkRun]):
        self.parts = [(run.requests, _cdf(run)) for run in runs if run.requests]
        self.total = sum(count for count, _ in self.parts)
        self.max_ms = max((points[-1][0] for _, points in self.parts), default=0.0)

    def fraction_at_most(self, latency_ms: float) -> float:
        weighted = sum(n * _fraction_at_most(points, latency_ms) for n, points in self.parts)
        return weighted / self.total if self.total else 0.0

    def percentile(self, p: float) -> float:
        low, high = 0.0, self.max_ms
        for _ in range(50):
            middle = (low + high) / 2
            if self.fraction_at_most(middle) < p / 100:
                low = middle
            else:
                high = middle
        return high


def histogram_from_sorted(values: list[float]) -> list[dict]:
    """Share of values in log-spaced latency bins."""
    if not values:
        return []
    low = max(0.05, values[0] * 0.99)
    high = max(low * 1.01, values[-1] * 1.001)
    ratio = (high / low) ** (1 / HISTOGRAM_BINS)
    edges = [low * ratio**i for i in range(HISTOGRAM_BINS + 1)]
    counts = [bisect.bisect_right(values, edge) for edge in edges]
    return [
        {"from_ms": a, "to_ms": b, "share": (n1 - n0) / len(values)}
        for a, b, n0, n1 in zip(edges, edges[1:], counts, counts[1:], strict=False)
    ]


def _apdex(latencies: list[float], *, answers: int, apdex_ms: float) -> float:
    """APDEX over every answer and unanswered request: only 2xx answers can satisfy."""
    satisfied = bisect.bisect_right(latencies, apdex_ms)
    tolerating = bisect.bisect_right(latencies, 4 * apdex_ms) - satisfied
    return (satisfied + tolerating / 2) / answers if answers else 0.0


def summarize_runs(
    runs: list[WrkRun],
    *,
    events_per_request: int,
    apdex_ms: float,
    warmup_s: float,
    bucket_s: float,
) -> dict:
    """Totals, steady rates, percentiles, APDEX and time series of one scenario's wrk runs."""
    statuses: Counter = Counter()
    socket_errors: Counter = Counter()
    for run in runs:
        statuses.update(run.statuses)
        socket_errors.update(run.socket_errors)
    requests = sum(run.requests for run in runs)
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    # wrk counts a connection the server closes after an answer as a read error: not a failure.
    unanswered = socket_errors["timeout"] + socket_errors["connect"]
    # Rates count answers after a warm-up of each run: a closed loop starts with every
    # connection sending at once and wrk drops the answers still in flight when it stops.
    window_s = steady_ok = steady_answers = 0.0
    latencies: list[float] = []
    series, elapsed = [], 0.0
    for run in runs:
        warmup = min(warmup_s, run.duration_s / 4)
        window_s += run.duration_s - warmup
        buckets = max(1, round(run.duration_s / bucket_s))
        width = run.duration_s / buckets
        per_bucket: list[list] = [[0, 0, []] for _ in range(buckets)]
        for done, status, latency in zip(run.done_s, run.status_of, run.latency_ms, strict=True):
            is_ok = 200 <= status < 300
            if warmup <= done <= run.duration_s:
                steady_answers += 1
                steady_ok += is_ok
            bucket = per_bucket[min(buckets - 1, max(0, int(done / width)))]
            bucket[0] += 1
            bucket[1] += is_ok
            if is_ok and latency is not None:
                bucket[2].append(latency)
                latencies.append(latency)
        for index, (answers, oks, values) in enumerate(per_bucket):
            values.sort()
            series.append(
                {
                    "t_s": round(elapsed + (index + 0.5) * width, 3),
                    "ok_per_s": oks / width,
                    "answers_per_s": answers / width,
                    "events_per_s": oks * events_per_request / width,
                    **{f"p{p}_ms": _percentile_sorted(values, p) for p in (50, 90, 99)},
                    "max_ms": values[-1] if values else None,
                }
            )
        elapsed += run.duration_s
    latencies.sort()
    merged = MergedLatency(runs)
    duration = sum(run.duration_s for run in runs)
    ok_per_s = steady_ok / window_s if window_s else 0.0
    return {
        "duration_s": duration,
        "steady_window_s": window_s,
        "requests": requests,
        "ok": ok,
        "ok_per_s": ok_per_s,
        "answers_per_s": steady_answers / window_s if window_s else 0.0,
        "events_per_s": ok_per_s * events_per_request,
        "accepted_events": sum(run.accepted_events for run in runs),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "socket_errors": dict(socket_errors),
        "percentiles_ms": {str(p): merged.percentile(p) for p in REPORTED_PERCENTILES},
        "max_ms": merged.max_ms,
        "mean_ms": sum(run.mean_ms * run.requests for run in runs) / requests if requests else 0,
        "ok_percentiles_ms": {
            str(p): _percentile_sorted(latencies, p) for p in REPORTED_PERCENTILES
        },
        "latency_samples": len(latencies),
        "apdex": _apdex(latencies, answers=requests + unanswered, apdex_ms=apdex_ms),
        "histogram": histogram_from_sorted(latencies),
        "series": series,
        "load_average": [run.load_average for run in runs],
    }


def _percentile_sorted(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    rank = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
    return values[rank]


def summarize_open_loop(run: OpenLoopRun, *, apdex_ms: float) -> dict:
    """Exact figures of a fixed-rate run; latency counts from each request's intended send time."""
    latencies = sorted(run.latency_ms)
    service = sorted(run.service_ms)
    statuses = Counter(run.statuses)
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    failed_or_error = len(run.statuses) - ok
    satisfied = tolerating = 0
    for latency, status in zip(run.latency_ms, run.statuses, strict=True):
        if not 200 <= status < 300:
            continue
        if latency <= apdex_ms:
            satisfied += 1
        elif latency <= 4 * apdex_ms:
            tolerating += 1
    total = len(run.statuses)
    seconds = max(1, math.ceil(run.seconds))
    per_second: list[list[float]] = [[] for _ in range(seconds)]
    completed: Counter = Counter()
    for intended, latency, status in zip(run.intended_s, run.latency_ms, run.statuses, strict=True):
        per_second[min(seconds - 1, max(0, int(intended)))].append(latency)
        if 200 <= status < 300:
            completed[int(intended + latency / 1000)] += 1
    series = []
    for second, values in enumerate(per_second):
        values.sort()
        series.append(
            {
                "t_s": second + 0.5,
                "ok_per_s": completed[second],
                "sent_per_s": len(values),
                "p50_ms": _percentile_sorted(values, 50),
                "p90_ms": _percentile_sorted(values, 90),
                "p99_ms": _percentile_sorted(values, 99),
                "max_ms": values[-1] if values else 0.0,
            }
        )

    return {
        "rate": run.rate,
        "planned_s": run.seconds,
        "wall_s": run.wall_s,
        "connections": run.connections,
        "requests": total,
        "ok": ok,
        "ok_per_s": ok / run.wall_s if run.wall_s else 0.0,
        "late_sends": run.late_sends,
        "max_schedule_lag_ms": run.max_schedule_lag_ms,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "percentiles_ms": {str(p): _percentile_sorted(latencies, p) for p in REPORTED_PERCENTILES},
        "max_ms": latencies[-1] if latencies else 0.0,
        "service_percentiles_ms": {
            str(p): _percentile_sorted(service, p) for p in REPORTED_PERCENTILES
        },
        "apdex": (satisfied + tolerating / 2) / total if total else 0.0,
        "errors": failed_or_error,
        "histogram": histogram_from_sorted(latencies),
        "series": series,
    }
