"""Facts about the running process that operators and tests check."""

import os
import socket
import sys
import threading

GREEN_THREAD_LIBRARIES = ("gevent", "eventlet")


def process_report() -> dict:
    """Say which process this is and prove it runs on native threads with the stock socket."""
    return {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "threads": threading.active_count(),
        "socket_module": socket.socket.__module__,
        "green_thread_libraries_loaded": [
            name for name in GREEN_THREAD_LIBRARIES if name in sys.modules
        ],
    }
