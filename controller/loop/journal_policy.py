"""Rebuild a policy's twin and insulin on board from the journal (restart, and read-only tools).

:func:`replay_events` feeds journaled ``decision`` and ``delivery`` events,
in time order, through a fresh :class:`~controller.twin_policy.TwinMPCPolicy`,
as the runtime does after a restart; :func:`carry_over_learning` gives its
supervisor the learners' state journaled with an earlier decision.
:func:`policy_from_journal` does both on a read-only journal, for tools that
ask the live twin without being the loop (``glucotwin whatif``): it never
writes the journal and never talks to a pump.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator

from controller.loop.journal import Event, Journal
from controller.policy import ControlInput
from controller.twin_policy import TwinMPCPolicy


def replay_events(policy: TwinMPCPolicy, events: Iterable[Event]) -> Iterator[ControlInput]:
    """Decide again every journaled decision (nothing delivered but what the journal says was);
    yields each decision's input after it was decided."""
    decided: ControlInput | None = None
    for event in events:
        d = event.payload
        if event.kind == "decision":
            decided = ControlInput.from_dict(d["input"])
            policy.decide(decided, assume_delivered=False)
            yield decided
        elif d.get("from_pump"):
            policy.book_pump_delivery(datetime.fromisoformat(d["time"]), d["basal_u_per_h"], d["minutes"],
                                      d["bolus_u"])
        else:
            at = decided.time if decided is not None and event.cycle is not None else \
                datetime.fromisoformat(event.time)
            policy.record_delivery(at, d["basal_u_per_h"], d["minutes"], d["bolus_u"])


def carry_over_learning(policy: TwinMPCPolicy, decision: dict[str, Any]) -> None:
    """The learners' full state journaled with ``decision``; a journal from before it was
    journaled (or a damaged one) gives the shares alone, from the dose's diagnostics."""
    state = decision.get("learners")
    if isinstance(state, dict):
        try:
            policy.supervisor.restore_learners(state)
            return
        except ValueError:
            pass
    diagnostics = (decision.get("dose") or {}).get("diagnostics") or {}
    policy.supervisor.carry_over_shares(diagnostics.get("meal_share"), diagnostics.get("correction_share"))


def policy_from_journal(policy: TwinMPCPolicy, journal: Journal, replay_hours: float,
                        until: datetime | None = None) -> ControlInput | None:
    """``policy`` as the loop had it after its last decision (or its last one at or before ``until``),
    from the ``replay_hours`` before it; returns that decision's input (None: no decision)."""
    decisions = [e for e in journal.events("decision")
                 if until is None or datetime.fromisoformat(e.time) <= until]
    if not decisions:
        return None
    last = datetime.fromisoformat(decisions[-1].time)
    since = (last - timedelta(hours=replay_hours)).isoformat()
    earlier = journal.last_before("decision", since)
    if earlier is not None:
        carry_over_learning(policy, earlier.payload)
    events = [e for e in journal.replay_since(since) if datetime.fromisoformat(e.time) <= last]
    final = None
    for final in replay_events(policy, events):
        pass
    return final
