"""The loop's journal: an append-only SQLite log, written before anything is acted on.

One table, ``events``, in WAL mode with ``synchronous=FULL``: each append is
committed (and on disk) before :meth:`Journal.append` returns, so a loop killed
at any point finds in the journal every reading, decision, command and reply it
had acted on (DESIGN.md, invariant 5). Payloads are JSON.

Event kinds (``KINDS``):

- ``reading``, ``rejection``, ``announcement``: sensor input, as received.
- ``decision``: one control cycle: its input (``ControlInput``) and its dose,
  reasons and diagnostics; ``cycle`` numbers the cycles.
- ``command``: a pump command about to be sent (``seq``); ``reply``: what the
  pump answered or what a status query resolved (``seq``).
- ``delivery``: the insulin the loop holds as delivered for a cycle (after the
  reply), the input to restoring insulin on board after a restart.
- ``snapshot``: the estimator's state after a cycle (for inspection).
- ``startup``, ``fault``: loop lifecycle and faults (reconnects, timeouts).

The journal is the loop's memory: after a restart the runtime replays
``decision`` and ``delivery`` events in time order (every delivery, also two of
one cycle and those booked from the pump's own history with no decision) to
rebuild the twin and insulin on board, and resolves ``command`` events without
a ``reply`` by asking the pump.

One writer per journal: opening it for writing takes an exclusive OS lock
(:mod:`controller.loop.journal_lock`), a second loop is refused with
:class:`JournalLocked`. Readers open it with ``read_only=True``. At open the
writer runs ``PRAGMA integrity_check`` and checks the schema; a damaged journal
raises :class:`JournalCorrupt` naming the file and the damage, and
``glucotwin journal check|salvage FILE`` (:mod:`controller.loop.journal_salvage`)
inspects or rebuilds it.

A loop runs for months, so :meth:`Journal.prune` deletes what was journaled up
to the last decision before the retention window (the runtime calls it daily).
It never deletes a command still waiting for its reply, the newest event of any
kind, nor the command with the highest seq (the next command's seq and the next
cycle's number continue from them). SQLite reuses the freed pages, so the file
stops growing at about the size of the retention window.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from controller.loop.journal_lock import JournalLock, JournalLocked

__all__ = ["Event", "Journal", "JournalCorrupt", "JournalLocked", "JournalWriteError", "KINDS"]

KINDS = ("reading", "rejection", "announcement", "decision", "command", "reply", "delivery", "snapshot",
         "startup", "fault", "temp_target")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    time TEXT NOT NULL,
    cycle INTEGER,
    seq INTEGER,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, id);
CREATE INDEX IF NOT EXISTS events_seq ON events(seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_kind_time ON events(kind, time);
"""


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    time: str
    cycle: int | None
    seq: int | None
    payload: dict[str, Any]


_COLUMNS = ("id", "kind", "time", "cycle", "seq", "payload")
RECOVERY_HINT = "check it with `glucotwin journal check {path}`, rebuild it with `glucotwin journal salvage {path}`"


class JournalWriteError(RuntimeError):
    """An append failed (disk full, I/O error, file size limit): nothing was committed."""


class JournalCorrupt(RuntimeError):
    """The journal file is damaged or not a glucotwin journal (the message says which and how)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"journal {path} is damaged: {problem}; " + RECOVERY_HINT.format(path=path))
        self.path = Path(path)
        self.problem = problem


def _event(row: tuple[Any, ...], path: Path | str = "?") -> Event:
    """An :class:`Event` from a ``SELECT id, kind, time, cycle, seq, payload`` row."""
    try:
        payload = json.loads(row[5])
    except (TypeError, ValueError) as exc:
        raise JournalCorrupt(path, f"event {row[0]} ({row[1]}) has an unreadable payload ({exc})") from None
    if not isinstance(payload, dict):
        raise JournalCorrupt(path, f"event {row[0]} ({row[1]}) has a payload that is not an object")
    return Event(row[0], row[1], row[2], row[3], row[4], payload)


class Journal:
    """Append-only event log in one SQLite file (WAL, fully synchronous).

    ``read_only``: open an existing journal for reading only (no lock, no checks,
    never creates the file): reports, uploads and ``journal check`` beside a
    running loop. The writer (the default) holds the journal's lock until
    :meth:`close` and refuses a damaged file (:class:`JournalCorrupt`).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock: JournalLock | None = None
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(f"journal {self.path} does not exist")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = JournalLock(self.path)  # before SQLite touches the file: one writer only
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._open_checked()
        except BaseException:
            self._lock.release()
            raise

    def _open_checked(self) -> None:
        """WAL, full sync, the schema; a file SQLite cannot read or that fails its integrity
        check is refused with what is wrong, never half-used."""
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            problems = [r[0] for r in self._db.execute("PRAGMA integrity_check(5)")]
            if problems != ["ok"]:
                raise JournalCorrupt(self.path, "SQLite integrity check failed: " + "; ".join(problems))
            self._db.executescript(_SCHEMA)
            columns = tuple(r[1] for r in self._db.execute("PRAGMA table_info(events)"))
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalCorrupt(self.path, f"not a readable SQLite journal ({exc})") from None
        except JournalCorrupt:
            self._db.close()
            raise
        if columns != _COLUMNS:
            self._db.close()
            raise JournalCorrupt(self.path, f"table events has columns {columns}, expected {_COLUMNS}")

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------
    def append(self, kind: str, time: str, payload: dict[str, Any], *, cycle: int | None = None,
               seq: int | None = None) -> int:
        """Commit one event; returns its id. ``time`` is ISO 8601 (the loop's clock)."""
        if kind not in KINDS:
            raise ValueError(f"unknown journal event kind {kind!r}; expected one of {', '.join(KINDS)}")
        text = json.dumps(payload, sort_keys=True, allow_nan=False, default=_jsonable)
        try:
            cur = self._db.execute("INSERT INTO events(kind, time, cycle, seq, payload) VALUES (?, ?, ?, ?, ?)",
                                   (kind, time, cycle, seq, text))
        except sqlite3.Error as exc:
            raise JournalWriteError(f"journal {self.path}: cannot append a {kind} event ({exc})") from exc
        return int(cur.lastrowid or 0)

    def prune(self, before_iso: str, *, max_id: int | None = None) -> int:
        """Delete what was journaled up to the last decision before ``before_iso``.

        Decisions carry the time of their reading, so the cut follows the data, not the
        time stamps of other events (a lockstep clock may stamp events at start-up with a
        time long past), and the events of the window's first cycle (journaled after the
        previous decision) stay. With no decision before ``before_iso`` nothing is
        deleted. Kept whatever their age: commands without a reply (a restart resolves
        them), the newest event of each kind and the command with the highest seq (the
        next seq continues above it). ``max_id``: delete nothing above this id (e.g. what
        an uploader has not collected yet). Returns how many events were deleted.
        """
        row = self._db.execute("SELECT MAX(id) FROM events WHERE kind = 'decision' AND time < ?",
                               (before_iso,)).fetchone()
        if row is None or row[0] is None:
            return 0
        cut = int(row[0]) if max_id is None else min(int(row[0]), int(max_id))
        sql = ("DELETE FROM events WHERE id <= ? "
               "AND NOT (kind = 'command' AND NOT EXISTS "
               "(SELECT 1 FROM events r WHERE r.kind = 'reply' AND r.seq = events.seq)) "
               "AND id NOT IN (SELECT MAX(id) FROM events GROUP BY kind) "
               "AND id NOT IN (SELECT id FROM events WHERE kind = 'command' ORDER BY seq DESC LIMIT 1)")
        try:
            return int(self._db.execute(sql, (cut,)).rowcount)
        except sqlite3.Error as exc:
            raise JournalWriteError(f"journal {self.path}: cannot prune ({exc})") from exc

    # --- reading ------------------------------------------------------------------------
    def events(self, *kinds: str, after_id: int = 0) -> Iterator[Event]:
        sql = "SELECT id, kind, time, cycle, seq, payload FROM events WHERE id > ?"
        args: list[Any] = [after_id]
        if kinds:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            args.extend(kinds)
        for row in self._db.execute(sql + " ORDER BY id", args):
            yield _event(row, self.path)

    def counts(self) -> dict[str, int]:
        return {k: n for k, n in self._db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind")}

    def last(self, kind: str) -> Event | None:
        row = self._db.execute("SELECT id, kind, time, cycle, seq, payload FROM events WHERE kind = ? "
                               "ORDER BY id DESC LIMIT 1", (kind,)).fetchone()
        return None if row is None else _event(row, self.path)

    def last_before(self, kind: str, time_iso: str) -> Event | None:
        """The newest event of ``kind`` whose time is before ``time_iso`` (None when none)."""
        row = self._db.execute("SELECT id, kind, time, cycle, seq, payload FROM events WHERE kind = ? AND time < ? "
                               "ORDER BY id DESC LIMIT 1", (kind, time_iso)).fetchone()
        return None if row is None else _event(row, self.path)

    def max_seq(self) -> int:
        """The highest command sequence number ever journaled (0 when none)."""
        row = self._db.execute("SELECT MAX(seq) FROM events WHERE kind = 'command'").fetchone()
        return int(row[0] or 0)

    def max_cycle(self) -> int:
        row = self._db.execute("SELECT MAX(cycle) FROM events WHERE kind = 'decision'").fetchone()
        return int(row[0] or 0)

    def unanswered_commands(self) -> list[Event]:
        """Commands journaled as sent with no reply journaled: in flight when the loop stopped."""
        rows = self._db.execute(
            "SELECT id, kind, time, cycle, seq, payload FROM events c WHERE kind = 'command' AND NOT EXISTS "
            "(SELECT 1 FROM events r WHERE r.kind = 'reply' AND r.seq = c.seq) ORDER BY id")
        return [_event(r, self.path) for r in rows]

    def events_since(self, kind: str, time_iso: str) -> list[Event]:
        """Events of ``kind`` whose time is at or after ``time_iso``, in order (indexed: a
        restart reads a day of a long journal, not all of it)."""
        rows = self._db.execute("SELECT id, kind, time, cycle, seq, payload FROM events WHERE kind = ? AND time >= ? "
                                "ORDER BY id", (kind, time_iso))
        return [_event(r, self.path) for r in rows]

    def replay_since(self, time_iso: str) -> list[Event]:
        """Decisions and deliveries at or after ``time_iso``, by time then id: what a restart
        replays. Every delivery comes back (two of one cycle, e.g. from two loops that once
        shared the journal, and those booked from the pump's history without a decision);
        a cycle's delivery carries its decision's time and follows it."""
        rows = self._db.execute("SELECT id, kind, time, cycle, seq, payload FROM events "
                                "WHERE kind IN ('decision', 'delivery') AND time >= ? ORDER BY time, id",
                                (time_iso,))
        return [_event(r, self.path) for r in rows]

    def known_seqs(self) -> set[int]:
        """Seqs of every command journaled and of every pump delivery already booked from its
        history: what the journal knows the pump did (indexed; a few ints per cycle)."""
        rows = self._db.execute("SELECT DISTINCT seq FROM events WHERE seq IS NOT NULL "
                                "AND kind IN ('command', 'delivery')")
        return {int(r[0]) for r in rows}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot journal a {type(value).__name__}")
