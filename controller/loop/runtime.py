"""The closed loop at run time: sources in, journal first, pump out.

``ClosedLoop`` runs one control cycle per accepted CGM reading, and a cycle
without a reading when none arrived for ``max_wait_min`` (fixed-cadence
fallback: the supervisor then sees stale CGM and falls back to the programmed
basal). Per cycle, in this order (DESIGN.md, invariant 5):

1. the reading (or rejection, or announcement) is journaled as received;
2. the policy decides (``assume_delivered=False``) and the decision is journaled;
3. each pump order is journaled, then sent; the reply is journaled;
4. what the pump confirmed is journaled as the cycle's delivery, and only then
   booked into the twin and insulin on board.

After a restart :meth:`ClosedLoop.restore` resolves orders that were sent with
no reply journaled by a status query (never by sending them again), then
replays the journaled cycles (inputs and confirmed deliveries) through a fresh
policy, which rebuilds the twin's state and insulin on board exactly.

The clock is injected (``clock() -> datetime``); nothing here reads wall time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from controller.loop import pump_history_sync
from controller.loop.cycle_result import CycleResult, RestoreReport
from controller.loop.journal import Journal, JournalCorrupt, JournalWriteError
from controller.loop.journal_buffer import BufferedAppender
from controller.loop.journal_policy import carry_over_learning, replay_events
from controller.policy import ControlInput, Dose
from controller.loop.ports import (Announcement, GlucoseSource, PumpOrder, PumpOutcome, PumpPort, Reading,
                                   ReadingValidator, Rejection, TempTargetRequest)
from controller.temp_target import TempTarget, from_nightscout
from controller.twin_policy import TwinMPCPolicy


@dataclass(frozen=True)
class LoopSettings:
    """Run-time settings of the loop.

    cycle_min: the CGM sample period; each temp basal is planned for one cycle.
    temp_basal_duration_min: how long the pump runs a temp basal if no further
        command comes (then it returns to its programmed basal by itself).
    command_validity_s: a command's expiry after its issue time.
    max_wait_min: run a cycle without a reading when none was accepted this long.
    replay_hours: how much journaled history a restart replays into the twin.
    forecast_horizon_min: the twin forecast computed once per cycle (status line,
        dashboards, Nightscout's forecast lines); at least 60.
    journal_retention_days: events older than this are pruned from the journal at
        start-up and once a day (:meth:`Journal.prune`); longer than the replay.
    min_cycle_fraction: a reading less than this fraction of ``cycle_min`` after the
        last cycle's is not acted on ("too soon"): at most one decision per CGM sample
        interval, whatever a flood of readings says.
    """

    cycle_min: float = 5.0
    temp_basal_duration_min: float = 30.0
    command_validity_s: float = 120.0
    max_wait_min: float = 10.0
    replay_hours: float = 24.0
    forecast_horizon_min: float = 60.0
    journal_retention_days: float = 90.0
    min_cycle_fraction: float = 0.8

    def __post_init__(self) -> None:
        for name in ("cycle_min", "temp_basal_duration_min", "command_validity_s", "max_wait_min", "replay_hours",
                     "forecast_horizon_min", "journal_retention_days"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"LoopSettings.{name} must be a positive number, got {value!r}")
        if not (isinstance(self.min_cycle_fraction, (int, float)) and 0.0 <= self.min_cycle_fraction <= 1.0):
            raise ValueError(f"LoopSettings.min_cycle_fraction must be in [0, 1], got {self.min_cycle_fraction!r}")
        if self.forecast_horizon_min < 60.0:
            raise ValueError("forecast_horizon_min must be at least 60 (the status line shows 30 and 60 min)")
        if self.temp_basal_duration_min < self.cycle_min:
            raise ValueError("temp_basal_duration_min must be at least one cycle")
        if self.journal_retention_days * 24.0 < self.replay_hours + 24.0:
            raise ValueError("journal_retention_days must keep at least a day more than replay_hours "
                             "(a restart reads the decision before the replayed window)")


class ClosedLoop:
    """One person's loop: ``step()`` polls the source and runs the cycles due."""

    def __init__(self, policy: TwinMPCPolicy, source: GlucoseSource, pump: PumpPort, journal: Journal,
                 clock: Callable[[], datetime], settings: LoopSettings | None = None,
                 validator: ReadingValidator | None = None,
                 on_cycle: Callable[[CycleResult], None] | None = None) -> None:
        self.policy = policy
        self.source = source
        self.pump = pump
        self.journal = journal
        self.clock = clock
        self.settings = settings or LoopSettings()
        self.validator = validator
        self.on_cycle = on_cycle
        self.cycle_no = journal.max_cycle()
        self.pending_carbs_g = 0.0
        self.last_cycle_time: datetime | None = None  # the policy's time of the last cycle
        self.last_cycle_clock: datetime | None = None  # the clock when it ran (cadence fallback)
        self.last_reading_time: datetime | None = None
        self.rejections: dict[str, int] = {}
        self.announced: set[tuple[str, float]] = set()  # (time, carbs) of every announcement taken
        self.prune_limit: Callable[[], int | None] | None = None  # e.g. an uploader's cursor: prune up to it
        self.last_prune_clock: datetime | None = None
        self.appender = BufferedAppender(journal)  # a full disk degrades the loop, never kills it
        self.history_pending = False  # conservative mode: ask the pump for its history each cycle

    # --- lifecycle ------------------------------------------------------------------------
    def restore(self) -> RestoreReport:
        """Resolve in-flight orders, book what the pump delivered that the journal lacks, then
        rebuild the twin and IOB from the journal. A journal whose events no longer parse
        raises :class:`~controller.loop.journal.JournalCorrupt` (never a bare KeyError)."""
        try:
            return self._restore()
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalCorrupt(self.journal.path, f"an event cannot be replayed ({type(exc).__name__}: {exc})") \
                from None

    def _restore(self) -> RestoreReport:
        now = self.clock()
        report = RestoreReport()
        self._append("startup", now.isoformat(), {"cycle": self.cycle_no, "max_seq": self.journal.max_seq()})
        self._restore_announcements()
        for event in self.journal.unanswered_commands():
            order = PumpOrder.from_dict(event.payload)
            outcome = self.pump.resolve(order)
            if outcome.status != "unknown":
                self._append("reply", now.isoformat(), {**outcome.to_dict(), "resolved_by": "status"},
                             cycle=event.cycle, seq=order.seq)
            report.orders_resolved.append(outcome)
            if event.cycle is not None and not any(e.cycle == event.cycle for e in self.journal.events("delivery")):
                self._journal_delivery_of_cycle(event.cycle, now)
        sync = pump_history_sync.query_and_journal(self.pump, self.journal, self._append, self.policy, now)
        report.pump_history = sync.summary
        self.policy.reset()
        self._restore_temp_targets()
        since = (now - timedelta(hours=self.settings.replay_hours)).isoformat()
        # what the supervisor learned outlives the replayed window: start from its state before it
        earlier = self.journal.last_before("decision", since)
        if earlier is not None:
            carry_over_learning(self.policy, earlier.payload)
        report.cycles_replayed = self._replay(since, now)
        if sync.booked:  # a reading older than the pump's last command was already acted on (by someone)
            latest = max(b.time for b in sync.booked)
            if self.last_cycle_time is None or latest > self.last_cycle_time:
                self.last_cycle_time = latest
        if not sync.known:
            self._enter_conservative(now, sync)
            report.conservative_until = self.policy.supervisor.conservative_until
        report.iob_u = self.policy.supervisor.iob_u(now)
        self.prune_journal()
        return report

    def _restore_announcements(self) -> None:
        """Remember every announcement (a re-delivered one is not counted twice); those journaled
        after the last decision were not used yet and still count for the next cycle."""
        last_decision = self.journal.last("decision")
        for event in self.journal.events("announcement"):
            if "ignored" in event.payload:
                continue
            key = (str(event.payload.get("time")), float(event.payload.get("carbs_g", 0.0)))
            self.announced.add(key)
            if last_decision is None or event.id > last_decision.id:
                carbs = key[1]
                if math.isfinite(carbs) and carbs > 0:
                    self.pending_carbs_g += carbs

    def _restore_temp_targets(self) -> None:
        """Every journaled temporary target back into the policy (the one started last rules)."""
        for event in self.journal.events("temp_target"):
            self.policy.set_temp_target(TempTarget.from_dict(event.payload))

    def _replay(self, since: str, now: datetime) -> int:
        """Decisions and every delivery since ``since``, in time order, through the fresh policy."""
        reading_times: set[datetime] = set()
        replayed = 0
        for decided in replay_events(self.policy, self.journal.replay_since(since)):
            self.last_cycle_time = decided.time
            self.last_cycle_clock = now
            if decided.cgm_mg_dl is not None:
                self.last_reading_time = decided.time
                reading_times.add(decided.time)
            replayed += 1
        self._restore_validator(since, reading_times)
        return replayed

    def _enter_conservative(self, now: datetime, sync: "pump_history_sync.HistorySync") -> None:
        until = now + timedelta(minutes=self.policy.limits.iob_action_duration_min)
        reason = pump_history_sync.conservative_reason(sync)
        self.policy.supervisor.restrict(until, reason)
        self.history_pending = True
        self._append("fault", now.isoformat(), {"what": "conservative mode", "until": until.isoformat(),
                                                "reason": reason})

    def _retry_history(self, now: datetime) -> None:
        """While conservative for want of the pump's history: ask again; book it when it comes."""
        if not self.history_pending:
            return
        sup = self.policy.supervisor
        if sup.conservative_until is None or now >= sup.conservative_until:
            self.history_pending = False
            return
        sync = pump_history_sync.query_and_journal(self.pump, self.journal, self._append, self.policy, now)
        if sync.known:
            pump_history_sync.book(self.policy, sync.booked)
            sup.lift_restriction()
            self.history_pending = False
            self._append("fault", now.isoformat(), {"what": "conservative mode ended", "reason": sync.summary})

    def _append(self, kind: str, time: str, payload: dict[str, Any], *, cycle: int | None = None,
                seq: int | None = None) -> None:
        self.appender.append(kind, time, payload, cycle=cycle, seq=seq)

    def prune_journal(self) -> int:
        """Prune the journal to the retention window: what was journaled up to the last
        decision before it goes (see :meth:`Journal.prune`).

        The window ends at the clock or at the newest decision, whichever is earlier: a
        clock gone years ahead (a device without a real-time clock, say) prunes nothing
        that the loop has not outlived by its own decisions.
        """
        now = self.clock()
        self.last_prune_clock = now
        last = self.journal.last("decision")
        reference = now if last is None else min(now, datetime.fromisoformat(last.time))
        limit = self.prune_limit() if self.prune_limit is not None else None
        before = (reference - timedelta(days=self.settings.journal_retention_days)).isoformat()
        try:
            return self.journal.prune(before, max_id=limit)
        except JournalWriteError:  # a full disk: pruning waits for the next day
            return 0

    def _restore_validator(self, since: str, reading_times: set[datetime]) -> None:
        """Give the validator the readings that ran the replayed cycles (at ``reading_times``):
        without them the first reading after a restart would escape the rate check (a spike
        would reach the MPC)."""
        if self.validator is None or not hasattr(self.validator, "remember"):
            return
        for event in self.journal.events_since("reading", since):
            try:
                taken = datetime.fromisoformat(str(event.payload.get("time"))) in reading_times
            except ValueError:
                continue
            if taken:
                try:
                    self.validator.remember(event.payload)
                except ValueError:  # a journaled reading that no longer parses is only skipped
                    continue

    def _journal_delivery_of_cycle(self, cycle: int, now: datetime) -> None:
        """After a restart: the delivery of a cycle cut short, from its journaled replies."""
        replies = {e.seq: e.payload for e in self.journal.events("reply") if e.cycle == cycle}
        commands = [e.payload for e in self.journal.events("command") if e.cycle == cycle]
        decision = next((e for e in self.journal.events("decision") if e.cycle == cycle), None)
        if decision is None:
            return
        outcomes = [PumpOutcome(c["seq"], replies.get(c["seq"], {}).get("status", "unknown"),
                                float(replies.get(c["seq"], {}).get("bolus_u") or 0.0),
                                replies.get(c["seq"], {}).get("rate_u_per_h")) for c in commands]
        orders = [PumpOrder.from_dict(c) for c in commands]
        inp = ControlInput.from_dict(decision.payload["input"])
        basal, bolus = self._confirmed(inp.time, orders, outcomes)
        self._append("delivery", inp.time.isoformat(), {"basal_u_per_h": basal, "bolus_u": bolus,
                                                        "minutes": inp.cycle_min, "restored": True}, cycle=cycle)

    # --- running --------------------------------------------------------------------------
    def step(self, timeout_s: float = 1.0) -> list[CycleResult]:
        """Poll the source once; run a cycle per accepted reading, or a cadence cycle when overdue."""
        results = []
        for item in self.source.poll(timeout_s):
            result = self.handle(item)
            if result is not None:
                results.append(result)
        cadence = self.cadence_cycle()
        if cadence is not None:
            results.append(cadence)
        return results

    def cadence_cycle(self) -> CycleResult | None:
        """A cycle without a reading when none ran for ``max_wait_min`` by the clock."""
        now = self.clock()
        if self.last_cycle_clock is None or (now - self.last_cycle_clock).total_seconds() / 60.0 \
                < self.settings.max_wait_min:
            return None
        if self.last_cycle_time is not None and now <= self.last_cycle_time:
            return None
        return self.cycle(now, None)

    def handle(self, item: Any) -> CycleResult | None:
        """Journal one item from a source; run a cycle when it is an accepted reading."""
        now = self.clock()
        if isinstance(item, TempTargetRequest):
            try:
                tt = from_nightscout(item.treatment, start=item.time, source=getattr(item, "source", "") or "")
            except ValueError as exc:
                self._reject(now, item.to_dict(), f"temporary target refused: {exc}")
                return None
            self._append("temp_target", now.isoformat(), tt.to_dict())
            self.policy.set_temp_target(tt)
            return None
        if isinstance(item, Announcement) and not isinstance(item, Reading):
            key = (item.time.isoformat(), float(item.carbs_g))
            if key in self.announced:  # e.g. a QoS 1 re-delivery: the carbs were already counted
                self._reject(now, item.to_dict(), "duplicate announcement: already received at this time")
                return None
            self.announced.add(key)
            self._append("announcement", now.isoformat(), item.to_dict())
            if math.isfinite(item.carbs_g) and item.carbs_g > 0:
                self.pending_carbs_g += float(item.carbs_g)
            return None
        if isinstance(item, Reading):
            self._append("reading", now.isoformat(), item.to_dict())
            checked = item if self.validator is None else self.validator.check(item, now)
            if isinstance(checked, Reading) and self.last_cycle_time is not None \
                    and checked.time <= self.last_cycle_time:
                self._reject(now, item.to_dict(), "duplicate or out of order: a cycle already ran at or after "
                                                  "this reading's time")
                return None
            if not isinstance(checked, Reading):
                self._reject(now, item.to_dict(), getattr(checked, "reason", "rejected"))
                return None
            too_soon = self._too_soon(checked.time)
            if too_soon:
                self._reject(now, item.to_dict(), too_soon)
                return None
            return self.cycle(checked.time, checked)
        if isinstance(item, Rejection):
            self._reject(now, item.to_dict(), item.reason)
            return None
        self._reject(now, {"raw": repr(item)[:200]}, "unknown item from source")
        return None

    def _too_soon(self, time: datetime) -> str:
        """Why a reading at ``time`` comes too soon after the last cycle to be acted on ("" if not)."""
        if self.last_cycle_time is None:
            return ""
        gap_min = (time - self.last_cycle_time).total_seconds() / 60.0
        least_min = self.settings.min_cycle_fraction * self.settings.cycle_min
        if gap_min < least_min:
            return (f"too soon: {gap_min * 60:.0f} s after the last cycle's reading (at most one decision per "
                    f"{least_min:g} min)")
        return ""

    def _reject(self, now: datetime, payload: dict[str, Any], reason: str) -> None:
        phrase = reason.split(":")[0]
        self.rejections[phrase] = self.rejections.get(phrase, 0) + 1
        self._append("rejection", now.isoformat(), {"item": payload, "reason": reason})

    def cycle(self, time: datetime, reading: Any | None) -> CycleResult:
        """One control cycle at ``time`` (the reading's time, or the clock's when there is none).

        Degraded (the journal refuses appends, see :mod:`controller.loop.journal_buffer`): the
        policy still decides (the twin stays in step) but only the programmed basal is
        commanded, and the events wait in memory until the journal takes them again.
        """
        self.cycle_no += 1
        cycle = self.cycle_no
        self.appender.flush(self.clock().isoformat())
        self._retry_history(time)
        cgm = None if reading is None else float(reading.glucose_mg_dl)
        inp = ControlInput(time=time, cgm_mg_dl=cgm, announced_carbs_g=self.pending_carbs_g,
                           cycle_min=self.settings.cycle_min)
        self.pending_carbs_g = 0.0
        dose = self.policy.decide(inp, assume_delivered=False)
        decision = {"input": inp.to_dict(), "dose": dose.to_dict(), "learners": self.policy.supervisor.learner_state()}
        self._append("decision", time.isoformat(), decision, cycle=cycle)
        degraded = self.appender.problem
        if degraded:  # the decision is not on disk: act on nothing it says beyond the programmed basal
            scheduled = self.policy.profile.basal_u_per_h_at(time)
            decided = dose
            dose = Dose(scheduled, 0.0, f"journal cannot be written: programmed basal until it can ({degraded})",
                        dose.diagnostics)
            # the buffered decision says what was commanded, and what the policy had proposed
            decision["dose"] = {**dose.to_dict(), "policy_dose": decided.to_dict()}
        orders, outcomes = [], []
        for spec in self._order_specs(time, dose):
            # the seq is taken just before sending: a STATUS fence that settled the previous
            # order used a higher seq, and a seq taken before it would now be refused as replayed
            order = PumpOrder(self.pump.allocate_seq(), **spec)
            orders.append(order)
            self._append("command", self.clock().isoformat(), order.to_dict(), cycle=cycle, seq=order.seq)
            outcome = self.pump.execute(order)
            if outcome.status == "unknown":
                outcome = self.pump.resolve(order)
            if outcome.status == "unknown":
                self._append("fault", self.clock().isoformat(),
                             {"what": "pump reply lost and status unavailable", "seq": order.seq}, cycle=cycle)
            else:
                self._append("reply", self.clock().isoformat(), outcome.to_dict(), cycle=cycle, seq=order.seq)
            outcomes.append(outcome)
        basal, bolus = self._confirmed(time, orders, outcomes)
        self._append("delivery", time.isoformat(), {"basal_u_per_h": basal, "bolus_u": bolus,
                                                    "minutes": inp.cycle_min}, cycle=cycle)
        self.policy.record_delivery(time, basal, inp.cycle_min, bolus)
        est = self.policy.estimator
        if est is not None and not self.appender.problem:
            self._append("snapshot", time.isoformat(), est.snapshot(), cycle=cycle)
        self.last_cycle_time = time
        self.last_cycle_clock = self.clock()
        if reading is not None:
            self.last_reading_time = time
        result = self._result(cycle, time, cgm, dose, basal, bolus, tuple(outcomes))
        if self.on_cycle is not None:
            self.on_cycle(result)
        if not self.appender.problem and (self.last_prune_clock is None
                                          or self.last_cycle_clock - self.last_prune_clock >= timedelta(days=1)):
            self.prune_journal()  # once a day, after the cycle's commands and its status line
        return result

    def _order_specs(self, time: datetime, dose: Dose) -> list[dict[str, Any]]:
        """The cycle's commands but their seq, issued now by the clock (a late reading must not
        make them stale)."""
        issued = max(self.clock(), time)
        expires = issued + timedelta(seconds=self.settings.command_validity_s)
        specs: list[dict[str, Any]] = [dict(kind="temp_basal", issued_at=issued, expires_at=expires,
                                            rate_u_per_h=dose.basal_u_per_h,
                                            duration_min=self.settings.temp_basal_duration_min)]
        if dose.bolus_u > 0:
            specs.append(dict(kind="bolus", issued_at=issued, expires_at=expires, bolus_u=dose.bolus_u))
        return specs

    def _confirmed(self, time: datetime, orders: list[PumpOrder],
                   outcomes: list[PumpOutcome]) -> tuple[float, float]:
        """Insulin to book for the cycle, from what the pump confirmed.

        A bolus whose fate is unknown is booked as given (over-counting insulin on
        board is the safe error); a basal whose fate is unknown is booked at the
        commanded rate for the same reason. A refused temp basal leaves the pump on
        whatever it reports, else on the programmed basal.
        """
        scheduled = self.policy.profile.basal_u_per_h_at(time)
        basal, bolus = scheduled, 0.0
        for order, outcome in zip(orders, outcomes):
            if order.kind == "temp_basal":
                if outcome.status == "ack":
                    basal = order.rate_u_per_h if outcome.rate_u_per_h is None else outcome.rate_u_per_h
                elif outcome.status == "unknown":
                    basal = max(order.rate_u_per_h, scheduled)
                elif outcome.rate_u_per_h is not None:
                    basal = outcome.rate_u_per_h
            else:
                if outcome.status == "ack":
                    bolus += outcome.bolus_u
                elif outcome.status == "unknown":
                    bolus += order.bolus_u
        return basal, bolus

    def _result(self, cycle: int, time: datetime, cgm: float | None, dose: Dose, basal: float, bolus: float,
                outcomes: tuple[PumpOutcome, ...]) -> CycleResult:
        est = self.policy.estimator
        f30 = f60 = fc = None
        if est is not None and est.readings_accepted:
            fc = est.forecast(self.settings.forecast_horizon_min)  # once per cycle, shared by all who show it
            f30, f60 = fc.at(30.0)[0], fc.at(60.0)[0]
        return CycleResult(cycle, time, cgm, self.policy.supervisor.trend_mg_dl_per_min(), f30, f60, dose,
                           basal, bolus, outcomes, self.policy.supervisor.iob_u(time), fc,
                           f"DEGRADED: {self.appender.problem}" if self.appender.problem
                           else self._conservative_note(time))

    def _conservative_note(self, time: datetime) -> str:
        sup = self.policy.supervisor
        if sup.conservative_until is not None and time < sup.conservative_until:
            return f"CONSERVATIVE until {sup.conservative_until:%Y-%m-%d %H:%M} ({sup.conservative_reason})"
        return ""
