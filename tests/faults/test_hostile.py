"""Hostile input around normal traffic: no one's bad event holds back anyone else's (issue 10)."""

import random
import statistics
import time
import uuid
from collections import Counter, defaultdict

import msgspec
import pytest

from .conftest import log_since, log_size
from .hostile import (
    HUGE_INTEGER,
    TOPIC_READ_TIMEOUT_S,
    HostileAnswer,
    RawRecord,
    accepted_stat,
    access_cases,
    batch_receptions,
    database_refusing_connections,
    dead_letter_rows,
    drain,
    event_cases,
    misjudged,
    named,
    outcome_batches,
    per_case,
    query,
    read_raw_records,
    send,
    send_all,
    stat_topics,
    strictness_error,
    unbind_queue,
)
from .loadgen import WRONG_IDS, LoadGenerator, LoadResult
from .procs import tree_rss_kib
from .test_faults import WARMUP_ACCEPTS, wait_for_accepts
from .test_overload import RssSampler

pytestmark = pytest.mark.faults

DELIVERY_MAX_ATTEMPTS = 5
TASK_MAX_RETRIES = 3
# Production settings the issue asks for, plus small bounds so a violation shows in a short run.
# TASK_LOG_LEVEL=INFO keeps the worker's "Task ... received" lines: one per attempt of a batch.
HOSTILE_ENV = {
    "INGEST_REQUIRE_API_KEYS": "true",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SERVE_PROCESSES": "1",
    "INGEST_DELIVERY_MAX_ATTEMPTS": str(DELIVERY_MAX_ATTEMPTS),
    "INGEST_TASK_MAX_RETRIES": str(TASK_MAX_RETRIES),
    "INGEST_STATS_FLUSH_INTERVAL_S": "0.5",
    # No key-cache reload during a run: the outage scenario is about outcome writes only.
    "INGEST_KEY_CACHE_TTL_S": "300",
    "LOG_LEVEL": "INFO",
    "TASK_LOG_LEVEL": "INFO",
}
HOSTILE_ROUNDS = 3
HOSTILE_THREADS = 3
NORMAL_THREADS = 4
NORMAL_LOAD_S = 12.0
# A stalled batch never drains: wait this long, then report what is stuck.
HOSTILE_DRAIN_TIMEOUT_S = 40.0
SETTLE_TIMEOUT_S = 15.0
STATS_FLUSH_TIMEOUT_S = 10.0

OUTAGE_S = 10.0
BINDING_GONE_S = 4.0
SCENARIO_DRAIN_TIMEOUT_S = 40.0
BOMBS = 20
BOMB_THREADS = 4
RSS_GROWTH_BOUND_KIB = 100 * 1024


def create_source(stack, name: str, topic: str) -> str:
    """Create a source allowed only `topic` and return its key."""
    return stack.run_manage("create_source", name, "--topics", topic).stdout.strip()


def keyed_stack(fault_stack, topic: str):
    """Build a stack with the hostile settings and one source for `topic`; return it and the key."""
    stack = fault_stack(**HOSTILE_ENV)
    return stack, create_source(stack, f"source-{uuid.uuid4().hex[:8]}", topic)


def post_probe(stack, topic: str, key: str, ledger: LoadResult) -> str:
    """Post one normal event, enter it in `ledger`, and return its receipt."""
    event = {"id": f"probe-{uuid.uuid4().hex}", "n": 0}
    status, _, body = stack.post_json(f"/api/v1/events/{topic}", event, {"X-Api-Key": key})
    assert status == 202, f"a normal event was refused: {status} {body}"
    ledger.sent.add(event["id"])
    ledger.accepted.add(event["id"])
    ledger.events[event["id"]] = event
    return body["receipt"]


def read_records(stack, topic: str) -> list[RawRecord]:
    return read_raw_records(
        bootstrap=stack.kafka_address, topic=topic, timeout_s=TOPIC_READ_TIMEOUT_S
    )


def by_event_id(records: list[RawRecord]) -> dict[str, list[RawRecord]]:
    found = defaultdict(list)
    for record in records:
        found[record.event_id].append(record)
    return found


def normal_problems(result: LoadResult, records: list[RawRecord]) -> tuple[list[str], int]:
    """Check the normal ledger against Kafka: every accepted event there once, exactly as sent."""
    problems, found = [], by_event_id(records)
    lost = sorted(result.accepted - set(found))
    differing = [
        event_id
        for event_id in sorted(result.accepted & set(found))
        if any(
            strictness_error(record.value)
            or msgspec.json.decode(record.value) != result.events[event_id]
            for record in found[event_id]
        )
    ]
    foreign = sorted(set(found) - result.sent)
    if lost:
        problems.append(f"{len(lost)} accepted normal events are not in Kafka: {lost[:5]}")
    if differing:
        examples = [(i, found[i][0].value[:120], result.events[i]) for i in differing[:3]]
        problems.append(f"{len(differing)} normal events differ from what was sent: {examples}")
    if foreign:
        problems.append(f"ids nobody sent reached the normal topic: {foreign[:5]}")
    if result.errors[WRONG_IDS]:
        problems.append("the gateway answered normal requests with other ids than were sent")
    other = {status: n for status, n in result.statuses.items() if status != 202}
    errors = {name: n for name, n in result.errors.items() if n}
    if other or errors:
        problems.append(f"normal requests not answered 202: {other} {errors}")
    return problems, len(lost)


def exact_delivery_problems(answers: list[HostileAnswer], records: list[RawRecord]) -> list[str]:
    """Each event of an accepted valid case is in Kafka once, decoding to exactly what was sent."""
    problems, found = [], by_event_id(records)
    for answer in answers:
        case = answer.case
        if case.if_accepted != "exact" or answer.status is None or not 200 <= answer.status < 300:
            continue
        for expected in case.expected_events:
            problem = exact_copy_problem(expected, found.get(expected["id"], []))
            if problem:
                problems.append((case.name, f"{case.name}: {problem}"))
    return per_case(problems)


def exact_copy_problem(expected: dict, copies: list[RawRecord]) -> str | None:
    """Say how the Kafka copies of an accepted event differ from it, or None if they do not."""
    if len(copies) != 1:
        return f"accepted {expected['id']} is in Kafka {len(copies)} times"
    value = copies[0].value
    if error := strictness_error(value):
        return f"{expected['id']} reached Kafka {error}"
    if msgspec.json.decode(value) != expected:
        return f"sent {expected!r}, Kafka has {value[:120]!r}"
    if expected.get("v") == HUGE_INTEGER and str(HUGE_INTEGER).encode() not in value:
        return f"the integer lost digits: {value[:120]!r}"
    return None


def strictness_problems(records: list[RawRecord]) -> list[str]:
    bad = {
        record.event_id: error for record in records if (error := strictness_error(record.value))
    }
    if not bad:
        return []
    return [f"{len(bad)} events are not strict UTF-8 JSON in Kafka: {list(bad.items())[:5]}"]


def poison_problems(answers: list[HostileAnswer], dead_letters: list) -> tuple[list[str], int]:
    """An accepted poison event must be a dead letter of its own (contracts.md item 3)."""
    own = {event_ids[0] for event_ids, records in dead_letters if len(event_ids) == 1 == records}
    shared = {
        event_id
        for event_ids, records in dead_letters
        if len(event_ids) > 1
        for event_id in event_ids
    }
    problems, accepted = [], 0
    for answer in answers:
        if answer.case.if_accepted != "dead_letter" or answer.status != 202:
            continue
        for event_id in answer.ids:
            accepted += 1
            if event_id in own:
                continue
            where = "in a dead letter with other events" if event_id in shared else "nowhere"
            message = f"{answer.case.name}: accepted {event_id!r}, dead-lettered {where}"
            problems.append((answer.case.name, message))
    return per_case(problems), accepted


def wait_until_settled(stack, worker_log, log_start: int) -> tuple[Counter, dict]:
    """Wait until every batch the worker received has an outcome; return receptions, outcomes."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        receptions = batch_receptions(log_since(worker_log, log_start))
        outcomes = outcome_batches(stack)
        if set(receptions) <= set(outcomes) or time.monotonic() > deadline:
            return receptions, outcomes
        time.sleep(0.5)


def wait_for_stats(stack, topic: str, accepted: int) -> int:
    """Wait until the server flushed its counts of `accepted` events on `topic`."""
    deadline = time.monotonic() + STATS_FLUSH_TIMEOUT_S
    while (counted := accepted_stat(stack, topic)) < accepted and time.monotonic() < deadline:
        time.sleep(0.2)
    return counted


def problem_if(condition, message: str) -> list[str]:
    return [message] if condition else []


def answer_summary(answers: list[HostileAnswer]) -> str:
    statuses = Counter(answer.status for answer in answers)
    return ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items(), key=str))


def test_hostile_traffic_around_normal_traffic(fault_stack, report):
    tag = uuid.uuid4().hex[:8]
    normal_topic, hostile_topic = f"normal-{tag}", f"hostile-{tag}"
    stack = fault_stack(**HOSTILE_ENV)
    normal_key = create_source(stack, "normal", normal_topic)
    hostile_key = create_source(stack, "hostile", hostile_topic)
    worker_log = stack.log_dir / "worker.log"
    log_start = log_size(worker_log)
    stack.start_worker()
    stack.start_server()
    probes = LoadResult()
    normal_receipt = post_probe(stack, normal_topic, normal_key, probes)
    cases = []
    for round_number in range(HOSTILE_ROUNDS):
        round_tag = f"{tag}-{round_number}"
        cases += event_cases(tag=round_tag, topic=hostile_topic, key=hostile_key)
        cases += access_cases(
            tag=round_tag,
            hostile_key=hostile_key,
            normal_topic=normal_topic,
            normal_key=normal_key,
            normal_receipt=normal_receipt,
        )
    random.Random(tag).shuffle(cases)
    with LoadGenerator(
        port=stack.port,
        topic=normal_topic,
        prefix=f"normal-{tag}",
        threads=NORMAL_THREADS,
        max_seconds=NORMAL_LOAD_S,
        headers={"X-Api-Key": normal_key},
        record_events=True,
    ) as load:
        hostile_started = time.monotonic()
        answers = send_all(stack.port, cases, threads=HOSTILE_THREADS)
        hostile_seconds = time.monotonic() - hostile_started
        result = load.wait()
    result.merge(probes)
    figures, normal_records = drain(
        stack, normal_topic, result, scenario="hostile traffic", timeout=HOSTILE_DRAIN_TIMEOUT_S
    )
    receptions, outcomes = wait_until_settled(stack, worker_log, log_start)
    hostile_records = read_records(stack, hostile_topic)
    dead_letters = dead_letter_rows(stack)
    counted = wait_for_stats(stack, normal_topic, len(result.accepted))
    invented = {answer.case.invented_topic for answer in answers} - {None}

    normal, lost = normal_problems(result, normal_records)
    poison, poison_accepted = poison_problems(answers, dead_letters)
    stalled = sorted(set(receptions) - set(outcomes))
    depth = stack.queue_depth()
    server_errors = sum(1 for answer in answers if (answer.status or 0) >= 500)
    server_errors += sum(n for status, n in result.statuses.items() if status >= 500)
    wrong_answers = per_case(
        [(answer.case.name, problem) for answer in answers if (problem := misjudged(answer))]
    )
    over_attempts = {b: a for b, (_, a) in outcomes.items() if a > DELIVERY_MAX_ATTEMPTS}
    over_retries = {b: n for b, n in receptions.items() if n > TASK_MAX_RETRIES + 1}
    leaked = sorted(invented & stat_topics(stack))
    # Each group: (its problems, its figures line).
    groups = {
        "normal traffic": (
            normal,
            f"accepted={len(result.accepted)} lost={lost} duplicates={figures.duplicates}",
        ),
        "strict values": (
            strictness_problems(normal_records + hostile_records),
            f"records={len(normal_records) + len(hostile_records)} "
            f"(normal {len(normal_records)}, hostile {len(hostile_records)})",
        ),
        "answers": (
            wrong_answers + problem_if(server_errors, f"{server_errors} requests got a 5xx"),
            f"hostile requests={len(answers)} in {hostile_seconds:.1f}s "
            f"({answer_summary(answers)}); 5xx={server_errors}; wrong={len(wrong_answers)}",
        ),
        "poison and valid oddities": (
            poison
            + exact_delivery_problems(answers, hostile_records)
            + problem_if(stalled, f"{len(stalled)} batches received, never finished: {stalled[:5]}")
            + problem_if(depth, f"{depth} batches still wait in the queue"),
            f"poison accepted={poison_accepted} dead letters={len(dead_letters)} "
            f"stalled batches={len(stalled)} queue depth={depth}",
        ),
        "attempt bounds": (
            problem_if(over_attempts, f"over {DELIVERY_MAX_ATTEMPTS} attempts: {over_attempts}")
            + problem_if(over_retries, f"received over {TASK_MAX_RETRIES + 1}x: {over_retries}"),
            f"batches={len(receptions)} most attempts="
            f"{max((a for _, a in outcomes.values()), default=0)} (bound {DELIVERY_MAX_ATTEMPTS}) "
            f"most receptions={max(receptions.values(), default=0)} (bound {TASK_MAX_RETRIES + 1})",
        ),
        "stats": (
            problem_if(leaked, f"stats rows for invented topics: {leaked[:5]}")
            + problem_if(
                counted < len(result.accepted),
                f"stats flushed {counted} of {len(result.accepted)} accepted: proves nothing",
            ),
            f"invented topics={len(invented)} with stats rows={len(leaked)}",
        ),
    }
    report(
        figures,
        *(
            f"{name}: {line} -> {'ok' if not problems else f'{len(problems)} problems'}"
            for name, (problems, line) in groups.items()
        ),
    )
    problems = [f"[{name}] {problem}" for name, (found, _) in groups.items() for problem in found]
    assert not problems, "\n".join(problems)


def test_postgresql_outage_during_outcome_writes(fault_stack, topic, report):
    stack, key = keyed_stack(fault_stack, topic)
    stack.start_worker()
    stack.start_server()
    with LoadGenerator(
        port=stack.port,
        topic=topic,
        prefix="pg-outage",
        threads=NORMAL_THREADS,
        max_seconds=OUTAGE_S + 20,
        headers={"X-Api-Key": key},
    ) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        with database_refusing_connections(stack.database.name) as ended:
            outage_started = time.time()
            time.sleep(OUTAGE_S)  # the fault's duration, not a wait for a condition
            outage_ended = time.time()
        wait_for_accepts(load, WARMUP_ACCEPTS)
        result = load.stop()
    figures, _ = drain(
        stack, topic, result, scenario="PostgreSQL outage 10s", timeout=SCENARIO_DRAIN_TIMEOUT_S
    )
    # Batches accepted well inside the outage were taken by the worker while their outcome
    # could not be written: they prove the outage hit outcome writes.
    ((during,),) = query(
        stack,
        "SELECT count(*) FROM ingest_deliveryoutcome "
        "WHERE accepted_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
        (outage_started + 1, outage_ended - 1),
    )
    server_errors = sum(n for status, n in result.statuses.items() if status >= 500)
    report(
        figures,
        f"outage: {ended} sessions ended; {during} batches accepted during it; "
        f"duplicates produced={figures.duplicates}; 5xx={server_errors}",
    )
    assert during > 0, "no batch was delivered during the outage: it proves nothing"
    assert not figures.lost, f"{len(figures.lost)} accepted events lost: {figures.lost[:5]}"
    assert figures.duplicates == 0, f"{figures.duplicates} events were produced twice"
    assert server_errors == 0, f"5xx answers during the outage: {dict(result.statuses)}"


def test_deleted_queue_binding(fault_stack, topic, report):
    stack, key = keyed_stack(fault_stack, topic)
    stack.start_worker()
    stack.start_server()
    with LoadGenerator(
        port=stack.port,
        topic=topic,
        prefix="unbound",
        threads=NORMAL_THREADS,
        max_seconds=30,
        headers={"X-Api-Key": key},
    ) as load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        accepted_before = load.accepted_count()
        unbind_queue(broker_url=stack.env["CELERY_BROKER_URL"], queue_name=stack.queue)
        time.sleep(BINDING_GONE_S)  # traffic while the binding is gone
        result = load.stop()
    figures, _ = drain(
        stack, topic, result, scenario="queue binding deleted", timeout=SCENARIO_DRAIN_TIMEOUT_S
    )
    report(
        figures,
        f"requests answered 202={result.statuses[202]} 503={result.statuses[503]}; events "
        f"accepted after the unbinding={len(result.accepted) - accepted_before}; "
        f"lost={len(figures.lost)}",
    )
    assert not figures.lost, (
        f"{len(figures.lost)} events were answered 202 and never delivered: {figures.lost[:5]}"
    )
    assert set(result.statuses) <= {202, 503}, f"unexpected answers: {dict(result.statuses)}"
    for rejection in result.rejections:
        assert rejection.retry_after is not None, rejection


def test_gzip_expansion_keeps_memory_bounded(fault_stack, topic, report):
    stack, key = keyed_stack(fault_stack, topic)
    stack.start_worker()
    server = stack.start_server()
    probes = LoadResult()
    for _ in range(3):  # load the request path's modules before the idle figure
        post_probe(stack, topic, key, probes)
    idle_kib = tree_rss_kib(server.pid)
    bomb = named(event_cases(tag=uuid.uuid4().hex[:8], topic=topic, key=key), "gzip-bomb")
    with RssSampler(server.pid) as rss:
        answers = send_all(stack.port, bomb * BOMBS, threads=BOMB_THREADS)
    figures, _ = drain(
        stack, topic, probes, scenario="gzip expansion", timeout=SCENARIO_DRAIN_TIMEOUT_S
    )
    seconds = [answer.seconds for answer in answers]
    report(
        figures,
        f"gzip bombs: {len(answers)} ({answer_summary(answers)}); serve.py RSS idle "
        f"{idle_kib // 1024} MiB, peak {rss.peak_kib // 1024} MiB (bound idle + "
        f"{RSS_GROWTH_BOUND_KIB // 1024} MiB); answer median {statistics.median(seconds):.3f}s "
        f"max {max(seconds):.3f}s",
    )
    assert rss.peak_kib < idle_kib + RSS_GROWTH_BOUND_KIB, (
        f"serve.py grew from {idle_kib} KiB to {rss.peak_kib} KiB"
    )
    wrong = [problem for answer in answers if (problem := misjudged(answer))]
    assert not wrong, "\n".join(wrong)
    assert not figures.lost


def test_chunked_post_and_multi_member_gzip(fault_stack, topic, report):
    stack, key = keyed_stack(fault_stack, topic)
    stack.start_worker()
    stack.start_server()
    cases = named(
        event_cases(tag=uuid.uuid4().hex[:8], topic=topic, key=key),
        "chunked-post",
        "gzip-two-members",
        "gzip-two-documents",
    )
    answers = [send(stack.port, case) for case in cases]
    ledger = LoadResult(requests=len(answers))
    for answer in answers:
        expected_ids = {event["id"] for event in answer.case.expected_events}
        ledger.sent |= expected_ids
        if answer.status == 202:
            ledger.accepted |= expected_ids
    figures, records = drain(
        stack, topic, ledger, scenario="chunked and multi-member gzip", timeout=20
    )
    problems = [problem for answer in answers if (problem := misjudged(answer))]
    problems += exact_delivery_problems(answers, records)
    report(
        figures,
        *(f"{answer.case.name}: {answer.status} {answer.code or ''}" for answer in answers),
    )
    assert not problems, "\n".join(problems)
