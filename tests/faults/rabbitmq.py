"""A private RabbitMQ node, so a test can restart a broker nobody else uses."""

import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

from ingestsite import embedded
from tests.stack import free_port

from .procs import descendants

RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def rabbitmq_available() -> bool:
    return RABBITMQ_SERVER.exists() and shutil.which("erl") is not None


class PrivateRabbitMQ:
    """rabbitmq-server in the foreground on free ports of `host`, its data in `base_dir`."""

    def __init__(self, base_dir: Path, *, host: str = "127.0.0.1"):
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
        cookie = base_dir / ".erlang.cookie"
        cookie.unlink(missing_ok=True)  # read-only, left by an earlier run
        cookie.write_text(uuid.uuid4().hex)
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
