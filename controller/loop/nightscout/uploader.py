"""Uploading the loop's journal to Nightscout: an outbox in the journal's SQLite file, and an HTTP client.

Two steps, so that nothing is lost while Nightscout (or the network) is down
and nothing is uploaded twice after a restart:

1. :meth:`NightscoutUploader.collect` (cheap, local; the loop calls it after
   each cycle) maps journal events after a cursor to Nightscout documents
   (:mod:`controller.loop.nightscout.docs`) and, in one SQLite transaction, adds
   them to the outbox and advances the cursor. A restart resumes after the
   cursor. Each outbox row has a unique key (the document's Nightscout dedup
   fields), so a document is queued at most once.
2. :meth:`NightscoutUploader.send_pending` POSTs queued documents in batches
   (JSON arrays, oldest first, one collection at a time) and deletes each
   batch from the outbox once Nightscout answered 2xx. The background thread
   (:meth:`start`) does this continuously, with exponential backoff after a
   failure (``base_backoff_s`` doubling up to ``max_backoff_s``).

Tables (created next to the journal's ``events``; the journal's API is unchanged)::

    nightscout_outbox(id, collection, key UNIQUE, event_id, doc, state, attempts, note)
    nightscout_cursor(name PRIMARY KEY, event_id)
    nightscout_profile(id, hash, start): every profile queued (:meth:`NightscoutUploader.queue_profile`)

What the journal does not hold comes with :meth:`NightscoutUploader.collect`'s
``extras`` (the live loop's forecasts, carbohydrate on board, the pump's
status, the battery: :class:`~controller.loop.nightscout.devicestatus.CycleExtras`);
the bolus part of insulin on board and the insulin activity are rebuilt from
the journal's deliveries (:mod:`controller.loop.nightscout.insulin`) when the
uploader is given the supervisor's insulin curve.

``state`` is ``pending``, or ``rejected`` for a document Nightscout refused
on its own (a 4xx other than 401/403/408/429 for a batch of one); rejected
rows stay for inspection and are never re-sent.

Failure handling: a network error, a timeout, 5xx, 408 and 429 are retried
with backoff; 401/403 (a wrong API secret) too, since nothing should be lost
while the configuration is fixed; a 413 or another 4xx halves the batch, down
to one document, which is then marked ``rejected``. The only window for a
duplicate is a crash between Nightscout's 2xx and the outbox delete; the
documents then go again and Nightscout's own de-duplication (entries by
date + type, treatments by created_at + eventType) absorbs them (devicestatus
is the exception: Nightscout inserts every one).

Standard library only (urllib, sqlite3, hashlib): this runs on the Pi.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import urlparse

from controller.loop.nightscout.docs import (
    COLLECTIONS,
    DEVICE,
    CycleEvents,
    CycleExtras,
    cycle_documents,
    entry_key,
    ignored_announcement_treatment,
    parse_time,
    reading_entry,
    treatment_key,
)
from controller.loop.nightscout.insulin import BookedDelivery, InsulinCurve, IobParts, iob_parts

CURSOR_NAME = "upload"
USER_AGENT = "glucotwin-uploader"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS nightscout_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    event_id INTEGER NOT NULL,
    doc TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    note TEXT
);
CREATE INDEX IF NOT EXISTS nightscout_outbox_pending ON nightscout_outbox(state, collection, id);
CREATE TABLE IF NOT EXISTS nightscout_cursor (name TEXT PRIMARY KEY, event_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nightscout_profile (id INTEGER PRIMARY KEY AUTOINCREMENT, hash TEXT NOT NULL,
                                               start TEXT NOT NULL);
"""
_EVENTS = ("reading", "announcement", "delivery")
_CYCLE_WINDOW = 2000  # a cycle's decision, commands and replies lie this close before its delivery
_MAX_DELIVERIES = 1500  # deliveries read back for insulin on board (10 h of action at 1-min cycles and more)


def api_secret_hash(api_secret: str) -> str:
    """The ``api-secret`` header value: the SHA-1 hex digest of the API secret (Nightscout's convention)."""
    return hashlib.sha1(api_secret.encode("utf-8")).hexdigest()


# --- HTTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostResult:
    """What one POST achieved: ``status`` is the HTTP status, 0 when no answer came."""

    status: int
    detail: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retry(self) -> bool:
        """Try the same batch again later (the server or the network, not the documents, is the problem)."""
        return self.status == 0 or self.status >= 500 or self.status in (401, 403, 408, 429)


class Poster(Protocol):
    def post(self, collection: str, docs: list[dict[str, Any]]) -> PostResult: ...


class NightscoutClient:
    """POSTs JSON arrays to ``{url}/api/v1/{collection}`` with the ``api-secret`` header (urllib)."""

    def __init__(self, url: str, api_secret: str, timeout_s: float = 10.0) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"Nightscout URL must look like https://host[:port][/path], got {url!r}")
        if parsed.username or parsed.password:
            raise ValueError("put the API secret in api_secret_file, not in the Nightscout URL")
        self.base = url.rstrip("/")
        self.timeout_s = timeout_s
        self._secret_hash = api_secret_hash(api_secret)

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        headers = {"api-secret": self._secret_hash, "Accept": "application/json", "User-Agent": USER_AGENT}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.status, response.read(), ""
        except urllib.error.HTTPError as err:
            try:
                text = err.read()[:300]
            except OSError:
                text = b""
            return err.code, text, f"HTTP {err.code}: {text.decode('utf-8', 'replace')}"
        except (urllib.error.URLError, OSError, ValueError) as err:  # refused, DNS, timeout, TLS
            reason = getattr(err, "reason", err)
            return 0, b"", f"no answer from {self.base}: {reason}"

    def post(self, collection: str, docs: list[dict[str, Any]]) -> PostResult:
        body = json.dumps(docs, separators=(",", ":"), allow_nan=False).encode("utf-8")
        status, _, detail = self._request("POST", f"/api/v1/{collection}", body)
        return PostResult(status, detail)

    def get(self, path: str) -> Any:
        """GET ``path`` (e.g. ``/api/v1/entries.json?count=10``) as decoded JSON; raises OSError when it fails."""
        status, body, detail = self._request("GET", path)
        if not 200 <= status < 300:
            raise OSError(detail or f"HTTP {status}")
        return json.loads(body)


# --- the uploader ---------------------------------------------------------------------------


class NightscoutUploader:
    """The outbox, the cursor and the sending thread for one journal file.

    ``post`` sends one batch (a :class:`NightscoutClient`, or a fake in tests);
    ``clock``/``sleep`` are injected (monotonic seconds) so backoff can be tested
    without waiting. ``upload_entries=False`` skips ``sgv`` entries (when the CGM
    app already uploads them). ``backfill_hours``: on first use (no cursor yet)
    only journal events from the last this-many hours (of journal time) are
    uploaded; None uploads the whole journal. ``insulin``: the supervisor's insulin curve
    and programmed basal, for ``openaps.iob``'s ``bolusiob``/``basaliob``/``activity``
    (None: only ``iob``). ``loop_status``: add Loop's ``loop`` object to each devicestatus.
    """

    def __init__(self, journal_path: str | Path, post: Poster, *, device: str = DEVICE, upload_entries: bool = True,
                 batch_size: int = 100, base_backoff_s: float = 1.0, max_backoff_s: float = 300.0,
                 backfill_hours: float | None = 24.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] | None = None,
                 insulin: InsulinCurve | None = None, loop_status: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < base_backoff_s <= max_backoff_s:
            raise ValueError("backoff needs 0 < base_backoff_s <= max_backoff_s")
        self.post = post
        self.device = device
        self.upload_entries = upload_entries
        self.insulin = insulin
        self.loop_status = loop_status
        self.batch_size = batch_size
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.sleep = sleep
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.failures = 0
        self.next_attempt_at = 0.0
        self.sent: dict[str, int] = {c: 0 for c in COLLECTIONS}
        self.last_error = ""
        self._batch_limit = batch_size
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db = sqlite3.connect(str(journal_path), isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL (this connection only; the journal's writes stay FULL): a power cut may undo the
        # last outbox commits. An undone collect steps the cursor back and queues the same documents
        # again; an undone delete sends a batch again (Nightscout de-duplicates all but devicestatus).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        with self._lock:
            if self._cursor() is None:
                self._db.execute("INSERT OR IGNORE INTO nightscout_cursor(name, event_id) VALUES (?, ?)",
                                 (CURSOR_NAME, self._backfill_start(backfill_hours)))

    # --- collecting -----------------------------------------------------------------------
    def _has_events_table(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone() \
            is not None

    def _backfill_start(self, hours: float | None) -> int:
        if hours is None or not self._has_events_table():
            return 0
        row = self._db.execute("SELECT time FROM events ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return 0
        try:
            since = (parse_time(row[0]) - timedelta(hours=hours)).isoformat()
        except ValueError:
            return 0
        first = self._db.execute("SELECT MIN(id) FROM events WHERE time >= ?", (since,)).fetchone()
        return max(0, int(first[0] or 1) - 1)

    def _cursor(self) -> int | None:
        row = self._db.execute("SELECT event_id FROM nightscout_cursor WHERE name = ?", (CURSOR_NAME,)).fetchone()
        return None if row is None else int(row[0])

    @property
    def cursor(self) -> int:
        with self._lock:
            return self._cursor() or 0

    def collect(self, forecasts: dict[int, dict[str, Any]] | None = None, limit: int = 2000,
                extras: dict[int, CycleExtras] | None = None) -> int:
        """Queue the documents of journal events after the cursor; returns how many were queued.

        ``extras`` maps cycle numbers to what the live loop knows of them (:class:`CycleExtras`);
        ``forecasts`` (older form) maps them to the twin's forecast alone (``Forecast.to_dict()``).
        Never raises on a malformed event (it is skipped, and logged).
        """
        live: dict[int, CycleExtras] = {k: CycleExtras(forecast=v) for k, v in (forecasts or {}).items()}
        live.update(extras or {})
        queued = 0
        with self._lock:
            if not self._has_events_table():
                return 0
            while True:
                cursor = self._cursor() or 0
                rows = self._db.execute(
                    f"SELECT id, kind, time, cycle, payload FROM events WHERE id > ? AND kind IN "
                    f"({', '.join('?' * len(_EVENTS))}) ORDER BY id LIMIT ?", (cursor, *_EVENTS, limit)).fetchall()
                if not rows:
                    break
                docs: list[tuple[str, str, int, dict[str, Any]]] = []
                for event_id, kind, _time, cycle, payload in rows:
                    try:
                        for collection, key, doc in self._documents(event_id, kind, cycle, json.loads(payload),
                                                                   live):
                            docs.append((collection, key, event_id, doc))
                    except (KeyError, TypeError, ValueError) as err:
                        self.log(f"nightscout: journal event {event_id} ({kind}) not uploaded: {err!r}")
                last = rows[-1][0]
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for collection, key, event_id, doc in docs:
                        cur = self._db.execute(
                            "INSERT OR IGNORE INTO nightscout_outbox(collection, key, event_id, doc) "
                            "VALUES (?, ?, ?, ?)",
                            (collection, key, event_id, json.dumps(doc, separators=(",", ":"), allow_nan=False)))
                        queued += cur.rowcount
                    self._db.execute("UPDATE nightscout_cursor SET event_id = ? WHERE name = ?", (last, CURSOR_NAME))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                if len(rows) < limit:
                    break
        if queued:
            self._wake.set()
        return queued

    def _documents(self, event_id: int, kind: str, cycle: int | None, payload: dict[str, Any],
                   extras: dict[int, CycleExtras]) -> list[tuple[str, str, dict[str, Any]]]:
        if kind == "reading":
            entry = reading_entry(payload) if self.upload_entries else None
            return [] if entry is None else [("entries", entry_key(entry), entry)]
        if kind == "announcement":
            if payload.get("ignored") != "fcl":
                return []  # the cycle that consumes it uploads the carbs (other "ignored" reasons: none)
            t = ignored_announcement_treatment(payload)
            return [] if t is None else [("treatments", treatment_key(t), t)]
        if kind == "delivery" and cycle is not None:
            events = self._cycle_events(event_id, cycle, payload)
            if events is None:
                self.log(f"nightscout: cycle {cycle} has a delivery but no decision in the journal; skipped")
                return []
            return cycle_documents(events, extras.get(cycle), self.device, self._iob_parts(event_id, events),
                                   self.loop_status)
        return []

    def _iob_parts(self, delivery_id: int, events: CycleEvents) -> IobParts | None:
        """Bolus and basal insulin on board and the activity at the cycle, from the journal's deliveries."""
        if self.insulin is None:
            return None
        now = parse_time(str((events.decision.get("input") or {})["time"]))
        booked = []
        rows = self._db.execute("SELECT time, payload FROM events WHERE kind = 'delivery' AND id <= ? "
                                "ORDER BY id DESC LIMIT ?", (delivery_id, _MAX_DELIVERIES)).fetchall()
        horizon_s = self.insulin.action_duration_min * 60.0
        for t, payload in rows:
            when = parse_time(t)
            age_s = (now - when).total_seconds()
            if age_s < 0 or age_s >= horizon_s:
                continue
            d = json.loads(payload)
            basal = float(d.get("basal_u_per_h") or 0.0)
            if d.get("from_pump"):  # booked from the pump's history: basal below the schedule never counts
                basal = max(basal, self.insulin.scheduled_basal_u_per_h(when))
            booked.append(BookedDelivery(when, basal, float(d.get("minutes") or 0.0), float(d.get("bolus_u") or 0.0)))
        return iob_parts(booked, now, self.insulin)

    # --- the profile ------------------------------------------------------------------------
    def queue_profile(self, doc: dict[str, Any], content_hash: str) -> bool:
        """Queue a profile document unless the last one queued had the same content; True when queued."""
        with self._lock:
            last = self._db.execute("SELECT hash FROM nightscout_profile ORDER BY id DESC LIMIT 1").fetchone()
            if last is not None and last[0] == content_hash:
                return False
            start = str(doc.get("startDate", ""))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR IGNORE INTO nightscout_outbox(collection, key, event_id, doc) "
                                 "VALUES ('profile', ?, ?, ?)",
                                 (f"profile|{content_hash}|{start}", self._cursor() or 0,
                                  json.dumps(doc, separators=(",", ":"), allow_nan=False)))
                self._db.execute("INSERT INTO nightscout_profile(hash, start) VALUES (?, ?)", (content_hash, start))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self._wake.set()
        return True

    def _cycle_events(self, delivery_id: int, cycle: int, delivery: dict[str, Any]) -> CycleEvents | None:
        sql = ("SELECT kind, time, seq, payload FROM events WHERE id > ? AND id < ? AND cycle = ? "
               "AND kind IN ('decision', 'command', 'reply', 'fault') ORDER BY id")
        rows = self._db.execute(sql, (delivery_id - _CYCLE_WINDOW, delivery_id, cycle)).fetchall()
        if not any(r[0] == "decision" for r in rows):  # after a restart the cycle may lie further back
            rows = self._db.execute(sql, (0, delivery_id, cycle)).fetchall()
        decision = next((json.loads(r[3]) for r in rows if r[0] == "decision"), None)
        if decision is None:
            return None
        events = CycleEvents(cycle, decision, delivery)
        for kind, t, seq, payload in rows:
            data = json.loads(payload)
            if kind == "command":
                events.commands.append(data)
            elif kind == "reply" and seq is not None:
                events.replies[int(seq)] = (t, data)
            elif kind == "fault":
                events.faults.append(data)
        return events

    # --- sending --------------------------------------------------------------------------
    def pending(self) -> dict[str, int]:
        """Documents waiting, per collection."""
        with self._lock:
            rows = self._db.execute("SELECT collection, COUNT(*) FROM nightscout_outbox WHERE state = 'pending' "
                                    "GROUP BY collection").fetchall()
        return {c: n for c, n in rows}

    def rejected(self) -> list[tuple[str, dict[str, Any], str]]:
        with self._lock:
            rows = self._db.execute("SELECT collection, doc, note FROM nightscout_outbox WHERE state = 'rejected' "
                                    "ORDER BY id").fetchall()
        return [(c, json.loads(d), n or "") for c, d, n in rows]

    def backoff_s(self) -> float:
        """The wait after the current run of failures."""
        if self.failures == 0:
            return 0.0
        return min(self.max_backoff_s, self.base_backoff_s * 2.0 ** (self.failures - 1))

    def send_pending(self) -> bool | None:
        """Send what is queued, batch by batch, until the outbox is empty or a batch fails.

        True when everything queued went out, False when a batch failed (``next_attempt_at``
        is then set by the backoff), None when it is not time yet to try again.
        """
        if self.clock() < self.next_attempt_at:
            return None
        while True:
            with self._lock:
                row = self._db.execute("SELECT collection FROM nightscout_outbox WHERE state = 'pending' "
                                       "ORDER BY id LIMIT 1").fetchone()
                if row is None:
                    self._batch_limit = self.batch_size
                    return True
                collection = row[0]
                batch = self._db.execute(
                    "SELECT id, doc FROM nightscout_outbox WHERE state = 'pending' AND collection = ? "
                    "ORDER BY id LIMIT ?", (collection, self._batch_limit)).fetchall()
            ids = [r[0] for r in batch]
            result = self._post(collection, [json.loads(r[1]) for r in batch])
            with self._lock:
                if result.ok:
                    marks = ", ".join("?" * len(ids))
                    self._db.execute(f"DELETE FROM nightscout_outbox WHERE id IN ({marks})", ids)
                    self.sent[collection] = self.sent.get(collection, 0) + len(ids)
                    if self.failures:
                        self.log(f"nightscout: uploading again after {self.failures} failed attempt(s)")
                    self.failures = 0
                    self.next_attempt_at = 0.0
                    self._batch_limit = self.batch_size
                    continue
                self._db.execute(f"UPDATE nightscout_outbox SET attempts = attempts + 1 "
                                 f"WHERE id IN ({', '.join('?' * len(ids))})", ids)
                if not result.retry:
                    if len(ids) > 1:  # find the document the server refuses: halve the batch
                        self._batch_limit = max(1, len(ids) // 2)
                        continue
                    self._db.execute("UPDATE nightscout_outbox SET state = 'rejected', note = ? WHERE id = ?",
                                     (result.detail[:300] or f"HTTP {result.status}", ids[0]))
                    self.log(f"nightscout: {collection} document refused for good ({result.detail[:200]})")
                    self._batch_limit = self.batch_size
                    continue
                self.failures += 1
                self.last_error = result.detail
                self.next_attempt_at = self.clock() + self.backoff_s()
                if self.failures == 1 or self.failures % 10 == 0:
                    self.log(f"nightscout: upload failed ({result.detail or f'HTTP {result.status}'}); "
                             f"retrying in {self.backoff_s():g} s")
                return False

    def _post(self, collection: str, docs: list[dict[str, Any]]) -> PostResult:
        try:
            return self.post.post(collection, docs)
        except Exception as err:  # noqa: BLE001 - a bug in a poster must not kill the thread
            return PostResult(0, f"{type(err).__name__}: {err}")

    def flush(self, timeout_s: float) -> bool:
        """Send until the outbox is empty, waiting out backoffs with ``sleep``; False at the deadline."""
        deadline = self.clock() + timeout_s
        while True:
            outcome = self.send_pending()
            if outcome is True:
                return True
            now = self.clock()
            if now >= deadline:
                return False
            self.sleep(max(0.0, min(self.next_attempt_at - now, deadline - now)))

    # --- the background thread ------------------------------------------------------------
    def start(self, idle_s: float = 5.0) -> None:
        """Send in a daemon thread: whenever :meth:`collect` queued something, every ``idle_s`` otherwise."""
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.is_set():
                try:
                    outcome = self.send_pending()
                except sqlite3.Error as err:  # e.g. the journal locked for too long: try again later
                    self.log(f"nightscout: outbox error {err}")
                    outcome = False
                if outcome is True:
                    wait = idle_s
                else:
                    wait = max(0.05, self.next_attempt_at - self.clock())
                self._wake.wait(wait)
                self._wake.clear()

        self._thread = threading.Thread(target=run, name="nightscout-uploader", daemon=True)
        self._thread.start()

    def close(self, flush_timeout_s: float = 0.0) -> None:
        """Stop the thread; with ``flush_timeout_s`` > 0, first try that long to empty the outbox.

        No flush while uploads are failing (Nightscout unreachable): what is queued stays in
        the outbox for the next start rather than delaying the shutdown.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
        if flush_timeout_s > 0 and self.failures == 0:
            try:
                self.flush(flush_timeout_s)
            except sqlite3.Error as err:
                self.log(f"nightscout: outbox error while flushing: {err}")
        with self._lock:
            self._db.close()
