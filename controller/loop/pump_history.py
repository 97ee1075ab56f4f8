"""The pump's record as the source of truth: book what it delivered that the journal lacks.

At start-up the loop asks the pump what it delivered in the insulin-action
window (:class:`controller.loop.ports.PumpHistory`). Every entry whose command seq
the journal does not hold (a new or lost journal, a restored backup, another
host on the same pump) becomes a booking, so that the journal holds every seq
the pump executed: boluses as given, temp basals for as
long as they ran (until their duration, the next basal change or now) at no
less than the scheduled rate (insulin withheld by a low temp or a suspension is
never counted: over-counting insulin on board is the safe error). Pure: the
runtime journals the bookings and books them into the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from controller.loop.ports import PumpHistory, PumpHistoryEntry

_BASAL_CHANGES = ("temp_basal", "temp_cancel", "suspend", "resume")
CHUNK_MIN = 5.0  # a temp basal is booked in pieces this long


@dataclass(frozen=True)
class PumpBooking:
    """Insulin to book from one pump history entry (the journal's ``delivery`` payload)."""

    seq: int
    time: datetime
    kind: str
    basal_u_per_h: float
    minutes: float
    bolus_u: float

    def to_payload(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "kind": self.kind, "basal_u_per_h": self.basal_u_per_h,
                "minutes": self.minutes, "bolus_u": self.bolus_u, "from_pump": True}


def missing_bookings(history: PumpHistory, known_seqs: set[int], now: datetime,
                     scheduled_u_per_h: Callable[[datetime], float]) -> list[PumpBooking]:
    """Bookings for the entries of ``history`` whose seq is not in ``known_seqs``, by time."""
    entries = sorted(history.entries, key=lambda e: (e.time, e.seq))
    bookings: list[PumpBooking] = []
    for i, entry in enumerate(entries):
        if entry.seq in known_seqs:
            continue
        if entry.kind == "bolus" and entry.bolus_u > 0:
            bookings.append(PumpBooking(entry.seq, entry.time, "bolus", scheduled_u_per_h(entry.time), 0.0,
                                        entry.bolus_u))
        elif entry.kind == "temp_basal":
            minutes = _minutes_run(entry, entries[i + 1:], now)
            scheduled = scheduled_u_per_h(entry.time)
            if minutes <= 0 or entry.rate_u_per_h <= scheduled:  # journaled (every pump seq is), adds nothing
                bookings.append(PumpBooking(entry.seq, entry.time, "temp_basal", scheduled, minutes, 0.0))
            else:
                start = 0.0
                while start < minutes:  # in chunks, so insulin on board decays from when it ran
                    chunk = min(CHUNK_MIN, minutes - start)
                    bookings.append(PumpBooking(entry.seq, entry.time + timedelta(minutes=start), "temp_basal",
                                                entry.rate_u_per_h, chunk, 0.0))
                    start += chunk
    return sorted(bookings, key=lambda b: (b.time, b.seq))


def _minutes_run(entry: PumpHistoryEntry, later: list[PumpHistoryEntry], now: datetime) -> float:
    """How long a temp basal ran: its duration, cut by the next basal change or by now."""
    end = entry.time + timedelta(minutes=entry.duration_min)
    for other in later:
        if other.kind in _BASAL_CHANGES:
            end = min(end, other.time)
            break
    end = min(end, now)
    return max((end - entry.time).total_seconds() / 60.0, 0.0)
