"""Sustained capacity: the highest open-loop rate each scenario holds end to end (issue 14).

A step offers one rate for a fixed time (open loop: requests go out on schedule whatever the
answers take, latency counts from the intended send time) and holds when all of these are true:

- every request was answered 2xx;
- the broker backlog is not growing: the least-squares slope of the queue depth, sampled every
  second, over the step's second half is at most BACKLOG_GROWTH_LIMIT_PER_S;
- p99 latency from the intended send time is at most P99_LIMIT_MS;
- the topic holds every accepted event within DELIVERY_LIMIT_S of the last answer.

The search rises geometrically from a start rate until a step fails, then bisects (geometric
mean) between the highest rate that held and the lowest that failed: at most max_rises +
bisections steps per scenario. Every step's ids are checked in Kafka once all queues drained.
"""

import math
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import loadgen, stats
from .kafkaread import TopicTail, count_event_ids
from .variants import SCENARIOS as WRK_SCENARIOS

P99_LIMIT_MS = 250.0
DELIVERY_LIMIT_S = 5.0
# Depth that wanders by a few messages fits a slope well under one message a second; a queue
# that gains one batch a second for the second half of a step is falling behind.
BACKLOG_GROWTH_LIMIT_PER_S = 1.0
SAMPLE_INTERVAL_S = 1.0
TAIL_READ_S = 0.1
RISE_FACTOR = 2.0
MAX_RISES = 7  # up to 64x the start rate
BISECTIONS = 3
QUICK_BISECTIONS = 2
# A failed step runs once more before it counts: on a shared machine one stall of another
# process can fail a step, and a single false failure halves what the search finds.
REPEATS = 1
CONNECTIONS = 200
REQUEST_TIMEOUT_S = 10.0
# A request still unsent this long after its intended time has failed its step 20 times over.
GIVE_UP_AFTER_S = 5.0
DRAIN_TIMEOUT_S = 120.0
VERIFY_DRAIN_TIMEOUT_S = 600.0
IDLE_TIMEOUT_S = 10.0
IDLE_CPU_SHARE = 0.05  # a worker below this share of a core has finished its work
# A generator later than this behind its own schedule measured itself as well as the stack.
GENERATOR_LATE_MS = 50.0


@dataclass(frozen=True)
class CapacityScenario:
    name: str
    start_rate: float  # requests/s of the first step
    variants: tuple[str, ...]

    @property
    def events_per_request(self) -> int:
        return 100 if self.name == "batch" else 1

    @property
    def wrk_scenario(self):
        """The wrk scenario of the same kind, for the variant's request path."""
        return WRK_SCENARIOS[f"{self.name}-200"]


# The gateway with each producer backend; seed 002's design (delay() per request) on single POSTs.
SCENARIOS = (
    CapacityScenario("single", 250, ("ours", "confluent", "seed-delay")),
    CapacityScenario("show", 250, ("ours", "confluent")),
    CapacityScenario("batch", 25, ("ours", "confluent")),
)
VARIANTS = ("ours", "confluent", "seed-delay")


def search(
    measure: Callable[[float], bool],
    *,
    start: float,
    max_rises: int,
    bisections: int,
    repeats: int = 0,
    factor: float = RISE_FACTOR,
) -> tuple[float, float | None]:
    """Return the highest rate that held and the lowest that failed (None: none failed).

    Tries at most max_rises + bisections rates; a rate fails when measure(rate) fails
    1 + repeats times in a row. A first rate that fails is followed by rates `factor` times
    lower, down to where one holds.
    """

    def holds(rate: float) -> bool:
        return any(measure(rate) for _ in range(1 + repeats))

    held, failed, rate = 0.0, None, start
    for _ in range(max_rises):
        if not holds(rate):
            failed = rate
            break
        held, rate = rate, rate * factor
    if failed is None:
        return held, None
    for _ in range(bisections):
        rate = _round(math.sqrt(held * failed) if held else failed / factor)
        if rate in (held, failed):
            break
        if holds(rate):
            held = rate
        else:
            failed = rate
    return held, failed


def _round(rate: float) -> float:
    """Three significant digits: rates that read well and repeat across runs."""
    return float(f"{rate:.3g}")


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points; None for fewer than three."""
    if len(points) < 3:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def second_half(samples: list[tuple[float, float | None]], seconds: float) -> list:
    """The samples taken in the second half of a step's sending time."""
    return [(t, y) for t, y in samples if y is not None and seconds / 2 <= t <= seconds + 0.5]


def judge(step: dict) -> list[str]:
    """Why a step did not hold; empty when it held."""
    reasons = []
    if step["errors"]:
        reasons.append(f"{step['errors']:,} of {step['requests']:,} not answered 2xx")
    growth = step["backlog"]["slope_per_s"]
    if growth is not None and growth > BACKLOG_GROWTH_LIMIT_PER_S:
        reasons.append(f"backlog growing {growth:.1f} messages/s")
    if step["p99_ms"] > P99_LIMIT_MS:
        reasons.append(f"p99 {step['p99_ms']:.0f} ms > {P99_LIMIT_MS:.0f}")
    delivered = step["delivered"]
    if delivered["within_s"] is None:
        reasons.append(
            f"{delivered['in_kafka_by_deadline']:,} of {step['accepted_events']:,} in Kafka "
            f"{DELIVERY_LIMIT_S:.0f} s after the end"
        )
    if step["kafka"].get("lost"):
        reasons.append(f"{step['kafka']['lost']:,} accepted events lost")
    return reasons


class Sampler(threading.Thread):
    """Reads the step's ids from Kafka as they arrive; once a second, notes how many it has
    seen and the queue depth."""

    def __init__(self, *, stack, tail: TopicTail, started: float):
        super().__init__(daemon=True)
        self.stack, self.tail, self.started = stack, tail, started
        self.depths: list[tuple[float, int | None]] = []
        self.records: list[tuple[float, int | None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        next_sample = time.monotonic()
        while not self.stopped.is_set():
            now = time.monotonic()
            if now >= next_sample:
                self.depths.append((now - self.started, self._sample(self.stack.queue_depth)))
                self.records.append((now - self.started, len(self.tail.ids)))
                next_sample += SAMPLE_INTERVAL_S
            self._sample(lambda: self.tail.read(timeout_s=TAIL_READ_S))

    @staticmethod
    def _sample(read: Callable[[], int]) -> int | None:
        # A broker slow to answer under load loses a sample, not the step.
        try:
            return read()
        except Exception:
            return None

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_until_idle(stack, *, log) -> None:
    """Wait for the queue to drain and the workers to finish, so steps do not overlap."""
    try:
        stack.wait_for_drain(timeout=DRAIN_TIMEOUT_S)
    except TimeoutError:
        log(f"  queue did not drain in {DRAIN_TIMEOUT_S:.0f}s; the next step starts anyway")
        return
    worker_pids = [worker.pid for worker in stack.workers]
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    before = loadgen.tree_cpu_seconds(worker_pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)  # the sampling interval of the workers' CPU: the wait itself
        after = loadgen.tree_cpu_seconds(worker_pids)
        if after - before < IDLE_CPU_SHARE * 0.5:
            return
        before = after


def run_step(
    *,
    stack,
    scenario: CapacityScenario,
    rate: float,
    seconds: float,
    topic: str,
    prefix: str,
    ids_file: Path,
) -> dict:
    """Offer `rate` requests/s for `seconds`; measure what a step is judged on."""
    tail = TopicTail(topic=topic, bootstrap=stack.kafka_address, prefix=f"{prefix}-")
    server_pids, worker_pids = [stack.server.pid], [worker.pid for worker in stack.workers]
    server_cpu = loadgen.tree_cpu_seconds(server_pids)
    worker_cpu = loadgen.tree_cpu_seconds(worker_pids)
    own_cpu = _own_cpu_seconds()
    started = time.monotonic() + 0.1  # run_open_loop's first request is due 0.1 s after its call
    sampler = Sampler(stack=stack, tail=tail, started=started)
    sampler.start()
    try:
        run = loadgen.run_open_loop(
            host="127.0.0.1",
            port=stack.port,
            path=stack.variant.path(scenario.wrk_scenario, topic),
            rate=rate,
            seconds=seconds,
            connections=CONNECTIONS,
            prefix=prefix,
            timeout_s=REQUEST_TIMEOUT_S,
            api_key=stack.api_key,
            mode=scenario.name,
            give_up_after_s=GIVE_UP_AFTER_S,
        )
        ended = time.monotonic()
        server_cpu = loadgen.tree_cpu_seconds(server_pids) - server_cpu
        own_cpu = _own_cpu_seconds() - own_cpu
        accepted = len(run.accepted_ids)
        within_s = None
        while time.monotonic() - ended < DELIVERY_LIMIT_S:
            # The count first: comparing sets of a million ids each poll would be slow.
            if len(tail.ids) >= accepted and tail.ids.issuperset(run.accepted_ids):
                within_s = time.monotonic() - ended
                break
            time.sleep(0.05)  # the poll interval of the delivery deadline
        in_kafka = len(tail.ids.intersection(run.accepted_ids))
        worker_cpu = loadgen.tree_cpu_seconds(worker_pids) - worker_cpu
        worker_wall = time.monotonic() - started
    finally:
        sampler.stop()
        tail.close()
    ids_file.parent.mkdir(parents=True, exist_ok=True)
    ids_file.write_text("".join(f"{event_id}\n" for event_id in run.accepted_ids))
    summary = stats.summarize_open_loop(run, apdex_ms=P99_LIMIT_MS)
    events = max(1, accepted)
    sending_s = max(run.wall_s, 1e-9)
    delivered_slope = slope(second_half(sampler.records, seconds))
    step = {
        "rate": rate,
        "offered_events_per_s": rate * scenario.events_per_request,
        "seconds": seconds,
        "topic": topic,
        "ids_file": str(ids_file),
        "requests": summary["requests"],
        "ok": summary["ok"],
        "errors": summary["errors"],
        "statuses": summary["statuses"],
        "accepted_events": accepted,
        "ok_events_per_s": accepted / sending_s,
        "p50_ms": summary["percentiles_ms"]["50"],
        "p90_ms": summary["percentiles_ms"]["90"],
        "p99_ms": summary["percentiles_ms"]["99"],
        "max_ms": summary["max_ms"],
        "service_p99_ms": summary["service_percentiles_ms"]["99"],
        "late_sends": run.late_sends,
        "max_schedule_lag_ms": run.max_schedule_lag_ms,
        "generator_late": run.max_schedule_lag_ms > GENERATOR_LATE_MS,
        "wall_s": run.wall_s,
        "backlog": {
            "slope_per_s": slope(second_half(sampler.depths, seconds)),
            "max": max((d for _, d in sampler.depths if d is not None), default=None),
            "end": next((d for _, d in reversed(sampler.depths) if d is not None), None),
            "samples": sampler.depths,
        },
        "delivered": {
            # Records the topic gained a second over the step's second half.
            "events_per_s": None if delivered_slope is None else max(0.0, delivered_slope),
            "within_s": within_s,
            "in_kafka_by_deadline": in_kafka,
            "samples": sampler.records,
        },
        "cpu": {
            "server_us_per_event": 1e6 * server_cpu / events,
            "worker_us_per_event": 1e6 * worker_cpu / events,
            "server_cores": server_cpu / sending_s,
            "worker_cores": worker_cpu / max(worker_wall, 1e-9),
            "generator_cores": own_cpu / sending_s,
        },
        "kafka": {},
        "load_average": os.getloadavg()[0],
    }
    step["reasons"] = judge(step)
    step["holds"] = not step["reasons"]
    return step


def run_scenario(
    stack,
    scenario: CapacityScenario,
    *,
    start: float,
    seconds: float,
    bisections: int,
    out: Path,
    run_id: str,
    log,
    progress: str,
) -> dict:
    """Search one variant's capacity on one scenario; return its steps and the rate found."""
    name = stack.variant.name
    steps: list[dict] = []

    def measure(rate: float) -> bool:
        wait_until_idle(stack, log=log)
        index = len(steps)
        repeat = bool(steps) and steps[-1]["rate"] == rate
        # /show writes the stack's default topic; every other scenario a topic per step.
        topic = (
            stack.show_topic
            if scenario.name == "show"
            else f"b{run_id}.cap.{name}.{scenario.name}.{index}"
        )
        step = run_step(
            stack=stack,
            scenario=scenario,
            rate=rate,
            seconds=seconds,
            topic=topic,
            prefix=f"{run_id}-cap-{name}-{scenario.name}-{index}",
            ids_file=out / "ids" / name / f"capacity-{scenario.name}-{index}.txt",
        )
        step["repeat"] = repeat
        steps.append(step)
        log(
            f"{progress} {name} {scenario.name} step {index + 1}"
            f"{' (repeat)' if repeat else ''}: {step_line(step)}"
        )
        return step["holds"]

    held, failed = search(
        measure,
        start=start,
        max_rises=MAX_RISES,
        bisections=bisections,
        repeats=REPEATS,
    )
    return {
        "variant": name,
        "label": stack.variant.label,
        "scenario": scenario.name,
        "events_per_request": scenario.events_per_request,
        "steps": steps,
        "start_rate": start,
        "searched_held_rate": held,
        "first_failed_rate": failed,
    }


def step_line(step: dict) -> str:
    """One progress line: what was offered, what came back, and whether it held."""
    backlog, delivered = step["backlog"]["slope_per_s"], step["delivered"]
    return (
        f"{step['rate']:,.0f} req/s ({step['offered_events_per_s']:,.0f} events/s) for "
        f"{step['seconds']:.0f}s: 2xx {step['ok']:,}/{step['requests']:,}, "
        f"p50 {step['p50_ms']:.1f} ms p99 {step['p99_ms']:.1f} ms, backlog "
        + ("n/a" if backlog is None else f"{backlog:+.1f}/s")
        + ", delivered "
        + ("n/a" if delivered["events_per_s"] is None else f"{delivered['events_per_s']:,.0f}/s")
        + ", in Kafka "
        + (
            f"{delivered['within_s']:.1f}s after the end"
            if delivered["within_s"] is not None
            else "LATE"
        )
        + (", generator late" if step["generator_late"] else "")
        + f", load {step['load_average']:.1f}: "
        + ("holds" if step["holds"] else "fails (" + "; ".join(step["reasons"]) + ")")
    )


def verify(stack, results: list[dict], *, log) -> None:
    """Read every step's topic back once the queue drained: each accepted id must be there."""
    try:
        stack.wait_for_drain(timeout=VERIFY_DRAIN_TIMEOUT_S)
    except TimeoutError:
        log(f"  {stack.variant.name}: queue not drained after {VERIFY_DRAIN_TIMEOUT_S:.0f}s")
    counts_by_topic: dict[str, object] = {}
    for result in results:
        for step in result["steps"]:
            if step["topic"] not in counts_by_topic:
                counts_by_topic[step["topic"]] = count_event_ids(
                    topic=step["topic"], bootstrap=stack.kafka_address
                )
            counts = counts_by_topic[step["topic"]]
            with open(step["ids_file"]) as lines:
                ids = [line.rstrip("\n") for line in lines]
            missing = [event_id for event_id in ids if event_id not in counts]
            step["kafka"] = {
                "expected": len(ids),
                "found": len(ids) - len(missing),
                "lost": len(missing),
                "duplicates": sum(1 for event_id in ids if counts.get(event_id, 0) > 1),
                "missing_examples": missing[:5],
            }
            if missing:
                step["reasons"] = judge(step)
                step["holds"] = False
        summarize(result)


def summarize(result: dict) -> None:
    """The highest rate that held (after the Kafka check), with its CPU per event."""
    held = [step for step in result["steps"] if step["holds"]]
    best = max(held, key=lambda step: step["rate"], default=None)
    result["found_rate"] = best["rate"] if best else 0.0
    result["found_events_per_s"] = best["offered_events_per_s"] if best else 0.0
    result["delivered_events_per_s"] = best["delivered"]["events_per_s"] if best else None
    result["p99_ms"] = best["p99_ms"] if best else None
    result["cpu"] = best["cpu"] if best else None
    result["search_limit_reached"] = result["first_failed_rate"] is None
    result["lost"] = sum(step["kafka"].get("lost", 0) for step in result["steps"])


def plan(stacks: dict, *, only: tuple[str, ...] = ()) -> list[tuple[str, CapacityScenario]]:
    """(variant, scenario) pairs to search, scenario by scenario so variants compare close in
    time; `only` keeps the scenarios (`batch`) or pairs (`ours:batch`) it names."""
    return [
        (name, scenario)
        for scenario in SCENARIOS
        for name in scenario.variants
        if name in stacks and (not only or {scenario.name, f"{name}:{scenario.name}"} & set(only))
    ]


def parse_start_rates(specs: list[str]) -> dict[str, float]:
    """Read `[VARIANT:]SCENARIO=RATE` start rates; raise ValueError naming a bad one."""
    known = {scenario.name for scenario in SCENARIOS}
    rates = {}
    for spec in specs:
        target, _, rate = spec.partition("=")
        if target.rpartition(":")[2] not in known or not rate:
            raise ValueError(f"{spec!r}: expected [VARIANT:]SCENARIO=RATE, SCENARIO one of {known}")
        rates[target] = float(rate)
        if rates[target] <= 0:
            raise ValueError(f"{spec!r}: the rate must be positive")
    return rates


def start_rate(name: str, scenario: CapacityScenario, rates: dict[str, float]) -> float:
    """The first step's rate: the pair's own, else the scenario's, else the default."""
    return rates.get(f"{name}:{scenario.name}", rates.get(scenario.name, scenario.start_rate))


def expected_seconds(pairs: int, *, seconds: float, bisections: int) -> tuple[float, float]:
    """(typical, at most) seconds the search takes: about five rises, every bisection and
    three repeats; at most every rate twice."""
    per_step = seconds + 2  # a step that holds is in Kafka well within a second
    return (
        pairs * (5 + bisections + 3) * per_step,
        pairs
        * (MAX_RISES + bisections)
        * (1 + REPEATS)
        * (per_step + GIVE_UP_AFTER_S + IDLE_TIMEOUT_S),
    )


def run_capacity(
    stacks: dict,
    *,
    seconds: float,
    bisections: int,
    out: Path,
    run_id: str,
    log,
    only: tuple[str, ...] = (),
    start_rates: dict[str, float] | None = None,
):
    """Search every planned pair; verify each stack's topics; return the results."""
    pairs = plan(stacks, only=only)
    if not pairs:
        return []
    results = []
    for number, (name, scenario) in enumerate(pairs, start=1):
        start = start_rate(name, scenario, start_rates or {})
        log(
            f"[capacity {number}/{len(pairs)}] {name} {scenario.name}: from "
            f"{start:g} req/s, x{RISE_FACTOR:g} until a step fails, then "
            f"{bisections} bisections; {seconds:.0f}s a step"
        )
        results.append(
            run_scenario(
                stacks[name],
                scenario,
                start=start,
                seconds=seconds,
                bisections=bisections,
                out=out,
                run_id=run_id,
                log=log,
                progress=f"[capacity {number}/{len(pairs)}]",
            )
        )
    for name in dict.fromkeys(result["variant"] for result in results):
        log(f"capacity: reading Kafka back for {name}")
        verify(stacks[name], [result for result in results if result["variant"] == name], log=log)
    return results


TABLE_HEADERS = (
    "variant",
    "scenario",
    "held req/s",
    "held events/s",
    "delivered events/s",
    "p99 ms",
    "server CPU us/event",
    "worker CPU us/event",
    "first failed req/s",
    "steps",
    "lost",
)


def table_rows(results: list[dict]) -> list[list[str]]:
    """The "Sustained capacity" table, one row per variant and scenario, as text cells."""
    rows = []
    for result in results:
        cpu, failed = result["cpu"], result["first_failed_rate"]
        rows.append(
            [
                result["variant"],
                result["scenario"],
                f"{result['found_rate']:,.0f}",
                f"{result['found_events_per_s']:,.0f}",
                ""
                if result["delivered_events_per_s"] is None
                else f"{result['delivered_events_per_s']:,.0f}",
                "" if result["p99_ms"] is None else f"{result['p99_ms']:.1f}",
                "" if cpu is None else f"{cpu['server_us_per_event']:,.0f}",
                "" if cpu is None else f"{cpu['worker_us_per_event']:,.0f}",
                "none (search limit)" if failed is None else f"{failed:,.0f}",
                str(len(result["steps"])),
                f"{result['lost']:,}",
            ]
        )
    return rows
