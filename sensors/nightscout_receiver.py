"""A Nightscout-compatible HTTP receiver: a glucose source for xDrip+ and other Nightscout uploaders.

Uploaders that speak Nightscout's REST API v1 (xDrip+ "REST API upload", a
Nightscout bridge, ``curl``) point at ``http://<pi>:<port>/api/v1/`` and the
loop gets what they send, like the MQTT source:
:meth:`NightscoutReceiver.poll` returns :class:`~sensors.reading.GlucoseReading`,
:class:`~sensors.nightscout_entry.CarbAnnouncement` and
:class:`~sensors.reading.Rejected` items. It also answers the read side of
the API, so tests (and the HIL harness) can use it in place of a Nightscout server.

Endpoints (``.json`` suffix optional)::

    POST /api/v1/entries        one entry object or an array (sgv; mbg, cal ... are stored only)
    POST /api/v1/treatments     one treatment or an array (carbs become announcements)
    POST /api/v1/devicestatus   one status or an array (stored only)
    GET  /api/v1/entries.json?count=N      newest first (default 10); /api/v1/entries/sgv.json: sgv only
    GET  /api/v1/treatments.json?count=N   newest first (default 10)
    GET  /api/v1/devicestatus.json?count=N newest first (default 10)
    GET  /api/v1/status.json    server status (no authentication needed)
    GET  /api/v1/verifyauth     whether the request's api-secret is accepted (always 200, as Nightscout)

**Authentication**: every other request needs the header ``api-secret: <SHA-1
hex of the API secret>`` (Nightscout's convention; xDrip+ sends it when its
URL is ``http://SECRET@host:port/api/v1/``); otherwise 401. Nightscout's
access tokens (``?token=`` or ``Authorization: Bearer``) are not supported:
they are subjects with roles issued by a Nightscout admin, which a receiver
with one secret does not have. The secret must have at least 12 characters
(as Nightscout requires). The hash is a password equivalent: when the
receiver is reachable beyond the Pi, give it a certificate (``tls_cert_file``,
``tls_key_file``: HTTPS with TLS 1.2 or later) or put a TLS reverse proxy in
front and bind 127.0.0.1. A receiver bound to a non-loopback address without
TLS says so at start (to ``log``, and in :attr:`NightscoutReceiver.insecure_warning`).

**Wrong secrets** are rate-limited per client address: after
``lockout_failures`` (5) wrong ``api-secret`` values within ``lockout_window_s``
(5 min), every request of that address that needs the secret is answered 429
with ``Retry-After`` for ``lockout_s`` (5 min), *even with the correct secret*:
otherwise the lockout would still answer each guess, and guessing would go on.
A request without any secret is answered 401 and does not count (it is no
guess). Lockouts are logged with the address, never with the secret.

**Resources** are bounded, so that slow or many clients cannot starve the
uploads the loop needs: a pool of ``workers`` threads (16) serves connections;
at most ``max_connections`` (256) are admitted at once (served or waiting for a
worker), and each one beyond is answered ``503`` with ``Retry-After`` at once and
closed (over TLS, closed: answering would need a handshake); the listen backlog
is ``backlog`` (512: 128 still reset 5 of 300 simultaneous uploads here; the kernel
caps it at ``net.core.somaxconn``). Each request
must arrive whole, request line, headers and body, within ``request_deadline_s``
(10 s) of its first byte being awaited (a TLS handshake within the same time):
a client sending one byte a second is cut at the deadline, whereas a per-read
timeout would let it hold its thread for ever.

**Bodies** must be JSON with a ``Content-Length`` of at most ``max_body_bytes``
(1 MiB): 411 without a length, 413 above it, 400 when the body is not a JSON
object or array (the entries and treatments endpoints also hand the loop a
``Rejected`` with ``"malformed message: ..."``). A well-formed body is
answered 200 with the documents stored (each with its ``_id``), like
Nightscout; documents that are not usable are left out of the answer (the
header ``X-Glucotwin-Rejected`` counts them) and become ``Rejected`` items
with the reasons of :mod:`sensors.nightscout_entry`. An uploader therefore
never retries a document the loop cannot use.

**De-duplication** follows Nightscout: entries by time + ``type`` (an
upsert), treatments by ``identifier`` when present, else ``created_at`` +
``eventType``; devicestatus documents are inserted as they come. A
re-uploaded entry or treatment updates the stored document and is *not*
handed to the loop again (a retried carb upload never doubles the carbs).

**Carbohydrates**: a treatment with ``carbs`` (not 0), or any ``Carb
Correction``, announces carbohydrates, whatever its ``eventType`` (``Meal
Bolus``, ``Snack Bolus``, xDrip+'s ``<none>`` ...), except the loop's own
uploads (``enteredBy: "glucotwin"``), so a loop that uploads to its own
receiver does not announce its meals twice. Other treatments are stored only.

Readings' source is ``"nightscout-api:<device>"``. The receiver does not judge
readings against the clock; the loop's validator does.

Standard library only (a ``http.server.ThreadingHTTPServer`` with a bounded
``concurrent.futures`` pool, ``ssl``); a leaf module.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import json
import math
import secrets
import select
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from sensors._queue import MAX_QUEUED_ITEMS, BoundedItems
from sensors.files.nightscout import nightscout_number, nightscout_time, raw_json
from sensors.nightscout_entry import CARB_EVENT_TYPES, CarbAnnouncement, entry_to_reading, treatment_to_announcement
from sensors.reading import GlucoseReading, Rejected

TRANSPORT = "nightscout-api"
LOOP_ENTERED_BY = "glucotwin"
MAX_BODY_BYTES = 1024 * 1024
MIN_SECRET_CHARS = 12
DEFAULT_COUNT = 10
MAX_STORED = 100_000
REQUEST_DEADLINE_S = 10.0
"""A request (line, headers, body) must arrive whole within this many seconds, or the connection is cut."""
WORKERS = 16
"""Threads serving connections (an uploader's request takes milliseconds)."""
MAX_CONNECTIONS = 256
"""Connections admitted at once (served or waiting for a worker); beyond it, 503 at once."""
LISTEN_BACKLOG = 512
"""The listen queue (``request_queue_size``): connections the kernel holds before ``accept``."""
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW_S = 300.0
LOCKOUT_S = 300.0
"""``LOCKOUT_FAILURES`` wrong secrets from one address within ``LOCKOUT_WINDOW_S`` lock it out for ``LOCKOUT_S``."""
MAX_TRACKED_ADDRESSES = 4096
"""Addresses whose wrong secrets are remembered (the oldest forgotten beyond), so memory stays bounded."""
REFUSED_LINGER_S = 2.0
"""How long a refused (503) connection is kept to read what its client still sends, before it is closed."""
BUSY_RETRY_AFTER_S = 1
DRAIN_LIMIT_FACTOR = 16
_RAW_MAX_CHARS = 200

Item = GlucoseReading | Rejected | CarbAnnouncement


def _iso_z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _epoch_ms(t: datetime) -> int:
    return int(round(t.timestamp() * 1000))


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _clip(text: str) -> str:
    return text if len(text) <= _RAW_MAX_CHARS else text[: _RAW_MAX_CHARS - 1] + "\u2026"


class _Collection:
    """Documents of one collection: insertion-ordered, keyed for de-duplication, bounded."""

    def __init__(self, time_field: str, max_stored: int) -> None:
        self.time_field = time_field
        self.max_stored = max_stored
        self.docs: OrderedDict[Any, dict[str, Any]] = OrderedDict()

    def upsert(self, key: Any, doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store ``doc`` under ``key``; returns (stored doc, whether it is new)."""
        old = self.docs.get(key)
        if old is not None:
            doc["_id"] = old["_id"]
            self.docs[key] = doc
            return doc, False
        doc.setdefault("_id", secrets.token_hex(12))
        self.docs[key] = doc
        while len(self.docs) > self.max_stored:
            self.docs.popitem(last=False)
        return doc, True

    def newest(self, count: int, keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        docs = [d for d in self.docs.values() if keep is None or keep(d)]
        docs.sort(key=lambda d: d["_sort"], reverse=True)
        return [{k: v for k, v in d.items() if k != "_sort"} for d in docs[:count]]


class _AuthGuard:
    """Wrong secrets per client address, and the lockouts they cause (thread-safe, bounded)."""

    def __init__(self, failures: int, window_s: float, lockout_s: float, clock: Callable[[], float]) -> None:
        self.failures, self.window_s, self.lockout_s, self.clock = failures, window_s, lockout_s, clock
        self._lock = threading.Lock()
        self._wrong: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def locked_for_s(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0 when it is not)."""
        with self._lock:
            until = self._locked_until.get(address)
            if until is None:
                return 0.0
            left = until - self.clock()
            if left <= 0:
                del self._locked_until[address]
                return 0.0
            return left

    def wrong(self, address: str) -> bool:
        """Count a wrong secret from ``address``; True when it starts a lockout."""
        with self._lock:
            now = self.clock()
            times = self._wrong.pop(address, None) or deque()
            times.append(now)
            while times and now - times[0] > self.window_s:
                times.popleft()
            if len(times) >= self.failures:
                self._locked_until[address] = now + self.lockout_s
                return True
            self._wrong[address] = times
            while len(self._wrong) > MAX_TRACKED_ADDRESSES:
                self._wrong.popitem(last=False)
            while len(self._locked_until) > MAX_TRACKED_ADDRESSES:  # oldest lockout first (insertion order)
                self._locked_until.pop(next(iter(self._locked_until)))
            return False

    def right(self, address: str) -> None:
        """A correct secret (from an address not locked out) clears its wrong ones."""
        with self._lock:
            self._wrong.pop(address, None)


def _tls_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        if not Path(path).is_file():
            raise ValueError(f"{name} {str(path)!r} is not a file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"cannot load the TLS certificate {str(cert_file)!r} and key {str(key_file)!r}: "
                         f"{err}") from None
    return context


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
    the loop starts. The other keywords are the resource bounds of the module
    docstring, and ``max_queued_items``: items waiting for ``poll`` beyond it drop
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
        if not isinstance(api_secret, str) or len(api_secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the Nightscout API secret must have at least {MIN_SECRET_CHARS} characters")
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
        self.tls_context = _tls_context(tls_cert_file, tls_key_file) if tls_cert_file is not None else None
        self.workers, self.max_connections, self.backlog = workers, max_connections, backlog
        self.request_deadline_s = float(request_deadline_s)
        self.guard = _AuthGuard(lockout_failures, float(lockout_window_s), float(lockout_s),
                                monotonic or time.monotonic)
        self._secret_sha1 = hashlib.sha1(api_secret.encode("utf-8")).hexdigest()
        self._queue: BoundedItems[Item] = BoundedItems(max_queued_items)  # a flood drops the oldest, reported
        self._lock = threading.Lock()
        self.entries_store = _Collection("date", max_stored)
        self.treatments_store = _Collection("created_at", max_stored)
        self.devicestatus_store = _Collection("created_at", max_stored)
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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def count(self, name: str, by: int = 1) -> None:
        """Add to a counter (thread-safe)."""
        with self._counter_lock:
            setattr(self, name, getattr(self, name) + by)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self._port), _Handler, self)
        self._server = server
        self._port = server.server_address[1]
        self.insecure_warning = _exposure_warning(server.server_address[0], self._port, self.tls_context)
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
        with self._lock:
            return self.entries_store.newest(count)

    def treatments(self, count: int = MAX_STORED) -> list[dict[str, Any]]:
        with self._lock:
            return self.treatments_store.newest(count)

    def devicestatus(self, count: int = MAX_STORED) -> list[dict[str, Any]]:
        with self._lock:
            return self.devicestatus_store.newest(count)

    # --- request handling (called from the server's threads) -----------------------------------
    def authorized(self, header_value: str | None) -> bool:
        """Whether ``header_value`` is the SHA-1 hex of the secret (no lockout bookkeeping)."""
        if not header_value:
            return False
        return hmac.compare_digest(header_value.strip().lower().encode(), self._secret_sha1.encode())

    def check_secret(self, address: str, header_value: str | None) -> tuple[str, float]:
        """Judge a request's ``api-secret`` from ``address``: ``("ok", 0)``, ``("missing", 0)``,
        ``("wrong", 0)`` or ``("locked", seconds left)``; counts wrong secrets and starts lockouts."""
        left = self.guard.locked_for_s(address)
        if left > 0:
            self.count("locked_out")
            return "locked", left
        if not header_value:
            return "missing", 0.0
        if self.authorized(header_value):
            self.guard.right(address)
            return "ok", 0.0
        self.count("wrong_secrets")
        if self.guard.wrong(address):
            self.count("lockouts")
            self.log(f"nightscout receiver: {self.guard.failures} wrong API secrets from {address} within "
                     f"{self.guard.window_s:g} s; refusing its requests for {self.guard.lockout_s:g} s")
        return "wrong", 0.0

    def receive(self, collection: str, document: Any) -> tuple[list[dict[str, Any]], int]:
        """Store a decoded body's documents; returns (stored docs, how many were rejected)."""
        docs = document if isinstance(document, list) else [document]
        stored: list[dict[str, Any]] = []
        rejected = 0
        handler = {"entries": self._entry, "treatments": self._treatment, "devicestatus": self._status}[collection]
        with self._lock:
            for doc in docs:
                try:
                    outcome = handler(doc)
                except Exception as err:  # noqa: BLE001 - a hostile document must not kill the request
                    outcome = Rejected(_clip(raw_json(doc)), None,
                                       f"malformed {collection[:-1] if collection != 'entries' else 'entry'}: "
                                       f"{type(err).__name__}")
                if isinstance(outcome, Rejected):
                    rejected += 1
                    if collection != "devicestatus":
                        self._queue.put(outcome)
                elif outcome is not None:
                    stored.append({k: v for k, v in outcome.items() if k != "_sort"})
        return stored, rejected

    def reject_body(self, collection: str, raw: str, reason: str) -> None:
        if collection != "devicestatus":
            self._queue.put(Rejected(_clip(raw), None, reason))

    def _entry(self, doc: Any) -> dict[str, Any] | Rejected | None:
        if not isinstance(doc, dict):
            return Rejected(_clip(raw_json(doc)), None, "malformed entry: not a JSON object")
        kind = doc.get("type")
        if kind is None or kind == "sgv" or not isinstance(kind, str):
            reading = entry_to_reading(doc, subject=self.subject, transport=TRANSPORT)
            if isinstance(reading, Rejected):
                return reading
            time = reading.time
            kind = "sgv"
        else:  # mbg, cal, sensor ...: kept for readers of the API, not glucose for the loop
            when = nightscout_time(doc.get("date"), doc.get("dateString"))
            if isinstance(when, str):
                return Rejected(_clip(raw_json(doc)), None, when)
            time, reading = when, None
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "type": kind, "sysTime": _iso_z(time),
                  "utcOffset": 0, "_sort": _epoch_ms(time)}
        stored.setdefault("date", _epoch_ms(time))
        result, new = self.entries_store.upsert((stored["sysTime"], kind), stored)
        if new and reading is not None:
            self._queue.put(reading)
        return result

    def _treatment(self, doc: Any) -> dict[str, Any] | Rejected | None:
        if not isinstance(doc, dict):
            return Rejected(_clip(raw_json(doc)), None, "malformed treatment: not a JSON object")
        announcement: CarbAnnouncement | None = None
        if self._announces_carbs(doc):
            parsed = treatment_to_announcement(
                doc if doc.get("eventType") in CARB_EVENT_TYPES else {**doc, "eventType": "Carb Correction"},
                subject=self.subject, transport=TRANSPORT)
            if isinstance(parsed, Rejected):
                return parsed
            announcement = parsed
        time = _parse_iso(doc.get("created_at"))
        if time is None:
            when = nightscout_time(doc.get("date"), None)
            time = when if isinstance(when, datetime) else self.clock()
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "created_at": _iso_z(time), "utcOffset": 0,
                  "_sort": _epoch_ms(time)}
        identifier = doc.get("identifier")
        key = ("identifier", identifier) if isinstance(identifier, str) and identifier else \
            (stored["created_at"], str(doc.get("eventType")))
        result, new = self.treatments_store.upsert(key, stored)
        if new and announcement is not None:
            self._queue.put(announcement)
        return result

    @staticmethod
    def _announces_carbs(doc: dict[str, Any]) -> bool:
        if doc.get("enteredBy") == LOOP_ENTERED_BY:
            return False
        carbs = doc.get("carbs")
        if doc.get("eventType") == "Carb Correction":
            return True
        if carbs is None or carbs == "":
            return False
        return nightscout_number(carbs) != 0

    def _status(self, doc: Any) -> dict[str, Any] | Rejected | None:
        if not isinstance(doc, dict):
            return Rejected(_clip(raw_json(doc)), None, "malformed devicestatus: not a JSON object")
        time = _parse_iso(doc.get("created_at")) or self.clock()
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "created_at": _iso_z(time), "utcOffset": 0,
                  "_sort": _epoch_ms(time)}
        result, _ = self.devicestatus_store.upsert(secrets.token_hex(12), stored)
        return result

    def listing(self, collection: str, count: int, sgv_only: bool = False) -> list[dict[str, Any]]:
        store = {"entries": self.entries_store, "treatments": self.treatments_store,
                 "devicestatus": self.devicestatus_store}[collection]
        with self._lock:
            return store.newest(count, (lambda d: d.get("type") == "sgv") if sgv_only else None)

    def status(self, authorized: bool) -> dict[str, Any]:
        now = self.clock()
        return {"status": "ok", "name": "glucotwin", "version": "0.1.0", "serverTime": _iso_z(now),
                "serverTimeEpoch": _epoch_ms(now), "apiEnabled": True, "careportalEnabled": True,
                "settings": {"units": "mg/dl", "enable": ["careportal", "iob", "cob", "basal", "openaps"]},
                "authorized": authorized}


def _exposure_warning(bound_host: str, port: int, tls: ssl.SSLContext | None) -> str | None:
    """The warning for a receiver reachable beyond this machine over plain HTTP, or None."""
    if tls is not None:
        return None
    try:
        loopback = ipaddress.ip_address(bound_host.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (f"WARNING: the Nightscout receiver listens on {bound_host}:{port} over plain HTTP: the API secret's "
            f"hash (a password equivalent) and glucose data cross the network unencrypted, and anyone who "
            f"can reach the port can try secrets; set tls_cert_file and tls_key_file, or bind 127.0.0.1 "
            f"behind a TLS reverse proxy")


_BUSY_BODY = b'{"status":503,"message":"Service Unavailable","busy":true}'
_BUSY_RESPONSE = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
                  f"Retry-After: {BUSY_RETRY_AFTER_S}\r\nConnection: close\r\n"
                  f"Content-Length: {len(_BUSY_BODY)}\r\n\r\n").encode() + _BUSY_BODY


class _Server(ThreadingHTTPServer):
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

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 receiver: NightscoutReceiver) -> None:
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
                _close_quietly(current)
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
            _close_quietly(request)  # answering over TLS would need a handshake on the accept thread
            return
        try:
            request.setblocking(False)
            request.send(_BUSY_RESPONSE)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            _close_quietly(request)
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
                _close_quietly(sock)
            else:
                keep.append((sock, until))
        self._refused = keep

    def service_actions(self) -> None:
        if self._refused:
            self._linger()

    # --- errors and shutdown -----------------------------------------------------------------------
    def handle_error(self, request: Any, client_address: Any) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, _DeadlineExceeded):
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
            _close_quietly(sock)
        self._refused = []
        super().server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._open_lock:
            left = list(self._open)
            self._open.clear()
        for sock in left:  # admitted but never served (cancelled)
            _close_quietly(sock)


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class _DeadlineExceeded(TimeoutError):
    """The request did not arrive whole within the deadline."""


def _handshake(tls: ssl.SSLSocket, deadline: float) -> None:
    """The server side of the TLS handshake, all of it before ``deadline`` (a client trickling its
    handshake cannot extend it, as it could with a timeout per read)."""
    tls.setblocking(False)
    try:
        while True:
            try:
                tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                want_read = True
            except ssl.SSLWantWriteError:
                want_read = False
            left = deadline - time.monotonic()
            if left <= 0:
                raise _DeadlineExceeded("TLS handshake past the deadline")
            ready = select.select([tls] if want_read else [], [] if want_read else [tls], [], left)
            if not any(ready):
                raise _DeadlineExceeded("TLS handshake past the deadline")
    finally:
        tls.setblocking(True)


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with one deadline for a whole request, not a timeout per ``recv``.

    Before each ``recv`` the socket's timeout is set to the time left, so a
    client trickling bytes cannot extend it; at the deadline it raises
    :class:`_DeadlineExceeded`. ``deadline`` is reset for each request.
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
            raise _DeadlineExceeded("request deadline passed")
        self.sock.settimeout(left)
        try:
            n = self.sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise _DeadlineExceeded("request deadline passed") from None
        self.received += n
        return n


class _SocketWriter(io.BufferedIOBase):
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


_ROUTES = {"entries", "entries/sgv", "treatments", "devicestatus", "status", "verifyauth"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "glucotwin-nightscout-receiver"

    def setup(self) -> None:
        receiver = self.server.receiver
        deadline_s = receiver.request_deadline_s
        plain = self.request
        plain.settimeout(deadline_s)
        if receiver.tls_context is not None:  # the handshake, on this worker, within the deadline
            self.request = receiver.tls_context.wrap_socket(plain, server_side=True, do_handshake_on_connect=False)
            self.server.track(plain, self.request)
            _handshake(self.request, time.monotonic() + deadline_s)
        self.connection = self.request
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, 65536)
        self.wfile = _SocketWriter(self.connection, deadline_s)

    def handle_one_request(self) -> None:
        self._reader.start_request(self.server.receiver.request_deadline_s)
        super().handle_one_request()  # catches the TimeoutError of a read past the deadline
        if self._reader.expired:
            self.close_connection = True
            if self._reader.received:  # cut mid-request (an idle keep-alive connection just ends)
                self.server.receiver.count("deadline_cuts")

    def finish(self) -> None:
        try:
            self.wfile.flush()
        except OSError:
            pass
        self.rfile.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # requests are not logged (the loop journals what it receives)

    # --- plumbing ---------------------------------------------------------------------------
    def _route(self) -> tuple[str | None, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/")
        if path.endswith(".json"):
            path = path[: -len(".json")]
        prefix = "/api/v1/"
        name = path[len(prefix):] if path.startswith(prefix) else None
        return (name if name in _ROUTES else None), parse_qs(parts.query)

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, description: str = "") -> None:
        body: dict[str, Any] = {"status": status, "message": message}
        if description:
            body["description"] = description
        self._send(status, body)

    def _secret(self) -> tuple[str, float]:
        """The request's secret judged (see :meth:`NightscoutReceiver.check_secret`)."""
        return self.server.receiver.check_secret(str(self.client_address[0]), self.headers.get("api-secret"))

    def _authorized(self, drain: bool = False) -> bool:
        """True when the request may go on; else the 401 or 429 answer has been sent (after
        reading and dropping the body with ``drain``, so that the client sees the answer)."""
        receiver = self.server.receiver
        receiver.count("requests")
        verdict, left = self._secret()
        if verdict == "ok":
            return True
        receiver.count("unauthorized")
        if drain:
            self._drain(receiver.max_body_bytes)
        self._refuse_secret(verdict, left)
        return False

    def _refuse_secret(self, verdict: str, left_s: float) -> None:
        if verdict == "locked":
            retry = max(1, math.ceil(left_s))
            self._send(429, {"status": 429, "message": "Too Many Requests",
                             "description": f"too many wrong API secrets from this address: refused for {retry} s "
                                            f"more, whatever the secret (a lockout that let a right guess "
                                            f"through would not stop guessing)"},
                       {"Retry-After": str(retry)})
        else:
            self._error(401, "Unauthorized", "Invalid/Missing")

    def _drain(self, limit: int) -> None:
        """Read and drop a body we will not use, up to ``limit`` bytes (so the client sees our
        answer rather than a reset connection, e.g. a 413 that makes an uploader split its batch)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= limit:
            while length > 0:
                chunk = self.rfile.read(min(length, 65536))
                if not chunk:
                    return
                length -= len(chunk)

    # --- methods ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        name, query = self._route()
        receiver = self.server.receiver
        if name is None:
            self._error(404, "Not Found")
            return
        if name == "status":  # no secret needed; a secret sent is judged (and counted) all the same
            verdict, _ = self._secret() if self.headers.get("api-secret") else ("missing", 0.0)
            self._send(200, receiver.status(verdict == "ok"))
            return
        if name == "verifyauth":
            receiver.count("requests")
            verdict, left = self._secret()
            if verdict == "locked":
                receiver.count("unauthorized")
                self._refuse_secret(verdict, left)
                return
            ok = verdict == "ok"
            if not ok:
                receiver.count("unauthorized")
            self._send(200, {"status": 200, "message": {
                "canRead": ok, "canWrite": ok, "isAdmin": ok, "message": "OK" if ok else "UNAUTHORIZED",
                "rolefound": "FOUND" if ok else "NOTFOUND", "permissions": "ROLE" if ok else "DEFAULT"}})
            return
        if not self._authorized():
            return
        try:
            count = int((query.get("count") or [str(DEFAULT_COUNT)])[0])
        except ValueError:
            self._error(400, "Bad Request", "count must be a whole number")
            return
        count = min(max(count, 1), MAX_STORED)
        collection = "entries" if name.startswith("entries") else name
        self._send(200, receiver.listing(collection, count, sgv_only=name == "entries/sgv"))

    def do_POST(self) -> None:  # noqa: N802
        name, _ = self._route()
        receiver = self.server.receiver
        if name is None:
            self._drain(receiver.max_body_bytes)
            self._error(404, "Not Found")
            return
        if name not in ("entries", "treatments", "devicestatus"):
            self._drain(receiver.max_body_bytes)
            self._error(405, "Method Not Allowed")
            return
        if not self._authorized(drain=True):
            return
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length") is None:
            self.close_connection = True
            self._error(411, "Length Required", "send a Content-Length")
            return
        try:
            length = int(self.headers["Content-Length"])
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._error(400, "Bad Request", "invalid Content-Length")
            return
        if length > receiver.max_body_bytes:
            self.close_connection = True
            self._drain(DRAIN_LIMIT_FACTOR * receiver.max_body_bytes)  # authenticated: worth answering
            receiver.reject_body(name, f"<{length} bytes>", f"malformed message: {length} bytes is larger "
                                                            f"than {receiver.max_body_bytes}")
            self._error(413, "Payload Too Large", f"at most {receiver.max_body_bytes} bytes")
            return
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            self._error(400, "Bad Request", "body shorter than its Content-Length")
            return
        document, problem = _decode(body)
        if problem:
            receiver.reject_body(name, body[:_RAW_MAX_CHARS * 4].decode("utf-8", "replace"),
                                 f"malformed message: {problem}")
            self._error(400, "Bad Request", problem)
            return
        stored, rejected = receiver.receive(name, document)
        self._send(200, stored, {"X-Glucotwin-Rejected": str(rejected)})


def _decode(body: bytes) -> tuple[Any, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    try:
        document = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(document, (dict, list)):
        return None, f"expected a JSON object or array, got {type(document).__name__}"
    return document, ""


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")
