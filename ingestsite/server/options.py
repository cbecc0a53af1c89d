"""serve.py's options: each a flag with an environment variable for its default."""

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ingestsite.env import env_bool, env_float, env_int, env_str

SERVE_SCRIPT = Path(__file__).resolve().parents[2] / "serve.py"
ENV_PARSERS = {str: env_str, int: env_int, float: env_float, bool: env_bool}
# How long a server process waits for cheroot's threads past --shutdown-timeout before it gives
# up on them (runner.serve_until_stopped); the supervisor allows for it before killing a child.
SERVER_THREAD_JOIN_S = 5.0


def usable_cores() -> list[int]:
    """Return the CPUs this process may run on (its affinity mask, which cgroups may narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    type: type
    default: object
    help: str

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def type_name(self) -> str:
        return "boolean" if self.type is bool else self.type.__name__

    def from_environment(self):
        """Return the value its environment variable sets, or the default."""
        return ENV_PARSERS[self.type](self.env, self.default)


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
        bool,
        True,
        "pin server process i to core i modulo the usable cores (faster: docs/BENCHMARKS.md)",
    ),
    # A durable request holds its thread while its batch waits for the window and the confirm,
    # so a process needs about as many threads as connections it serves at once
    # (docs/BENCHMARKS.md, "Defaults").
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
    Option(
        "--drain-seconds",
        "SERVE_DRAIN_S",
        float,
        0.0,
        "seconds to keep serving after SIGTERM while /readyz answers 503, so a load balancer "
        "stops sending new requests before the server stops listening",
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


def build_parser(description: str | None) -> argparse.ArgumentParser:
    """Return the parser of every option, its defaults read from the environment."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for option in OPTIONS:
        try:
            default = option.from_environment()
        except ImproperlyConfigured:
            raw = env_str(option.env)
            parser.error(f"{option.env}={raw!r} is not a valid {option.type_name}")
        help_text = f"{option.help} [{option.env}]"
        if option.type is bool:
            parser.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        else:
            parser.add_argument(option.flag, type=option.type, default=default, help=help_text)
    # Set by the supervisor on the processes it starts: which one this is.
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def parse_args(
    argv: list[str] | None = None, *, description: str | None = None
) -> argparse.Namespace:
    """Parse and check serve.py's options; add `address`, the (host, port) of --bind."""
    parser = build_parser(description)
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
    if args.drain_seconds < 0:
        parser.error("--drain-seconds must not be negative")
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
    command = [sys.executable, str(SERVE_SCRIPT), "--child", str(index)]
    for option in OPTIONS:
        value = getattr(args, option.dest)
        if option.type is bool:
            command.append(option.flag if value else f"--no-{option.flag[2:]}")
        else:
            command += [option.flag, str(value)]
    return command
