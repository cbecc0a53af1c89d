"""Send events through @segment/analytics-node, the real SDK, run by node in a subprocess."""

import json
import pathlib
import shutil
import subprocess

import pytest

PROTOCOL = "segment"
SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "node" / "segment_send.js"
# What node may take beyond the SDK's own flush timeout: starting, and writing its report.
NODE_GRACE_S = 15


def send(*, url: str, key: str, ids: list[str], timeout_s: float) -> None:
    """Track one event per id (its messageId), flush, and fail if the SDK gave any up."""
    report = run(url=url, key=key, ids=ids, timeout_s=timeout_s)
    assert not report["failed"], f"the SDK gave up on {len(report['failed'])} events: " + str(
        report["failed"][:3]
    )
    missing = set(ids) - set(report["delivered"])
    assert not missing, f"the SDK never reported {len(missing)} events as delivered"


def run(*, url: str, key: str, ids: list[str], timeout_s: float) -> dict:
    """Return the SDK's report: {"delivered": [ids], "failed": [{"id", "reason"}]}."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the @segment/analytics-node tests need `node`")
    request = {"url": url, "key": key, "ids": ids, "timeoutMs": int(timeout_s * 1000)}
    finished = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(request).encode(),
        capture_output=True,
        cwd=SCRIPT.parent,
        timeout=timeout_s + NODE_GRACE_S,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")
    return json.loads(finished.stdout)
