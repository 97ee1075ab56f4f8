"""Asking the pump what it delivered, at start-up and until it answers.

The loop's side of "the pump's record is the source of truth": query the pump's
history over the insulin-action window, journal a ``delivery`` event (with the
entry's seq and ``from_pump``) for each delivery the journal lacks
(:func:`controller.loop.pump_history.missing_bookings`), book them into the policy,
and, when the pump cannot tell (silent, a pump without a history, or a log that
does not reach back over the window), put the supervisor in its conservative
mode for one insulin-action duration (:meth:`SafetySupervisor.restrict`). Each
cycle retries until the pump answers; then conservative mode ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from controller.loop.journal import Journal
from controller.loop.ports import PumpHistoryUnavailable
from controller.loop.pump_history import PumpBooking, missing_bookings
from controller.twin_policy import TwinMPCPolicy


@dataclass(frozen=True)
class HistorySync:
    """What one history query gave: the bookings journaled, or why there were none."""

    known: bool  # the pump's history covered the window
    booked: tuple[PumpBooking, ...]
    summary: str  # for the start line and the journal


def query_and_journal(pump: Any, journal: Journal, append: Callable[..., None], policy: TwinMPCPolicy,
                      now: datetime) -> HistorySync:
    """One history query over the insulin-action window; journals what the journal lacks
    (does not book it into the policy: a restore replays it, a running loop calls
    :func:`book`)."""
    window_min = policy.limits.iob_action_duration_min
    since = now - timedelta(minutes=window_min)
    query = getattr(pump, "history", None)
    if query is None:
        return HistorySync(False, (), "this pump cannot tell its delivery history")
    try:
        history = query(since)
    except PumpHistoryUnavailable as exc:
        return HistorySync(False, (), f"pump history unavailable ({exc})")
    profile = policy.profile
    bookings = tuple(missing_bookings(history, journal.known_seqs(), now,
                                      lambda t: profile.basal_u_per_h_at(t)))
    for b in bookings:
        append("delivery", b.time.isoformat(), b.to_payload(), seq=b.seq)
    bolus_u = sum(b.bolus_u for b in bookings)
    basal_u = sum((b.basal_u_per_h - profile.basal_u_per_h_at(b.time)) * b.minutes / 60.0
                  for b in bookings)
    what = (f"pump history: {len(history.entries)} entries in {window_min / 60:g} h, booked "
            f"{sum(1 for b in bookings if b.kind == 'bolus')} boluses ({bolus_u:.2f} U) and "
            f"{basal_u:.2f} U of temp basal the journal lacked")
    if not history.covers_since:
        return HistorySync(False, bookings, what + "; the pump's log does not reach back over the window")
    return HistorySync(True, bookings, what)


def book(policy: TwinMPCPolicy, bookings: tuple[PumpBooking, ...]) -> None:
    """Book journaled pump deliveries into a running policy (insulin on board and the twin)."""
    for b in bookings:
        policy.book_pump_delivery(b.time, b.basal_u_per_h, b.minutes, b.bolus_u)


def conservative_reason(sync: HistorySync) -> str:
    return f"insulin already given unknown: {sync.summary}"
