"""serve.py --processes 2: one port, two server processes, restarts, and a clean stop."""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from ingestsite import embedded
from ingestsite.server.options import usable_cores
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SHUTDOWN_TIMEOUT_S = 5
WAIT_TIMEOUT_S = 30
EVENTS = 20
PROCESS_POLL_S = 0.02
TOPIC_POLL_S = 0.5


def healthz_pid(stack) -> int:
    status, _, body = stack.request("GET", "/healthz", timeout=5)
    assert status == 200, body
    return body["process"]["pid"]


def wait_for_server_pids(stack, *, count: int) -> set[int]:
    """Ask /healthz on fresh connections until `count` different processes have answered."""
    seen = set()

    def all_answered() -> bool:
        seen.add(healthz_pid(stack))
        return len(seen) >= count

    wait_until(
        all_answered,
        timeout=WAIT_TIMEOUT_S,
        interval=PROCESS_POLL_S,
        message=lambda: f"only {seen} answered /healthz",
    )
    return seen


def proc_state(pid: int) -> tuple[str, int] | None:
    """Return (state, parent pid) of a process from /proc, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    state, ppid = stat.rpartition(")")[2].split()[:2]
    return state, int(ppid)


def is_running(pid: int) -> bool:
    state = proc_state(pid)
    if state is None:
        return False
    if state[0] != "Z":
        return True
    # A killed process's main thread turns zombie before its other threads have exited, and the
    # listening socket they share stays open (taking, then resetting, connections) until they do.
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except FileNotFoundError:
        return False


def wait_until_dead(pids, *, timeout: float) -> None:
    wait_until(
        lambda: not any(is_running(pid) for pid in pids),
        timeout=timeout,
        interval=PROCESS_POLL_S,
        message=f"some of {pids} still run",
    )


def post_events(stack, topic: str) -> set[str]:
    ids = set()
    for n in range(EVENTS):
        status, _, body = stack.post_json(f"/api/v1/events/{topic}", {"n": n})
        assert status == 202, body
        ids.update(body["ids"])
    return ids


def wait_for_records(stack, topic: str, ids: set[str]) -> None:
    wait_until(
        lambda: ids <= {record.event_id for record in stack.read_topic(topic, idle_timeout_s=1)},
        timeout=WAIT_TIMEOUT_S,
        interval=TOPIC_POLL_S,
        message=f"not every event of {topic} reached Kafka",
    )


@pytest.fixture
def stack(stack_factory):
    stack = stack_factory()
    stack.start_worker()
    stack.start_server(
        "--processes", "2", "--cpu-affinity", "--threads", "8",
        "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S),
    )  # fmt: skip
    return stack


def test_two_processes_share_the_port_survive_a_kill_and_stop_on_sigterm(stack):
    supervisor = stack.server.pid
    pids = wait_for_server_pids(stack, count=2)
    assert supervisor not in pids
    assert {proc_state(pid)[1] for pid in pids} == {supervisor}
    affinities = [os.sched_getaffinity(pid) for pid in pids]
    assert all(len(cores) == 1 for cores in affinities)
    if len(usable_cores()) >= 2:
        assert affinities[0] != affinities[1]

    topic = f"procs-{uuid.uuid4().hex[:8]}"
    wait_for_records(stack, topic, post_events(stack, topic))

    victim, survivor = sorted(pids)
    os.kill(victim, signal.SIGKILL)
    wait_until_dead([victim], timeout=5)
    # Every request meanwhile is answered (by the survivor) until the replacement answers too.
    pids = wait_for_server_pids(stack, count=2)
    assert victim not in pids and survivor in pids
    (replacement,) = pids - {survivor}
    assert proc_state(replacement)[1] == supervisor
    topic = f"procs-after-{uuid.uuid4().hex[:8]}"
    wait_for_records(stack, topic, post_events(stack, topic))

    started = time.monotonic()
    stack.server.send_signal(signal.SIGTERM)
    assert stack.server.wait(timeout=SHUTDOWN_TIMEOUT_S) == 0
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S
    assert [proc_state(pid) for pid in pids] == [None, None]
    assert not embedded.is_listening("127.0.0.1", stack.port)


def test_server_processes_stop_when_the_supervisor_is_killed(stack_factory):
    stack = stack_factory()
    stack.start_server("--processes", "2", "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S))
    pids = wait_for_server_pids(stack, count=2)
    stack.server.kill()
    stack.server.wait(timeout=5)
    wait_until_dead(pids, timeout=SHUTDOWN_TIMEOUT_S + 2)
    assert not embedded.is_listening("127.0.0.1", stack.port)
