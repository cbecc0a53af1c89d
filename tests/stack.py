"""Run the gateway's real processes (serve.py, Celery worker, Tansu) for end-to-end tests."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

from ingest.control.topics import read_topic
from ingestsite import embedded
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START_TIMEOUT_S = 30.0
START_POLL_S = 0.1
DRAIN_POLL_S = 0.2
READ_TOPIC_MAX_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tansu:
    """A Tansu broker with memory storage on a free port; SIGSTOP/SIGCONT freeze and thaw it."""

    def __init__(self, log_dir: Path, *, host: str = "127.0.0.1"):
        self.address = f"{host}:{free_port()}"
        self.process = embedded.start_tansu(self.address, log_path=log_dir / "tansu.log")

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()
        embedded.stop_process(self.process, timeout=5)


class Database:
    """A throwaway PostgreSQL database, migrated by the project's own manage.py."""

    def __init__(self):
        self.name = f"ingest_e2e_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"postgres://postgres@127.0.0.1:5432/{self.name}"

    def sessions(self) -> int:
        """Return how many connections PostgreSQL has accepted for this database so far."""
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute("SELECT pg_stat_clear_snapshot()")
            row = connection.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.name,)
            ).fetchone()
        return row[0]

    def drop(self) -> None:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Stack:
    """serve.py and a Celery worker as subprocesses in production mode on real services."""

    def __init__(self, *, kafka_address: str, log_dir: Path, extra_env: dict | None = None):
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.database = Database()
        self.queue = f"ingest-e2e-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.kafka_address = kafka_address
        self.env = {
            **os.environ,
            "INGEST_MODE": "production",
            "DATABASE_URL": self.database.url,
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_address,
            "SECRET_KEY": "e2e-secret",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SETTINGS_MODULE": "ingestsite.settings",
            "SERVE_BIND": f"127.0.0.1:{self.port}",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.run_manage("migrate", "--verbosity", "0")
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def run_manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen:
        with (self.log_dir / log_name).open("ab") as log:
            return subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def start_server(self, *args: str) -> subprocess.Popen:
        self.server = self._spawn([sys.executable, "serve.py", *args], "serve.log")
        wait_until(
            self._server_answers,
            timeout=START_TIMEOUT_S,
            interval=START_POLL_S,
            message="serve.py did not answer /healthz in time",
        )
        return self.server

    def _server_answers(self) -> bool:
        try:
            status, _, _ = self.request("GET", "/healthz", timeout=1)
            if status == 200:
                return True
        except OSError:
            pass
        if self.server.poll() is not None:
            raise RuntimeError(f"serve.py exited with {self.server.returncode}; see serve.log")
        return False

    def start_worker(self, *, concurrency: int = 4) -> subprocess.Popen:
        self.worker = self._spawn(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--hostname", f"{self.queue}@%h",
            ],
            "worker.log",
        )  # fmt: skip
        return self.worker

    def request(
        self, method: str, path: str, body: bytes | None = None, headers=None, timeout=30
    ) -> tuple[int, dict, dict | None]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            raw = response.read()
            parsed = json.loads(raw) if raw else None
            return response.status, dict(response.getheaders()), parsed
        finally:
            connection.close()

    def post_json(self, path: str, document, headers=None) -> tuple[int, dict, dict | None]:
        return self.request(
            "POST",
            path,
            json.dumps(document).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def read_topic(self, topic: str, *, idle_timeout_s: float = 3.0) -> list:
        """Read a topic until it is idle; a topic that never stops growing fails, not hangs."""
        deadline = time.monotonic() + READ_TOPIC_MAX_S
        records = []
        for record in read_topic(
            topic=topic, idle_timeout_s=idle_timeout_s, bootstrap_servers=[self.kafka_address]
        ):
            records.append(record)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic} still grew after {READ_TOPIC_MAX_S:.0f}s: is a batch produced again "
                    "and again?"
                )
        return records

    def queue_depth(self) -> int:
        from kombu import Connection

        # Declared with the gateway's arguments: RabbitMQ refuses another x-queue-type.
        quorum = self.env.get("INGEST_QUEUE_TYPE") == "quorum"
        with Connection(self.env["CELERY_BROKER_URL"], connect_timeout=2) as connection:
            _, depth, _ = connection.default_channel.queue_declare(
                queue=self.queue,
                durable=True,
                auto_delete=False,
                arguments={"x-queue-type": "quorum"} if quorum else None,
            )
            return depth

    def wait_for_drain(self, *, timeout: float) -> None:
        """Wait until the worker has taken every batch from the queue."""
        wait_until(
            lambda: self.queue_depth() == 0,
            timeout=timeout,
            interval=DRAIN_POLL_S,
            message=lambda: f"queue {self.queue} still holds {self.queue_depth()} batches",
        )

    def stop(self) -> None:
        for process in (self.server, self.worker):
            if process is not None:
                embedded.stop_process(process, timeout=20)
        from kombu import Connection

        with Connection(self.env["CELERY_BROKER_URL"], connect_timeout=2) as connection:
            connection.default_channel.queue_delete(queue=self.queue)
        self.database.drop()
