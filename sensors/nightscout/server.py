"""The receiver's HTTP server: a bounded worker pool, a connection cap and a listen backlog.

**Resources** are bounded, so that slow or many clients cannot starve the
uploads the loop needs: a pool of ``workers`` threads (:data:`WORKERS`, 16)
serves connections; at most ``max_connections`` (:data:`MAX_CONNECTIONS`, 256)
are admitted at once (served or waiting for a worker), and each one beyond is
answered ``503`` with ``Retry-After`` at once and closed (over TLS, closed:
answering would need a handshake); the listen backlog is ``backlog``
(:data:`LISTEN_BACKLOG`, 512: 128 still reset 5 of 300 simultaneous uploads
here; the kernel caps it at ``net.core.somaxconn``). Each request has one
deadline (:mod:`sensors.nightscout.deadline`).

The server knows its owner (the receiver) only through :class:`ServerOwner`:
the bounds, the TLS context and the counters.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Protocol, TypeVar

from sensors.nightscout.deadline import DeadlineExceeded

WORKERS = 16
"""Threads serving connections (an uploader's request takes milliseconds)."""
MAX_CONNECTIONS = 256
"""Connections admitted at once (served or waiting for a worker); beyond it, 503 at once."""
LISTEN_BACKLOG = 512
"""The listen queue (``request_queue_size``): connections the kernel holds before ``accept``."""
REFUSED_LINGER_S = 2.0
"""How long a refused (503) connection is kept to read what its client still sends, before it is closed."""
BUSY_RETRY_AFTER_S = 1

_BUSY_BODY = b'{"status":503,"message":"Service Unavailable","busy":true}'
_BUSY_RESPONSE = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
                  f"Retry-After: {BUSY_RETRY_AFTER_S}\r\nConnection: close\r\n"
                  f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n").encode() + _BUSY_BODY


class ServerOwner(Protocol):
    """What :class:`Server` needs of the receiver that owns it."""

    backlog: int
    workers: int
    max_connections: int
    tls_context: ssl.SSLContext | None

    def count(self, name: str, by: int = 1) -> None: ...


OwnerT = TypeVar("OwnerT", bound=ServerOwner)


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class Server(ThreadingHTTPServer, Generic[OwnerT]):
    """``ThreadingHTTPServer`` with a bounded pool, a connection cap and a listen backlog.

    ``process_request`` (on the accept thread) admits a connection when fewer
    than ``max_connections`` are open and hands it to the pool; beyond the cap it
    answers 503 at once and keeps the socket only to read (and drop) what the
    client still sends for up to :data:`REFUSED_LINGER_S`, from ``service_actions``
    on the accept thread, since closing with unread data would reset the
    connection before the client reads the 503.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], receiver: OwnerT) -> None:
        self.receiver = receiver
        self.request_queue_size = receiver.backlog
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._pool = ThreadPoolExecutor(max_workers=receiver.workers, thread_name_prefix="nightscout-worker")
        self._open: dict[socket.socket, socket.socket] = {}  # accepted socket -> what the handler reads (TLS)
        self._open_lock = threading.Lock()
        self._refused: list[tuple[socket.socket, float]] = []
        self._closing = False
        try:
            super().__init__(address, handler)
        except BaseException:
            self._pool.shutdown(wait=False)
            raise

    # --- admission -------------------------------------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            admitted = not self._closing and len(self._open) < self.receiver.max_connections
            if admitted:
                self._open[request] = request
        if not admitted:
            self.receiver.count("busy")
            self._refuse(request)
            return
        try:
            self._pool.submit(self._work, request, client_address)
        except RuntimeError:  # the pool is shutting down
            self._release(request)
            self.shutdown_request(request)

    def _work(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken connection must not kill the worker
            self.handle_error(request, client_address)
        finally:
            current = self._release(request)
            if current is not request:  # the TLS socket took over the file descriptor
                close_quietly(current)
            self.shutdown_request(request)

    def track(self, request: socket.socket, current: socket.socket) -> None:
        """The handler now reads ``current`` (the TLS socket wrapping ``request``)."""
        with self._open_lock:
            if request in self._open:
                self._open[request] = current

    def _release(self, request: socket.socket) -> socket.socket:
        with self._open_lock:
            return self._open.pop(request, request)

    def _refuse(self, request: socket.socket) -> None:
        if self.receiver.tls_context is not None or len(self._refused) >= self.receiver.max_connections:
            close_quietly(request)  # answering over TLS would need a handshake on the accept thread
            return
        try:
            request.setblocking(False)
            request.send(_BUSY_RESPONSE)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            close_quietly(request)
            return
        self._refused.append((request, time.monotonic() + REFUSED_LINGER_S))
        self._linger()

    def _linger(self) -> None:
        """Read and drop what refused clients send; close each at its end of stream or linger time."""
        keep: list[tuple[socket.socket, float]] = []
        now = time.monotonic()
        for sock, until in self._refused:
            done = now >= until
            while not done:
                try:
                    if not sock.recv(65536):
                        done = True
                except BlockingIOError:
                    break
                except OSError:
                    done = True
            if done:
                close_quietly(sock)
            else:
                keep.append((sock, until))
        self._refused = keep

    def service_actions(self) -> None:
        if self._refused:
            self._linger()

    # --- errors and shutdown -----------------------------------------------------------------------
    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, DeadlineExceeded):
            self.receiver.count("deadline_cuts")
        elif isinstance(err, ssl.SSLError):
            self.receiver.count("tls_failures")
        else:  # resets, timeouts while writing: the client's problem, not worth a traceback
            self.receiver.count("connection_errors")

    def server_close(self) -> None:
        with self._open_lock:
            self._closing = True
            current = list(self._open.values())
        for sock in current:  # unblock workers waiting on slow clients
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for sock, _ in self._refused:
            close_quietly(sock)
        self._refused = []
        super().server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._open_lock:
            left = list(self._open)
            self._open.clear()
        for sock in left:  # admitted but never served (cancelled)
            close_quietly(sock)
