"""Serve the gateway in this process: build the cheroot server, serve until stopped, then drain."""

import argparse
import gc
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

import django
from django.conf import settings

from ingestsite.server.connections import DeadlineServer
from ingestsite.server.options import SERVER_THREAD_JOIN_S, usable_cores
from ingestsite.server.standalone import print_configuration

STOP_POLL_INTERVAL_S = 0.5
# Allocations (net of frees) between two collections of the youngest generation; Python's
# default is 700.
YOUNG_GENERATION_THRESHOLD = 10_000


def build_server(args: argparse.Namespace, *, reuse_port: bool) -> DeadlineServer:
    """Return a cheroot server of the gateway's WSGI application, configured from `args`."""
    # Importing the WSGI module sets Django up and loads the whole gateway. Not at module top:
    # the supervisor imports this module through serve.py and must stay a light process that
    # only reads settings, and run_child pins its core before Django starts any thread.
    from ingestsite.wsgi import application

    # What start-up loaded (Django, Celery, the URL resolver) lives as long as the process.
    # Frozen, it is no longer scanned by every full garbage collection, which py-spy showed
    # holding the GIL in a loaded server process (docs/BENCHMARKS.md).
    gc.collect()
    gc.freeze()
    # The events and records of every request in flight are young objects, so at the default
    # threshold a server under batch load collected them about 60 times a second, ~6% of its
    # CPU; at this one, under 1% (docs/BENCHMARKS.md, "Server cost per event (issue 14)").
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, *gc.get_threshold()[1:])
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


def prepare_server(args: argparse.Namespace, *, reuse_port: bool) -> DeadlineServer | None:
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
    # The gateway's runtime reads ingest.models, which needs the app registry: this module is
    # imported before django.setup() (a child pins its core first), so import it once serving.
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
        drain(seconds=args.drain_seconds, name=name)
    finally:
        started = time.monotonic()
        print(f"{name}stopping: finishing requests in flight", flush=True)
        clean = stop_server(server, timeout=args.shutdown_timeout + SERVER_THREAD_JOIN_S)
        remaining = max(1.0, args.shutdown_timeout - (time.monotonic() - started))
        clean = shutdown_gateway(timeout=remaining) and clean
        print(f"{name}{'stopped' if clean else 'stopped; some requests did not finish in time'}")
    return 0


def drain(*, seconds: float, name: str) -> None:
    """Keep serving for `seconds` while /readyz answers 503, so load balancers stop sending."""
    if seconds <= 0:
        return
    from ingest.control.readiness import get_probe

    get_probe().drain()
    print(f"{name}draining: /readyz answers 503 for {seconds:g}s, then it stops", flush=True)
    time.sleep(seconds)  # the drain itself: the server thread keeps serving meanwhile


def pin_to_core(index: int) -> int:
    """Bind this process, and the threads it will start, to one usable core; return it."""
    cores = usable_cores()
    core = cores[index % len(cores)]
    os.sched_setaffinity(0, {core})
    return core


def run_single(args: argparse.Namespace, stop_requested: threading.Event) -> int:
    """Serve in this process: embedded services, the cheroot pool and the batcher together."""
    django.setup()
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
