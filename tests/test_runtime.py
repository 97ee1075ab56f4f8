"""The loop runtime: journal before acting, lost replies, restart without repeating a dose.

The pump here is an in-memory stand-in for the port (the real firmware and
transports are exercised end to end in tests/test_hil.py and the fault
campaign); it records every order it executes so duplicates are visible.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from controller.loop.journal import Journal
from controller.loop.ports import PumpOrder, PumpOutcome
from controller.loop.runtime import ClosedLoop, LoopSettings
from controller.twin_policy import TwinMPCPolicy
from sensors.reading import GlucoseReading, Rejected
from twin.personalize import default_prior, personalize
from twin.profile import PatientProfile, flat_basal

T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
PROFILE = PatientProfile("test", 70.0, 40.0, 12.0, 45.0, 35.0, flat_basal(0.8), 120.0)


class MemoryPump:
    """Executes orders at most once; can lose the reply of chosen seqs."""

    def __init__(self, lose_replies: set[int] | None = None) -> None:
        self.next_seq = 1
        self.executed: dict[int, PumpOrder] = {}
        self.sends: list[int] = []
        self.lose_replies = lose_replies or set()
        self.rate_u_per_h = 0.8

    def allocate_seq(self) -> int:
        self.next_seq += 1
        return self.next_seq - 1

    def execute(self, order: PumpOrder) -> PumpOutcome:
        self.sends.append(order.seq)
        if order.seq not in self.executed:
            self.executed[order.seq] = order
            if order.kind == "temp_basal":
                self.rate_u_per_h = order.rate_u_per_h
        if order.seq in self.lose_replies:
            return PumpOutcome(order.seq, "unknown", reason="no reply")
        return self._outcome(order)

    def resolve(self, order: PumpOrder) -> PumpOutcome:
        if order.seq in self.executed:
            return self._outcome(order)
        return PumpOutcome(order.seq, "not_executed", rate_u_per_h=self.rate_u_per_h, reason="status: not executed")

    def _outcome(self, order: PumpOrder) -> PumpOutcome:
        return PumpOutcome(order.seq, "ack", bolus_u=order.bolus_u, rate_u_per_h=self.rate_u_per_h)


class ListSource:
    def __init__(self) -> None:
        self.items: list = []

    def poll(self, timeout_s: float) -> list:
        items, self.items = self.items, []
        return items

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_loop(journal: Journal, pump: MemoryPump, clock: Clock) -> tuple[ClosedLoop, ListSource]:
    source = ListSource()
    policy = TwinMPCPolicy(personalize(PROFILE, default_prior()))
    loop = ClosedLoop(policy, source, pump, journal, clock, LoopSettings(cycle_min=5.0))
    return loop, source


def reading(minutes: float, glucose: float) -> GlucoseReading:
    return GlucoseReading(T0 + timedelta(minutes=minutes), glucose, "test")


def feed(loop: ClosedLoop, source: ListSource, clock: Clock, start: int, n: int, glucose=lambda k: 180.0):
    results = []
    for k in range(start, start + n):
        clock.now = T0 + timedelta(minutes=5 * k)
        source.items.append(reading(5 * k, glucose(k)))
        results += loop.step(0.0)
    return results


def test_every_step_is_journaled_before_the_next(tmp_path):
    pump, clock = MemoryPump(), Clock()
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, pump, clock)
        results = feed(loop, source, clock, 0, 6)
        assert len(results) == 6
        kinds = [e.kind for e in journal.events() if e.cycle == 6 or e.kind == "reading"]
        cycle6 = [e.kind for e in journal.events() if e.cycle == 6]
        assert cycle6[0] == "decision" and cycle6[-2:] == ["delivery", "snapshot"]
        assert cycle6.index("command") < cycle6.index("reply") < cycle6.index("delivery")
        assert kinds.count("reading") == 6
        # each journaled command went to the pump exactly once
        commands = [e.seq for e in journal.events("command")]
        assert commands == sorted(set(commands)) == pump.sends
        line = results[-1].status_line()
        assert "BG" in line and "U/h" in line and results[-1].dose.reason in line


def test_lost_reply_is_resolved_by_status_not_by_sending_again(tmp_path):
    pump, clock = MemoryPump(lose_replies={3, 4}), Clock()
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 5, glucose=lambda k: 250.0)
        assert pump.sends == sorted(set(pump.sends)), "a seq was sent twice"
        replies = {e.seq: e.payload["status"] for e in journal.events("reply")}
        assert replies[3] == "ack" and replies[4] == "ack"


class FencingPump(MemoryPump):
    """Loses every temp-basal command; its STATUS query takes a seq, as PumpLink's does, and the
    pump then refuses any seq at or below the highest it has seen (replay protection)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_seq = 0

    def execute(self, order: PumpOrder) -> PumpOutcome:
        if order.kind == "temp_basal":
            self.sends.append(order.seq)
            return PumpOutcome(order.seq, "unknown", reason="command frame lost")
        if order.seq <= self.last_seq:
            return PumpOutcome(order.seq, "nak", reason="replayed")
        self.last_seq = order.seq
        return super().execute(order)

    def resolve(self, order: PumpOrder) -> PumpOutcome:
        self.last_seq = max(self.last_seq, self.allocate_seq())  # the STATUS fence
        return super().resolve(order)


def test_a_status_fence_in_a_cycle_does_not_void_the_cycles_bolus(tmp_path):
    pump, clock = FencingPump(), Clock()
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 12, glucose=lambda k: 200.0 + 8.0 * k)  # rising: boluses
        replies = [e.payload for e in journal.events("reply")]
        boluses = [r for r in replies if r["bolus_u"] > 0 or "replayed" in r["reason"]]
        assert any(r["status"] == "not_executed" for r in replies)  # the temp basals were fenced
        assert boluses and all(r["status"] == "ack" for r in boluses), boluses


def test_restart_restores_iob_and_never_repeats_a_dose(tmp_path):
    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    with Journal(path) as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 24, glucose=lambda k: 160.0 + 6.0 * k)  # rising: insulin given
        iob_before = loop.policy.supervisor.iob_u(clock.now)
        twin_before = loop.policy.estimator.glucose_mg_dl
        seq_before = pump.allocate_seq()
        # an order journaled but never answered (the loop died while sending it)
        inflight = PumpOrder(seq_before, "bolus", clock.now, clock.now + timedelta(minutes=2), bolus_u=0.5)
        journal.append("command", clock.now.isoformat(), inflight.to_dict(), cycle=loop.cycle_no, seq=inflight.seq)
        pump.execute(inflight)  # the pump did execute it; the reply was lost with the process
    assert iob_before > 0.0
    sends_before = list(pump.sends)

    with Journal(path) as journal:
        loop, source = make_loop(journal, pump, clock)
        report = loop.restore()
        assert [o.status for o in report.orders_resolved] == ["ack"]
        assert pump.sends == sends_before, "restore sent a command"
        assert report.cycles_replayed == 24
        # the resolved bolus is in the journal; replay restores what was booked before
        assert math.isclose(loop.policy.estimator.glucose_mg_dl, twin_before, rel_tol=1e-9)
        assert loop.policy.supervisor.iob_u(clock.now) == pytest.approx(iob_before, rel=1e-9)
        # a reading already used before the restart (redelivered by the broker) is not used again
        source.items.append(reading(5 * 23, 298.0))
        assert loop.step(0.0) == []
        assert journal.last("rejection").payload["reason"].startswith("duplicate")
        # the next cycle uses fresh sequence numbers
        feed(loop, source, clock, 24, 1)
        new = [e.seq for e in journal.events("command")][-1]
        assert new > inflight.seq
        assert len(pump.sends) == len(set(pump.sends))


def test_no_reading_runs_a_cadence_cycle_on_programmed_basal(tmp_path):
    pump, clock = MemoryPump(), Clock()
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 3)
        clock.now += timedelta(minutes=20)
        results = loop.step(0.0)
        assert len(results) == 1 and results[0].glucose_mg_dl is None
        assert results[0].delivered_basal_u_per_h == pytest.approx(0.8)
        assert "stale" in results[0].dose.reason.lower()


def test_rejected_input_is_journaled_and_counted(tmp_path):
    pump, clock = MemoryPump(), Clock()
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, pump, clock)
        source.items += [Rejected("{bad", None, "malformed message: not JSON"), object()]
        assert loop.step(0.0) == []
        assert loop.rejections == {"malformed message": 1, "unknown item from source": 1}
        assert journal.counts()["rejection"] == 2


class Killed(BaseException):
    """The loop process dying (SIGKILL) right after the pump executed an order."""


def test_killed_between_command_and_reply_books_the_dose_once(tmp_path):
    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    with Journal(path) as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 20, glucose=lambda k: 200.0 + 8.0 * k)
        execute = pump.execute

        def execute_then_die(order):
            execute(order)
            if order.kind == "bolus":
                raise Killed
            return pump._outcome(order)

        pump.execute = execute_then_die
        with pytest.raises(Killed):
            for k in range(20, 40):
                feed(loop, source, clock, k, 1, glucose=lambda k: 200.0 + 8.0 * k)
        killed_cycle = loop.cycle_no
        bolus = next(o for o in pump.executed.values() if o.kind == "bolus" and o.seq == pump.sends[-1])
        pump.execute = execute
    sends_before = list(pump.sends)
    with Journal(path) as journal:
        assert [e.seq for e in journal.unanswered_commands()] == [bolus.seq]
        loop, source = make_loop(journal, pump, clock)
        report = loop.restore()
        assert pump.sends == sends_before
        assert [o.status for o in report.orders_resolved] == ["ack"]
        delivery = next(e for e in journal.events("delivery") if e.cycle == killed_cycle)
        assert delivery.payload["bolus_u"] == pytest.approx(bolus.bolus_u)
        assert delivery.payload["restored"] is True
        assert journal.unanswered_commands() == []


def test_restart_keeps_the_learned_shares_from_before_the_replayed_window(tmp_path):
    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    level = [110.0] * 6 + [100.0, 90.0, 80.0, 70.0, 66.0, 64.0, 63.0, 64.0] + [75.0, 90.0, 105.0] + [120.0] * 30
    with Journal(path) as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, len(level), glucose=lambda k: level[k])
        learned = loop.policy.supervisor.correction_learner.share
    assert learned < 1.0  # a low (reached at a physiological pace) lowered it

    with Journal(path) as journal:
        source = ListSource()
        policy = TwinMPCPolicy(personalize(PROFILE, default_prior()))
        # replay only the last hour: the low is older than that
        loop = ClosedLoop(policy, source, pump, journal, clock, LoopSettings(cycle_min=5.0, replay_hours=1.0))
        loop.restore()
        assert loop.policy.supervisor.correction_learner.share == pytest.approx(learned)
        assert loop.policy.supervisor.meal_learner.share == pytest.approx(0.8)


def test_after_a_restart_the_first_reading_still_meets_the_rate_check(tmp_path):
    from sensors.validation import IMPLAUSIBLE_RATE, ReadingValidator

    def loop_with_validator(journal: Journal, pump: MemoryPump, clock: Clock) -> tuple[ClosedLoop, ListSource]:
        source = ListSource()
        policy = TwinMPCPolicy(personalize(PROFILE, default_prior()))
        return ClosedLoop(policy, source, pump, journal, clock, LoopSettings(cycle_min=5.0),
                          validator=ReadingValidator()), source

    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    with Journal(path) as journal:
        loop, source = loop_with_validator(journal, pump, clock)
        feed(loop, source, clock, 0, 12, glucose=lambda k: 120.0)
    spike = 12
    with Journal(path) as journal:  # the loop was killed; a new process restores from the journal
        loop, source = loop_with_validator(journal, pump, clock)
        loop.restore()
        assert loop.validator.last_accepted("") is not None  # the replayed cycles' readings
        assert loop.validator.counts["accepted"] == 0  # remembered, not judged again
        results = feed(loop, source, clock, spike, 1, glucose=lambda k: 400.0)  # +280 mg/dL in 5 min
        assert results == []
        rejection = journal.last("rejection")
        assert rejection.payload["reason"].startswith(IMPLAUSIBLE_RATE)
        # a plausible next reading runs a cycle as usual
        assert len(feed(loop, source, clock, spike + 1, 1, glucose=lambda k: 124.0)) == 1


def test_restart_continues_the_learners_exactly_where_they_were(tmp_path):
    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    # a day and a half: a low, then highs (a pending raise) and a low episode still open at the end
    level = [110.0] * 60 + [100.0, 85.0, 72.0, 68.0, 66.0, 65.0, 70.0, 90.0, 110.0] + [200.0] * 150 \
        + [150.0] * 150 + [130.0, 110.0, 95.0, 80.0, 68.0, 66.0, 64.0]
    with Journal(path) as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, len(level), glucose=lambda k: level[k])
        before = loop.policy.supervisor.learner_state()
    assert before["correction"]["in_low_episode"] and before["correction"]["last_low"] is not None
    assert before["correction"]["share"] < 1.0

    with Journal(path) as journal:
        source = ListSource()
        policy = TwinMPCPolicy(personalize(PROFILE, default_prior()))
        loop = ClosedLoop(policy, source, pump, journal, clock, LoopSettings(cycle_min=5.0, replay_hours=2.0))
        loop.restore()
        after = loop.policy.supervisor.learner_state()
    # the same state as the loop that never stopped: first reading, low episode, windows, shares
    assert after == before


def test_the_journal_is_pruned_to_its_retention_but_keeps_what_a_restart_needs(tmp_path):
    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    settings = LoopSettings(cycle_min=5.0, replay_hours=2.0, journal_retention_days=1.5)
    with Journal(path) as journal:
        source = ListSource()
        loop = ClosedLoop(TwinMPCPolicy(personalize(PROFILE, default_prior())), source, pump, journal, clock, settings)
        # a command whose reply never came (the loop was killed mid-cycle, say)
        order = PumpOrder(999, "bolus", T0, T0 + timedelta(minutes=2), bolus_u=0.5)
        journal.append("command", T0.isoformat(), order.to_dict(), cycle=0, seq=999)
        feed(loop, source, clock, 0, 12 * 24 * 3, glucose=lambda k: 130.0)  # 3 days
        oldest = min(e.time for e in journal.events())
        cut = (clock.now - timedelta(days=1.5)).isoformat()
        kept_old = [e for e in journal.events() if e.time < cut]
        max_seq, max_cycle = journal.max_seq(), journal.max_cycle()
    # pruned daily: nothing older than the window plus a day, except the unanswered command
    assert oldest == T0.isoformat() and T0 < clock.now - timedelta(days=2.5)
    assert kept_old and all(e.time >= (clock.now - timedelta(days=2.5)).isoformat() for e in kept_old if e.seq != 999)
    assert any(e.seq == 999 for e in kept_old)
    with Journal(path) as journal:  # a restart prunes to the window and continues seq and cycle numbering
        loop = ClosedLoop(TwinMPCPolicy(personalize(PROFILE, default_prior())), ListSource(), pump, journal,
                          clock, settings)
        loop.restore()
        # what stays from before the window is the last cycle before it (its command, reply,
        # delivery and snapshot follow its decision) and the unanswered command
        one_cycle_earlier = (clock.now - timedelta(days=1.5, minutes=5)).isoformat()
        assert all(e.time >= one_cycle_earlier or e.seq == 999 for e in journal.events())
        assert journal.max_seq() == max_seq and journal.max_cycle() == max_cycle == loop.cycle_no
        assert loop.policy.supervisor.correction_learner.first_reading is not None  # carried over


def test_prune_cuts_at_the_last_decision_before_the_window_keeps_the_newest_of_each_kind(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        old, epoch = (T0 - timedelta(days=400)).isoformat(), "1970-01-01T00:00:00+00:00"
        ids = [journal.append("reading", old, {"k": i}) for i in range(4)]
        journal.append("command", old, {"seq": 7}, seq=7)
        journal.append("reply", old, {"seq": 7}, seq=7)
        journal.append("decision", old, {"n": 1}, cycle=1)
        journal.append("startup", epoch, {"n": 1})  # stamped by a lockstep clock before any reading
        journal.append("reading", epoch, {"k": 4})
        journal.append("decision", T0.isoformat(), {"n": 2}, cycle=2)
        assert journal.prune(T0.isoformat(), max_id=ids[1]) == 2  # only up to max_id
        # everything journaled up to the last decision before the window, but the newest of each kind
        assert journal.prune(T0.isoformat()) == 3  # readings 2, 3 and the old decision
        assert [e.payload for e in journal.events("reading")] == [{"k": 4}]
        assert journal.max_seq() == 7  # the newest command and reply stay: seqs continue above them
        assert journal.counts()["startup"] == 1
        assert journal.prune((T0 + timedelta(days=1)).isoformat()) == 0  # no decision inside: keep the newest on
    with Journal(tmp_path / "empty.sqlite") as journal:
        journal.append("reading", "1970-01-01T00:00:00+00:00", {"k": 0})
        journal.append("reading", "1970-01-01T00:00:00+00:00", {"k": 1})
        assert journal.prune(T0.isoformat()) == 0  # no decision at all: nothing is cut


def test_a_clock_gone_years_ahead_prunes_nothing_the_decisions_have_not_outlived(tmp_path):
    pump, clock = MemoryPump(), Clock()
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 24, glucose=lambda k: 130.0)
        before = journal.counts()
        clock.now = T0 + timedelta(days=365 * 30)  # e.g. a device clock that jumped
        assert loop.prune_journal() == 0
        assert journal.counts() == before
