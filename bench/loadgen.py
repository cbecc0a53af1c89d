"""Drive load: wrk with a Lua script (closed loop) and an open-loop generator at a fixed rate."""

import asyncio
import json
import os
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "load.lua"
WRK_THREADS = 2
WRK_EXTRA_WAIT_S = 30.0
# load.lua modes that send a client protocol's batch; their answers list no event ids.
PROTOCOL_MODES = ("segment", "posthog", "snowplow", "confluent")
PROTOCOL_BATCH_SIZE = 100  # load.lua's BATCH_SIZE
NOT_SENT = -2  # an open-loop request given up on before it was sent


@dataclass
class WrkRun:
    """One wrk run: wrk's exact totals and percentiles, plus every answer's time and latency."""

    offset_s: float  # when it started, in seconds since the start of the benchmark
    duration_s: float
    requests: int
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    percentiles: list[tuple[float, float]]  # (percentile, milliseconds), all answers
    min_ms: float
    max_ms: float
    mean_ms: float
    accepted_events: int
    ids_file: str
    sent_file: str  # protocol modes: the ids of every request sent, one request a line
    load_average: float
    wrk_cpu_s: float  # CPU seconds the load generator itself used
    # One entry per answer: seconds since the run started, status, latency ms (None: unknown).
    done_s: list[float] = field(default_factory=list, repr=False)
    status_of: list[int] = field(default_factory=list, repr=False)
    latency_ms: list[float | None] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    def as_json(self) -> dict:
        fields = {k: v for k, v in self.__dict__.items() if k not in SAMPLE_FIELDS}
        return {**fields, "statuses": {str(k): v for k, v in self.statuses.items()}}


SAMPLE_FIELDS = ("done_s", "status_of", "latency_ms")


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds used so far by these processes and all their descendants."""
    parents, cpu = {}, {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    wanted, total = set(pids), 0.0
    for pid in sorted(cpu):
        ancestor = pid
        while ancestor > 1 and ancestor not in wanted:
            ancestor = parents.get(ancestor, 0)
        if ancestor in wanted:
            total += cpu[pid]
    return total


def ensure_wrk() -> str:
    """Return the wrk binary, installing Debian's package if it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    return shutil.which("wrk") or "wrk"


def wrk_version(binary: str) -> str:
    completed = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (completed.stdout + completed.stderr).strip().splitlines()[0]


def run_wrk(
    *,
    binary: str,
    base_url: str,
    path: str,
    mode: str,
    connections: int,
    seconds: int,
    prefix: str,
    out: Path,
    timeout_s: float,
    offset_s: float,
    api_key: str | None,
) -> WrkRun:
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        "-t", str(min(WRK_THREADS, connections)),
        "-c", str(connections),
        "-d", f"{seconds}s",
        "--timeout", f"{timeout_s:g}s",
        "-s", str(WRK_SCRIPT),
        base_url,
        "--", mode, prefix, path, str(out),
        api_key or "",
    ]  # fmt: skip
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_us = time.monotonic() * 1e6  # the script's clock is CLOCK_MONOTONIC too
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + timeout_s + WRK_EXTRA_WAIT_S,
        check=False,
    )
    if completed.returncode != 0 or "BENCH requests" not in completed.stdout:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr.strip()[-500:]}"
            f" {completed.stdout.strip()[-500:]}"
        )
    values: dict[str, list[str]] = {}
    percentiles = []
    statuses = {}
    for line in completed.stdout.splitlines():
        if not line.startswith("BENCH "):
            continue
        _, name, *rest = line.split()
        if name == "pct":
            percentiles.append((float(rest[0]), int(rest[1]) / 1000))
        elif name == "status":
            statuses[int(rest[0])] = int(rest[1])
        else:
            values[name] = rest
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu_s = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    ids_file = out.with_name(out.name + ".ids")
    if mode in PROTOCOL_MODES:  # their answers list no ids: each 2xx accepted a whole batch
        ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
        accepted_events = ok * PROTOCOL_BATCH_SIZE
    else:
        with ids_file.open() as ids:
            accepted_events = sum(1 for _ in ids)
    done_s, status_of, latency_ms = [], [], []
    with out.with_name(out.name + ".samples").open() as samples:
        for line in samples:
            done_us, status, latency_us = line.split()
            done_s.append((int(done_us) - started_us) / 1e6)
            status_of.append(int(status))
            latency_ms.append(int(latency_us) / 1000 if latency_us != "-1" else None)
    connect, read, write, timeout = (int(value) for value in values["socket_errors"])
    return WrkRun(
        offset_s=offset_s,
        duration_s=int(values["duration_us"][0]) / 1e6,
        requests=int(values["requests"][0]),
        statuses=statuses,
        socket_errors={"connect": connect, "read": read, "write": write, "timeout": timeout},
        percentiles=percentiles,
        min_ms=int(values["latency_min_us"][0]) / 1000,
        max_ms=int(values["latency_max_us"][0]) / 1000,
        mean_ms=float(values["latency_mean_us"][0]) / 1000,
        accepted_events=accepted_events,
        ids_file=str(ids_file),
        sent_file=str(out.with_name(out.name + ".sent")),
        load_average=os.getloadavg()[0],
        wrk_cpu_s=wrk_cpu_s,
        done_s=done_s,
        status_of=status_of,
        latency_ms=latency_ms,
    )


# --- open loop -----------------------------------------------------------------------------


@dataclass
class OpenLoopRun:
    """Every request of a fixed-rate run; latency counts from the intended send time."""

    rate: float
    seconds: float
    connections: int
    intended_s: list[float] = field(default_factory=list)  # offset from the start
    latency_ms: list[float] = field(default_factory=list)  # from the intended send time
    service_ms: list[float] = field(default_factory=list)  # from the actual send
    # 0: connection error, -1: timeout, NOT_SENT: given up before sending
    statuses: list[int] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)
    mode: str = "single"  # single | batch | show, as bench/wrk/load.lua's modes
    late_sends: int = 0  # requests sent more than 1 ms after their intended time
    max_schedule_lag_ms: float = 0.0  # how late the generator itself queued a request
    wall_s: float = 0.0  # until the last answer arrived


def single_event(event_id: str, n: int) -> bytes:
    """The same ~200-byte event as bench/wrk/load.lua sends."""
    return (
        f'{{"id":"{event_id}","key":"user-{n % 97}","type":"page_view",'
        '"page":"/products/shoes/item-1234","ref":"/search?q=run","ts":1764316800123,'
        '"ua":"Mozilla/5.0 (X11; Linux x86_64)","props":{"ab":"B"}}'
    ).encode()


def batch_body(prefix: str, n: int) -> bytes:
    """A batch of PROTOCOL_BATCH_SIZE single events, as bench/wrk/load.lua's batch mode."""
    events = b",".join(
        single_event(f"{prefix}-{index}", n) for index in range(1, PROTOCOL_BATCH_SIZE + 1)
    )
    return b'{"events":[' + events + b"]}"


def request_bytes(
    *, mode: str, host: str, port: int, path: str, event_id: str, n: int, key_header: str
) -> bytes:
    """One HTTP/1.1 request of `mode`: a single event, a batch, or the tracking-pixel GET."""
    if mode == "show":
        return (
            f"GET {path}?id={event_id} HTTP/1.1\r\nHost: {host}:{port}\r\n{key_header}\r\n".encode()
        )
    body = batch_body(event_id, n) if mode == "batch" else single_event(event_id, n)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{key_header}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length is not None else await reader.read()
    return status, body, close or length is None


async def _open_loop(
    run: OpenLoopRun,
    *,
    host: str,
    port: int,
    path: str,
    prefix: str,
    timeout_s: float,
    api_key: str | None,
    give_up_after_s: float | None,
) -> None:
    loop = asyncio.get_running_loop()
    key_header = f"X-Api-Key: {api_key}\r\n" if api_key else ""
    queue: asyncio.Queue = asyncio.Queue()
    idle = [run.connections]

    async def connection_worker() -> None:
        reader = writer = None
        while (job := await queue.get()) is not None:
            intended, request = job
            if loop.time() - intended > 0.001:
                run.late_sends += 1
            if give_up_after_s is not None and loop.time() - intended > give_up_after_s:
                # Far past any latency bound: the run has failed, so sending the rest of the
                # queue would only make it last longer.
                run.intended_s.append(intended - start)
                run.latency_ms.append((loop.time() - intended) * 1000)
                run.service_ms.append(0.0)
                run.statuses.append(NOT_SENT)
                continue
            idle[0] -= 1
            status, sent = 0, loop.time()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                sent = loop.time()
                writer.write(request)
                status, payload, close = await asyncio.wait_for(_read_response(reader), timeout_s)
                if 200 <= status < 300:
                    run.accepted_ids.extend(json.loads(payload)["ids"])
            except TimeoutError:
                status, close = -1, True
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status, close = 0, True
            done = loop.time()
            idle[0] += 1
            if close and writer is not None:
                writer.close()
                reader = writer = None
            run.intended_s.append(intended - start)
            run.latency_ms.append((done - intended) * 1000)
            run.service_ms.append((done - sent) * 1000)
            run.statuses.append(status)
        if writer is not None:
            writer.close()

    start = loop.time() + 0.1
    workers = [asyncio.create_task(connection_worker()) for _ in range(run.connections)]
    total = int(run.rate * run.seconds)
    sent = 0
    while sent < total:
        now = loop.time()
        due = min(total, int((now - start) * run.rate) + 1)
        lag_ms = (now - (start + sent / run.rate)) * 1000 if due > sent else 0.0
        run.max_schedule_lag_ms = max(run.max_schedule_lag_ms, lag_ms)
        while sent < due:
            request = request_bytes(
                mode=run.mode,
                host=host,
                port=port,
                path=path,
                event_id=f"{prefix}-{sent}",
                n=sent,
                key_header=key_header,
            )
            queue.put_nowait((start + sent / run.rate, request))
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / run.rate - loop.time()))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)


def run_open_loop(
    *,
    host: str,
    port: int,
    path: str,
    rate: float,
    seconds: float,
    connections: int,
    prefix: str,
    timeout_s: float,
    api_key: str | None,
    mode: str = "single",
    give_up_after_s: float | None = None,
) -> OpenLoopRun:
    """Send `mode` requests at `rate` per second whatever the answers take.

    give_up_after_s: requests that could not be sent that long after their intended time are
    not sent at all (status NOT_SENT), so an overloaded run ends soon after its planned length.
    """
    run = OpenLoopRun(rate=rate, seconds=seconds, connections=connections, mode=mode)
    started = time.monotonic()
    asyncio.run(
        _open_loop(
            run,
            host=host,
            port=port,
            path=path,
            prefix=prefix,
            timeout_s=timeout_s,
            api_key=api_key,
            give_up_after_s=give_up_after_s,
        )
    )
    run.wall_s = time.monotonic() - started
    return run
