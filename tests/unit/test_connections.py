"""The request deadline and slow-client share of ingestsite.server.connections, on a real socket."""

import hashlib
import http.client
import selectors
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from ingestsite.server.connections import DEADLINE_PASSED, DeadlineServer, RequestCut
from tests.waiting import wait_until

CLIENT_TIMEOUT_S = 10.0
# How late a cut may reach the client: the server notices at its next wake-up, then answers.
CUT_SLACK_S = 1.0
DRIBBLE_INTERVAL_S = 0.2
POST_HEAD = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 64\r\n\r\n"
# Within SLOW_CLIENT_GRACE_S: a delayed ACK holding back a client's second write.
SPLIT_WRITE_GAP_S = 0.04
CLOSE = b"\r\nConnection: close\r\n\r\n"
SLOTS_TIMEOUT_S = 5.0


MAPPED_408 = b'{"code": "request_timeout"}'


def echo_app(environ, start_response):
    """Answer the length and digest of the body it read whole, as a WSGI application does."""
    try:
        body = environ["wsgi.input"].read()
    except OSError:
        if environ["PATH_INFO"] == "/mapped":  # an application that answers the cut itself
            start_response("408 Request Timeout", [("Content-Length", str(len(MAPPED_408)))])
            return [MAPPED_408]
        # Django turns an unreadable body into a 500; the server must answer 408 all the same.
        start_response("500 Internal Server Error", [("Content-Length", "5")])
        return [b"error"]
    answer = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(answer)))])
    return [answer]


@dataclass
class Running:
    server: DeadlineServer
    port: int

    def request(self, method="GET", body=None, **kwargs) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S)
        try:
            connection.request(method, "/echo", body=body, **kwargs)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture
def serve():
    """Start a DeadlineServer on an ephemeral port with the given settings; stop it after."""
    started = []

    def start(*, threads=4, timeout=5.0, request_timeout=5.0, share=0.5) -> Running:
        server = DeadlineServer(
            ("127.0.0.1", 0),
            echo_app,
            numthreads=threads,
            # cheroot's default backlog (5) would drop a burst of connections for a second.
            request_queue_size=64,
            timeout=timeout,
            request_timeout=request_timeout,
            slow_client_share=share,
        )
        server.prepare()
        threading.Thread(target=server.serve, name="test-serve", daemon=True).start()
        started.append(server)
        return Running(server, server.bind_addr[1])

    yield start
    for server in started:
        server.stop()


def answer_until_closed(sock: socket.socket, *, timeout=CLIENT_TIMEOUT_S) -> bytes:
    """Read what the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def dribble_until_cut(sock: socket.socket, data: bytes, *, limit_s: float) -> tuple[float, bytes]:
    """Send `data` a byte at a time until the server answers or closes; return when, and what."""
    started = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        for byte in data:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if selector.select(DRIBBLE_INTERVAL_S):
                break
            assert time.monotonic() - started < limit_s, "the slow client was never cut"
    return time.monotonic() - started, answer_until_closed(sock)


def dribbler(port: int, head: bytes) -> socket.socket:
    """Open a connection that sends `head` and then waits, as a slow client does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S)
    sock.sendall(head)
    return sock


@pytest.mark.parametrize(
    ("name", "whole", "dribbled"),
    [
        ("head", b"", POST_HEAD),
        ("body", POST_HEAD, b"x" * 64),
    ],
)
def test_a_dribbling_client_is_cut_at_the_request_deadline(serve, name, whole, dribbled):
    running = serve(timeout=5.0, request_timeout=1.0)
    with socket.create_connection(("127.0.0.1", running.port)) as sock:
        sock.sendall(whole)
        seconds, answer = dribble_until_cut(sock, dribbled, limit_s=5.0)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 1.0 - DRIBBLE_INTERVAL_S <= seconds <= 1.0 + CUT_SLACK_S, f"{name} cut after {seconds}"


def test_an_application_may_answer_the_cut_itself(serve):
    running = serve(timeout=5.0, request_timeout=0.5)
    head = POST_HEAD.replace(b"/echo", b"/mapped")
    with dribbler(running.port, head) as sock:
        _, answer = dribble_until_cut(sock, b"x" * 64, limit_s=5.0)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"Connection: close\r\n" in answer
    assert answer.endswith(MAPPED_408)


def test_the_read_timeout_still_bounds_each_wait(serve):
    running = serve(timeout=0.5, request_timeout=30.0)
    started = time.monotonic()
    with dribbler(running.port, b"POST /echo HTTP/1.1\r\n") as sock:
        answer = answer_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started <= 0.5 + CUT_SLACK_S


def test_past_the_slow_client_share_a_slow_request_is_cut_at_once(serve):
    running = serve(threads=4, share=0.5, timeout=30.0, request_timeout=30.0)
    slots = running.server.slow_client_slots
    assert slots.limit == 2
    held = [dribbler(running.port, POST_HEAD[:10]) for _ in range(2)]
    try:
        wait_until(
            lambda: slots.taken == 2,
            timeout=SLOTS_TIMEOUT_S,
            message="the two slow clients did not take their slots",
        )
        started = time.monotonic()
        with dribbler(running.port, POST_HEAD[:10]) as third:
            answer = answer_until_closed(third)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert time.monotonic() - started < CUT_SLACK_S
        assert slots.refused == 1
        # A request that arrives whole never waits, so it needs no slot; nor does one whose body
        # follows its head a moment later (http.client sends them apart).
        assert running.request("POST", body=b'{"a": 1}')[0] == 200
        with dribbler(running.port, POST_HEAD.replace(b"\r\n\r\n", CLOSE)) as split:
            time.sleep(SPLIT_WRITE_GAP_S)
            split.sendall(b"x" * 64)
            assert answer_until_closed(split).startswith(b"HTTP/1.1 200 ")
        # The two slow clients still hold theirs: neither was answered.
        for sock in held:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
    finally:
        for sock in held:
            sock.close()
    wait_until(
        lambda: slots.taken == 0, timeout=SLOTS_TIMEOUT_S, message="a slot was never given back"
    )


def test_connections_that_send_nothing_hold_no_thread(serve):
    running = serve(threads=2, timeout=30.0)
    silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(6)]
    try:
        started = time.monotonic()
        assert running.request()[0] == 200
        assert time.monotonic() - started < CUT_SLACK_S
        assert running.server.slow_client_slots.taken == 0
    finally:
        for sock in silent:
            sock.close()


def test_a_large_body_arriving_quickly_passes(serve):
    running = serve(request_timeout=5.0)
    body = bytes(range(256)) * 16_384  # 4 MiB: many reads, some of which wait for the next bytes
    status, answer = running.request("POST", body=body)
    assert status == 200
    assert answer == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    wait_until(
        lambda: running.server.slow_client_slots.taken == 0,
        timeout=SLOTS_TIMEOUT_S,
        message="a slot was never given back",
    )


def test_a_chunked_body_is_read_whole_even_when_its_chunks_come_slowly(serve):
    running = serve(request_timeout=5.0)
    chunks = [b"[", b'{"a": 1}', b",", b"x" * 20_000, b"]"]

    def slowly():
        for chunk in chunks:
            time.sleep(0.1)  # a client that sends its chunks apart is the scenario
            yield chunk

    status, answer = running.request("POST", body=slowly(), encode_chunked=True)
    body = b"".join(chunks)
    assert status == 200
    assert answer == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


def test_each_request_of_a_kept_connection_has_its_own_deadline(serve):
    running = serve(timeout=5.0, request_timeout=0.5)
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=CLIENT_TIMEOUT_S)
    try:
        for _ in range(2):
            connection.request("POST", "/echo", body=b"{}")
            response = connection.getresponse()
            assert (response.status, response.getheader("Connection")) == (200, None)
            response.read()
            time.sleep(0.8)  # idle longer than a request may take: the idle wait is not counted
    finally:
        connection.close()


def test_a_cut_reads_as_cheroots_timeout_and_says_why():
    cut = RequestCut(DEADLINE_PASSED)
    assert cut.args[0] == "timed out"  # what cheroot answers 408 to
    assert str(cut) == "timed out: the request deadline passed"


def test_the_settings_are_checked():
    with pytest.raises(ValueError, match="must be positive"):
        DeadlineServer(("127.0.0.1", 0), echo_app, request_timeout=0, slow_client_share=0.5)
    with pytest.raises(ValueError, match="fraction"):
        DeadlineServer(("127.0.0.1", 0), echo_app, request_timeout=1, slow_client_share=1.5)
