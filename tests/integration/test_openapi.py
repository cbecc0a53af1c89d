"""schemathesis against a live gateway: no 5xx, every answer as the OpenAPI document says."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
MAX_EXAMPLES = 40
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="pip install -r requirements-dev.txt")
def test_schemathesis_finds_no_server_error_and_no_schema_violation(stack_factory, tmp_path):
    stack = stack_factory()
    stack.start_worker()
    stack.start_server("--threads", "16")
    status, _, document = stack.request("GET", "/api/v1/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.")

    report = ARTIFACTS / tmp_path.name / "schemathesis"
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"http://127.0.0.1:{stack.port}/api/v1/openapi.json",
            "--url",
            f"http://127.0.0.1:{stack.port}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            # One worker: hypothesis parses lambdas' source with ast from every worker thread,
            # and CPython 3.11.7's ast is not thread-safe ("AST constructor recursion depth
            # mismatch", a schemathesis runtime error, not a finding).
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-dir",
            str(report),
            "--no-color",
        ],
        cwd=tmp_path,  # schemathesis keeps a cache folder in its working directory
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
