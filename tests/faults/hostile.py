"""The hostile requests of issue 10, and checks that read Kafka, the database and worker logs."""

import contextlib
import gzip
import http.client
import json
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec
import psycopg
from kafka import KafkaConsumer, TopicPartition
from kombu import Connection

from tests.stack import POSTGRES_ADMIN_URL

from .conftest import Figures, dead_letter_count
from .loadgen import LoadResult

REQUEST_TIMEOUT_S = 15.0
CONSUMER_REQUEST_TIMEOUT_MS = 6_000
TOPIC_IDLE_S = 1.5
TOPIC_READ_TIMEOUT_S = 20.0
DRAIN_POLL_S = 0.5
DATABASE_CONNECT_TIMEOUT_S = 5
BROKER_CONNECT_TIMEOUT_S = 2

# Bigger than KAFKA_MAX_REQUEST_SIZE (1 MiB), smaller than INGEST_MAX_DECOMPRESSED_BYTES (4 MiB).
LARGE_EVENT_BLOB_BYTES = 2 * 1024 * 1024
# `[{},{},...]` filling INGEST_MAX_DECOMPRESSED_BYTES: about 4 KB of gzip.
GZIP_BOMB_BYTES = 4 * 1024 * 1024
HUGE_INTEGER = 123456789012345678901234567890
# A bound, not a measurement: generous on two busy cores for a parser that stops at the limit.
BOMB_ANSWER_MAX_S = 2.0
DEEP_NESTING = 100_000
LONG_RECEIPT_DIGITS = 5_000

# Answers to bad input the issue names; a case lists the statuses and codes it may get.
BAD_JSON = frozenset({"invalid_json", "invalid_event"})
BAD_ENCODING = frozenset({"invalid_encoding"})
TOO_BIG = frozenset({"too_many_events", "body_too_large"})
ACCEPTED = frozenset()

RECEIVED_LINE = re.compile(r"Task ingest\.deliver_batch\[([0-9a-f-]+)\] received")


@dataclass(frozen=True)
class HostileCase:
    """One request a hostile or careless client sends, and every answer that would be right.

    `expect` maps each allowed status to the error codes allowed with it (empty for a 2xx).
    `if_accepted` says what must become of the events of a 2xx: "exact" (each of
    `expected_events` is in Kafka, decoding to exactly that object) or "dead_letter" (each
    returned id is a dead letter of its own); a case without 2xx in `expect` must be refused.
    """

    name: str
    path: str
    expect: dict
    body: bytes | None = None
    headers: dict = field(default_factory=dict)
    method: str = "POST"
    chunks: tuple[bytes, ...] | None = None
    if_accepted: str = ""
    expected_events: tuple = ()
    invented_topic: str | None = None
    max_seconds: float | None = None


@dataclass
class HostileAnswer:
    """What the gateway answered to one hostile case."""

    case: HostileCase
    status: int | None
    body: object
    seconds: float
    error: str = ""

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def ids(self) -> list:
        return list(self.body.get("ids", [])) if isinstance(self.body, dict) else []


def gzip_members(*parts: bytes) -> bytes:
    """Return one gzip member per part, concatenated (RFC 1952 allows any number)."""
    return b"".join(gzip.compress(part, compresslevel=9, mtime=0) for part in parts)


def gzip_bomb() -> bytes:
    """Return about 4 KB of gzip that expands to 4 MiB of `[{},{},...]`."""
    count = (GZIP_BOMB_BYTES - 1) // 3
    return gzip.compress(b"[" + b"{}," * (count - 1) + b"{}]", compresslevel=9, mtime=0)


def event_cases(*, tag: str, topic: str, key: str) -> list[HostileCase]:
    """Return every hostile case on the event endpoint once, with event ids unique to `tag`."""
    events = f"/api/v1/events/{topic}"
    json_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    gzip_headers = {**json_headers, "Content-Encoding": "gzip"}

    def event_id(name: str) -> str:
        return f"hostile-{name}-{tag}"

    def poison(name: str, body: str | bytes) -> HostileCase:
        """Input no strict consumer can read: refused, or dead-lettered on its own."""
        return HostileCase(
            name=name,
            path=events,
            body=body.encode() if isinstance(body, str) else body,
            headers=json_headers,
            expect={400: BAD_JSON, 202: ACCEPTED},
            if_accepted="dead_letter",
        )

    def exact(name: str, body, expected: list, *, headers=None, refusals=None, chunks=None):
        """Valid input: delivered exactly as a strict parser reads it (or refused if allowed)."""
        return HostileCase(
            name=name,
            path=events,
            body=body,
            chunks=chunks,
            headers=headers or json_headers,
            expect={202: ACCEPTED, **(refusals or {})},
            if_accepted="exact",
            expected_events=tuple(expected),
        )

    def refused(name: str, body: bytes, expect: dict, *, headers=None, **extra) -> HostileCase:
        return HostileCase(
            name=name,
            path=events,
            body=body,
            headers=headers or json_headers,
            expect=expect,
            **extra,
        )

    def with_id(name: str, rest: str) -> str:
        return f'{{"id":"{event_id(name)}",{rest}}}'

    surrogate_pair = {"id": event_id("surrogate-pair"), "v": "\U0001f600"}
    huge_integer = {"id": event_id("huge-integer"), "v": HUGE_INTEGER}
    chunked = [{"id": event_id(f"chunked-{n}"), "n": n} for n in range(3)]
    members = [{"id": event_id("member-1")}, {"id": event_id("member-2")}]
    deep = "[" * DEEP_NESTING + "]" * DEEP_NESTING
    large_event = json.dumps({"id": event_id("large"), "blob": "a" * LARGE_EVENT_BLOB_BYTES})
    return [
        poison("id-lone-high-surrogate", '{"id":"\\ud800","n":1}'),
        poison("id-lone-low-surrogate", '{"id":"\\udfff","n":1}'),
        poison("key-lone-high-surrogate", with_id("key-high", '"key":"\\ud800"')),
        poison("key-lone-low-surrogate", with_id("key-low", '"key":"\\udfff"')),
        poison("value-lone-surrogate", with_id("value", '"v":"\\udfff"')),
        poison("nested-lone-surrogate", with_id("nested", '"v":{"a":["x","\\ud800"]}')),
        poison("object-key-lone-surrogate", with_id("obj-key", '"v":{"\\ud800":1}')),
        poison("number-1e999", with_id("inf", '"v":1e999')),
        poison("number-minus-1e999", with_id("minus-inf", '"v":-1e999')),
        poison("literal-NaN", with_id("nan", '"v":NaN')),
        poison("literal-Infinity", with_id("infinity", '"v":Infinity')),
        poison("literal-minus-Infinity", with_id("minus-infinity", '"v":-Infinity')),
        poison(
            "raw-invalid-utf8", with_id("bad-utf8", '"v":"@"').encode().replace(b"@", b"\xff\xfe")
        ),
        poison(
            "raw-encoded-surrogate",
            with_id("cesu", '"v":"@"').encode().replace(b"@", b"\xed\xa0\x80"),
        ),
        exact(
            "valid-surrogate-pair",
            with_id("surrogate-pair", '"v":"\\ud83d\\ude00"').encode(),
            [surrogate_pair],
        ),
        exact(
            "huge-integer",
            json.dumps(huge_integer).encode(),
            [huge_integer],
            refusals={400: BAD_JSON},
        ),
        # Every mainstream parser (JavaScript, Go, Python, msgspec) keeps the last duplicate.
        exact(
            "duplicate-key",
            with_id("dup-key", '"v":1,"v":2').encode(),
            [{"id": event_id("dup-key"), "v": 2}],
            refusals={400: BAD_JSON},
        ),
        exact(
            "duplicate-id",
            with_id("dup-id-a", f'"id":"{event_id("dup-id-b")}"').encode(),
            [{"id": event_id("dup-id-b")}],
            refusals={400: BAD_JSON},
        ),
        exact("chunked-post", None, chunked, chunks=_split(json.dumps(chunked).encode(), 4)),
        exact(
            "gzip-two-members",
            gzip_members(
                f"[{json.dumps(members[0])},".encode(), f"{json.dumps(members[1])}]".encode()
            ),
            members,
            headers=gzip_headers,
            refusals={400: BAD_ENCODING},
        ),
        # Decoding only the first member would accept its event and drop the second's.
        refused(
            "gzip-two-documents",
            gzip_members(with_id("doc-1", '"n":1').encode(), with_id("doc-2", '"n":2').encode()),
            {400: BAD_JSON | BAD_ENCODING},
            headers=gzip_headers,
        ),
        refused(
            "gzip-trailing-garbage",
            gzip_members(with_id("trailing", '"n":1').encode()) + b"garbage!",
            {400: BAD_ENCODING},
            headers=gzip_headers,
        ),
        refused(
            "event-too-large",
            gzip_members(large_event.encode()),
            {413: frozenset({"event_too_large"})},
            headers=gzip_headers,
        ),
        refused(
            "gzip-bomb",
            gzip_bomb(),
            {413: TOO_BIG},
            headers=gzip_headers,
            max_seconds=BOMB_ANSWER_MAX_S,
        ),
        refused("deep-nesting-open", ("[" * DEEP_NESTING).encode(), {400: BAD_JSON}),
        refused("deep-nesting-balanced", with_id("deep", f'"v":{deep}').encode(), {400: BAD_JSON}),
        refused("empty-body", b"", {400: frozenset({"invalid_json", "invalid_body"})}),
        refused("null-body", b"null", {400: frozenset({"invalid_body"})}),
        refused(
            "wrong-host",
            with_id("host", '"n":1').encode(),
            {400: frozenset({"invalid_host"})},
            headers={**json_headers, "Host": "attacker.example"},
        ),
    ]


def access_cases(
    *, tag: str, hostile_key: str, normal_topic: str, normal_key: str, normal_receipt: str
) -> list[HostileCase]:
    """Return the cases that try another source's topics, keys and receipts."""
    invented = f"invented-{tag}"

    def receipt(name: str, receipt_id: str, key: str, expect: dict) -> HostileCase:
        return HostileCase(
            name=name,
            method="GET",
            path=f"/api/v1/receipts/{receipt_id}",
            headers={"Authorization": f"Bearer {key}"},
            expect=expect,
        )

    not_found = {404: frozenset({"not_found"})}
    return [
        HostileCase(
            name="forbidden-invented-topic",
            path=f"/api/v1/events/{invented}",
            body=b'{"n":1}',
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {hostile_key}"},
            expect={403: frozenset({"forbidden_topic"})},
            invented_topic=invented,
        ),
        HostileCase(
            name="wrong-key",
            path=f"/api/v1/events/{normal_topic}",
            body=b'{"n":1}',
            headers={"Content-Type": "application/json", "X-Api-Key": f"wrong-{tag}"},
            expect={401: frozenset({"unauthorized"})},
        ),
        receipt("receipt-superscript-two", "%C2%B2", hostile_key, not_found),
        receipt("receipt-5000-digits", "1" * LONG_RECEIPT_DIGITS, hostile_key, not_found),
        receipt("receipt-a.b.c", "a.b.c", hostile_key, not_found),
        receipt("receipt-of-another-source", normal_receipt, hostile_key, not_found),
        receipt("receipt-own", normal_receipt, normal_key, {200: ACCEPTED}),
    ]


def named(cases: list[HostileCase], *names: str) -> list[HostileCase]:
    """Return the cases of these names, in this order."""
    by_name = {case.name: case for case in cases}
    return [by_name[name] for name in names]


def _split(body: bytes, parts: int) -> tuple[bytes, ...]:
    step = -(-len(body) // parts)
    return tuple(body[start : start + step] for start in range(0, len(body), step))


def send(port: int, case: HostileCase, *, timeout: float = REQUEST_TIMEOUT_S) -> HostileAnswer:
    """Send one case as its own connection and return the answer (or the transport error)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        if case.chunks is not None:
            # An iterator and no Content-Length: http.client sends Transfer-Encoding: chunked.
            connection.request(case.method, case.path, body=iter(case.chunks), headers=case.headers)
        else:
            connection.request(case.method, case.path, body=case.body, headers=case.headers)
        response = connection.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as error:
        return HostileAnswer(case, None, None, time.monotonic() - started, type(error).__name__)
    finally:
        connection.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw[:200]
    return HostileAnswer(case, response.status, body, time.monotonic() - started)


def send_all(port: int, cases: list[HostileCase], *, threads: int) -> list[HostileAnswer]:
    """Send every case once from `threads` threads; return when all are answered."""
    pending: queue.SimpleQueue = queue.SimpleQueue()
    for case in cases:
        pending.put(case)
    answers: list[HostileAnswer] = []
    lock = threading.Lock()

    def run() -> None:
        while True:
            try:
                case = pending.get_nowait()
            except queue.Empty:
                return
            answer = send(port, case)
            with lock:
                answers.append(answer)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(len(cases) * REQUEST_TIMEOUT_S)
    assert not any(worker.is_alive() for worker in workers), "a hostile client thread hangs"
    return answers


def misjudged(answer: HostileAnswer) -> str | None:
    """Say what is wrong with an answer to a case, or None when it is one the case allows."""
    case = answer.case
    if answer.status is None:
        return f"{case.name}: no answer ({answer.error})"
    allowed = " or ".join(
        f"{status} {sorted(codes)}" if codes else str(status)
        for status, codes in case.expect.items()
    )
    got = f"{case.name}: got {answer.status} {answer.code or ''}".rstrip()
    if answer.status not in case.expect:
        return f"{got}, expected {allowed}: {_excerpt(answer.body)}"
    if answer.status >= 400:
        if not error_shaped(answer.body):
            return f"{got} without the {{code, message}} error shape: {_excerpt(answer.body)}"
        if answer.code not in case.expect[answer.status]:
            return f"{got}, expected code {sorted(case.expect[answer.status])}"
    if case.max_seconds is not None and answer.seconds > case.max_seconds:
        return f"{case.name}: answered in {answer.seconds:.2f}s, over {case.max_seconds}s"
    if case.if_accepted == "exact" and 200 <= answer.status < 300:
        expected_ids = [event["id"] for event in case.expected_events]
        if answer.ids != expected_ids:
            return f"{got} with ids {answer.ids}, expected {expected_ids}"
    return None


def per_case(problems: list[tuple[str, str]]) -> list[str]:
    """Keep the first problem of each case (name, message), with how often the case had one."""
    counts = Counter(name for name, _ in problems)
    first: dict[str, str] = {}
    for name, message in problems:
        first.setdefault(name, message)
    return [
        message if counts[name] == 1 else f"{message} [{counts[name]}x]"
        for name, message in first.items()
    ]


def error_shaped(body) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("code"), str)
        and isinstance(body.get("message"), str)
    )


def _excerpt(body) -> str:
    return repr(body)[:160]


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as bytes, as a consumer in any language receives it."""

    event_id: str | None
    key: bytes | None
    value: bytes
    partition: int
    offset: int


def read_raw_records(*, bootstrap: str, topic: str, timeout_s: float) -> list[RawRecord]:
    """Return the records of `topic` from the beginning, undecoded, until it falls idle.

    Stops after `timeout_s` even while a looping batch keeps producing duplicates. No consumer
    group (Tansu does not complete group joins), and no end offsets: Tansu's can lag a record.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=[bootstrap],
        enable_auto_commit=False,
        consumer_timeout_ms=int(TOPIC_IDLE_S * 1000),
        request_timeout_ms=CONSUMER_REQUEST_TIMEOUT_MS,
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions)]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + timeout_s
        records = []
        for message in consumer:
            records.append(_raw_record(message))
            if time.monotonic() > deadline:
                break
        return records
    finally:
        consumer.close()


def _raw_record(message) -> RawRecord:
    raw_id = dict(message.headers or []).get("event-id")
    return RawRecord(
        event_id=raw_id.decode(errors="backslashreplace") if raw_id else None,
        key=message.key,
        value=message.value,
        partition=message.partition,
        offset=message.offset,
    )


def drain(
    stack, topic: str, ledger: LoadResult, *, scenario: str, timeout: float
) -> tuple[Figures, list[RawRecord]]:
    """Like conftest.drain_and_count, but on bounded raw reads; also return the records read."""
    started = time.monotonic()
    deadline = started + timeout
    previous, unsettled = -1, ""
    while True:
        try:
            depth = stack.queue_depth()
        except Exception:  # the broker may be coming back; keep waiting
            depth = None
        records = read_raw_records(
            bootstrap=stack.kafka_address, topic=topic, timeout_s=TOPIC_READ_TIMEOUT_S
        )
        ids = {record.event_id for record in records}
        if depth == 0 and len(records) == previous and ledger.accepted <= ids:
            break
        if time.monotonic() > deadline:
            unsettled = f"queue depth {depth}, topic {previous} -> {len(records)} records"
            break
        previous = len(records)
        time.sleep(DRAIN_POLL_S)
    counts = Counter(record.event_id for record in records)
    figures = Figures(
        scenario=scenario,
        accepted=len(ledger.accepted),
        delivered=len(ledger.accepted & ids),
        lost=sorted(ledger.accepted - ids),
        duplicates=len(records) - len(counts),
        foreign=sorted(ids - ledger.sent),
        mismatched=[
            record.event_id for record in records if _carried_id(record) != record.event_id
        ],
        dead_letters=dead_letter_count(stack),
        result=ledger,
        drain_seconds=time.monotonic() - started,
        unsettled=unsettled,
    )
    return figures, records


def _carried_id(record: RawRecord):
    """Return the `id` inside a record's value (leniently parsed), or None."""
    try:
        value = json.loads(record.value)
    except ValueError:
        return None
    return value.get("id") if isinstance(value, dict) else None


def strictness_error(value: bytes) -> str | None:
    """Say why `value` is not strict UTF-8 JSON (RFC 8259), or None when it is."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8: {error}"
    try:
        msgspec.json.decode(value)
    except msgspec.DecodeError as error:
        return f"not strict JSON: {error}"
    return None


def batch_receptions(worker_log: str) -> Counter:
    """Count how many times the worker received each batch (task id) in its log."""
    return Counter(RECEIVED_LINE.findall(worker_log))


def database_url(stack) -> str:
    return stack.database.url.replace("postgres://", "postgresql://")


def query(stack, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(database_url(stack), connect_timeout=DATABASE_CONNECT_TIMEOUT_S) as db:
        return db.execute(sql, params).fetchall()


def dead_letter_rows(stack) -> list[tuple[list, int]]:
    """Return (event_ids, number of records) of every dead letter."""
    return query(stack, "SELECT event_ids, jsonb_array_length(records) FROM ingest_deadletter")


def outcome_batches(stack) -> dict[str, tuple[str, int]]:
    """Return batch id -> (status, attempts) of every recorded delivery outcome."""
    rows = query(stack, "SELECT batch_id, status, attempts FROM ingest_deliveryoutcome")
    return {batch_id: (status, attempts) for batch_id, status, attempts in rows}


def stat_topics(stack) -> set[str]:
    return {topic for (topic,) in query(stack, "SELECT DISTINCT topic FROM ingest_eventstat")}


def accepted_stat(stack, topic: str) -> int:
    rows = query(
        stack,
        "SELECT coalesce(sum(value), 0) FROM ingest_eventstat "
        "WHERE metric = 'accepted' AND topic = %s",
        (topic,),
    )
    return int(rows[0][0])


@contextlib.contextmanager
def database_refusing_connections(name: str):
    """Make PostgreSQL refuse every session of database `name`, and end the open ones.

    The shared server keeps running for everyone else; ALLOW_CONNECTIONS false refuses
    superusers too. Yield how many sessions were ended.
    """
    with psycopg.connect(
        POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=DATABASE_CONNECT_TIMEOUT_S
    ) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            (ended,) = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
            yield ended
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')


def unbind_queue(*, broker_url: str, queue_name: str) -> None:
    """Delete the binding Celery declares for its default queue (direct exchange of its name)."""
    with Connection(broker_url, connect_timeout=BROKER_CONNECT_TIMEOUT_S) as connection:
        connection.default_channel.queue_unbind(
            queue=queue_name, exchange=queue_name, routing_key=queue_name
        )
