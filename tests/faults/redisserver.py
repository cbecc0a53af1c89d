"""A private Redis server on an address of the test's choosing, nothing saved to disk."""

import shutil
import subprocess
from pathlib import Path

from ingestsite import embedded
from tests.stack import free_port

START_TIMEOUT_S = 10.0


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class PrivateRedis:
    """redis-server in the foreground on a free port of `host`; stopped by its pid."""

    def __init__(self, *, host: str, log_path: Path):
        self.host = host
        self.port = free_port()
        self.url = f"redis://{host}:{self.port}/0"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server", "--port", str(self.port), "--bind", self.host,
                    "--save", "", "--appendonly", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        embedded.wait_for_port(self.host, self.port, process=self.process, timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is not None:
            embedded.stop_process(self.process, timeout=5)
