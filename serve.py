#!/usr/bin/env python
"""Run the ingest gateway under cheroot; with nothing configured, run the whole pipeline locally.

With --processes N above 1, this process is a supervisor: it starts the embedded services of
standalone mode once, then runs N fresh `serve.py --child` processes that all listen on the same
port (SO_REUSEPORT: the kernel spreads connections over them), each with its own thread pool and
batcher. It restarts a process that dies and stops them all on SIGTERM or SIGINT. With
--processes 1 the gateway serves in this very process, with no supervisor, as a single process
under systemd or a container runtime expects.
"""

import os
import signal
import sys
import threading

from django.core.exceptions import ImproperlyConfigured

from ingestsite.server.options import parse_args
from ingestsite.server.supervisor import run_supervisor

# Read lazily, at the first use of a setting, so set before main runs anything.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ingestsite.settings")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, stop on SIGTERM or SIGINT, and serve as a child, alone or supervising."""
    args = parse_args(argv, description=__doc__)
    stop_requested = threading.Event()

    def request_stop(signum, frame):
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if args.child is None and args.processes > 1:
            return run_supervisor(args, stop_requested)
        # Only a process that serves loads the gateway (the runner imports its runtime and the
        # pipeline behind it): the supervisor stays a light process that only reads settings.
        from ingestsite.server import runner

        if args.child is not None:
            return runner.run_child(args, stop_requested)
        return runner.run_single(args, stop_requested)
    except ImproperlyConfigured as error:
        print(f"serve.py: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
