"""Hosts of a test's own: one network namespace each, on a bridge in the root namespace."""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import uuid

from tests.waiting import wait_until

IP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 10.0
SUBNET_PREFIX = "10.77"
FIRST_HOST = 11


def netns_available() -> str | None:
    """Say why namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "iproute2's ip is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def ip(*args: str) -> str:
    return subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=IP_TIMEOUT_S
    ).stdout


def free_subnet() -> str:
    """Return a 10.77.N /24 no interface of this machine is on (parallel runs pick others)."""
    used = ip("-4", "-o", "addr", "show")
    candidates = [f"{SUBNET_PREFIX}.{n}" for n in range(256)]
    random.shuffle(candidates)
    for subnet in candidates:
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError(f"every {SUBNET_PREFIX}.N/24 is in use")


class Network:
    """A bridge at `<subnet>.1` and one namespace per host, each with its own address on it.

    Names carry a random suffix so parallel runs never collide; delete() removes them all.
    """

    def __init__(self, hosts: list[str]):
        self.suffix = uuid.uuid4().hex[:6]
        self.subnet = free_subnet()
        self.bridge = f"mhb{self.suffix}"
        self.root_address = f"{self.subnet}.1"
        self.cidr = f"{self.subnet}.0/24"
        self.namespaces = {host: f"mh-{self.suffix}-{host}" for host in hosts}
        self.addresses = {
            host: f"{self.subnet}.{FIRST_HOST + index}" for index, host in enumerate(hosts)
        }
        self._created: list[tuple[str, str]] = []

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        self._created.append(("link", self.bridge))
        ip("addr", "add", f"{self.root_address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for index, (host, namespace) in enumerate(self.namespaces.items()):
            ip("netns", "add", namespace)
            self._created.append(("netns", namespace))
            outside, inside = f"mh{self.suffix}v{index}", f"mh{self.suffix}p{index}"
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            self._created.append(("link", outside))
            ip("link", "set", inside, "netns", namespace)
            ip("link", "set", outside, "master", self.bridge, "up")
            ip("-n", namespace, "addr", "add", f"{self.addresses[host]}/24", "dev", inside)
            ip("-n", namespace, "link", "set", inside, "up")
            ip("-n", namespace, "link", "set", "lo", "up")

    def command(self, host: str, argv: list[str]) -> list[str]:
        """Return `argv` run inside `host`'s namespace (ip netns exec execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespaces[host], *argv]

    def pids(self, host: str) -> list[int]:
        return [int(pid) for pid in ip("netns", "pids", self.namespaces[host]).split()]

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of `host`, as if the machine died; return their pids."""
        pids = self.pids(host)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: not self.pids(host),
            timeout=KILL_TIMEOUT_S,
            message=lambda: f"{host} still runs {self.pids(host)}",
        )
        return pids

    def delete(self) -> None:
        """Kill what still runs in the namespaces, then remove them and the bridge."""
        for host in self.namespaces:
            with contextlib.suppress(subprocess.CalledProcessError, AssertionError):
                self.kill_host(host)
        for kind, name in reversed(self._created):
            with contextlib.suppress(subprocess.CalledProcessError):
                ip(kind, "del", name)
        self._created.clear()
