"""Turn wrk slices and open-loop samples into the figures of the report."""

import bisect
import math
from collections import Counter

from .loadgen import OpenLoopRun, Slice

REPORTED_PERCENTILES = (50, 90, 95, 99, 99.9)
HISTOGRAM_BINS = 40


def _cdf(slice_: Slice) -> list[tuple[float, float]]:
    """(latency ms, fraction at most) points of one slice, from wrk's exact percentiles."""
    points = [(slice_.min_ms, 0.0)]
    points += [(ms, p / 100) for p, ms in slice_.percentiles]
    points.append((slice_.max_ms, 1.0))
    return points


def _fraction_at_most(points: list[tuple[float, float]], latency_ms: float) -> float:
    if latency_ms < points[0][0]:
        return 0.0
    for (x0, f0), (x1, f1) in zip(points, points[1:], strict=False):
        if latency_ms <= x1:
            return f1 if x1 == x0 else f0 + (f1 - f0) * (latency_ms - x0) / (x1 - x0)
    return 1.0


class MergedLatency:
    """The latency distribution of several slices, weighted by their request counts."""

    def __init__(self, slices: list[Slice]):
        self.parts = [(s.requests, _cdf(s)) for s in slices if s.requests]
        self.total = sum(count for count, _ in self.parts)
        self.min_ms = min((points[0][0] for _, points in self.parts), default=0.0)
        self.max_ms = max((points[-1][0] for _, points in self.parts), default=0.0)

    def fraction_at_most(self, latency_ms: float) -> float:
        if not self.total:
            return 0.0
        weighted = sum(
            count * _fraction_at_most(points, latency_ms) for count, points in self.parts
        )
        return weighted / self.total

    def percentile(self, p: float) -> float:
        low, high = self.min_ms, self.max_ms
        for _ in range(50):
            middle = (low + high) / 2
            if self.fraction_at_most(middle) < p / 100:
                low = middle
            else:
                high = middle
        return high

    def histogram(self) -> list[dict]:
        return histogram_from_cdf(self.fraction_at_most, self.min_ms, self.max_ms)


def histogram_from_cdf(fraction_at_most, low_ms: float, high_ms: float) -> list[dict]:
    """Share of answers in log-spaced latency bins."""
    low = max(0.05, low_ms * 0.99)
    high = max(low * 1.01, high_ms * 1.001)
    ratio = (high / low) ** (1 / HISTOGRAM_BINS)
    edges = [low * ratio**i for i in range(HISTOGRAM_BINS + 1)]
    return [
        {"from_ms": a, "to_ms": b, "share": max(0.0, fraction_at_most(b) - fraction_at_most(a))}
        for a, b in zip(edges, edges[1:], strict=False)
    ]


def apdex(
    *, answered: float, satisfied: float, tolerating: float, errors: float, unanswered: float
):
    """APDEX where every error counts as frustrated; error answers leave the fast buckets first."""
    total = answered + unanswered
    satisfied_ok = max(0.0, satisfied - errors)
    tolerating_ok = max(0.0, tolerating - max(0.0, errors - satisfied))
    return (satisfied_ok + tolerating_ok / 2) / total if total else 0.0


def summarize_slices(slices: list[Slice], *, events_per_request: int) -> dict:
    """Totals, rates, merged percentiles, APDEX and series of one scenario's wrk slices."""
    duration = sum(s.duration_s for s in slices)
    requests = sum(s.requests for s in slices)
    statuses: Counter = Counter()
    socket_errors: Counter = Counter()
    for s in slices:
        statuses.update(s.statuses)
        socket_errors.update(s.socket_errors)
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    merged = MergedLatency(slices)
    satisfied = sum(s.apdex_le_t * s.requests for s in slices)
    within_4t = sum(s.apdex_le_4t * s.requests for s in slices)
    unanswered = socket_errors["timeout"] + socket_errors["read"] + socket_errors["connect"]
    accepted_events = sum(s.accepted_events for s in slices)
    elapsed, series = 0.0, []
    for s in slices:
        series.append(
            {
                "t_s": round(elapsed + s.duration_s / 2, 2),
                "ok_per_s": s.ok / s.duration_s,
                "requests_per_s": s.requests / s.duration_s,
                "events_per_s": s.accepted_events / s.duration_s,
                "p50_ms": dict(s.percentiles).get(50.0),
                "p90_ms": dict(s.percentiles).get(90.0),
                "p99_ms": dict(s.percentiles).get(99.0),
                "max_ms": s.max_ms,
                "load_average": s.load_average,
            }
        )
        elapsed += s.duration_s
    return {
        "duration_s": duration,
        "requests": requests,
        "ok": ok,
        "requests_per_s": requests / duration if duration else 0.0,
        "ok_per_s": ok / duration if duration else 0.0,
        "accepted_events": accepted_events,
        "events_per_s": accepted_events / duration if duration else 0.0,
        "expected_events_per_ok": events_per_request,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "socket_errors": dict(socket_errors),
        "percentiles_ms": {str(p): merged.percentile(p) for p in REPORTED_PERCENTILES},
        "max_ms": merged.max_ms,
        "mean_ms": (sum(s.mean_ms * s.requests for s in slices) / requests) if requests else 0.0,
        "apdex": apdex(
            answered=requests,
            satisfied=satisfied,
            tolerating=within_4t - satisfied,
            errors=requests - ok,
            unanswered=unanswered,
        ),
        "histogram": merged.histogram(),
        "series": series,
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

    def at_most(limit: float) -> float:
        return bisect.bisect_right(latencies, limit) / len(latencies) if latencies else 0.0

    return {
        "rate": run.rate,
        "planned_s": run.seconds,
        "wall_s": run.wall_s,
        "connections": run.connections,
        "requests": total,
        "ok": ok,
        "ok_per_s": ok / run.wall_s if run.wall_s else 0.0,
        "late_sends": run.late_sends,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "percentiles_ms": {str(p): _percentile_sorted(latencies, p) for p in REPORTED_PERCENTILES},
        "max_ms": latencies[-1] if latencies else 0.0,
        "service_percentiles_ms": {
            str(p): _percentile_sorted(service, p) for p in REPORTED_PERCENTILES
        },
        "apdex": (satisfied + tolerating / 2) / total if total else 0.0,
        "errors": failed_or_error,
        "histogram": histogram_from_cdf(
            at_most, latencies[0] if latencies else 0.1, latencies[-1] if latencies else 1
        ),
        "series": series,
    }
