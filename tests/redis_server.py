"""A redis-server of a test's own, for tests that stop Redis or need it on another address.

The shared Redis on 127.0.0.1:6379 is never stopped or flushed; a test that takes Redis away,
or runs gateways in network namespaces that cannot reach the host's loopback, starts one of these.
"""

import subprocess
from pathlib import Path

import redis

from tests.stack import free_port
from tests.waiting import wait_until

START_TIMEOUT_S = 10


class PrivateRedis:
    """A redis-server on `bind` and a free port (or `port`), without persistence; the test may
    stop and start it again on the same port."""

    def __init__(self, *, log_path: Path, bind: str = "127.0.0.1", port: int | None = None):
        self.bind = bind
        self.port = port or free_port()
        self.url = f"redis://{bind}:{self.port}/0"
        self._log_path = log_path
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                [
                    "redis-server", "--bind", self.bind, "--port", str(self.port),
                    "--save", "", "--appendonly", "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        connection = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return connection.ping()
            except redis.RedisError:
                return False

        try:
            wait_until(answers, timeout=START_TIMEOUT_S, message="redis-server did not start")
        finally:
            connection.close()

    def stop(self) -> None:
        """Kill the server (a crash, as the tests want it) and wait for it to exit."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
