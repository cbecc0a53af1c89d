"""Run --processes server processes on one port; restart those that die, stop them all on a signal.

The server processes are fresh `serve.py --child` interpreters, not forks, so they inherit no
threads, locks or connections from the supervisor, which only reads settings.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

import django
from django.conf import settings

from ingestsite import embedded
from ingestsite.server.options import SERVER_THREAD_JOIN_S, child_command
from ingestsite.server.standalone import print_configuration

# A child's own stop is bounded by --drain-seconds + --shutdown-timeout + SERVER_THREAD_JOIN_S
# + 1 s of batcher flush (runner.serve_until_stopped); past this margin the supervisor kills it.
CHILD_STOP_MARGIN_S = SERVER_THREAD_JOIN_S + 2.0
CHILD_KILL_WAIT_S = 5.0
SUPERVISE_INTERVAL_S = 0.2
# A child that lived this long died of something other than its start-up: restart it at once.
CHILD_STABLE_S = 10.0
RESTART_BACKOFF_BASE_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0


def restart_delay(quick_exits: int) -> float:
    """Seconds to wait before restarting a child that died young `quick_exits` times in a row."""
    return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2**quick_exits)


@dataclass
class Child:
    """One server process of the supervisor, and how often it died young in a row."""

    index: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float = 0.0

    def start(self, args: argparse.Namespace) -> None:
        self.process = subprocess.Popen(child_command(args, self.index))
        self.started_at = time.monotonic()


def port_problem(address: tuple[str, int]) -> str | None:
    """Say why the server processes could not share `address`, before starting any."""
    host, port = address
    # With SO_REUSEPORT a second gateway would silently share the port instead of failing.
    if embedded.is_listening(host, port):
        return "something already listens there"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind(address)
    except OSError as error:
        return str(error)
    return None


def describe_exit(returncode: int) -> str:
    """Say how a child exited: by its exit code or by the signal that killed it."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def supervise(
    children: list[Child], args: argparse.Namespace, stop_requested: threading.Event
) -> None:
    """Restart each child that exits, backing off while it keeps dying young, until a stop."""
    while not stop_requested.wait(SUPERVISE_INTERVAL_S):
        now = time.monotonic()
        for child in children:
            if child.process is None:
                if now < child.restart_at:
                    continue
                try:
                    child.start(args)
                except OSError as error:  # out of processes or memory: try again later
                    child.quick_exits += 1
                    child.restart_at = now + restart_delay(child.quick_exits)
                    print(f"  process {child.index} could not start: {error}", file=sys.stderr)
                    continue
                print(f"  process {child.index} restarted as pid {child.process.pid}", flush=True)
                continue
            code = child.process.poll()
            if code is None:
                continue
            lifetime = now - child.started_at
            child.quick_exits = 0 if lifetime >= CHILD_STABLE_S else child.quick_exits + 1
            delay = restart_delay(child.quick_exits)
            print(
                f"  process {child.index} pid {child.process.pid} exited with "
                f"{describe_exit(code)} after "
                f"{lifetime:.1f}s; restarting it in {delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            child.process = None
            child.restart_at = now + delay


def stop_children(children: list[Child], *, timeout: float) -> None:
    """Send SIGTERM to every child, wait up to `timeout` seconds in all, then SIGKILL the rest."""
    running = [child.process for child in children if child.process is not None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(
                f"  pid {process.pid} did not stop in {timeout:.1f}s; killing it", file=sys.stderr
            )
            process.kill()
            process.wait(CHILD_KILL_WAIT_S)


def run_supervisor(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    """Start the embedded services once, then run and watch args.processes server processes."""
    mode = settings.INGEST_MODE
    problem = port_problem(args.address)
    if problem is not None:
        print(f"serve.py: cannot listen on {args.bind}: {problem}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        print(
            f"ingest gateway, {mode} mode, supervisor pid {os.getpid()} of {args.processes} "
            "server processes sharing one port"
        )
        if settings.STANDALONE:
            django.setup()  # migrate needs the app registry
        print_configuration(args, stack)
        children = [Child(index) for index in range(args.processes)]
        # Registered after the embedded services, so it runs before they stop.
        stack.callback(
            stop_children,
            children,
            timeout=args.drain_seconds + args.shutdown_timeout + CHILD_STOP_MARGIN_S,
        )
        for child in children:
            child.start(args)
        sys.stdout.flush()
        supervise(children, args, stop_requested)
        print("stopping: SIGTERM to every server process", flush=True)
    print("supervisor stopped", flush=True)
    return 0
