"""Two gateway hosts and two worker hosts, each in its own network namespace, behind HAProxy.

The hosts reach the test's own RabbitMQ, Tansu, Redis and PostgreSQL on the bridge address in
the root namespace (the shared services listen on 127.0.0.1, which a namespace cannot reach).
HAProxy runs the shipped deploy/haproxy/haproxy.cfg on 127.0.0.1; the load goes through it.
"""

import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from kombu import Connection

from ingest.control.topics import read_topic
from ingestsite import embedded
from tests.conftest import ARTIFACTS
from tests.stack import ROOT, Tansu
from tests.waiting import wait_until

from .conftest import FAULT_ENV, assert_nothing_lost, assert_rejections_well_formed, drain_and_count
from .haproxy import CHECK_HOST, HAProxy, haproxy_available
from .loadgen import LoadGenerator
from .netns import Network, netns_available
from .postgres import PrivatePostgres, pg_bin
from .rabbitmq import PrivateRabbitMQ, rabbitmq_available
from .redisserver import PrivateRedis, redis_available

REDIS_BACKEND = "ingest.control.ratelimit.redis.RedisRateLimiter"
GATEWAYS = ("gw1", "gw2")
WORKERS = ("wk1", "wk2")
GATEWAY_PORT = 8000
GATEWAY_PROCESSES = 2
WORKER_CONCURRENCY = 4
START_TIMEOUT_S = 45.0
HAPROXY_DOWN_TIMEOUT_S = 5.0
# The shipped checks take a dead host out within about 2 s (deploy/haproxy/haproxy.cfg).
HOST_OUT_BOUND_S = 3.0
WARMUP_ACCEPTS = 200
ACCEPTS_TIMEOUT_S = 20.0
LOAD_S = 15.0
ONE_GATEWAY_S = 4.0
DRAIN_S = 3.0
STOP_TIMEOUT_S = 15.0
LOAD_THREADS = 8
RATE_LIMIT = 60
RATE_BURST_S = 0.2
RATE_LOAD_S = 6.0
RATE_TOLERANCE = 0.10


def services_problem() -> str | None:
    """Say what this machine lacks for the multi-host test, or None."""
    if problem := netns_available():
        return problem
    missing = [
        name
        for name, present in (
            ("haproxy", haproxy_available()),
            ("rabbitmq-server", rabbitmq_available()),
            ("redis-server", redis_available()),
            ("PostgreSQL's initdb", pg_bin() is not None),
        )
        if not present
    ]
    return f"not installed: {', '.join(missing)}" if missing else None


def redis_backend_problem() -> str | None:
    try:
        importlib.import_module(REDIS_BACKEND.rpartition(".")[0])
    except ImportError as error:
        return f"the Redis rate-limit backend {REDIS_BACKEND} is not there yet ({error})"
    return None


pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(services_problem() is not None, reason=str(services_problem())),
]


@dataclass
class Topology:
    """The namespaces, the root-namespace services on the bridge address, and HAProxy."""

    network: Network
    rabbitmq: PrivateRabbitMQ
    tansu: Tansu
    redis: PrivateRedis
    postgres: PrivatePostgres
    haproxy: HAProxy
    database_url: str
    log_dir: object


@pytest.fixture(scope="module")
def topology():
    """Build the hosts' network and start every service at once; remove them all after."""
    started = time.monotonic()
    log_dir = ARTIFACTS / f"multihost-{uuid.uuid4().hex[:6]}"
    network = Network([*GATEWAYS, *WORKERS])
    address = network.root_address
    services = []
    try:
        network.create()
        rabbitmq = PrivateRabbitMQ(log_dir / "rabbitmq", host=address)
        postgres = PrivatePostgres(host=address, clients=network.cidr)
        redis = PrivateRedis(host=address, log_path=log_dir / "redis.log")
        haproxy = HAProxy(
            servers={gw: f"{network.addresses[gw]}:{GATEWAY_PORT}" for gw in GATEWAYS},
            base_dir=log_dir / "haproxy",
        )
        services = [rabbitmq, postgres, redis, haproxy]
        with ThreadPoolExecutor(len(services) + 1) as pool:
            starts = [pool.submit(service.start) for service in services]
            tansu = pool.submit(Tansu, log_dir, host=address).result()
            services.append(tansu)
            topology = Topology(
                network,
                rabbitmq,
                tansu,
                redis,
                postgres,
                haproxy,
                postgres.url("postgres"),
                log_dir,
            )
            starts[1].result()
            migrate = pool.submit(manage, topology, "migrate", "--verbosity", "0")
            for future in [*starts, migrate]:
                future.result()
        print(f"\n[faults]   multihost topology up in {time.monotonic() - started:.1f}s")
        yield topology
    finally:
        network.delete()
        for service in reversed(services):
            service.stop()
        if services:
            rabbitmq.remove_data()


def manage(topology: Topology, *args: str) -> str:
    """Run manage.py in the root namespace against the test's services."""
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=host_environment(topology),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, f"manage.py {args} failed: {completed.stderr[-2000:]}"
    return completed.stdout


def host_environment(topology: Topology) -> dict:
    """Return the production environment of a host of the topology."""
    return {
        **os.environ,
        "INGEST_MODE": "production",
        "DATABASE_URL": topology.database_url,
        "CELERY_BROKER_URL": topology.rabbitmq.url,
        "KAFKA_BOOTSTRAP_SERVERS": topology.tansu.address,
        "REDIS_URL": topology.redis.url,
        "SECRET_KEY": "multihost-secret",
        "ALLOWED_HOSTS": f"127.0.0.1,{CHECK_HOST}",
        "DJANGO_SETTINGS_MODULE": "ingestsite.settings",
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Deployment:
    """One scenario's gateways and workers on the topology, with a queue of their own."""

    topology: Topology
    extra_env: dict = field(default_factory=dict)
    queue: str = field(default_factory=lambda: f"ingest-multihost-{uuid.uuid4().hex[:10]}")
    processes: dict = field(default_factory=dict)

    @property
    def env(self) -> dict:
        return {
            **host_environment(self.topology),
            **FAULT_ENV,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "SERVE_PROCESSES": str(GATEWAY_PROCESSES),
            "INGEST_REQUIRE_API_KEYS": "false",
            **self.extra_env,
        }

    # What drain_and_count reads of a stack.
    @property
    def database(self):
        return self

    @property
    def url(self) -> str:
        return self.topology.database_url

    def _spawn(self, host: str, argv: list[str]) -> subprocess.Popen:
        network = self.topology.network
        with (self.topology.log_dir / f"{host}.log").open("ab") as log:
            process = subprocess.Popen(
                network.command(host, argv),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[host] = process
        return process

    def start(self) -> None:
        """Start every gateway and worker host at once; wait until HAProxy has both gateways."""
        network = self.topology.network
        for gateway in GATEWAYS:
            bind = f"{network.addresses[gateway]}:{GATEWAY_PORT}"
            self._spawn(gateway, [sys.executable, "serve.py", "--bind", bind])
        for worker in WORKERS:
            self._spawn(
                worker,
                [
                    sys.executable, "-m", "celery", "-A", "celery_app", "worker",
                    "--pool", "threads", "--concurrency", str(WORKER_CONCURRENCY),
                    "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                    "--hostname", f"{self.queue}-{worker}@%h",
                ],
            )  # fmt: skip
        wait_until(
            self._all_up,
            timeout=START_TIMEOUT_S,
            interval=0.2,
            message=lambda: f"HAProxy does not see every gateway up: {self._states()}",
        )

    def _states(self) -> dict:
        return {gateway: self.topology.haproxy.status(gateway) for gateway in GATEWAYS}

    def _all_up(self) -> bool:
        for host, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{host} exited with {process.returncode}; see {host}.log")
        return all(state == "UP" for state in self._states().values())

    def kill_host(self, host: str) -> list[int]:
        pids = self.topology.network.kill_host(host)
        self.processes.pop(host).wait(5)
        return pids

    def queue_depth(self) -> int:
        with Connection(self.topology.rabbitmq.url, connect_timeout=2) as connection:
            _, depth, _ = connection.default_channel.queue_declare(
                queue=self.queue, durable=True, auto_delete=False
            )
            return depth

    def read_topic(self, topic: str, *, idle_timeout_s: float) -> list:
        return list(
            read_topic(
                topic=topic,
                idle_timeout_s=idle_timeout_s,
                bootstrap_servers=[self.topology.tansu.address],
            )
        )

    def stop(self) -> None:
        for process in self.processes.values():
            embedded.stop_process(process, timeout=20)
        self.processes.clear()


@pytest.fixture
def deployment(topology):
    """Build a scenario's hosts (not started); stop whatever of them still runs after."""
    deployments = []

    def build(**extra_env) -> Deployment:
        deployments.append(Deployment(topology, extra_env=extra_env))
        return deployments[-1]

    yield build
    for each in deployments:
        each.stop()


def wait_for_accepts(load: LoadGenerator, count: int) -> None:
    target = load.accepted_count() + count
    wait_until(
        lambda: load.accepted_count() >= target,
        timeout=ACCEPTS_TIMEOUT_S,
        interval=0.05,
        message=lambda: f"only {load.accepted_count()} of {target} accepted",
    )


def gateway_2xx(topology: Topology) -> dict:
    stats = topology.haproxy.stats()
    return {gateway: int(stats[("gateways", gateway)]["hrsp_2xx"] or 0) for gateway in GATEWAYS}


def test_kill_9_a_gateway_host_then_a_worker_host_under_load(topology, deployment, report):
    started = time.monotonic()
    hosts = deployment()
    hosts.start()
    topic = f"multihost-{uuid.uuid4().hex[:8]}"
    haproxy = topology.haproxy
    load = LoadGenerator(
        port=haproxy.port,
        topic=topic,
        prefix="multihost",
        threads=LOAD_THREADS,
        max_seconds=LOAD_S,
    )
    with load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        served_before = gateway_2xx(topology)
        killed_at = time.monotonic()
        gateway_pids = hosts.kill_host("gw1")
        wait_until(
            lambda: haproxy.status("gw1") == "DOWN",
            timeout=HAPROXY_DOWN_TIMEOUT_S,
            interval=0.05,
            message=lambda: f"HAProxy still has gw1 {haproxy.status('gw1')}",
        )
        gateway_out_s = time.monotonic() - killed_at
        time.sleep(ONE_GATEWAY_S)  # the scenario: one gateway host serves alone for a while
        worker_pids = hosts.kill_host("wk1")
        result = load.wait()
    figures = drain_and_count(hosts, topic, result, scenario="multihost kill -9 gw1, wk1")
    # Requests that got no answer at all; HAProxy answers a request cut mid-way 502 itself.
    last_failure = max((at for at, _ in result.failures), default=killed_at)
    report(
        figures,
        f"gw1 killed (pids {gateway_pids}): recovery: out of HAProxy after {gateway_out_s:.2f}s, "
        f"last unanswered request {last_failure - killed_at:.2f}s after the kill; 2xx per gateway "
        f"before {served_before}; then wk1 killed (pids {worker_pids})",
        f"statuses {dict(result.statuses)}; scenario wall time {time.monotonic() - started:.1f}s",
    )
    assert all(served_before.values()), f"a gateway served nothing before the kill: {served_before}"
    assert_nothing_lost(figures)
    assert gateway_out_s < HOST_OUT_BOUND_S


def test_sigterm_drains_a_gateway_host_before_it_stops_listening(topology, deployment, report):
    started = time.monotonic()
    hosts = deployment(SERVE_DRAIN_S=str(DRAIN_S))
    hosts.start()
    topic = f"multihost-drain-{uuid.uuid4().hex[:8]}"
    haproxy = topology.haproxy
    load = LoadGenerator(
        port=haproxy.port, topic=topic, prefix="drain", threads=LOAD_THREADS, max_seconds=LOAD_S
    )
    with load:
        wait_for_accepts(load, WARMUP_ACCEPTS)
        server = hosts.processes["gw1"]
        signalled_at = time.monotonic()
        server.send_signal(signal.SIGTERM)
        wait_until(
            lambda: haproxy.status("gw1") == "DOWN",
            timeout=HAPROXY_DOWN_TIMEOUT_S,
            interval=0.05,
            message=lambda: f"HAProxy still has gw1 {haproxy.status('gw1')}",
        )
        out_s = time.monotonic() - signalled_at
        still_serving = server.poll() is None
        returncode = server.wait(DRAIN_S + STOP_TIMEOUT_S)
        stopped_s = time.monotonic() - signalled_at
        result = load.wait()
    figures = drain_and_count(hosts, topic, result, scenario="multihost SIGTERM gw1 (drain)")
    report(
        figures,
        f"SIGTERM to gw1: out of HAProxy after {out_s:.2f}s, stopped (exit {returncode}) after "
        f"{stopped_s:.2f}s; statuses {dict(result.statuses)}; "
        f"scenario wall time {time.monotonic() - started:.1f}s",
    )
    assert still_serving, "gw1 stopped listening before HAProxy took it out"
    assert returncode == 0
    assert_nothing_lost(figures)
    assert set(result.statuses) == {202}, "a request was refused or cut while gw1 drained"
    assert not result.errors


@pytest.mark.skipif(redis_backend_problem() is not None, reason=str(redis_backend_problem()))
def test_a_source_rate_limit_holds_across_both_gateway_hosts(topology, deployment, report):
    started = time.monotonic()
    hosts = deployment(
        INGEST_REQUIRE_API_KEYS="true",
        INGEST_RATE_LIMIT_BACKEND=REDIS_BACKEND,
        INGEST_RATE_BURST_S=str(RATE_BURST_S),
        INGEST_RATE_LIMIT_PROCESSES=str(len(GATEWAYS) * GATEWAY_PROCESSES),
    )
    topic = f"multihost-rate-{uuid.uuid4().hex[:8]}"
    key = manage(
        topology,
        "create_source", f"limited-{uuid.uuid4().hex[:6]}",
        "--topics", topic, "--max-events-per-s", str(RATE_LIMIT),
    ).strip()  # fmt: skip
    hosts.start()
    before = gateway_2xx(topology)
    load = LoadGenerator(
        port=topology.haproxy.port,
        topic=topic,
        prefix="rate",
        threads=LOAD_THREADS,
        max_seconds=RATE_LOAD_S,
        headers={"X-Api-Key": key},
        pause_after_rejection_s=0.01,
    )
    with load:
        result = load.wait()
    served = {gw: n - before[gw] for gw, n in gateway_2xx(topology).items()}
    rate = len(result.accepted) / result.duration
    report(
        drain_and_count(hosts, topic, result, scenario="multihost rate limit across 2 gateways"),
        f"limit {RATE_LIMIT} events/s, accepted {len(result.accepted)} events in "
        f"{result.duration:.1f}s = {rate:.1f}/s ({rate / RATE_LIMIT - 1:+.1%}); 2xx per gateway "
        f"{served}; statuses {dict(result.statuses)}; wall time {time.monotonic() - started:.1f}s",
    )
    assert all(served.values()), f"a gateway served nothing: {served}"
    assert result.statuses[429] > 0, "the load never reached the limit"
    assert_rejections_well_formed(result)
    allowed = RATE_LIMIT * (result.duration + RATE_BURST_S)
    assert RATE_LIMIT * result.duration * (1 - RATE_TOLERANCE) <= len(result.accepted)
    assert len(result.accepted) <= allowed * (1 + RATE_TOLERANCE)
