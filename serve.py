#!/usr/bin/env python
"""Run the ingest gateway under cheroot; with nothing configured, run the whole pipeline locally.

With --processes N above 1, this process is a supervisor: it starts the embedded services of
standalone mode once, then runs N fresh `serve.py --child` processes that all listen on the same
port (SO_REUSEPORT: the kernel spreads connections over them), each with its own thread pool and
batcher. It restarts a process that dies and stops them all on SIGTERM or SIGINT. With
--processes 1 the gateway serves in this very process, with no supervisor, as a single process
under systemd or a container runtime expects.
"""

import argparse
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

SERVER_THREAD_JOIN_S = 5.0
STOP_POLL_INTERVAL_S = 0.5
# A child's own stop is bounded by --shutdown-timeout + SERVER_THREAD_JOIN_S + 1 s of batcher
# flush (serve_until_stopped); past this margin the supervisor kills it.
CHILD_STOP_MARGIN_S = SERVER_THREAD_JOIN_S + 2.0
CHILD_KILL_WAIT_S = 5.0
SUPERVISE_INTERVAL_S = 0.2
# A child that lived this long died of something other than its start-up: restart it at once.
CHILD_STABLE_S = 10.0
RESTART_BACKOFF_BASE_S = 0.5
RESTART_BACKOFF_MAX_S = 30.0


def boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def usable_cores() -> list[int]:
    """Return the CPUs this process may run on (its affinity mask, which cgroups may narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    type: Callable
    default: object
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS = (
    Option("--bind", "SERVE_BIND", str, "127.0.0.1:8000", "host:port to listen on"),
    Option(
        "--processes",
        "SERVE_PROCESSES",
        int,
        len(usable_cores()),
        "server processes on the one port (SO_REUSEPORT) under a supervisor; 1 serves in this "
        "process without one; default: the cores this process may use",
    ),
    Option(
        "--cpu-affinity",
        "SERVE_CPU_AFFINITY",
        boolean,
        True,
        "pin server process i to core i modulo the usable cores (faster: docs/BENCHMARKS.md)",
    ),
    # A durable request holds its thread while its batch waits for the window and the confirm,
    # so a process needs about as many threads as connections it serves at once (64 threads:
    # 959 req/s at 200 connections, 150: 1,316; docs/BENCHMARKS.md).
    Option("--threads", "SERVE_THREADS", int, 150, "worker threads of each cheroot pool"),
    Option("--request-queue-size", "SERVE_REQUEST_QUEUE_SIZE", int, 1024, "listen() backlog"),
    Option(
        "--accepted-queue-size",
        "SERVE_ACCEPTED_QUEUE_SIZE",
        int,
        256,
        "accepted connections waiting for a thread; past it cheroot answers 503",
    ),
    Option(
        "--accepted-queue-timeout",
        "SERVE_ACCEPTED_QUEUE_TIMEOUT",
        float,
        1.0,
        "seconds an accepted connection may wait for a queue slot before the 503",
    ),
    Option(
        "--keep-alive-limit",
        "SERVE_KEEP_ALIVE_LIMIT",
        int,
        1024,
        "idle keep-alive connections each process keeps open; past it cheroot closes a connection "
        "after its answer (cheroot's own default, 10, makes most clients reconnect under load)",
    ),
    Option(
        "--timeout",
        "SERVE_TIMEOUT",
        float,
        10.0,
        "seconds one read or write may wait for the client, and an idle connection stays open",
    ),
    Option(
        "--request-timeout",
        "SERVE_REQUEST_TIMEOUT",
        float,
        10.0,
        "seconds a client has to send a whole request (head and body) once its first byte is "
        "read; past it the request is answered 408 and its connection closed",
    ),
    Option(
        "--slow-client-share",
        "SERVE_SLOW_CLIENT_SHARE",
        float,
        0.5,
        "share of --threads that may wait for more bytes of a request; past it a request that "
        "would have to wait is answered 408 and closed at once",
    ),
    Option(
        "--shutdown-timeout",
        "SERVE_SHUTDOWN_TIMEOUT",
        float,
        10.0,
        "seconds to finish requests in flight after SIGTERM",
    ),
    Option("--max-body-size", "SERVE_MAX_BODY_SIZE", int, 1_048_576, "largest request body, bytes"),
    Option(
        "--max-header-size", "SERVE_MAX_HEADER_SIZE", int, 65_536, "largest request head, bytes"
    ),
    Option(
        "--worker-threads",
        "SERVE_WORKER_THREADS",
        int,
        4,
        "threads of the embedded Celery worker (standalone mode only)",
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for option in OPTIONS:
        raw = os.environ.get(option.env, "").strip()
        try:
            default = option.type(raw) if raw else option.default
        except ValueError:
            parser.error(f"{option.env}={raw!r} is not a valid {option.type.__name__}")
        help_text = f"{option.help} [{option.env}]"
        if option.type is boolean:
            parser.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            parser.add_argument(option.flag, type=option.type, default=default, help=help_text)
    # Set by the supervisor on the processes it starts: which one this is.
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.request_timeout <= 0:
        parser.error("--request-timeout must be positive")
    if not 0 <= args.slow_client_share <= 1:
        parser.error("--slow-client-share must be a fraction of the threads, from 0 to 1")
    if args.shutdown_timeout < 0:
        parser.error("--shutdown-timeout must not be negative")
    if args.accepted_queue_size < 1:
        parser.error("--accepted-queue-size must be at least 1: an unbounded queue hides overload")
    if args.cpu_affinity and not hasattr(os, "sched_setaffinity"):
        parser.error("--cpu-affinity needs os.sched_setaffinity, which this platform lacks")
    if args.child is not None and args.child < 0:
        parser.error("--child must not be negative")
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65_535:
        parser.error(f"--bind must be host:port, got {args.bind!r}")
    args.address = (host.strip("[]"), int(port))
    if args.processes > 1 and args.address[1] == 0:
        parser.error("--processes above 1 share one port: --bind needs a port other than 0")
    return args


def child_command(args: argparse.Namespace, index: int) -> list[str]:
    """Return the command line of server process `index`, with every option made explicit."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(index)]
    for option in OPTIONS:
        value = getattr(args, option.dest)
        if option.type is boolean:
            command.append(option.flag if value else f"--no-{option.flag[2:]}")
        else:
            command += [option.flag, str(value)]
    return command


def restart_delay(quick_exits: int) -> float:
    """Seconds to wait before restarting a child that died young `quick_exits` times in a row."""
    return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2**quick_exits)


def start_embedded_services(args: argparse.Namespace, stack: ExitStack) -> None:
    """In standalone mode, migrate SQLite and start what no environment variable points at."""
    from django.conf import settings
    from django.core.management import call_command

    from ingestsite import embedded

    data_dir = settings.INGEST_DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("data_folder_in", "processed_folder", "control_folder"):
        if folder in settings.CELERY_BROKER_TRANSPORT_OPTIONS:
            os.makedirs(settings.CELERY_BROKER_TRANSPORT_OPTIONS[folder], exist_ok=True)
    if "DATABASE_URL" not in os.environ:
        call_command("migrate", interactive=False, verbosity=0)
        print(f"  database : SQLite at {settings.DATABASES['default']['NAME']} (migrated)")
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        address = settings.KAFKA_BOOTSTRAP_SERVERS[0]
        host, port = address.rsplit(":", 1)
        if embedded.is_listening(host, int(port)):
            print(f"  kafka    : reusing the broker already listening on {address}")
        else:
            tansu = embedded.start_tansu(address, log_path=data_dir / "tansu.log")
            stack.callback(embedded.stop_process, tansu, timeout=5)
            print(f"  kafka    : embedded Tansu (memory storage) on {address}, pid {tansu.pid}")
    if "CELERY_BROKER_URL" not in os.environ:
        worker = embedded.start_worker(
            concurrency=args.worker_threads, log_path=data_dir / "worker.log"
        )
        stack.callback(embedded.stop_process, worker, timeout=args.shutdown_timeout + 5)
        print(
            f"  celery   : filesystem broker in {data_dir / 'broker'}, embedded worker "
            f"({args.worker_threads} threads) pid {worker.pid}, log {data_dir / 'worker.log'}"
        )
    print(
        "  Standalone mode is for trying the gateway out. For production set DATABASE_URL, "
        "CELERY_BROKER_URL, KAFKA_BOOTSTRAP_SERVERS, SECRET_KEY and ALLOWED_HOSTS (see README.md)."
    )


def print_configuration(args: argparse.Namespace, stack: ExitStack) -> None:
    """Start what standalone mode embeds, then print the effective configuration."""
    from django.conf import settings

    if settings.STANDALONE:
        start_embedded_services(args, stack)
    else:
        kafka = ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)
        print(f"  kafka    : {kafka} (producer client {settings.KAFKA_CLIENT})")
        print(f"  celery   : {settings.CELERY_BROKER_URL.split('@')[-1]}")
    for option in OPTIONS:
        print(f"  {option.flag:26} {getattr(args, option.dest)!s:16} [{option.env}]")


def build_server(args: argparse.Namespace, *, reuse_port: bool):
    from ingestsite.connections import DeadlineServer
    from ingestsite.wsgi import application

    # What start-up loaded (Django, Celery, the URL resolver) lives as long as the process.
    # Frozen, it is no longer scanned by every full garbage collection, which py-spy showed
    # holding the GIL in a loaded server process (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    server = DeadlineServer(
        args.address,
        application,
        request_timeout=args.request_timeout,
        slow_client_share=args.slow_client_share,
        numthreads=args.threads,
        request_queue_size=args.request_queue_size,
        timeout=args.timeout,
        shutdown_timeout=args.shutdown_timeout,
        accepted_queue_size=args.accepted_queue_size,
        accepted_queue_timeout=args.accepted_queue_timeout,
        reuse_port=reuse_port,
    )
    server.keep_alive_conn_limit = args.keep_alive_limit
    server.max_request_body_size = args.max_body_size
    server.max_request_header_size = args.max_header_size
    return server


def prepare_server(args: argparse.Namespace, *, reuse_port: bool):
    """Return a cheroot server listening on args.address, or None after saying why it cannot."""
    server = build_server(args, reuse_port=reuse_port)
    try:
        server.prepare()
    except OSError as error:
        print(f"serve.py: cannot listen on {args.bind}: {error}", file=sys.stderr)
        return None
    return server


def stop_server(server, *, timeout: float) -> bool:
    """Stop accepting and finish requests in flight; give up after `timeout` seconds."""
    # cheroot's ThreadPool.stop joins a stuck worker without a timeout, so bound it from outside.
    stopper = threading.Thread(target=server.stop, name="serve-stop", daemon=True)
    stopper.start()
    stopper.join(timeout)
    return not stopper.is_alive()


def serve_until_stopped(
    server,
    args: argparse.Namespace,
    stop_requested: threading.Event,
    *,
    name: str,
    orphaned: Callable[[], bool] = lambda: False,
) -> int:
    """Serve until a stop signal (or the supervisor's death), then drain and flush the batcher."""
    from ingest.pipeline.runtime import shutdown_gateway

    serving = threading.Thread(target=server.serve, name="serve", daemon=True)
    serving.start()
    print(f"{name}listening on http://{args.bind} (POST /api/v1/events/<topic>)", flush=True)
    try:
        while not stop_requested.wait(STOP_POLL_INTERVAL_S):
            if not serving.is_alive():
                print(f"{name}the server thread died; stopping", file=sys.stderr)
                return 1
            if orphaned():
                print(f"{name}the supervisor is gone; stopping", file=sys.stderr)
                break
    finally:
        started = time.monotonic()
        print(f"{name}stopping: finishing requests in flight", flush=True)
        clean = stop_server(server, timeout=args.shutdown_timeout + SERVER_THREAD_JOIN_S)
        remaining = max(1.0, args.shutdown_timeout - (time.monotonic() - started))
        clean = shutdown_gateway(timeout=remaining) and clean
        print(f"{name}{'stopped' if clean else 'stopped; some requests did not finish in time'}")
    return 0


def pin_to_core(index: int) -> int:
    """Bind this process, and the threads it will start, to one usable core; return it."""
    cores = usable_cores()
    core = cores[index % len(cores)]
    os.sched_setaffinity(0, {core})
    return core


def run_single(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    """Serve in this process: embedded services, the cheroot pool and the batcher together."""
    import django

    django.setup()
    from django.conf import settings

    server = prepare_server(args, reuse_port=False)
    if server is None:
        return 2
    with ExitStack() as stack:
        print(f"ingest gateway, {settings.INGEST_MODE} mode, pid {os.getpid()}")
        print_configuration(args, stack)
        # Pin only now: the embedded worker and broker started above must not inherit the core.
        if args.cpu_affinity:
            print(f"  pinned to core {pin_to_core(0)}")
        return serve_until_stopped(server, args, stop_requested, name="")


def run_child(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    """Serve as process `args.child` of a supervisor, sharing the port with its siblings."""
    supervisor_pid = os.getppid()
    core = pin_to_core(args.child) if args.cpu_affinity else None
    import django

    django.setup()
    server = prepare_server(args, reuse_port=True)
    if server is None:
        return 2
    pinned = "" if core is None else f" on core {core}"
    return serve_until_stopped(
        server,
        args,
        stop_requested,
        name=f"  process {args.child} pid {os.getpid()}{pinned}: ",
        orphaned=lambda: os.getppid() != supervisor_pid,
    )


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
    from ingestsite import embedded

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
    # Only settings are read here: the server processes are fresh interpreters, not forks, so
    # they inherit no threads, locks or connections from this one.
    from django.conf import settings

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
            import django

            django.setup()  # migrate needs the app registry
        print_configuration(args, stack)
        children = [Child(index) for index in range(args.processes)]
        # Registered after the embedded services, so it runs before they stop.
        stack.callback(stop_children, children, timeout=args.shutdown_timeout + CHILD_STOP_MARGIN_S)
        for child in children:
            child.start(args)
        sys.stdout.flush()
        supervise(children, args, stop_requested)
        print("stopping: SIGTERM to every server process", flush=True)
    print("supervisor stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_requested = threading.Event()

    def request_stop(signum, frame):
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if args.child is not None:
            return run_child(args, stop_requested)
        if args.processes == 1:
            return run_single(args, stop_requested)
        return run_supervisor(args, stop_requested)
    except ImproperlyConfigured as error:
        print(f"serve.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
