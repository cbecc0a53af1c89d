"""Private RabbitMQ nodes, so a test can restart or kill a broker nobody else uses."""

import os
import shutil
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ingestsite import embedded
from tests.stack import free_port

from .procs import descendants

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
RABBITMQCTL = RABBITMQ_SERVER.with_name("rabbitmqctl")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
CTL_TIMEOUT_S = 60.0


def rabbitmq_available() -> bool:
    return RABBITMQ_SERVER.exists() and shutil.which("erl") is not None


class PrivateRabbitMQ:
    """rabbitmq-server in the foreground on free ports of `host`, its data in `base_dir`.

    Nodes meant to form a cluster share one Erlang `cookie`; by default each node has its own.
    """

    def __init__(self, base_dir: Path, *, host: str = "127.0.0.1", cookie: str | None = None):
        self.base_dir = base_dir
        self.host = host
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.node = f"faults-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@{host}:{self.port}//"
        # The system config pins listeners to 5672 and the system node name; use our own files.
        (base_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {host}:{self.port}\nloopback_users = none\n"
        )
        (base_dir / "rabbitmq-env.conf").write_text("")
        (base_dir / "enabled_plugins").write_text("[].\n")
        cookie_value, cookie = cookie, base_dir / ".erlang.cookie"
        cookie.unlink(missing_ok=True)  # read-only, left by an earlier run
        cookie.write_text(cookie_value or uuid.uuid4().hex)
        cookie.chmod(0o400)
        self.env = {
            **os.environ,
            "HOME": str(base_dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": host,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(base_dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(base_dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base_dir / "log"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the node on its data directory and wait until it takes AMQP connections."""
        with (self.base_dir / "rabbitmq-server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                cwd=self.base_dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        embedded.wait_for_port(self.host, self.port, process=self.process, timeout=START_TIMEOUT_S)

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node (with its cookie) and return what it printed."""
        done = subprocess.run(
            [str(RABBITMQCTL), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node}: {done.stderr}")
        return done.stdout

    def beam_pid(self) -> int:
        """Return the pid of the node's Erlang VM, below the rabbitmq-server script."""
        for pid in descendants(self.process.pid):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("beam"):
                    return pid
            except OSError:
                continue
        raise LookupError(f"no beam process below rabbitmq-server {self.process.pid}")

    def kill_9(self) -> int:
        """SIGKILL the node's VM only, as a crashed host would leave it; return its pid."""
        pid = self.beam_pid()
        os.kill(pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_S)
        return pid

    def stop(self) -> int | None:
        """Stop the node gracefully by its PID (the script forwards SIGTERM to the VM)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # The script is the group leader of the node it started: kill that group only.
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(5)

    def pause(self) -> None:
        """Freeze the node (SIGSTOP to the script and the VM below it): connections stay open
        and nothing answers, as with a broker stuck in a long GC or a lost network path."""
        for pid in self._tree():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._tree():
            os.kill(pid, signal.SIGCONT)

    def _tree(self) -> list[int]:
        return [self.process.pid, *descendants(self.process.pid)]

    def remove_data(self) -> None:
        """Delete the node's message store; its logs stay with the test's artifacts."""
        shutil.rmtree(self.base_dir / "mnesia", ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()


class PrivateRabbitMQCluster:
    """Private nodes on one machine, one cookie, joined to the first with `join_cluster`."""

    def __init__(self, base_dir: Path, *, size: int = 3):
        cookie = uuid.uuid4().hex
        self.nodes = [
            PrivateRabbitMQ(base_dir / f"node{n}", cookie=cookie) for n in range(1, size + 1)
        ]
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        """The broker URLs of every node, `;`-separated as kombu's failover reads them."""
        return ";".join(node.url for node in self.nodes)

    def start(self) -> None:
        """Start every node at once, then join the others to the first one by one."""
        started = time.monotonic()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(PrivateRabbitMQ.start, self.nodes))
        first = self.nodes[0]
        # One at a time: each node joins the cluster as the previous join left it.
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        self.start_seconds = time.monotonic() - started

    def node_named(self, name: str) -> PrivateRabbitMQ:
        return next(node for node in self.nodes if node.node == name)

    def leader_of(self, queue: str, *, asking: PrivateRabbitMQ | None = None) -> PrivateRabbitMQ:
        """Return the node that leads a quorum queue, as a running node reports it."""
        asking = asking or next(node for node in self.nodes if node.process.poll() is None)
        rows = asking.ctl("list_queues", "-q", "--no-table-headers", "name", "leader")
        for row in rows.splitlines():
            name, _, leader = row.partition("\t")
            if name == queue:
                return self.node_named(leader.strip())
        raise LookupError(f"{asking.node} lists no queue {queue!r}: {rows!r}")

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(PrivateRabbitMQ.stop, self.nodes))

    def remove_data(self) -> None:
        for node in self.nodes:
            node.remove_data()
