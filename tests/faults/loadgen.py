"""A bounded load client that keeps a ledger of which event ids the gateway accepted."""

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

REQUEST_TIMEOUT_S = 12.0
PAUSE_AFTER_ERROR_S = 0.05
BATCH_EVERY = 4
BATCH_SIZE = 5
WRONG_IDS = "2xx with other ids than sent"


@dataclass
class Rejection:
    """What one 503/429 answer looked like."""

    status: int
    seconds: float
    retry_after: str | None
    body: object
    started: float = 0.0  # time.monotonic() when the request started


@dataclass
class LoadResult:
    """The ledger of one load run, merged from every client thread."""

    accepted: set = field(default_factory=set)
    sent: set = field(default_factory=set)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    # (time.monotonic() when the request started, error name) of every request without an answer
    failures: list = field(default_factory=list)
    rejections: list = field(default_factory=list)
    # id -> the event as sent, kept only with LoadGenerator(record_events=True)
    events: dict = field(default_factory=dict)
    requests: int = 0
    started: float = 0.0
    finished: float = 0.0

    @property
    def rejected(self) -> int:
        return self.statuses[503] + self.statuses[429]

    @property
    def other_errors(self) -> int:
        others = sum(n for status, n in self.statuses.items() if status not in (202, 503, 429))
        return others + sum(self.errors.values())

    @property
    def timeouts(self) -> int:
        return self.errors["TimeoutError"]

    @property
    def duration(self) -> float:
        return self.finished - self.started

    def merge(self, other: "LoadResult") -> None:
        self.accepted |= other.accepted
        self.sent |= other.sent
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.failures += other.failures
        self.rejections += other.rejections
        self.events.update(other.events)
        self.requests += other.requests


class LoadGenerator:
    """POST single events and small batches with unique ids from `threads` threads."""

    def __init__(
        self,
        *,
        port: int,
        topic: str,
        prefix: str,
        threads: int = 8,
        max_requests: int = 20_000,
        max_seconds: float = 30.0,
        timeout_s: float = REQUEST_TIMEOUT_S,
        padding_bytes: int = 0,
        pause_after_rejection_s: float = PAUSE_AFTER_ERROR_S,
        headers: dict | None = None,
        record_events: bool = False,
    ):
        self.port = port
        self.topic = topic
        self.prefix = prefix
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.padding = "x" * padding_bytes
        self.pause_after_rejection_s = pause_after_rejection_s
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.record_events = record_events
        self.result = LoadResult()
        self._issued = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), name=f"load-{n}", daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> "LoadGenerator":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self.result.started = time.monotonic()
        self._deadline = self.result.started + self.max_seconds
        for thread in self._threads:
            thread.start()

    def wait(self) -> LoadResult:
        """Let the run end by itself (count or time bound) and return the ledger."""
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()) + self.timeout_s + 5)
        return self.stop()

    def stop(self) -> LoadResult:
        """Stop issuing requests, wait for the ones in flight, and return the ledger."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)
        assert not any(thread.is_alive() for thread in self._threads), "a load thread hangs"
        self.result.finished = time.monotonic()
        return self.result

    def accepted_count(self) -> int:
        with self._lock:
            return len(self.result.accepted)

    def _take_ticket(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or self._issued >= self.max_requests:
                return None
            if time.monotonic() >= self._deadline:
                return None
            self._issued += 1
            return self._issued

    def _run(self, thread_number: int) -> None:
        while (ticket := self._take_ticket()) is not None:
            if ticket % BATCH_EVERY == 0:
                events = [
                    {"id": f"{self.prefix}-{ticket}-{i}", "n": ticket, "i": i, "pad": self.padding}
                    for i in range(BATCH_SIZE)
                ]
                document = {"events": events}
            else:
                events = [{"id": f"{self.prefix}-{ticket}", "n": ticket, "pad": self.padding}]
                document = events[0]
            outcome = LoadResult(requests=1)
            outcome.sent.update(event["id"] for event in events)
            if self.record_events:
                outcome.events.update((event["id"], event) for event in events)
            self._post(document, events, outcome)
            with self._lock:
                self.result.merge(outcome)

    def _post(self, document, events: list, outcome: LoadResult) -> None:
        body = json.dumps(document).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        started = time.monotonic()
        try:
            connection.request(
                "POST",
                f"/api/v1/events/{self.topic}",
                body=body,
                headers=self.headers,
            )
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            outcome.errors[_error_name(error)] += 1
            outcome.failures.append((started, _error_name(error)))
            self._stop.wait(PAUSE_AFTER_ERROR_S)
            return
        finally:
            connection.close()
        seconds = time.monotonic() - started
        outcome.statuses[response.status] += 1
        if 200 <= response.status < 300:
            ids = json.loads(raw)["ids"]
            if ids == [event["id"] for event in events]:
                outcome.accepted.update(ids)
            else:
                outcome.errors[WRONG_IDS] += 1
        elif response.status in (503, 429):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw[:200]
            outcome.rejections.append(
                Rejection(
                    response.status, seconds, response.getheader("Retry-After"), parsed, started
                )
            )
            self._stop.wait(self.pause_after_rejection_s)


def _error_name(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "TimeoutError"
    return type(error).__name__
