"""/readyz on a real serve.py process follows the broker and Kafka going away and coming back."""

import contextlib
import socket
import threading
import time

import pytest

from tests.stack import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

RABBITMQ = ("127.0.0.1", 5672)
READY_CHANGE_S = 10.0
READY_POLL_S = 0.2


class TcpProxy:
    """Forward a local port to a target; stop() makes the target look down, start() back up."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # Without the shutdown the socket keeps listening while _accept blocks in accept():
            # it would take one more connection and keep start() from binding the port again.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def wait_for_readiness(
    stack, *, ready: bool, timeout: float = READY_CHANGE_S
) -> tuple[float, dict]:
    """Wait until /readyz answers ready (200) or not (503); return how long that took and why."""
    started = time.monotonic()

    def answer_as_expected() -> dict | None:
        status, _, body = stack.request("GET", "/readyz", timeout=10)
        assert status in (200, 503)
        return body if (status == 200) == ready else None

    body = wait_until(
        answer_as_expected,
        timeout=timeout,
        interval=READY_POLL_S,
        message=f"/readyz did not turn {'ready' if ready else 'unavailable'} in {timeout}s",
    )
    assert body["status"] == ("ready" if ready else "unavailable")
    return time.monotonic() - started, body


def test_readyz_follows_the_broker_and_kafka(stack_factory, tansu):
    proxy = TcpProxy(RABBITMQ)
    proxy.start()
    stack = stack_factory(
        kafka=tansu.address,
        extra_env={"CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}//"},
    )
    try:
        # Readiness is each process's own view; one process makes every answer that view.
        stack.start_server("--threads", "8", "--processes", "1")
        _, body = wait_for_readiness(stack, ready=True)
        assert body["failed"] == []
        assert set(body["checks"]) == {"database", "broker", "kafka", "backlog"}

        proxy.stop()
        took, body = wait_for_readiness(stack, ready=False)
        assert "broker" in body["failed"] and "kafka" not in body["failed"]
        print(f"/readyz 503 {took:.1f}s after the broker went away: {body['checks']['broker']}")
        proxy.start()
        took, _ = wait_for_readiness(stack, ready=True)
        print(f"/readyz 200 {took:.1f}s after the broker came back")

        tansu.freeze()
        took, body = wait_for_readiness(stack, ready=False)
        assert body["failed"] == ["kafka"]
        print(f"/readyz 503 {took:.1f}s after Kafka froze: {body['checks']['kafka']}")
        tansu.thaw()
        took, _ = wait_for_readiness(stack, ready=True)
        print(f"/readyz 200 {took:.1f}s after Kafka thawed")
        status, _, body = stack.request("GET", "/healthz")
        assert status == 200 and body["process"]["pid"] == stack.server.pid
    finally:
        tansu.thaw()
        if proxy._listener is None:
            proxy.start()
