"""One deadline for a whole request, and answers written within a timeout.

Each request must arrive whole, request line, headers and body, within
``request_deadline_s`` (:data:`REQUEST_DEADLINE_S`, 10 s) of its first byte
being awaited (a TLS handshake within the same time, :func:`sensors.nightscout.tls.handshake`):
a client sending one byte a second is cut at the deadline, whereas a per-read
timeout would let it hold its thread for ever. :class:`DeadlineReader` is the
handler's ``rfile`` underneath, :class:`SocketWriter` its ``wfile``.
"""

from __future__ import annotations

import io
import math
import socket
import time
from typing import Any

REQUEST_DEADLINE_S = 10.0
"""A request (line, headers, body) must arrive whole within this many seconds, or the connection is cut."""


class DeadlineExceeded(TimeoutError):
    """The request did not arrive whole within the deadline."""


class DeadlineReader(io.RawIOBase):
    """Reads a socket with one deadline for a whole request, not a timeout per ``recv``.

    Before each ``recv`` the socket's timeout is set to the time left, so a
    client trickling bytes cannot extend it; at the deadline it raises
    :class:`DeadlineExceeded`. ``deadline`` is reset for each request.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.deadline = math.inf
        self.received = 0  # bytes of the current request
        self.expired = False

    def start_request(self, deadline_s: float) -> None:
        self.deadline = time.monotonic() + deadline_s
        self.received = 0
        self.expired = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise DeadlineExceeded("request deadline passed")
        self.sock.settimeout(left)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise DeadlineExceeded("request deadline passed") from None
        self.received += n
        return n


class SocketWriter(io.BufferedIOBase):
    """Unbuffered writes to a socket, each ``sendall`` within ``timeout_s`` (a client that stops
    reading its answer does not hold the worker)."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        super().__init__()
        self.sock = sock
        self.timeout_s = timeout_s

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.settimeout(self.timeout_s)
        self.sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes
