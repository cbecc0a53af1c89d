"""Send events through the real posthog-node SDK, one per id, and wait until it sent them all."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .posthog_python import check_ids

PROTOCOL = "posthog"


SCRIPT = Path(__file__).resolve().parents[1] / "node" / "posthog_send.cjs"
# Time for node to start and exit around the SDK's own shutdown budget.
PROCESS_GRACE_S = 15


def run(*, url: str, key: str, ids: list[str], timeout_s: float) -> dict:
    """Run the node script; return what it reports: the ids the SDK sent and its errors."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: posthog-node cannot be tested")
    request = {"url": url, "key": key, "ids": ids, "timeout_ms": int(timeout_s * 1000)}
    completed = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=SCRIPT.parent,
        timeout=timeout_s + PROCESS_GRACE_S,
        check=False,
    )
    assert completed.returncode == 0, f"node failed: {completed.stderr[-2000:]}"
    return json.loads(completed.stdout)


def send(*, url: str, key: str, ids: list[str], timeout_s: float) -> None:
    """Capture one event per id (its `uuid`), shut down, and raise AssertionError on any loss."""
    check_ids(ids)
    report = run(url=url, key=key, ids=ids, timeout_s=timeout_s)
    assert not report["errors"], f"the SDK gave up on events: {report['errors'][:3]}"
    missing = set(ids) - set(report["sent"])
    assert not missing, f"the SDK did not send {len(missing)} events, e.g. {sorted(missing)[:3]}"
