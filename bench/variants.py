"""What the benchmark compares: the gateway under several settings, servers and other designs."""

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ingestsite import embedded
from tests.stack import POSTGRES_ADMIN_URL, ROOT, START_TIMEOUT_S, Stack

CPUS = os.cpu_count() or 1
# The Redis that .ci/services starts; each stack's keys go under a prefix of its own.
REDIS_URL = "redis://127.0.0.1:6379/0"
# Above what a stack accepts here, so no request is refused: each process leases a slice of
# 1/20 of it (10,000 events) from Redis, a few times a second under the batch load.
REDIS_LIMIT_EVENTS = 200_000
REDIS_LIMIT_BYTES = 200 * 10**6
# A stack's first cell answers its first requests cold (the first cell of "ours" has a p99 two
# to five times its others'): single-50 takes that, so single-200 compares warm stacks.
LIMITS_SCENARIOS = ("single-50", "single-200", "batch-50", "batch-200")
# Idle database sessions of a bench stack end after this; the stack reconnects when it works.
IDLE_SESSION_TIMEOUT_S = 10


@dataclass(frozen=True)
class ClientProtocol:
    """A client protocol the gateway speaks besides its own API, as the benchmark sends it."""

    name: str  # the adapter's Protocol.name, its module and bench/wrk/load.lua's mode
    scenario: str
    endpoint: str
    path: str  # {topic}: the cell's topic, where the protocol names it in the path
    answers_when: str
    # The Kafka record carries the bench's id in the value's "id": Confluent's records have no
    # id field, so the adapter gives each one an id of its own as `event-id`.
    id_in_value: bool = False


# One batch of 100 events per request, at the connections of the native batch-50 scenario.
PROTOCOL_CONNECTIONS = 50
CLIENT_PROTOCOLS = {
    protocol.name: protocol
    for protocol in (
        ClientProtocol(
            "segment", f"segment-{PROTOCOL_CONNECTIONS}", "Segment POST /v1/batch", "/v1/batch",
            "durable (RabbitMQ confirmed)",
        ),
        ClientProtocol(
            "posthog", f"posthog-{PROTOCOL_CONNECTIONS}", "PostHog POST /batch/", "/batch/",
            "durable (RabbitMQ confirmed)",
        ),
        ClientProtocol(
            "snowplow", f"snowplow-{PROTOCOL_CONNECTIONS}", "Snowplow POST tp2",
            "/com.snowplowanalytics.snowplow/tp2", "durable (RabbitMQ confirmed)",
        ),
        ClientProtocol(
            "confluent", f"confluent-v2-{PROTOCOL_CONNECTIONS}",
            "Confluent REST Proxy v2 POST /topics/{topic}", "/topics/{topic}",
            "delivered (Kafka acknowledged every record)", id_in_value=True,
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # show | single | batch
    connections: int
    protocol: str | None = None  # a client protocol's batch instead of the native API's

    @property
    def events_per_request(self) -> int:
        return 100 if self.kind == "batch" else 1

    @property
    def mode(self) -> str:
        """bench/wrk/load.lua's mode for this scenario."""
        return self.protocol or self.kind


def _scenarios() -> dict[str, Scenario]:
    scenarios = {}
    for kind in ("show", "single", "batch"):
        for connections in (50, 200):
            name = f"{kind}-{connections}"
            scenarios[name] = Scenario(name, kind, connections)
            # Right after their reference, the native batch at the same connections, so the
            # protocols and the native API run close in time.
            if kind == "batch" and connections == PROTOCOL_CONNECTIONS:
                for protocol in CLIENT_PROTOCOLS.values():
                    scenarios[protocol.scenario] = Scenario(
                        protocol.scenario, "batch", connections, protocol=protocol.name
                    )
    return scenarios


SCENARIOS = _scenarios()
ALL_SCENARIOS = tuple(SCENARIOS)
COMPARISON_SCENARIOS = ("single-50", "single-200")


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    group: str
    server: str = "serve"  # serve | gunicorn-sync | gunicorn-gevent | uwsgi
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    settings: str = "ingestsite.settings"
    post_path: str = "/api/v1/events/{topic}"
    scenarios: tuple[str, ...] = COMPARISON_SCENARIOS
    uses_worker: bool = True  # the Celery worker carries the events to Kafka
    delivers: bool = True  # every accepted event must be found in Kafka
    needs: tuple[str, ...] = ()
    # create_source arguments of the bench's source: its rate limits.
    source_args: tuple[str, ...] = ()

    def path(self, scenario: Scenario, topic: str) -> str:
        if scenario.protocol:
            return CLIENT_PROTOCOLS[scenario.protocol].path.format(topic=topic)
        if scenario.kind == "show":
            return "/api/v1/show/"  # bench/wrk/load.lua appends ?id=<event id>
        return self.post_path.format(topic=topic)


def all_variants(*, serve_args: tuple[str, ...], worker_env: tuple) -> list[Variant]:
    seed_threads = tuple(
        Variant(
            f"threads-{threads}",
            f"serve.py --threads {threads} --request-queue-size 1000",
            "seed CherryPy settings",
            args=(*serve_args, "--threads", str(threads), "--request-queue-size", "1000"),
            env=worker_env,
        )
        for threads in (8, 32, 100, 150)
    )
    return [
        Variant(
            "ours",
            "gateway, serve.py defaults" + (f" {' '.join(serve_args)}" if serve_args else ""),
            "ours",
            args=serve_args,
            env=(("KAFKA_CLIENT", "kafka-python"), *worker_env),
            scenarios=ALL_SCENARIOS,
        ),
        Variant(
            "ours-redis-limits",
            f"gateway, serve.py defaults, rate limits in Redis (the source limited to "
            f"{REDIS_LIMIT_EVENTS:,} events/s and {REDIS_LIMIT_BYTES // 10**6} MB/s: "
            "never refused)",
            "ours",
            args=serve_args,
            env=(
                ("KAFKA_CLIENT", "kafka-python"),
                ("INGEST_RATE_LIMIT_BACKEND", "ingest.control.ratelimit.redis.RedisRateLimiter"),
                ("REDIS_URL", REDIS_URL),
                *worker_env,
            ),
            scenarios=LIMITS_SCENARIOS,
            needs=("redis-limits",),
            source_args=(
                f"--max-events-per-s={REDIS_LIMIT_EVENTS}",
                f"--max-bytes-per-s={REDIS_LIMIT_BYTES}",
            ),
        ),
        Variant(
            "ours-local-limits",
            "gateway, serve.py defaults, rate limits in each process (the same limits)",
            "ours",
            args=serve_args,
            env=(("KAFKA_CLIENT", "kafka-python"), *worker_env),
            scenarios=LIMITS_SCENARIOS,
            needs=("redis-limits",),
            source_args=(
                f"--max-events-per-s={REDIS_LIMIT_EVENTS}",
                f"--max-bytes-per-s={REDIS_LIMIT_BYTES}",
            ),
        ),
        Variant(
            "processes-1",
            "gateway, serve.py --processes 1",
            "processes",
            args=(*serve_args, "--processes", "1"),
            env=worker_env,
            needs=("processes",),
        ),
        *seed_threads,
        Variant(
            "seed-delay",
            "seed design: Celery delay() per request (cheroot, same serve.py settings)",
            "seed designs",
            args=serve_args,
            env=worker_env,
            settings="bench.settings",
            post_path="/bench/delay/{topic}",
        ),
        Variant(
            "seed-fire",
            "seed design: fire-and-forget kafka-python send() per request",
            "seed designs",
            args=serve_args,
            settings="bench.settings",
            post_path="/bench/fire/{topic}",
            uses_worker=False,
        ),
        Variant(
            "bare",
            "bare Django view (parses the body, answers 202 with its id), same serve.py settings",
            "seed designs",
            args=serve_args,
            settings="bench.settings",
            post_path="/bench/bare/{topic}",
            uses_worker=False,
            delivers=False,
        ),
        Variant(
            "gunicorn-sync",
            f"gateway app under gunicorn sync, {2 * CPUS + 1} workers (2xCPU+1)",
            "other WSGI servers",
            server="gunicorn-sync",
            env=worker_env,
            needs=("gunicorn",),
        ),
        Variant(
            "gunicorn-gevent",
            f"gateway app under gunicorn gevent, {CPUS} workers x 1000 connections",
            "other WSGI servers",
            server="gunicorn-gevent",
            env=worker_env,
            needs=("gunicorn", "gevent"),
        ),
        Variant(
            "uwsgi",
            f"gateway app under uWSGI, {CPUS} processes x 32 threads",
            "other WSGI servers",
            server="uwsgi",
            env=worker_env,
            needs=("uwsgi",),
        ),
        Variant(
            "confluent",
            "gateway, serve.py defaults, KAFKA_CLIENT=confluent (web and worker)",
            "Kafka client",
            args=serve_args,
            env=(("KAFKA_CLIENT", "confluent"), *worker_env),
            scenarios=("single-200", "batch-50", "batch-200"),
            needs=("kafka-client", "confluent_kafka"),
        ),
    ]


def detect_features() -> dict[str, str | None]:
    """Map each optional feature to None when present, else to why it is not."""
    help_text = subprocess.run(
        [sys.executable, "serve.py", "--help"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    settings_text = (ROOT / "ingestsite" / "settings.py").read_text()
    uwsgi = Path(sys.executable).parent / "uwsgi"

    def module(name: str) -> str | None:
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed in {sys.prefix} (see bench/requirements.txt)"
        return None

    registry = ROOT / "ingest" / "edge" / "protocols" / "registry.py"
    registered = registry.read_text() if registry.exists() else ""

    def adapter(name: str) -> str | None:
        # An adapter is a package (or a module) of ingest/edge/protocols named in the registry.
        where = registry.parent
        if ((where / name).is_dir() or (where / f"{name}.py").exists()) and name in registered:
            return None
        return f"no {name} adapter registered in ingest/edge/protocols/registry.py"

    return {
        **{f"protocol-{name}": adapter(name) for name in CLIENT_PROTOCOLS},
        "processes": None if "--processes" in help_text else "serve.py has no --processes yet",
        "kafka-client": None
        if "KAFKA_CLIENT" in settings_text
        else "ingestsite/settings.py has no KAFKA_CLIENT yet",
        "confluent_kafka": module("confluent_kafka"),
        "gunicorn": module("gunicorn"),
        "gevent": module("gevent"),
        "redis-limits": None
        if "INGEST_RATE_LIMIT_BACKEND" in settings_text
        else "ingestsite/settings.py has no INGEST_RATE_LIMIT_BACKEND yet",
        "uwsgi": None
        if uwsgi.exists()
        else f"no uwsgi binary at {uwsgi} (pip install uwsgi failed or did not run)",
    }


class BenchStack(Stack):
    """A Stack (own database and queue, free port) that can also run other WSGI servers."""

    def __init__(
        self,
        variant: Variant,
        *,
        kafka_address: str,
        log_dir: Path,
        run_id: str,
        protocol_topics: dict[str, str],
    ):
        self.variant = variant
        self.show_topic = f"b{run_id}.{variant.name}.show"
        super().__init__(
            kafka_address=kafka_address,
            log_dir=log_dir,
            extra_env={
                "DJANGO_SETTINGS_MODULE": variant.settings,
                "KAFKA_DEFAULT_TOPIC": self.show_topic,
                "LOG_LEVEL": "WARNING",
                "INGEST_RATE_LIMIT_KEY_PREFIX": f"bench:{run_id}:{variant.name}:",
                **dict(variant.env),
            },
        )
        self.api_key = self.issue_api_key(protocol_topics=protocol_topics)
        self.workers: list[subprocess.Popen] = []
        self.release_idle_connections()

    def release_idle_connections(self) -> None:
        """Have PostgreSQL end this stack's idle sessions, so idle stacks hold no connections.

        Every stack of a run is up at once, and each worker thread keeps a connection
        (CONN_MAX_AGE): a dozen stacks would pass PostgreSQL's default 100 connections.
        """
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(
                f'ALTER DATABASE "{self.database.name}" SET idle_session_timeout = '
                f"'{IDLE_SESSION_TIMEOUT_S}s'"
            )

    def issue_api_key(self, *, protocol_topics: dict[str, str]) -> str | None:
        """Create the benchmark's source and return its key, or None if this gateway has no keys.

        Production mode requires API keys: the source may write every topic, has the variant's
        rate limits (none unless it says), and sends each client protocol's events to its topic
        (`protocol_topics`).
        """
        routes = [f"--protocol-topic={name}={topic}" for name, topic in protocol_topics.items()]
        try:
            created = self.run_manage(
                "create_source", "bench", "--topics", "*", *routes, *self.variant.source_args
            )
        except subprocess.CalledProcessError as error:
            if "Unknown command" in error.stderr:
                return None
            raise
        return created.stdout.split()[-1]

    def start_worker(self, *, concurrency: int = 4) -> subprocess.Popen:
        """A Celery worker at Celery's default log level: INFO logs every task with its payload."""
        self.worker = self._spawn(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                "--pool", "threads", "--concurrency", str(concurrency), "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle",
                "--hostname", f"{self.queue}-{len(self.workers)}@%h",
            ],
            "worker.log",
        )  # fmt: skip
        self.workers.append(self.worker)
        return self.worker

    def server_command(self) -> list[str]:
        variant, bind = self.variant, f"127.0.0.1:{self.port}"
        if variant.server == "serve":
            return [sys.executable, "serve.py", *variant.args]
        if variant.server.startswith("gunicorn"):
            gevent = variant.server == "gunicorn-gevent"
            return [
                sys.executable, "-m", "gunicorn", "ingestsite.wsgi:application",
                "--bind", bind, "--backlog", "1024", "--graceful-timeout", "10",
                "--workers", str(CPUS if gevent else 2 * CPUS + 1),
                "--worker-class", "gevent" if gevent else "sync",
                *(("--worker-connections", "1000") if gevent else ()),
            ]  # fmt: skip
        if variant.server == "uwsgi":
            return [
                str(Path(sys.executable).parent / "uwsgi"),
                "--http11-socket", bind,  # HTTP/1.1 keep-alive, like the other servers
                "--module", "ingestsite.wsgi:application", "--chdir", str(ROOT),
                "--master", "--processes", str(CPUS), "--threads", "32",
                "--enable-threads", "--lazy-apps", "--die-on-term", "--listen", "1024",
                "--disable-logging", "--need-app",
            ]  # fmt: skip
        raise ValueError(f"unknown server {variant.server}")

    def start_server_process(self) -> None:
        self.server = self._spawn(self.server_command(), "serve.log")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if self.request("GET", "/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            if self.server.poll() is not None:
                raise RuntimeError(
                    f"{self.variant.server} exited with {self.server.returncode}; "
                    f"see {self.log_dir / 'serve.log'}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.variant.name} did not answer /healthz in time")
            time.sleep(0.2)

    def stop(self) -> None:
        for worker in self.workers[:-1]:
            embedded.stop_process(worker, timeout=20)
        super().stop()
