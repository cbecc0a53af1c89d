"""cheroot with a deadline on reading each request and a bounded share of threads for slow clients.

cheroot's timeout bounds each read from a client, not a request: a client that sends a byte just
before every read times out holds a thread for as long as it likes. Here:

- A request must be read whole (head and body) before its deadline, counted from when a thread
  starts reading it, its first byte having arrived. Past it the request is answered 408 and its
  connection closed.
- A request is *slow* once its thread has waited for more of its bytes longer than
  SLOW_CLIENT_GRACE_S in all, and stays slow until it is answered. At most a fixed number of
  requests may be slow at once (a share of the threads); past that, a request that would have to
  wait longer is answered 408 and closed at once instead.
- A thread never waits for the first byte of a request: a connection with nothing to read goes
  back to cheroot's selector, which expires it after the socket timeout, as it does idle
  keep-alive connections.

A request that arrived whole costs no more system calls than under cheroot: its bytes are read
with one non-blocking read, and only a read that finds nothing waits (poll, then read again).
"""

import _pyio
import os
import select
import socket
import threading
import time

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.makefile import MakeFile, StreamReader

# How long a request may wait for its client, in all, before it is slow and needs a slot. Clients
# send a head and its body in separate writes (Python's http.client does), and Nagle's algorithm
# may hold the second until the first is acknowledged, which a delayed ACK (40 ms on Linux) puts
# off: such requests are not slow. A client cut for want of a slot has held a thread this long.
SLOW_CLIENT_GRACE_S = 0.1

# cheroot answers 408 to a socket timeout whose first argument is exactly this.
CHEROOT_TIMEOUT_MESSAGE = "timed out"
NO_SLOT_FREE = "every slow-client slot is taken"
DEADLINE_PASSED = "the request deadline passed"
READ_TIMED_OUT = "no byte within the socket timeout"


class SlowClientSlots:
    """Count the requests that wait for their client; refuse one past the limit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.taken = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take a slot if one is free; say whether it was."""
        with self._lock:
            if self.taken >= self.limit:
                self.refused += 1
                return False
            self.taken += 1
            return True

    def give_back(self) -> None:
        """Free a slot taken before."""
        with self._lock:
            self.taken -= 1


class RequestCut(TimeoutError):
    """Reading a request was cut short; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(CHEROOT_TIMEOUT_MESSAGE)
        self.reason = reason

    def __str__(self) -> str:
        return f"{CHEROOT_TIMEOUT_MESSAGE}: {self.reason}"


class ClientSocketIO(socket.SocketIO):
    """Read a client's socket, waiting for more bytes only before the deadline and with a slot."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        read_timeout: float,
        request_timeout: float,
        slots: SlowClientSlots,
    ):
        super().__init__(sock, "rb")
        self._read_timeout = read_timeout
        self._request_timeout = request_timeout
        self._slots = slots
        self._holds_slot = False
        # None between requests: then a read that finds nothing raises BlockingIOError at once.
        self._deadline: float | None = None
        self._grace_left = SLOW_CLIENT_GRACE_S
        self.cut: RequestCut | None = None

    def begin_request(self) -> None:
        """Start the deadline of the request whose first bytes are buffered."""
        self._deadline = time.monotonic() + self._request_timeout
        self._grace_left = SLOW_CLIENT_GRACE_S
        self.cut = None

    def end_request(self) -> None:
        """Free the request's slow-client slot, if it took one."""
        self._deadline = None
        if self._holds_slot:
            self._holds_slot = False
            self._slots.give_back()

    def readinto(self, buffer) -> int:
        if self.cut is not None:
            raise self.cut
        try:
            # A socket with a timeout has a non-blocking descriptor, so this read never waits;
            # socket.recv_into would poll before every read.
            return os.readv(self._sock.fileno(), [buffer])
        except BlockingIOError:
            if self._deadline is None:
                raise
        return self._wait_then_read(buffer)

    def _wait_then_read(self, buffer) -> int:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        read_ends = time.monotonic() + self._read_timeout
        while True:
            now = time.monotonic()
            if now >= self._deadline:
                raise self._cut(DEADLINE_PASSED)
            if now >= read_ends:
                raise self._cut(READ_TIMED_OUT)
            wait = min(self._deadline, read_ends) - now
            if not self._holds_slot:
                if self._grace_left > 0:
                    wait = min(wait, self._grace_left)
                elif self._slots.take():
                    self._holds_slot = True
                else:
                    raise self._cut(NO_SLOT_FREE)
            ready = poller.poll(wait * 1000)
            if not self._holds_slot:
                self._grace_left -= time.monotonic() - now
            if ready:
                try:
                    return os.readv(self._sock.fileno(), [buffer])
                except BlockingIOError:
                    continue  # woken without data after all

    def _cut(self, reason: str) -> RequestCut:
        # Kept, so that every later read of this request fails too: the application may have
        # swallowed the first error, and the request must not go on with half its bytes.
        self.cut = RequestCut(reason)
        return self.cut


class ClientReader(StreamReader):
    """cheroot's buffered reader of a connection, over a ClientSocketIO."""

    raw: ClientSocketIO

    def __init__(self, raw: ClientSocketIO, bufsize: int):
        _pyio.BufferedReader.__init__(self, raw, bufsize)
        self.bytes_read = 0


class DeadlineConnection(cheroot_server.HTTPConnection):
    """An HTTP connection whose requests are read under a deadline and a slow-client share."""

    rfile: ClientReader

    def __init__(self, server: "DeadlineServer", sock: socket.socket, makefile=MakeFile):
        def make_file(sock: socket.socket, mode: str, bufsize: int):
            if "r" not in mode:
                return makefile(sock, mode, bufsize)
            raw = ClientSocketIO(
                sock,
                read_timeout=server.timeout,
                request_timeout=server.request_timeout,
                slots=server.slow_client_slots,
            )
            return ClientReader(raw, bufsize)

        super().__init__(server, sock, make_file)

    @property
    def request_cut(self) -> RequestCut | None:
        return self.rfile.raw.cut

    def communicate(self) -> bool:
        """Serve one request once its first bytes are here; else hand the connection back."""
        try:
            self.rfile.peek(1)  # between requests the read does not wait
        except BlockingIOError:
            return True  # nothing sent yet: cheroot's selector waits for it, not a thread
        except OSError:
            return False  # reset by the client: nobody to answer
        if not self.rfile.has_data():
            return False  # closed by the client
        self.rfile.raw.begin_request()
        try:
            return super().communicate()
        finally:
            self.rfile.raw.end_request()


class CutRequestGateway(wsgi.Gateway_10):
    """Answer 408 to a request cut while the application read its body, and close it."""

    answering_cut = False

    def start_response(self, status, headers, exc_info=None):
        if self.req.conn.request_cut is None:
            return super().start_response(status, headers, exc_info)
        self.req.close_connection = True  # the rest of its body may still be on its way
        if status.startswith("408"):
            return super().start_response(status, headers, exc_info)
        # The application saw the cut as an unreadable body (Django: a 500); the client was slow.
        self.answering_cut = True
        return super().start_response("408 Request Timeout", [("Content-Length", "0")], exc_info)

    def write(self, chunk):
        if self.answering_cut:
            return
        super().write(chunk)


class DeadlineServer(wsgi.Server):
    """cheroot's WSGI server with a request deadline and a bounded share of slow clients."""

    ConnectionClass = DeadlineConnection

    def __init__(
        self, bind_addr, wsgi_app, *, request_timeout: float, slow_client_share: float, **options
    ):
        super().__init__(bind_addr, wsgi_app, **options)
        if not request_timeout > 0 or not self.timeout > 0:
            raise ValueError("the request deadline and the socket timeout must be positive")
        if not 0 <= slow_client_share <= 1:
            raise ValueError("the slow-client share is a fraction of the threads, 0 to 1")
        self.gateway = CutRequestGateway
        self.request_timeout = request_timeout
        self.slow_client_slots = SlowClientSlots(limit=int(self.numthreads * slow_client_share))

    def prepare(self) -> None:
        # ClientSocketIO reads the descriptor itself, which would bypass TLS.
        if self.ssl_adapter is not None:
            raise ValueError("DeadlineServer serves plain HTTP; terminate TLS in front of it")
        super().prepare()
