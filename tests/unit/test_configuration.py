"""docs/CONFIGURATION.md lists every environment variable the code reads and every serve.py flag.

The variables are found in the source text, not imported, so the check holds wherever a module
moves: every *.py of the project outside tests/ and hidden folders (.venv, .git) is read.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"
HELP_TIMEOUT_S = 60

NAME = r"""["']([A-Z][A-Z0-9_]*)["']"""
# Every way the project reads a variable: settings' parsers, os.environ and os.getenv, and the
# (flag, variable) pairs of serve.py's option table. A WSGI `environ[...]` is not os.environ.
READS = tuple(
    re.compile(pattern)
    for pattern in (
        rf"\benv_(?:str|int|float|bool|list)\(\s*{NAME}",
        rf"\bos\.environ\.(?:get|setdefault|pop)\(\s*{NAME}",
        rf"\bos\.environ\[\s*{NAME}\s*\]",
        rf"\bos\.getenv\(\s*{NAME}",
        rf"{NAME}\s+(?:not\s+)?in\s+os\.environ\b",
        rf"\bOption\(\s*(?:flag\s*=\s*)?[\"']--[\w-]+[\"']\s*,\s*(?:env\s*=\s*)?{NAME}",
        rf"\benv\s*=\s*{NAME}",
    )
)
HELP_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
HELP_VARIABLE = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")
BACKTICKED = re.compile(r"`([^`]+)`")


def service_sources() -> list[Path]:
    """Return every *.py of the project outside tests/ and hidden folders (.venv, .git)."""
    sources = []
    for folder, subfolders, files in os.walk(ROOT):
        here = Path(folder)
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".")
            and name not in ("__pycache__", "site-packages", "node_modules")
            and not (here == ROOT and name == "tests")
        ]
        sources += [here / name for name in files if name.endswith(".py")]
    return sources


def variables_read(source: str) -> set[str]:
    """Return the names of the environment variables that `source` reads."""
    return {match.group(1) for pattern in READS for match in pattern.finditer(source)}


def variables_read_by_the_service() -> dict[str, str]:
    """Map each variable the service code reads to the first file that reads it."""
    found = {}
    for path in sorted(service_sources()):
        for name in variables_read(path.read_text(encoding="utf-8")):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def documented_names(markdown: str) -> set[str]:
    """Return the `names` in the first cell of each table row: the variables and flags listed."""
    names = set()
    for line in markdown.splitlines():
        cells = line.strip().split("|")
        if len(cells) > 2 and not line.strip().startswith("| ---"):
            names.update(BACKTICKED.findall(cells[1]))
    return names


@pytest.fixture(scope="module")
def documented() -> set[str]:
    return documented_names(CONFIGURATION.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def serve_help() -> str:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "serve.py"), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize(
    "line",
    [
        'LIMIT = env_int("SOME_LIMIT", 5)',
        "MODE = env_str('SOME_LIMIT')",
        'HOSTS = settings_module.env_list(\n    "SOME_LIMIT", "*"\n)',
        'raw = os.environ.get("SOME_LIMIT", "")',
        'os.environ.setdefault("SOME_LIMIT", "x")',
        'raw = os.environ["SOME_LIMIT"]',
        'raw = os.getenv("SOME_LIMIT")',
        'if "SOME_LIMIT" not in os.environ:',
        'Option("--some-limit", "SOME_LIMIT", int, 5, "help")',
        'Option(flag="--some-limit", env="SOME_LIMIT", parse=int, default=5, help="help")',
        'Option("--some-limit",\n    env="SOME_LIMIT", parse=int, default=5, help="help")',
    ],
)
def test_every_way_of_reading_a_variable_is_found(line):
    assert variables_read(line) == {"SOME_LIMIT"}


def test_a_wsgi_environ_and_a_plain_string_are_not_variables():
    source = 'path = environ["PATH_INFO"]\nack = environ.get("HTTP_X_INGEST_ACK")\nX = "LOUD"\n'
    assert variables_read(source) == set()


def test_the_scan_reads_the_service_and_skips_the_tests():
    found = variables_read_by_the_service()
    # One variable of each way the service reads them today: if these vanish, the scan is broken.
    assert {"INGEST_BATCH_MAX_WAIT_MS", "SERVE_BIND", "DATABASE_URL"} <= found.keys()
    assert "TEST_ARTIFACTS_DIR" not in found  # read by tests/conftest.py only
    assert not any(path.startswith(("tests/", ".")) for path in found.values())


def test_every_variable_the_code_reads_is_documented(documented):
    read = variables_read_by_the_service()
    missing = {name: path for name, path in read.items() if name not in documented}
    assert not missing, f"read in the code but not in a table of docs/CONFIGURATION.md: {missing}"


def test_every_serve_option_is_documented(documented, serve_help):
    # The options follow the description, which may name flags in passing (`serve.py --child`).
    options = re.split(r"^(?:options|optional arguments):$", serve_help, flags=re.MULTILINE)[-1]
    flags = set(HELP_FLAG.findall(options)) - {"--help"}
    variables = set(HELP_VARIABLE.findall(options))
    assert "--bind" in flags and "SERVE_BIND" in variables, serve_help
    assert not flags - documented, f"flags missing from the tables: {sorted(flags - documented)}"
    assert not variables - documented, (
        f"variables missing from the tables: {sorted(variables - documented)}"
    )


def test_every_documented_variable_is_still_used(documented):
    """A variable renamed or removed in the code must leave the documentation too."""
    project_text = "\n".join(
        path.read_text(encoding="utf-8")
        for path in [
            *service_sources(),
            *(ROOT / "tests").rglob("*.py"),
            ROOT / "Makefile",
        ]
    )
    variables = {name for name in documented if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)}
    unused = {name for name in variables if not re.search(rf"\b{name}\b", project_text)}
    assert not unused, f"documented in docs/CONFIGURATION.md but used nowhere: {sorted(unused)}"
