"""bench/capacity.py: the rate search, the backlog slope, a step's verdict and the report."""

import os
import re

import pytest

from bench import capacity, report, run


def threshold_search(limit: float, **options) -> tuple[tuple[float, float | None], list[float]]:
    """Search a stack that holds every rate up to `limit`; return the result and the rates."""
    measured = []

    def measure(rate: float) -> bool:
        measured.append(rate)
        return rate <= limit

    options = {"start": 250, "max_rises": 7, "bisections": 3, **options}
    return capacity.search(measure, **options), measured


def test_search_rises_until_a_step_fails_then_bisects():
    (held, failed), measured = threshold_search(1300)
    assert measured[:4] == [250, 500, 1000, 2000]
    # Geometric means between the last that held and the first that failed.
    assert measured[4:] == [1410, 1190, 1300]
    assert (held, failed) == (1300, 1410)


def test_search_is_bounded_and_says_when_nothing_failed():
    (held, failed), measured = threshold_search(10**9, max_rises=5, bisections=2)
    assert measured == [250, 500, 1000, 2000, 4000]
    assert (held, failed) == (4000, None)


def test_a_first_step_that_fails_is_followed_by_lower_ones():
    (held, failed), measured = threshold_search(70)
    assert measured == [250, 125, 62.5, 88.4]
    assert (held, failed) == (62.5, 88.4)


def test_nothing_holds():
    (held, failed), measured = threshold_search(0, bisections=2)
    assert len(measured) == 3
    assert held == 0


def test_slope_of_a_line_and_of_too_few_points():
    assert capacity.slope([(0, 1), (1, 3), (2, 5), (3, 7)]) == pytest.approx(2)
    assert capacity.slope([(0, 1), (1, 3)]) is None
    assert capacity.slope([(1, 1), (1, 3), (1, 5)]) is None


def test_second_half_leaves_out_missing_samples_and_the_first_half():
    samples = [(t, None if t == 7 else t) for t in range(12)]
    assert capacity.second_half(samples, 10) == [(5, 5), (6, 6), (8, 8), (9, 9), (10, 10)]


def step(**changes) -> dict:
    """A step that holds, with `changes`."""
    base = {
        "rate": 500.0,
        "offered_events_per_s": 500.0,
        "seconds": 10.0,
        "requests": 5000,
        "ok": 5000,
        "errors": 0,
        "accepted_events": 5000,
        "ok_events_per_s": 500.0,
        "p50_ms": 20.0,
        "p90_ms": 40.0,
        "p99_ms": 100.0,
        "max_ms": 180.0,
        "max_schedule_lag_ms": 2.0,
        "generator_late": False,
        "load_average": 1.0,
        "backlog": {"slope_per_s": 0.1, "max": 3, "end": 0, "samples": []},
        "delivered": {"events_per_s": 498.0, "within_s": 0.3, "in_kafka_by_deadline": 5000},
        "cpu": {"server_us_per_event": 400.0, "worker_us_per_event": 300.0, "generator_cores": 0.1},
        "kafka": {"lost": 0},
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    step = {**base}
    step["reasons"] = capacity.judge(step)
    step["holds"] = not step["reasons"]
    return step


def test_a_step_holds_when_every_condition_is_met():
    assert step()["holds"]
    # Not growing: the slope is at the limit, or unknown for want of samples.
    assert step(backlog={"slope_per_s": capacity.BACKLOG_GROWTH_LIMIT_PER_S})["holds"]
    assert step(backlog={"slope_per_s": None})["holds"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"errors": 3}, "3 of 5,000 not answered 2xx"),
        ({"backlog": {"slope_per_s": 1.5}}, "backlog growing 1.5 messages/s"),
        ({"p99_ms": 251.0}, "p99 251 ms > 250"),
        (
            {"delivered": {"within_s": None, "in_kafka_by_deadline": 4000}},
            "4,000 of 5,000 in Kafka 5 s after the end",
        ),
        ({"kafka": {"lost": 2}}, "2 accepted events lost"),
    ],
)
def test_each_condition_fails_a_step(changes, reason):
    failed = step(**changes)
    assert not failed["holds"]
    assert failed["reasons"] == [reason]


def result(steps: list[dict], *, failed: float | None) -> dict:
    found = {
        "variant": "ours",
        "label": "gateway",
        "scenario": "single",
        "events_per_request": 1,
        "steps": steps,
        "searched_held_rate": 0,
        "first_failed_rate": failed,
    }
    capacity.summarize(found)
    return found


def test_the_found_rate_is_the_highest_step_that_held():
    found = result(
        [step(rate=500.0), step(rate=1000.0, p99_ms=900.0), step(rate=707.0)], failed=1000
    )
    assert found["found_rate"] == 707.0
    assert found["cpu"]["server_us_per_event"] == 400.0
    assert not found["search_limit_reached"]
    row = capacity.table_rows([found])[0]
    assert row[:4] == ["ours", "single", "707", "500"]
    assert row[8] == "1,000"


def test_report_has_the_table_and_a_chart_per_scenario():
    found = result([step(rate=250.0), step(rate=500.0, errors=9)], failed=500)
    run_info = {
        "capacity_seconds": 10.0,
        "worker_processes": 1,
        "capacity_worker_processes": 2,
        "worker_threads": 16,
    }
    results = {"run": run_info, "capacity": [found], "skipped": []}
    html = report._capacity_section(results)
    assert "Sustained capacity" in html
    assert "2 Celery worker process(es) x 16 threads" in html
    assert html.count("<svg") == 3
    assert "fails: 9 of 5,000 not answered 2xx" in html
    text = report.capacity_text_table(results)
    assert text.splitlines()[0].split()[:2] == ["variant", "scenario"]
    assert "250" in text.splitlines()[1]


def test_a_failed_step_runs_once_more_before_it_counts():
    outcomes = iter([True, False, True, False, False])
    measured = []

    def measure(rate: float) -> bool:
        measured.append(rate)
        return next(outcomes)

    held, failed = capacity.search(measure, start=100, max_rises=3, bisections=0, repeats=1)
    # 200 failed once (a stall) and held when repeated; 400 failed twice.
    assert measured == [100, 200, 200, 400, 400]
    assert (held, failed) == (200, 400)


def test_plan_keeps_the_named_scenarios_and_pairs():
    stacks = {name: object() for name in capacity.VARIANTS}
    everything = capacity.plan(stacks)
    assert len(everything) == 7
    pairs = capacity.plan(stacks, only=("batch", "seed-delay:single"))
    assert [(name, scenario.name) for name, scenario in pairs] == [
        ("seed-delay", "single"),
        ("ours", "batch"),
        ("confluent", "batch"),
    ]


def test_start_rates_prefer_the_pair_then_the_scenario_then_the_default():
    rates = capacity.parse_start_rates(["single=1000", "ours:single=2000"])
    single, _, batch = capacity.SCENARIOS
    assert capacity.start_rate("ours", single, rates) == 2000
    assert capacity.start_rate("seed-delay", single, rates) == 1000
    assert capacity.start_rate("ours", batch, rates) == batch.start_rate


@pytest.mark.parametrize("spec", ["single", "nosuch=5", "ours:single=0", "batch="])
def test_a_malformed_start_rate_is_refused(spec):
    with pytest.raises(ValueError, match=re.escape(repr(spec))):
        capacity.parse_start_rates([spec])


class FakeStack:
    def __init__(self, *, uses_worker, workers):
        self.variant = type("Variant", (), {"uses_worker": uses_worker})()
        self.workers = list(range(workers))

    def start_worker(self, *, concurrency):
        self.workers.append(concurrency)


def test_the_capacity_search_runs_a_worker_process_per_core_by_default():
    args = run.parse_args([])
    assert args.worker_processes == 1
    assert args.capacity_worker_processes == (os.cpu_count() or 1)
    stacks = {
        "ours": FakeStack(uses_worker=True, workers=1),
        "bare": FakeStack(uses_worker=False, workers=0),
    }
    run.add_workers(stacks, processes=3, args=args)
    assert stacks["ours"].workers == [0, 16, 16]
    assert stacks["bare"].workers == []
