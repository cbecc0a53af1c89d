#!/usr/bin/env python
"""Run the ingest gateway under cheroot; with nothing configured, run the whole pipeline locally."""

import argparse
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")

SERVER_THREAD_JOIN_S = 5.0


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    type: type
    default: object
    help: str


OPTIONS = (
    Option("--bind", "SERVE_BIND", str, "127.0.0.1:8000", "host:port to listen on"),
    Option("--threads", "SERVE_THREADS", int, 64, "worker threads of the cheroot pool"),
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
    Option("--timeout", "SERVE_TIMEOUT", float, 10.0, "socket timeout of a connection, seconds"),
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
        parser.add_argument(
            option.flag, type=option.type, default=default, help=f"{option.help} [{option.env}]"
        )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.shutdown_timeout < 0:
        parser.error("--shutdown-timeout must not be negative")
    if args.accepted_queue_size < 1:
        parser.error("--accepted-queue-size must be at least 1: an unbounded queue hides overload")
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--bind must be host:port, got {args.bind!r}")
    args.address = (host.strip("[]"), int(port))
    return args


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
        "CELERY_BROKER_URL, KAFKA_BOOTSTRAP_SERVERS and SECRET_KEY (see README.md)."
    )


def build_server(args: argparse.Namespace):
    from cheroot import wsgi

    from ingestsite.wsgi import application

    server = wsgi.Server(
        args.address,
        application,
        numthreads=args.threads,
        request_queue_size=args.request_queue_size,
        timeout=args.timeout,
        shutdown_timeout=args.shutdown_timeout,
        accepted_queue_size=args.accepted_queue_size,
        accepted_queue_timeout=args.accepted_queue_timeout,
    )
    server.max_request_body_size = args.max_body_size
    server.max_request_header_size = args.max_header_size
    return server


def stop_server(server, *, timeout: float) -> bool:
    """Stop accepting and finish requests in flight; give up after `timeout` seconds."""
    # cheroot's ThreadPool.stop joins a stuck worker without a timeout, so bound it from outside.
    stopper = threading.Thread(target=server.stop, name="serve-stop", daemon=True)
    stopper.start()
    stopper.join(timeout)
    return not stopper.is_alive()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import django

    django.setup()
    from django.conf import settings

    from ingest.runtime import shutdown_gateway

    stop_requested = threading.Event()

    def request_stop(signum, frame):
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    server = build_server(args)
    try:
        server.prepare()
    except OSError as error:
        print(f"serve.py: cannot listen on {args.bind}: {error}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        print(f"ingest gateway, {settings.INGEST_MODE} mode, pid {os.getpid()}")
        if settings.STANDALONE:
            start_embedded_services(args, stack)
        else:
            print(f"  kafka    : {','.join(settings.KAFKA_BOOTSTRAP_SERVERS)}")
            print(f"  celery   : {settings.CELERY_BROKER_URL.split('@')[-1]}")
        for option in OPTIONS:
            name = option.flag.lstrip("-").replace("-", "_")
            print(f"  {option.flag:26} {getattr(args, name)!s:16} [{option.env}]")
        serving = threading.Thread(target=server.serve, name="serve", daemon=True)
        serving.start()
        print(f"listening on http://{args.bind} (POST /api/v1/events/<topic>)", flush=True)
        try:
            while not stop_requested.wait(0.5):
                if not serving.is_alive():
                    print("the server thread died; stopping", file=sys.stderr)
                    return 1
        finally:
            started = time.monotonic()
            print("stopping: finishing requests in flight", flush=True)
            clean = stop_server(server, timeout=args.shutdown_timeout + SERVER_THREAD_JOIN_S)
            remaining = max(1.0, args.shutdown_timeout - (time.monotonic() - started))
            clean = shutdown_gateway(timeout=remaining) and clean
            print("stopped" if clean else "stopped; some requests did not finish in time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
