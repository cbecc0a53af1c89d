"""Run the shipped deploy/haproxy/haproxy.cfg with only its site lines changed; read its stats."""

import csv
import re
import shutil
import socket
import subprocess
from pathlib import Path

from ingestsite import embedded
from tests.stack import ROOT, free_port

CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
START_TIMEOUT_S = 10.0
STATS_TIMEOUT_S = 2.0
CHECK_HOST = "ingest.example.com"


def haproxy_available() -> bool:
    return shutil.which("haproxy") is not None


def render(text: str, *, bind: str, servers: dict[str, str], stats_socket: Path) -> str:
    """Return the shipped configuration with its bind, stats socket and server lines replaced."""
    server_lines = "".join(f"    server {name} {address}\n" for name, address in servers.items())
    text = re.sub(r"(?m)^    bind \S+$", f"    bind {bind}", text)
    text = re.sub(r"(?m)^    stats socket \S+", f"    stats socket {stats_socket}", text)
    # Each backend lists the same servers: replace each block of server lines as a whole.
    text = re.sub(r"(?m)(^    server .*\n)+", server_lines, text)
    return text


class HAProxy:
    """haproxy in the foreground (-db) on 127.0.0.1 in front of `servers` (name -> host:port)."""

    def __init__(self, *, servers: dict[str, str], base_dir: Path):
        self.port = free_port()
        self.base_dir = base_dir
        base_dir.mkdir(parents=True, exist_ok=True)
        self.stats_socket = base_dir / "haproxy.sock"
        self.config = base_dir / "haproxy.cfg"
        self.config.write_text(
            render(
                CONFIG.read_text(),
                bind=f"127.0.0.1:{self.port}",
                servers=servers,
                stats_socket=self.stats_socket,
            )
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(self.config)], check=True, timeout=START_TIMEOUT_S
        )
        with (self.base_dir / "haproxy.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        embedded.wait_for_port(
            "127.0.0.1", self.port, process=self.process, timeout=START_TIMEOUT_S
        )

    def stats(self) -> dict[tuple[str, str], dict]:
        """Return `show stat` by (backend, server): status, hrsp_2xx, ... as strings."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(STATS_TIMEOUT_S)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        lines = b"".join(chunks).decode().lstrip("# ").splitlines()
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(lines) if row}

    def status(self, server: str, *, backend: str = "gateways") -> str:
        """Return a server's state as HAProxy sees it: UP, DOWN, or a transition."""
        return self.stats()[(backend, server)]["status"]

    def stop(self) -> None:
        if self.process is not None:
            embedded.stop_process(self.process, timeout=5)
