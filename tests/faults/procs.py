"""Find, measure and kill a process and its descendants through /proc (serve.py may supervise)."""

import contextlib
import os
import signal
from pathlib import Path

from tests.waiting import wait_until

KILL_TIMEOUT_S = 10


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    return stat.rsplit(")", 1)[1].split()


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def is_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Return the pids below `pid`, parents before their children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := parent_pid(int(entry.name))) is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """Return the resident memory of `pid` and all its descendants together."""
    return sum(rss_kib(each) for each in [pid, *descendants(pid)])


def kill_tree(process) -> list[int]:
    """SIGKILL a Popen child and every process below it; return the pids killed."""
    pids = [process.pid, *descendants(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(KILL_TIMEOUT_S)
    wait_until(
        lambda: not any(is_alive(pid) for pid in pids[1:]),
        timeout=KILL_TIMEOUT_S,
        interval=0.05,
        message="killed processes did not go away",
    )
    return pids
