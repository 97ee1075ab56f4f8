"""The pump's cumulative insulin limits: at most so much per hour and per day, whatever the host commands.

A pure ledger over the pump's own state (no clock reads, no I/O), in integer
milli-units, as a C firmware would keep it: one bucket per minute of pump time
that saw a delivery, for the last :data:`DAY_BUCKETS` minutes.

Why minute buckets keep every *real* window under the cap
--------------------------------------------------------
Before each delivery at pump minute ``m`` (a bolus, or the basal of one span
that never crosses a minute boundary) the pump checks

    sum of buckets m-60 .. m  (61 buckets)   + amount <= hour cap
    sum of buckets m-1440 .. m (1441 buckets) + amount <= day cap

and delivers at most what fits. Take any interval of length 60 min and the last
delivery D inside it, at minute m. Every delivery of the interval happened no
later than D and no earlier than 60 min before it, so in buckets m-60 .. m; all
of them were in the ledger when D was checked. So the interval's insulin is at
most the hour cap. The same argument with 1440 min gives the day cap. The price
of integer minutes is that a window can be charged for up to 61 (1441) minutes:
the cap is slightly conservative, never permissive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HOUR_BUCKETS = 61
"""Minutes m-60 .. m: the buckets one trailing hour can touch."""
DAY_BUCKETS = 1441
"""Minutes m-1440 .. m: the buckets one trailing day can touch."""

HOURLY = "hourly"
DAILY = "daily"


@dataclass(frozen=True)
class Room:
    """What may still be delivered at one minute, and which limit binds first."""

    milli_u: int
    binding: str  # HOURLY or DAILY: the limit with the least room


class InsulinLedger:
    """Deliveries per pump minute, over a JSON-able list ``[[minute, milli_u], ...]`` it owns in place.

    ``entries`` is the pump's persisted state (sorted by minute, no zero
    amounts, no minute older than a day before the newest). Minutes never go
    back: the pump's clock is monotonic.
    """

    def __init__(self, entries: list[list[int]], hour_cap_milli_u: int, day_cap_milli_u: int) -> None:
        self.entries = entries
        self.hour_cap_milli_u = hour_cap_milli_u
        self.day_cap_milli_u = day_cap_milli_u
        self._day_total = sum(amount for _, amount in entries)

    def _prune(self, minute: int) -> None:
        oldest = minute - (DAY_BUCKETS - 1)
        drop = 0
        while drop < len(self.entries) and self.entries[drop][0] < oldest:
            self._day_total -= self.entries[drop][1]
            drop += 1
        if drop:
            del self.entries[:drop]

    def hour_milli_u(self, minute: int) -> int:
        """Insulin booked in minutes ``minute-60 .. minute``."""
        oldest = minute - (HOUR_BUCKETS - 1)
        total = 0
        for bucket, amount in reversed(self.entries):
            if bucket < oldest:
                break
            if bucket <= minute:
                total += amount
        return total

    def day_milli_u(self, minute: int) -> int:
        """Insulin booked in minutes ``minute-1440 .. minute``."""
        self._prune(minute)
        return self._day_total

    def room(self, minute: int) -> Room:
        """How much may be delivered at ``minute`` without breaking either cap (>= 0)."""
        hour_room = max(0, self.hour_cap_milli_u - self.hour_milli_u(minute))
        day_room = max(0, self.day_cap_milli_u - self.day_milli_u(minute))
        if day_room < hour_room:
            return Room(day_room, DAILY)
        return Room(hour_room, HOURLY)

    def add(self, minute: int, milli_u: int) -> None:
        """Book ``milli_u`` delivered at ``minute`` (the caller checked :meth:`room`)."""
        if milli_u <= 0:
            return
        self._prune(minute)
        if self.entries and self.entries[-1][0] == minute:
            self.entries[-1][1] += milli_u
        else:
            self.entries.append([minute, milli_u])
        self._day_total += milli_u


def check_ledger(entries: Any) -> list[list[int]]:
    """A restored ledger, validated and copied; ValueError with the reason when it is not one."""
    if not isinstance(entries, list) or len(entries) > DAY_BUCKETS:
        raise ValueError(f"pump state ledger must be a list of at most {DAY_BUCKETS} [minute, milli_u] pairs")
    copy: list[list[int]] = []
    for raw in entries:
        if (not isinstance(raw, list) or len(raw) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw) or raw[1] == 0):
            raise ValueError(f"pump state ledger entry {raw!r} must be [minute >= 0, milli_u > 0]")
        if copy and raw[0] <= copy[-1][0]:
            raise ValueError("pump state ledger minutes must increase")
        copy.append([raw[0], raw[1]])
    if copy and copy[-1][0] - copy[0][0] >= DAY_BUCKETS:
        raise ValueError("pump state ledger spans more than a day")
    return copy


def ledger_from_boluses(boluses: list[tuple[int, int]], now_ms: int) -> list[list[int]]:
    """A ledger rebuilt from (time_ms, milli_u) boluses of the last day (a state-version migration)."""
    now_minute = now_ms // 60_000
    ledger = InsulinLedger([], 0, 0)
    for time_ms, milli_u in sorted(boluses):
        minute = time_ms // 60_000
        if now_minute - minute < DAY_BUCKETS:
            ledger.add(minute, milli_u)
    return ledger.entries
