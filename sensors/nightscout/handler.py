"""The receiver's HTTP request handler: Nightscout REST API v1 routes, secrets, JSON bodies.

Endpoints (``.json`` suffix optional)::

    POST /api/v1/entries        one entry object or an array (sgv; mbg, cal ... are stored only)
    POST /api/v1/treatments     one treatment or an array (carbs become announcements)
    POST /api/v1/devicestatus   one status or an array (stored only)
    POST /api/v1/profile        one profile record or an array (stored only; each is a new record)
    GET  /api/v1/entries.json?count=N      newest first (default 10); /api/v1/entries/sgv.json: sgv only
    GET  /api/v1/treatments.json?count=N   newest first (default 10)
    GET  /api/v1/devicestatus.json?count=N newest first (default 10)
    GET  /api/v1/profile.json?count=N      newest ``startDate`` first (default 10)
    GET  /api/v1/status.json    server status (no authentication needed)
    GET  /api/v1/verifyauth     whether the request's api-secret is accepted (always 200, as Nightscout)

Every other request needs the ``api-secret`` (:mod:`sensors.nightscout.auth`): 401
without it or with a wrong one, 429 while its address is locked out.

**Bodies** must be JSON with a ``Content-Length`` of at most ``max_body_bytes``
(1 MiB): 411 without a length, 413 above it, 400 when the body is not a JSON
object or array (the entries and treatments endpoints also hand the loop a
``Rejected`` with ``"malformed message: ..."``). A well-formed body is
answered 200 with the documents stored (each with its ``_id``), like
Nightscout; documents that are not usable are left out of the answer (the
header ``X-Glucotwin-Rejected`` counts them) and become ``Rejected`` items
(:mod:`sensors.nightscout.store`). An uploader therefore never retries a
document the loop cannot use.

The handler reaches the receiver only through :class:`ApiOwner`.
"""

from __future__ import annotations

import io
import json
import math
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from sensors.nightscout.deadline import DeadlineReader, SocketWriter
from sensors.nightscout.server import Server, ServerOwner
from sensors.nightscout.store import MAX_STORED, RAW_MAX_CHARS
from sensors.nightscout.tls import handshake

DEFAULT_COUNT = 10
DRAIN_LIMIT_FACTOR = 16
"""An authenticated body above ``max_body_bytes`` is still read (and dropped) up to this many times it."""

_ROUTES = {"entries", "entries/sgv", "treatments", "devicestatus", "profile", "status", "verifyauth"}


class ApiOwner(ServerOwner, Protocol):
    """What :class:`Handler` needs of the receiver (besides what the server needs)."""

    request_deadline_s: float
    max_body_bytes: int

    def check_secret(self, address: str, header_value: str | None) -> tuple[str, float]: ...

    def status(self, authorized: bool) -> dict[str, Any]: ...

    def listing(self, collection: str, count: int, sgv_only: bool = False) -> list[dict[str, Any]]: ...

    def receive(self, collection: str, document: Any) -> tuple[list[dict[str, Any]], int]: ...

    def reject_body(self, collection: str, raw: str, reason: str) -> None: ...


class Handler(BaseHTTPRequestHandler):
    server: Server[ApiOwner]
    server_version = "glucotwin-nightscout-receiver"

    def setup(self) -> None:
        receiver = self.server.receiver
        deadline_s = receiver.request_deadline_s
        plain = self.request
        plain.settimeout(deadline_s)
        if receiver.tls_context is not None:  # the handshake, on this worker, within the deadline
            self.request = receiver.tls_context.wrap_socket(plain, server_side=True, do_handshake_on_connect=False)
            self.server.track(plain, self.request)
            handshake(self.request, time.monotonic() + deadline_s)
        self.connection = self.request
        self._reader = DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader, 65536)
        self.wfile = SocketWriter(self.connection, deadline_s)

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
        """The request's secret judged (see :meth:`ApiOwner.check_secret`)."""
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
        if name not in ("entries", "treatments", "devicestatus", "profile"):
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
        document, problem = decode(body)
        if problem:
            receiver.reject_body(name, body[:RAW_MAX_CHARS * 4].decode("utf-8", "replace"),
                                 f"malformed message: {problem}")
            self._error(400, "Bad Request", problem)
            return
        stored, rejected = receiver.receive(name, document)
        self._send(200, stored, {"X-Glucotwin-Rejected": str(rejected)})


def decode(body: bytes) -> tuple[Any, str]:
    """A request body to a JSON object or array, and ``""``; or None and what is wrong with it."""
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
