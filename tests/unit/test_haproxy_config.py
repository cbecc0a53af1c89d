"""deploy/haproxy/haproxy.cfg: what it promises the gateways, and that HAProxy accepts it."""

import re
import shutil
import subprocess

import pytest

from tests.faults.haproxy import CONFIG, render

TEXT = CONFIG.read_text()


def directives(name: str) -> list[str]:
    return [line.strip() for line in TEXT.splitlines() if line.strip().startswith(name)]


def test_only_a_connection_that_never_reached_a_gateway_is_retried():
    assert directives("retry-on") == ["retry-on conn-failure"]
    assert directives("option redispatch") == ["option redispatch 1"]


def test_ready_gateways_are_checked_on_readyz_and_taken_out_within_two_seconds():
    checks = directives("http-check send")
    assert checks[0].startswith("http-check send meth GET uri /readyz ")
    for line in directives("default-server"):
        timings = dict(re.findall(r"(inter|fastinter|fall|rise) (\d+)", line))
        inter, fastinter, fall = int(timings["inter"]), int(timings["fastinter"]), timings["fall"]
        assert inter + (int(fall) - 1) * fastinter <= 2_000


def test_no_rule_rewrites_a_gateway_answer():
    assert not directives("http-response")
    assert not directives("errorfile")


def test_render_changes_only_the_site_lines(tmp_path):
    servers = {"a": "10.1.0.1:8000", "b": "10.1.0.2:8000", "c": "10.1.0.3:8000"}
    text = render(TEXT, bind="127.0.0.1:1", servers=servers, stats_socket=tmp_path / "s")
    assert "    bind 127.0.0.1:1\n" in text
    assert text.count("    server c 10.1.0.3:8000\n") == 2  # in both backends
    assert "10.0.0.11" not in text
    assert text.count("\n") == TEXT.count("\n") + 2


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_shipped_file():
    subprocess.run(["haproxy", "-c", "-q", "-f", str(CONFIG)], check=True, timeout=10)
