"""Checking and salvaging a damaged journal: keep every valid event, never delete the file.

``glucotwin journal check FILE`` reports what is wrong (SQLite's integrity check,
the schema, events whose payload does not parse or whose kind is unknown)
without changing anything. ``glucotwin journal salvage FILE`` takes the
journal's lock (no loop may run on it), reads every event it still can, row by
row where the table itself is damaged, moves the damaged file (and its WAL)
aside as ``FILE.damaged-<UTC time>``, and writes the valid events, with their
ids, to a fresh journal at ``FILE``. The loop then starts on it and asks the
pump for the deliveries the salvage could not keep (:mod:`controller.loop.pump_history_sync`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from controller.loop.journal import KINDS, Journal
from controller.loop.journal_lock import JournalLock

_ROW = "SELECT id, kind, time, cycle, seq, payload FROM events"
PROBE_MISSES = 1000  # row-by-row probing stops after this many ids in a row that cannot be read


@dataclass
class CheckReport:
    path: Path
    sqlite_problems: list[str] = field(default_factory=list)
    bad_events: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.sqlite_problems and not self.bad_events

    def lines(self) -> list[str]:
        head = f"journal {self.path}: " + ("ok" if self.ok else "DAMAGED")
        out = [head, "events: " + (", ".join(f"{k} {n}" for k, n in sorted(self.counts.items())) or "none readable")]
        out += [f"sqlite: {p}" for p in self.sqlite_problems]
        out += [f"event: {p}" for p in self.bad_events[:20]]
        if len(self.bad_events) > 20:
            out.append(f"... and {len(self.bad_events) - 20} more damaged events")
        return out


def _valid(row: tuple[Any, ...]) -> str:
    """'' when the row is a usable event, else what is wrong with it."""
    eid, kind, when, _cycle, _seq, payload = row
    if kind not in KINDS:
        return f"event {eid}: unknown kind {kind!r}"
    try:
        datetime.fromisoformat(str(when))
        value = json.loads(payload)
    except (TypeError, ValueError) as exc:
        return f"event {eid} ({kind}): unreadable ({exc})"
    if not isinstance(value, dict):
        return f"event {eid} ({kind}): payload is not an object"
    return ""


def _rows(db: sqlite3.Connection) -> Iterator[tuple[Any, ...] | str]:
    """Every row that can be read, in id order; a string for each that cannot. Reads in
    one scan and, if the table is damaged part-way, row by row from where it broke."""
    last = 0
    try:
        for row in db.execute(_ROW + " ORDER BY id"):
            last = int(row[0])
            yield row
        return
    except sqlite3.DatabaseError as exc:
        yield f"table scan broke after event {last} ({exc})"
    misses, eid = 0, last
    while misses < PROBE_MISSES:
        eid += 1
        try:
            row = db.execute(_ROW + " WHERE id = ?", (eid,)).fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None:
            misses += 1
            continue
        misses = 0
        yield row


def check(path: Path) -> CheckReport:
    """What is wrong with the journal at ``path`` (read only, beside a running loop too)."""
    report = CheckReport(Path(path))
    if not report.path.exists():
        report.sqlite_problems.append("no such file")
        return report
    try:
        db = sqlite3.connect(f"file:{report.path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        report.sqlite_problems.append(str(exc))
        return report
    try:
        try:
            problems = [r[0] for r in db.execute("PRAGMA integrity_check(20)")]
            if problems != ["ok"]:
                report.sqlite_problems.extend(problems)
        except sqlite3.DatabaseError as exc:
            report.sqlite_problems.append(f"not a readable SQLite database ({exc})")
            return report
        for row in _rows(db):
            if isinstance(row, str):
                report.sqlite_problems.append(row)
                continue
            problem = _valid(row)
            if problem:
                report.bad_events.append(problem)
            else:
                report.counts[row[1]] = report.counts.get(row[1], 0) + 1
    except sqlite3.DatabaseError as exc:
        report.sqlite_problems.append(f"events table unreadable ({exc})")
    finally:
        db.close()
    return report


@dataclass(frozen=True)
class SalvageResult:
    kept: int
    dropped: list[str]
    damaged_copy: Path


def salvage(path: Path, now: datetime | None = None) -> SalvageResult:
    """Rebuild the journal at ``path`` from its valid events; the damaged file is moved aside."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"journal {path} does not exist")
    lock = JournalLock(path)  # refuses while a loop runs on it
    try:
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        rows, dropped = _readable(path)
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
    finally:
        lock.release()
    with Journal(path) as journal:
        for row in rows:
            journal._db.execute("INSERT INTO events(id, kind, time, cycle, seq, payload) VALUES (?, ?, ?, ?, ?, ?)",
                                row)
    return SalvageResult(len(rows), dropped, aside)


def _readable(path: Path) -> tuple[list[tuple[Any, ...]], list[str]]:
    dropped: list[str] = []
    rows: list[tuple[Any, ...]] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        for row in _rows(db):
            if isinstance(row, str):
                dropped.append(row)
            elif problem := _valid(row):
                dropped.append(problem)
            else:
                rows.append(tuple(row))
        db.close()
    except sqlite3.DatabaseError as exc:
        dropped.append(f"nothing readable ({exc})")
    return rows, dropped
