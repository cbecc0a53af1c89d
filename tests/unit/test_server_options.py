"""serve.py's options: flags, environment variables, validation and the child command."""

import pytest

from ingestsite.server.options import (
    OPTIONS,
    SERVE_SCRIPT,
    child_command,
    parse_args,
    usable_cores,
)


@pytest.fixture(autouse=True)
def no_serve_environment(monkeypatch):
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def parse_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_defaults_run_one_pinned_process_per_usable_core():
    args = parse_args([])
    assert args.processes == len(usable_cores()) >= 1
    assert args.cpu_affinity is True
    assert args.address == ("127.0.0.1", 8000)
    assert args.child is None


def test_requests_have_a_deadline_and_slow_clients_half_the_threads_by_default():
    args = parse_args([])
    assert (args.request_timeout, args.slow_client_share, args.threads) == (10.0, 0.5, 150)


def test_environment_sets_defaults_and_flags_override_them(monkeypatch):
    monkeypatch.setenv("SERVE_PROCESSES", "3")
    monkeypatch.setenv("SERVE_CPU_AFFINITY", "yes")
    monkeypatch.setenv("SERVE_SHUTDOWN_TIMEOUT", "2.5")
    args = parse_args([])
    assert (args.processes, args.cpu_affinity, args.shutdown_timeout) == (3, True, 2.5)
    args = parse_args(["--processes", "1", "--no-cpu-affinity"])
    assert (args.processes, args.cpu_affinity) == (1, False)


@pytest.mark.parametrize(("value", "expected"), [("off", False), ("No", False), (" ON ", True)])
def test_a_boolean_variable_takes_the_words_settings_take(monkeypatch, value, expected):
    monkeypatch.setenv("SERVE_CPU_AFFINITY", value)
    assert parse_args([]).cpu_affinity is expected


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("SERVE_PROCESSES", "two", "SERVE_PROCESSES='two' is not a valid int"),
        ("SERVE_CPU_AFFINITY", "maybe", "SERVE_CPU_AFFINITY='maybe' is not a valid boolean"),
        ("SERVE_TIMEOUT", "soon", "SERVE_TIMEOUT='soon' is not a valid float"),
    ],
)
def test_a_malformed_environment_variable_is_named(monkeypatch, capsys, env, value, message):
    monkeypatch.setenv(env, value)
    assert message in parse_error(capsys, [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes must be at least 1"),
        (["--processes", "-2"], "--processes must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--timeout", "0"], "--timeout must be positive"),
        (["--request-timeout", "0"], "--request-timeout must be positive"),
        (["--request-timeout", "-1"], "--request-timeout must be positive"),
        (["--slow-client-share", "1.5"], "--slow-client-share must be a fraction"),
        (["--slow-client-share", "-0.1"], "--slow-client-share must be a fraction"),
        (["--shutdown-timeout", "-1"], "--shutdown-timeout must not be negative"),
        (["--accepted-queue-size", "0"], "--accepted-queue-size must be at least 1"),
        (["--bind", "8000"], "--bind must be host:port, got '8000'"),
        (["--bind", "127.0.0.1:99999"], "--bind must be host:port"),
        (["--processes", "2", "--bind", "127.0.0.1:0"], "needs a port other than 0"),
        (["--processes", "many"], "invalid int value: 'many'"),
    ],
)
def test_bad_flags_give_a_clear_error(capsys, argv, message):
    assert message in parse_error(capsys, argv)


def test_one_process_may_listen_on_an_ephemeral_port():
    assert parse_args(["--processes", "1", "--bind", "127.0.0.1:0"]).address[1] == 0


def test_a_child_command_carries_the_effective_configuration(monkeypatch):
    monkeypatch.setenv("SERVE_THREADS", "7")
    args = parse_args(["--processes", "3", "--cpu-affinity", "--bind", "[::1]:9000"])
    command = child_command(args, 2)
    assert command[1] == str(SERVE_SCRIPT)
    assert SERVE_SCRIPT.is_file()
    assert command[2:4] == ["--child", "2"]

    monkeypatch.setenv("SERVE_THREADS", "99")  # a child must not depend on the environment
    child = parse_args(command[2:])
    assert child.child == 2
    for option in OPTIONS:
        assert getattr(child, option.dest) == getattr(args, option.dest), option.flag
    assert child.address == ("::1", 9000)
    unpinned = parse_args(["--no-cpu-affinity"])
    assert "--no-cpu-affinity" in child_command(unpinned, 0)
