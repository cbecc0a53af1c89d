"""The supervisor of server processes: restart back-off, port check, exit descriptions."""

import socket

import pytest

from ingestsite.server import supervisor


def test_restarts_back_off_while_a_child_keeps_dying_young():
    delays = [supervisor.restart_delay(quick_exits) for quick_exits in range(12)]
    assert delays[0] == supervisor.RESTART_BACKOFF_BASE_S
    assert delays == sorted(delays)
    assert delays[-1] == supervisor.RESTART_BACKOFF_MAX_S


def test_a_port_in_use_is_reported_before_any_child_starts():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        problem = supervisor.port_problem(listener.getsockname())
    assert problem == "something already listens there"


@pytest.mark.parametrize(
    ("returncode", "description"),
    [(0, "code 0"), (2, "code 2"), (-9, "signal SIGKILL"), (-15, "signal SIGTERM")],
)
def test_a_child_exit_is_described_by_code_or_signal(returncode, description):
    assert supervisor.describe_exit(returncode) == description
