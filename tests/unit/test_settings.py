"""Production settings from the environment, loaded in subprocesses as a deployment would."""

import json
import os
import re
import secrets
import shlex
import subprocess
import sys

import pytest

from tests.stack import ROOT

TIMEOUT_S = 60
SHOWN_SETTINGS = (
    "ALLOWED_HOSTS",
    "SECURE_PROXY_SSL_HEADER",
    "CSRF_TRUSTED_ORIGINS",
    "SESSION_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "DATABASES",
)
PRODUCTION_SERVICES = {
    "DATABASE_URL": "postgres://ingest@db/ingest",
    "CELERY_BROKER_URL": "amqp://user:pass@rabbit:5672//",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka1:9092",
    "SECRET_KEY": "s" * 60,
}


def documented_production_environment() -> dict[str, str]:
    """Return the variables the README's production section exports, with a strong secret."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running in production", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)[1]
    environment = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            environment.update(word.split("=", 1) for word in words[1:])
    assert environment["SECRET_KEY"] == "..."  # a placeholder, replaced as the README says
    environment["SECRET_KEY"] = secrets.token_urlsafe(50)
    return environment


def run_python(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run Python in the project with only `environment` (and PATH) set."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **environment},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def load_settings(environment: dict[str, str]) -> dict:
    script = (
        "import json; from ingestsite import settings as s; "
        f"print(json.dumps({{name: getattr(s, name) for name in {SHOWN_SETTINGS!r}}}))"
    )
    completed = run_python(environment, "-c", script)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_check_deploy_is_clean_with_the_documented_production_environment():
    completed = run_python(
        documented_production_environment(),
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "WARNING" not in completed.stdout + completed.stderr
    assert "no issues" in completed.stdout


def test_documented_environment_reaches_the_settings():
    loaded = load_settings(documented_production_environment())
    assert loaded["ALLOWED_HOSTS"] == ["ingest.example.com"]
    assert loaded["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert loaded["CSRF_TRUSTED_ORIGINS"] == ["https://ingest.example.com"]
    assert loaded["SESSION_COOKIE_SECURE"] is True
    assert loaded["SECURE_SSL_REDIRECT"] is True
    assert loaded["SECURE_HSTS_SECONDS"] == 31_536_000
    assert loaded["DATABASES"]["default"]["OPTIONS"]["connect_timeout"] == 5


def test_redirect_to_https_spares_probes_and_event_clients():
    exempt = load_settings(documented_production_environment())["SECURE_REDIRECT_EXEMPT"]
    for path in ("api/v1/events/clicks", "api/v1/show/", "healthz", "readyz", "metrics"):
        assert any(re.search(pattern, path) for pattern in exempt), path
    for path in ("admin/login/", "healthzz", "static/admin/css/base.css"):
        assert not any(re.search(pattern, path) for pattern in exempt), path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "ALLOWED_HOSTS"),
        ({"ALLOWED_HOSTS": "gw", "DEBUG": "true"}, "DEBUG=true is refused in production"),
        ({"ALLOWED_HOSTS": "gw", "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO"}, "HEADER"),
    ],
)
def test_production_refuses_to_start_misconfigured(extra, message):
    completed = run_python({**PRODUCTION_SERVICES, **extra}, "-c", "import ingestsite.settings")
    assert completed.returncode != 0
    assert "ImproperlyConfigured" in completed.stderr
    assert message in completed.stderr


def test_standalone_allows_every_host_and_sets_no_connect_timeout(tmp_path):
    loaded = load_settings({"INGEST_DATA_DIR": str(tmp_path)})
    assert loaded["ALLOWED_HOSTS"] == ["*"]
    assert loaded["SECURE_PROXY_SSL_HEADER"] is None
    assert "connect_timeout" not in loaded["DATABASES"]["default"]["OPTIONS"]
