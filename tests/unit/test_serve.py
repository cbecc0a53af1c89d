"""serve.py, the entry point: its help, and a supervisor that does not load the gateway."""

import os
import subprocess
import sys

from ingestsite.server.options import OPTIONS, SERVE_SCRIPT


def test_help_describes_serve_py_and_every_option_without_loading_settings():
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SERVE_")}
    environment["DJANGO_SETTINGS_MODULE"] = "no.such.settings"  # loading settings would fail
    completed = subprocess.run(
        [sys.executable, str(SERVE_SCRIPT), "--help"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert "Run the ingest gateway under cheroot" in completed.stdout
    for option in OPTIONS:
        assert option.flag in completed.stdout
        assert f"[{option.env}]" in completed.stdout


def test_the_supervisor_does_not_load_the_gateway():
    """A supervisor only reads settings; its server processes load the pipeline themselves."""
    probe = (
        "import sys, serve; from django.conf import settings; settings.INGEST_MODE; "
        "print(sorted(name for name in sys.modules if name.startswith(('ingest.', 'cheroot'))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=SERVE_SCRIPT.parent,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "ingestsite.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
