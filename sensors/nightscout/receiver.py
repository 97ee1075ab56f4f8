"""A Nightscout-compatible HTTP receiver: a glucose source for xDrip+ and other Nightscout uploaders.

Uploaders that speak Nightscout's REST API v1 (xDrip+ "REST API upload", a
Nightscout bridge, ``curl``) point at ``http://<pi>:<port>/api/v1/`` and the
loop gets what they send, like the MQTT source:
:meth:`NightscoutReceiver.poll` returns :class:`~sensors.reading.GlucoseReading`,
:class:`~sensors.nightscout.entry.CarbAnnouncement` and
:class:`~sensors.reading.Rejected` items. It also answers the read side of
the API, so tests (and the HIL harness) can use it in place of a Nightscout server.

:class:`NightscoutReceiver` holds the settings, the counters and the queue the
loop polls, and puts together the parts, each documented in its module:

- :mod:`sensors.nightscout.handler`: the endpoints, and what bodies must be
- :mod:`sensors.nightscout.auth`: the ``api-secret`` and the lockout after wrong ones
- :mod:`sensors.nightscout.tls`: HTTPS, and the warning for plain HTTP beyond loopback
- :mod:`sensors.nightscout.server`: the bounded worker pool, connection cap and backlog
- :mod:`sensors.nightscout.deadline`: one deadline for each whole request
- :mod:`sensors.nightscout.store`: stored documents, de-duplication, what reaches the loop

Standard library only (a ``http.server.ThreadingHTTPServer`` with a bounded
``concurrent.futures`` pool, ``ssl``).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from sensors._queue import MAX_QUEUED_ITEMS, BoundedItems
from sensors.nightscout.auth import (
    LOCKOUT_FAILURES,
    LOCKOUT_S,
    LOCKOUT_WINDOW_S,
    AuthGuard,
    judge_secret,
    secret_matches,
    secret_sha1,
)
from sensors.nightscout.deadline import REQUEST_DEADLINE_S
from sensors.nightscout.handler import Handler
from sensors.nightscout.server import LISTEN_BACKLOG, MAX_CONNECTIONS, WORKERS, Server
from sensors.nightscout.store import MAX_STORED, DocumentStore, Item, epoch_ms, iso_z
from sensors.nightscout.tls import exposure_warning, tls_context

MAX_BODY_BYTES = 1024 * 1024


def _positive(name: str, value: object, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class NightscoutReceiver:
    """The receiver: ``start()`` listens, ``poll()`` hands over items, ``close()`` stops.

    ``port=0`` picks a free port (see :attr:`port` and :attr:`url` after ``start``).
    ``clock`` gives the server's time (status, documents without a time); the
    system's UTC time by default. ``monotonic`` gives the seconds the lockout
    counts in (``time.monotonic`` by default; tests pass a fake one). ``log``
    receives the receiver's warnings and lockouts, one line each (stderr by
    default). ``tls_cert_file`` and ``tls_key_file`` (both or neither) serve
    HTTPS, TLS 1.2 or later; they are loaded here, so a bad file fails before
    the loop starts. The other keywords are the bounds documented in
    :mod:`sensors.nightscout.server`, :mod:`~sensors.nightscout.deadline`,
    :mod:`~sensors.nightscout.auth` and :mod:`~sensors.nightscout.handler`, and
    ``max_queued_items``: items waiting for ``poll`` beyond it drop
    the oldest, reported by the next ``poll`` (:class:`sensors._queue.BoundedItems`).
    Raises ValueError on a bad argument.

    Counters (read them any time): ``requests`` (requests needing the secret),
    ``unauthorized`` (refused for a missing or wrong secret), ``wrong_secrets``,
    ``lockouts`` (addresses locked out), ``locked_out`` (requests refused 429),
    ``busy`` (connections refused 503 or closed over the cap), ``deadline_cuts``
    (requests cut at the deadline), ``tls_failures`` (failed handshakes),
    ``connection_errors`` (other broken connections).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_secret: str = "", *, subject: str = "",
                 max_body_bytes: int = MAX_BODY_BYTES, max_stored: int = MAX_STORED,
                 clock: Callable[[], datetime] | None = None,
                 tls_cert_file: str | Path | None = None, tls_key_file: str | Path | None = None,
                 workers: int = WORKERS, max_connections: int = MAX_CONNECTIONS, backlog: int = LISTEN_BACKLOG,
                 request_deadline_s: float = REQUEST_DEADLINE_S, lockout_failures: int = LOCKOUT_FAILURES,
                 lockout_window_s: float = LOCKOUT_WINDOW_S, lockout_s: float = LOCKOUT_S,
                 monotonic: Callable[[], float] | None = None,
                 log: Callable[[str], None] | None = None, max_queued_items: int = MAX_QUEUED_ITEMS) -> None:
        sha1 = secret_sha1(api_secret)  # ValueError for a secret too short, before any other check
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0..65535, got {port!r}")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        for name, value in (("workers", workers), ("max_connections", max_connections), ("backlog", backlog),
                            ("lockout_failures", lockout_failures)):
            _positive(name, value, integer=True)
        for name, value in (("request_deadline_s", request_deadline_s), ("lockout_window_s", lockout_window_s),
                            ("lockout_s", lockout_s)):
            _positive(name, value)
        if max_connections < workers:
            raise ValueError(f"max_connections ({max_connections}) must be at least workers ({workers})")
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file (or neither)")
        self.host = host
        self._port = port
        self.subject = subject
        self.max_body_bytes = max_body_bytes
        self.clock = clock or (lambda: datetime.now(UTC))
        self.log = log or _stderr
        self.tls_context = tls_context(tls_cert_file, tls_key_file) if tls_cert_file is not None else None
        self.workers, self.max_connections, self.backlog = workers, max_connections, backlog
        self.request_deadline_s = float(request_deadline_s)
        self.guard = AuthGuard(lockout_failures, float(lockout_window_s), float(lockout_s),
                               monotonic or time.monotonic)
        self._secret_sha1 = sha1
        self._queue: BoundedItems[Item] = BoundedItems(max_queued_items)  # a flood drops the oldest, reported
        self.store = DocumentStore(self._queue, subject, self.clock, max_stored)
        self.entries_store = self.store.entries
        self.treatments_store = self.store.treatments
        self.devicestatus_store = self.store.devicestatus
        self.requests = 0
        self.unauthorized = 0
        self.wrong_secrets = 0
        self.lockouts = 0
        self.locked_out = 0
        self.busy = 0
        self.deadline_cuts = 0
        self.tls_failures = 0
        self.connection_errors = 0
        self._counter_lock = threading.Lock()
        self.insecure_warning: str | None = None
        """Why this receiver is exposed (non-loopback address, plain HTTP), or None; set by ``start``."""
        self._server: Server[NightscoutReceiver] | None = None
        self._thread: threading.Thread | None = None

    def count(self, name: str, by: int = 1) -> None:
        """Add to a counter (thread-safe)."""
        with self._counter_lock:
            setattr(self, name, getattr(self, name) + by)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        server = Server((self.host, self._port), Handler, self)
        self._server = server
        self._port = server.server_address[1]
        self.insecure_warning = exposure_warning(server.server_address[0], self._port, self.tls_context)
        if self.insecure_warning:
            self.log(self.insecure_warning)
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="nightscout-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening, cut open connections, stop the workers."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server = None
        self._thread = None

    def __enter__(self) -> NightscoutReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_context else 'http'}://{host}:{self._port}"

    # --- the source side ----------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> list[Item]:
        """Items received: waits at most ``timeout_s`` for the first, then drains the rest."""
        return self._queue.poll(timeout_s)

    # --- what is stored (newest first), for tests and the HIL harness ------------------------
    def entries(self, count: int = MAX_STORED) -> list[dict[str, Any]]:
        return self.store.newest("entries", count)

    def treatments(self, count: int = MAX_STORED) -> list[dict[str, Any]]:
        return self.store.newest("treatments", count)

    def devicestatus(self, count: int = MAX_STORED) -> list[dict[str, Any]]:
        return self.store.newest("devicestatus", count)

    def profiles(self, count: int = MAX_STORED) -> list[dict[str, Any]]:
        return self.store.newest("profile", count)

    # --- request handling (called from the server's threads) -----------------------------------
    def authorized(self, header_value: str | None) -> bool:
        """Whether ``header_value`` is the SHA-1 hex of the secret (no lockout bookkeeping)."""
        return secret_matches(header_value, self._secret_sha1)

    def check_secret(self, address: str, header_value: str | None) -> tuple[str, float]:
        """Judge a request's ``api-secret`` from ``address``: ``("ok", 0)``, ``("missing", 0)``,
        ``("wrong", 0)`` or ``("locked", seconds left)``; counts wrong secrets and starts lockouts."""
        return judge_secret(self.guard, self._secret_sha1, address, header_value, self.count, self.log)

    def receive(self, collection: str, document: Any) -> tuple[list[dict[str, Any]], int]:
        """Store a decoded body's documents; returns (stored docs, how many were rejected)."""
        return self.store.receive(collection, document)

    def reject_body(self, collection: str, raw: str, reason: str) -> None:
        self.store.reject_body(collection, raw, reason)

    def listing(self, collection: str, count: int, sgv_only: bool = False) -> list[dict[str, Any]]:
        return self.store.newest(collection, count, sgv_only)

    def status(self, authorized: bool) -> dict[str, Any]:
        now = self.clock()
        return {"status": "ok", "name": "glucotwin", "version": "0.1.0", "serverTime": iso_z(now),
                "serverTimeEpoch": epoch_ms(now), "apiEnabled": True, "careportalEnabled": True,
                "settings": {"units": "mg/dl", "enable": ["careportal", "iob", "cob", "basal", "openaps", "loop",
                                                          "pump", "upbat", "profile"]},
                "authorized": authorized}
