"""serve.py, the entry point: its help describes it and every option, without loading settings."""

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
