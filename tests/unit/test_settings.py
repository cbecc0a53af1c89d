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


QUEUE_OF_THE_WORKER = (
    "import json, django; from celery_app import app; django.setup(); "
    "from celery.utils.quorum_queues import detect_quorum_queues; "
    "queue = app.amqp.default_queue; "
    "print(json.dumps([queue.name, queue.queue_arguments, detect_quorum_queues(app, 'amqp')[0]]))"
)


@pytest.mark.parametrize(
    ("queue_type", "arguments", "quorum"),
    [(None, None, False), ("classic", None, False), ("quorum", {"x-queue-type": "quorum"}, True)],
)
def test_queue_type_reaches_the_queue_celery_and_the_publisher_declare(
    queue_type, arguments, quorum
):
    environment = {**PRODUCTION_SERVICES, "ALLOWED_HOSTS": "gw", "CELERY_TASK_DEFAULT_QUEUE": "q"}
    if queue_type:
        environment["INGEST_QUEUE_TYPE"] = queue_type
    completed = run_python(environment, "-c", QUEUE_OF_THE_WORKER)
    assert completed.returncode == 0, completed.stderr
    # The worker consumes and the gateway publishes to app.amqp.default_queue; a quorum queue
    # also makes Celery drop global QoS (worker_detect_quorum_queues).
    assert json.loads(completed.stdout) == ["q", arguments, quorum]


def test_an_unknown_queue_type_is_refused():
    environment = {**PRODUCTION_SERVICES, "ALLOWED_HOSTS": "gw", "INGEST_QUEUE_TYPE": "stream"}
    completed = run_python(environment, "-c", "import ingestsite.settings")
    assert completed.returncode != 0
    assert "INGEST_QUEUE_TYPE must be classic or quorum, got 'stream'" in completed.stderr
