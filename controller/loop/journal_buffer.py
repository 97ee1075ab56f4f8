"""Appends that survive a full disk: buffer in memory, retry, say so.

The loop journals before it acts. When an append fails (disk full, an I/O
error, a file size limit) the loop must neither die after the pump acted nor
act on what it cannot record: :class:`BufferedAppender` keeps the events in
memory, in order, and retries them before every new append and once per cycle;
while any is buffered the loop is *degraded* (:attr:`BufferedAppender.problem`)
and doses only the programmed basal (``controller.loop.runtime``). Once the disk has
room the buffer is written in its original order and a ``fault`` event records
the outage. The buffer is bounded: past ``max_events`` the oldest snapshots,
readings and rejections go first (never decisions, commands, replies or
deliveries); what was dropped is counted in the recovery event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from controller.loop.journal import Journal, JournalWriteError

DROPPABLE = ("snapshot", "reading", "rejection")


@dataclass
class _Pending:
    kind: str
    time: str
    payload: dict[str, Any]
    cycle: int | None
    seq: int | None


@dataclass
class BufferedAppender:
    """``append`` for the loop: to the journal, or to memory while the journal refuses."""

    journal: Journal
    max_events: int = 20000
    on_change: Callable[[str], None] | None = None  # called with the new problem ("" when recovered)
    pending: list[_Pending] = field(default_factory=list)
    problem: str = ""
    dropped: int = 0
    since: str = ""

    def append(self, kind: str, time: str, payload: dict[str, Any], *, cycle: int | None = None,
               seq: int | None = None) -> None:
        self.pending.append(_Pending(kind, time, payload, cycle, seq))
        self.flush(time)
        if len(self.pending) > self.max_events:
            self._shed()

    def flush(self, now_iso: str) -> bool:
        """Write what is buffered, in order; True when nothing is left."""
        was = self.problem
        while self.pending:
            item = self.pending[0]
            try:
                self.journal.append(item.kind, item.time, item.payload, cycle=item.cycle, seq=item.seq)
            except JournalWriteError as exc:
                if not self.problem:
                    self.since = now_iso
                self.problem = str(exc)
                if self.problem != was and self.on_change is not None:
                    self.on_change(self.problem)
                return False
            self.pending.pop(0)
        if was:
            self.problem = ""
            note = {"what": "journal writable again", "failing_since": self.since, "error": was,
                    "dropped_events": self.dropped}
            try:
                self.journal.append("fault", now_iso, note)
            except JournalWriteError:  # the recovery note is the only thing lost then; the next flush retries nothing
                pass
            self.dropped = 0
            if self.on_change is not None:
                self.on_change("")
        return True

    def _shed(self) -> None:
        for i, item in enumerate(self.pending):
            if item.kind in DROPPABLE:
                del self.pending[i]
                self.dropped += 1
                return
