"""A private PostgreSQL cluster on an address of the test's choosing (the shared one: loopback)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.stack import free_port

PG_USER = "postgres"
START_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 60.0


def pg_bin() -> Path | None:
    """Return the newest PostgreSQL server's bin directory, or None if none is installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3])
    )
    return found[-1].parent if found else None


class PrivatePostgres:
    """initdb and pg_ctl in a temporary directory, as the postgres user; `clients` (a CIDR) and
    the local socket are trusted."""

    def __init__(self, *, host: str, clients: str):
        self.host = host
        self.clients = clients
        self.port = free_port()
        # Under /tmp, not pytest's tmp_path: the postgres user must reach it.
        self.base_dir = Path(tempfile.mkdtemp(prefix="ingest-pg-"))
        shutil.chown(self.base_dir, user=PG_USER)
        self.data_dir = self.base_dir / "data"
        self.admin_url = f"postgresql://{PG_USER}@{host}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgres://{PG_USER}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(pg_bin() / args[0]), *args[1:]],
            user=PG_USER,
            check=True,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
        )

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", PG_USER, "--no-sync")
        with (self.data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.clients} trust\n")
        # fsync off: the outcomes the workers write are not what a multi-host test proves.
        options = f"-c listen_addresses={self.host} -p {self.port} -k {self.base_dir} -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.base_dir / "postgres.log"),
            "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the cluster (pg_ctl signals the postmaster by its pid file) and remove it."""
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base_dir, ignore_errors=True)
