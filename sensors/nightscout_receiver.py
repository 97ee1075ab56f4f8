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
(as Nightscout requires). Use TLS in front (a reverse proxy) when the
receiver is reachable beyond the Pi: the hash is a password equivalent.

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

Standard library only (``http.server.ThreadingHTTPServer``); a leaf module.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import secrets
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from sensors._queue import drain
from sensors.file_nightscout import nightscout_number, nightscout_time, raw_json
from sensors.nightscout_entry import CARB_EVENT_TYPES, CarbAnnouncement, entry_to_reading, treatment_to_announcement
from sensors.reading import GlucoseReading, Rejected

TRANSPORT = "nightscout-api"
LOOP_ENTERED_BY = "glucotwin"
MAX_BODY_BYTES = 1024 * 1024
MIN_SECRET_CHARS = 12
DEFAULT_COUNT = 10
MAX_STORED = 100_000
REQUEST_TIMEOUT_S = 10.0
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


class NightscoutReceiver:
    """The receiver: ``start()`` listens, ``poll()`` hands over items, ``close()`` stops.

    ``port=0`` picks a free port (see :attr:`port` and :attr:`url` after ``start``).
    ``clock`` gives the server's time (status, documents without a time); the
    system's UTC time by default.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_secret: str = "", *, subject: str = "",
                 max_body_bytes: int = MAX_BODY_BYTES, max_stored: int = MAX_STORED,
                 clock: Callable[[], datetime] | None = None) -> None:
        if not isinstance(api_secret, str) or len(api_secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the Nightscout API secret must have at least {MIN_SECRET_CHARS} characters")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0..65535, got {port!r}")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        self.host = host
        self._port = port
        self.subject = subject
        self.max_body_bytes = max_body_bytes
        self.clock = clock or (lambda: datetime.now(UTC))
        self._secret_sha1 = hashlib.sha1(api_secret.encode("utf-8")).hexdigest()
        self._queue: queue.Queue[Item] = queue.Queue()
        self._lock = threading.Lock()
        self.entries_store = _Collection("date", max_stored)
        self.treatments_store = _Collection("created_at", max_stored)
        self.devicestatus_store = _Collection("created_at", max_stored)
        self.requests = 0
        self.unauthorized = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self._port), _Handler)
        server.receiver = self
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="nightscout-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
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
        return f"http://{host}:{self._port}"

    # --- the source side ----------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> list[Item]:
        """Items received: waits at most ``timeout_s`` for the first, then drains the rest."""
        return drain(self._queue, timeout_s)

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
        if not header_value:
            return False
        return hmac.compare_digest(header_value.strip().lower().encode(), self._secret_sha1.encode())

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: NightscoutReceiver


_ROUTES = {"entries", "entries/sgv", "treatments", "devicestatus", "status", "verifyauth"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT_S  # a client that stops sending does not hold a thread for long
    server_version = "glucotwin-nightscout-receiver"

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

    def _authorized(self) -> bool:
        receiver = self.server.receiver
        receiver.requests += 1
        if receiver.authorized(self.headers.get("api-secret")):
            return True
        receiver.unauthorized += 1
        return False

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
        if name == "status":
            self._send(200, receiver.status(receiver.authorized(self.headers.get("api-secret"))))
            return
        ok = self._authorized()
        if name == "verifyauth":
            self._send(200, {"status": 200, "message": {
                "canRead": ok, "canWrite": ok, "isAdmin": ok, "message": "OK" if ok else "UNAUTHORIZED",
                "rolefound": "FOUND" if ok else "NOTFOUND", "permissions": "ROLE" if ok else "DEFAULT"}})
            return
        if not ok:
            self._error(401, "Unauthorized", "Invalid/Missing")
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
        if not self._authorized():
            self._drain(receiver.max_body_bytes)
            self._error(401, "Unauthorized", "Invalid/Missing")
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
