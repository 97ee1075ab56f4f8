"""Advice to the person (controller/advice.py): carbs for a low suspension cannot prevent, a high
the limits will not treat, an unexplained rise; and that advice never doses.

Real components throughout: the estimator on a personalized twin, the policy, the journal's
SQLite file, the Nightscout mapping and receiver, the mosquitto broker, a simglucose patient.
"""

from __future__ import annotations

import dataclasses

import ast
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.advice import Advice, AdviceSettings, Advisor, CycleFacts, advise, binding_cap, low_advice
from controller.policy import ControlInput
from controller.twin_policy import ControlSettings, TwinMPCPolicy
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from twin.estimator import TwinEstimator
from twin.personalize import personalize
from ack_pump import AckPump
from skip_reasons import skip_reason

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 1, 1, 6, 0)
S = AdviceSettings()


@pytest.fixture(scope="module")
def twin():
    return personalize(clinical_profile("adult#003"), population_prior(exclude="adult#003"))


def estimator_after(twin, readings, start=T0, step_min=5.0, bolus_u=0.0):
    """The real estimator fed ``readings`` every ``step_min``; ``bolus_u`` given at the start."""
    est = TwinEstimator(twin, start)
    if bolus_u:
        est.add_bolus(bolus_u)
    for i, g in enumerate(readings):
        est.update(start + timedelta(minutes=step_min * i), float(g))
    return est, start + timedelta(minutes=step_min * (len(readings) - 1))


def conservative_suspended(est, grams, s=S):
    steps = int(s.low_horizon_min / s.low_step_min)
    h = np.arange(steps + 1) * s.low_step_min
    margin = s.low_band_z * np.sqrt(est.glucose_sd_mg_dl**2 + (est.settings.band_growth_mg_dl_per_min * h) ** 2)
    return h, est.plan_glucose(np.zeros((1, steps)), s.low_step_min, extra_carbs_g=grams)[0] - margin


# --- settings and the estimator's hypothetical carbs -----------------------------------------


@pytest.mark.parametrize("bad", [dict(low_mg_dl=-1.0), dict(low_mg_dl=300.0), dict(max_carbs_g=0.0),
                                 dict(low_step_min=7.0), dict(carb_onset_min=200.0), dict(repeat_min=math.nan),
                                 dict(search_step_g=10.0), dict(high_window_min=True)])
def test_settings_are_validated_with_a_clear_error(bad):
    with pytest.raises(ValueError):
        AdviceSettings(**bad)


def test_plan_glucose_extra_carbs_default_changes_nothing_and_carbs_raise_glucose_later(twin):
    est, _ = estimator_after(twin, [120, 118, 116, 114, 112, 110])
    plans = np.zeros((3, 24))
    before = est.plan_glucose(plans, 5.0)
    assert np.array_equal(est.plan_glucose(plans, 5.0, extra_carbs_g=0.0), before)
    with_carbs = est.plan_glucose(plans, 5.0, extra_carbs_g=np.array([0.0, 10.0, 20.0]))
    assert np.array_equal(with_carbs[0], before[0])
    effect10, effect20 = with_carbs[1] - before[1], with_carbs[2] - before[2]
    assert abs(effect10[1]) < 0.5 and effect10[-1] > 10.0  # hardly anything at 5 min, a lot at 2 h
    assert np.all(effect20 >= effect10 - 1e-9) and effect20[-1] > 1.5 * effect10[-1]
    with pytest.raises(ValueError):
        est.plan_glucose(plans, 5.0, extra_carbs_g=-1.0)
    assert np.array_equal(est.plan_glucose(plans, 5.0), before)  # asking changed nothing


# --- clinical situations ---------------------------------------------------------------------


def test_falling_fast_with_insulin_on_board_asks_for_the_least_carbs_that_hold(twin):
    est, now = estimator_after(twin, [150 - 5 * i for i in range(13)], bolus_u=3.0)  # 150 -> 90, falling
    advice = low_advice(est, now, S)
    assert advice is not None and advice.kind == "carbs" and advice.new
    assert 5.0 <= advice.carbs_g <= S.max_carbs_g and advice.carbs_g % S.carbs_step_g == 0
    h, without = conservative_suspended(est, 0.0)
    assert without.min() < S.low_mg_dl  # suspension alone does not prevent it
    assert advice.by_min == max(0.0, h[np.nonzero(without < S.low_mg_dl)[0][0]] - S.eat_lead_min)
    assert advice.by_time == now + timedelta(minutes=advice.by_min)
    _, enough = conservative_suspended(est, advice.carbs_g)
    assert enough[h >= S.carb_onset_min].min() >= S.low_mg_dl  # the advised grams hold ...
    if advice.carbs_g > S.carbs_step_g:  # ... and one step fewer would not
        _, fewer = conservative_suspended(est, advice.carbs_g - S.carbs_step_g)
        assert fewer[h >= S.carb_onset_min].min() < S.low_mg_dl
    assert f"Eat {advice.carbs_g:g} g" in advice.message
    assert json.loads(json.dumps(advice.to_dict()))["carbs_g"] == advice.carbs_g


def test_steady_in_range_gives_no_advice(twin):
    est, now = estimator_after(twin, [120.0] * 12)
    facts = CycleFacts(now, 120.0, 0.0, twin.profile.correction_factor_mg_dl_per_u, 1.0, 0.0)
    assert advise(est, facts, [(now, 120.0)], None, S) is None


def test_a_high_the_limits_will_not_treat_is_said_only_while_a_cap_binds(twin):
    est, now = estimator_after(twin, [300 + i for i in range(12)])
    cf = twin.profile.correction_factor_mg_dl_per_u
    capped = CycleFacts(now, 311.0, 2.0, cf, 0.0, 0.0, cap="max_iob")
    advice = advise(est, capped, [(now, 311.0)], None, S)
    assert advice is not None and advice.kind == "high" and "max_iob" in advice.message
    free = CycleFacts(now, 311.0, 2.0, cf, 0.0, 0.0, cap="")
    assert advise(est, free, [(now, 311.0)], None, S) is None


def test_binding_cap_names_the_limit():
    assert binding_cap(["max_iob"], 1.0, 0.0, 4.0, 5.0) == "max_iob"
    assert binding_cap([], 4.0, 0.0, 4.0, 5.0) == "max_basal"
    assert binding_cap(["low_suspend"], 1.0, 5.0, 4.0, 5.0) == "max_bolus"
    assert binding_cap(["below_correction_threshold"], 1.0, 0.0, 4.0, 5.0) == ""


def test_rise_after_insulin_without_carbs_suggests_checking_the_site(twin):
    readings = [(T0 + timedelta(minutes=5 * i), 150.0 + 3.0 * i) for i in range(30)]  # +87 mg/dL in 145 min
    now, g = readings[-1]
    est, _ = estimator_after(twin, [r[1] for r in readings])
    facts = CycleFacts(now, g, 3.0, twin.profile.correction_factor_mg_dl_per_u, 1.0, 0.0)
    advice = advise(est, facts, readings, None, S)
    assert advice is not None and advice.kind == "site_check" and "infusion site" in advice.message
    # explained: carbs announced (or advised) 2 h ago; or too little insulin on board
    assert advise(est, facts, readings, now - timedelta(minutes=120), S) is None
    little = CycleFacts(now, g, 0.1, twin.profile.correction_factor_mg_dl_per_u, 1.0, 0.0)
    assert advise(est, little, readings, None, S) is None
    # [advice] site_check = false: the same rise says nothing
    assert advise(est, facts, readings, None, dataclasses.replace(S, site_check=False)) is None


def test_standing_advice_is_new_once_then_again_after_the_repeat_interval(twin):
    advisor = Advisor(AdviceSettings(repeat_min=30.0))
    est, now = estimator_after(twin, [150 - 5 * i for i in range(13)], bolus_u=3.0)
    flags = []
    for k in range(8):  # the same twin asked every 5 min (the advice stands)
        t = now + timedelta(minutes=5 * k)
        a = advisor.cycle(est, CycleFacts(t, 90.0, 1.0, 40.0, 0.0, 0.0), 0.0)
        flags.append(a.new)
    assert flags == [True, False, False, False, False, False, True, False]


# --- advice never doses -------------------------------------------------------------------------


def _run(twin, settings, glucose, carbs):
    policy = TwinMPCPolicy(twin, settings)
    doses = []
    for i, (g, c) in enumerate(zip(glucose, carbs)):
        doses.append(policy.decide(ControlInput(T0 + timedelta(minutes=5 * i), g, c, 5.0)))
    return doses


@settings(max_examples=12)
@given(start=st.floats(60.0, 350.0), slopes=st.lists(st.floats(-6.0, 6.0), min_size=6, max_size=14),
       meal_at=st.integers(-1, 13), gaps=st.sets(st.integers(1, 13), max_size=2))
def test_doses_are_identical_with_and_without_advice(twin, start, slopes, meal_at, gaps):
    glucose, g = [], start
    for i, s in enumerate(slopes):
        g = min(max(g + 5.0 * s, 40.0), 400.0)
        glucose.append(None if i in gaps else g)
    carbs = [50.0 if i == meal_at else 0.0 for i in range(len(glucose))]
    on = _run(twin, ControlSettings(), glucose, carbs)
    off = _run(twin, ControlSettings(advice=None), glucose, carbs)
    for a, b in zip(on, off):
        assert (a.basal_u_per_h, a.bolus_u, a.reason) == (b.basal_u_per_h, b.bolus_u, b.reason)
        assert "advice" in a.diagnostics and b.diagnostics["advice"] is None
        assert {k: v for k, v in a.diagnostics.items() if k not in ("advice", "cycle_ms")} == \
            {k: v for k, v in b.diagnostics.items() if k not in ("advice", "cycle_ms")}


def test_the_advice_module_has_no_path_to_the_pump():
    tree = ast.parse((ROOT / "controller" / "advice.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert not {m for m in imported if m.split(".")[0] in ("firmware_bridge", "sensors", "sim")
                or m.startswith("controller.loop") or m.startswith("controller.")}, imported
    # and the policy never reads the advice back: the dose is built before it exists
    policy_tree = ast.parse((ROOT / "controller" / "twin_policy.py").read_text())
    decide = next(n for n in ast.walk(policy_tree) if isinstance(n, ast.FunctionDef) and n.name == "_decide")
    uses = [n for n in ast.walk(decide) if isinstance(n, ast.Name) and n.id == "advice"]
    assert [type(n.ctx).__name__ for n in sorted(uses, key=lambda n: n.lineno)] == ["Store", "Load"]
    (diagnostics,) = [n for n in ast.walk(decide) if isinstance(n, ast.AnnAssign)
                      and getattr(n.target, "id", "") == "diagnostics"]
    assert any(n is uses[0] or n is uses[1] for n in ast.walk(diagnostics.value))  # read only into diagnostics


def test_a_failing_advice_is_reported_and_the_cycle_goes_on(twin, monkeypatch):
    policy = TwinMPCPolicy(twin)

    def broken(*args, **kwargs):
        raise FloatingPointError("boom")

    monkeypatch.setattr(policy.advisor, "cycle", broken)
    dose = policy.decide(ControlInput(T0, 120.0))
    dose = policy.decide(ControlInput(T0 + timedelta(minutes=5), 118.0))
    assert dose.diagnostics["advice"]["error"].startswith("advice failed: FloatingPointError")


def test_decision_records_carry_the_advice_settings_and_replay_to_the_same_dose(twin):
    from controller.decision_replay import replay

    policy = TwinMPCPolicy(twin, ControlSettings(advice=AdviceSettings(repeat_min=20.0)), record_decisions=True)
    for i, g in enumerate([150, 140, 128, 116, 104, 94, 86, 80]):
        dose = policy.decide(ControlInput(T0 + timedelta(minutes=5 * i), float(g), 0.0, 5.0))
        record = json.loads(json.dumps(policy.last_record))
        assert record["settings"]["advice"]["repeat_min"] == 20.0
        again = replay(record)
        assert (again.basal_u_per_h, again.bolus_u, again.reason) == (dose.basal_u_per_h, dose.bolus_u, dose.reason)


# --- the live loop: journal, Nightscout, MQTT ---------------------------------------------------


class _Feed:
    """A real ClosedLoop (twin, MPC, supervisor, advice) on an in-memory pump, journaling to SQLite."""

    def __init__(self, journal, on_cycle=None) -> None:
        from controller.loop.runtime import ClosedLoop, LoopSettings
        from twin.personalize import default_prior
        from twin.profile import PatientProfile, flat_basal

        profile = PatientProfile("advice", 70.0, 40.0, 12.0, 45.0, 35.0, flat_basal(0.8), 120.0)
        self.items: list = []
        self.now = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
        self.t0 = self.now
        policy = TwinMPCPolicy(personalize(profile, default_prior()))
        self.loop = ClosedLoop(policy, self, AckPump(), journal, lambda: self.now, LoopSettings(cycle_min=5.0),
                               on_cycle=on_cycle)

    def poll(self, timeout_s: float) -> list:
        items, self.items = self.items, []
        return items

    def close(self) -> None:
        pass

    def run(self, glucose: list[float]) -> list:
        from sensors.reading import GlucoseReading

        results = []
        for k, g in enumerate(glucose):
            self.now = self.t0 + timedelta(minutes=5 * k)
            self.items.append(GlucoseReading(self.now, g, "test:cgm"))
            results += self.loop.step(0.0)
        return results


FALLING = [160.0 - 4.0 * k for k in range(22)]  # 160 -> 76 mg/dL in 105 min: a low coming


def test_advice_is_journaled_with_each_decision_and_sent_to_nightscout_once_per_event(tmp_path):
    from controller.loop.journal import Journal
    from controller.loop.nightscout.uploader import NightscoutClient, NightscoutUploader
    from sensors.nightscout.receiver import NightscoutReceiver
    from sim.hil.broker import free_port

    with Journal(tmp_path / "j.sqlite") as journal:
        _Feed(journal).run(FALLING)
        decisions = journal.events("decision")
        advice = [e.payload["dose"]["diagnostics"]["advice"] for e in decisions]
        carbs = [a for a in advice if a and a["kind"] == "carbs"]
        assert carbs, "the falling trace must bring carb advice"
        assert all(a["carbs_g"] >= 5.0 and a["reason"] and a["message"].startswith("Eat ") for a in carbs)
        new = [a for a in carbs if a["new"]]
        assert 1 <= len(new) < len(carbs)  # announced, then standing without repeating every cycle
        assert advice[0] is None  # nothing forecast low at 160 mg/dL with no insulin on board

        port, secret = free_port(), "correct horse battery"
        uploader = NightscoutUploader(journal.path, NightscoutClient(f"http://127.0.0.1:{port}", secret, timeout_s=2.0),
                                      log=lambda _: None)
        uploader.collect()
        with NightscoutReceiver("127.0.0.1", port, secret) as receiver:
            assert uploader.flush(30.0) is True
            announcements = [t for t in receiver.treatments() if t["eventType"] == "Announcement"]
            assert len(announcements) == len(new)
            assert all(t["notes"].startswith("Eat ") and "carbs" not in t for t in announcements)
            with_req = [s["openaps"]["suggested"] for s in receiver.devicestatus() if "carbsReq" in s["openaps"]["suggested"]]
            assert len(with_req) == len(carbs)  # every cycle the advice stands, as oref0 reports it
            assert all(isinstance(s["carbsReq"], int) and s["carbsReq"] >= 5 and "add'l carbs req w/in" in s["reason"]
                       and isinstance(s["carbsReqWithin"], int) for s in with_req)
        uploader.close()


@pytest.mark.skipif(__import__("sim.hil.broker", fromlist=["find_mosquitto"]).find_mosquitto() is None,
                    reason=skip_reason("mosquitto"))
def test_new_advice_is_published_on_its_own_retained_topic(tmp_path):
    import queue
    import time

    import paho.mqtt.client as mqtt

    from controller.loop.cycle_publisher import CyclePublisher
    from controller.loop.journal import Journal
    from sim.hil.broker import Mosquitto

    with Mosquitto() as broker:
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="loop-adv", protocol=mqtt.MQTTv5)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        publisher = CyclePublisher(pub, "glucotwin/adv")
        with Journal(tmp_path / "j.sqlite") as journal:
            results = _Feed(journal, on_cycle=publisher.cycle).run(FALLING + [150.0] * 3)
        expected = [r.dose.diagnostics["advice"] for r in results
                    if r.dose.diagnostics.get("advice") and r.dose.diagnostics["advice"]["new"]]
        assert expected
        time.sleep(0.5)
        got: queue.Queue = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="app-adv", protocol=mqtt.MQTTv5)
        sub.on_message = lambda c, u, m: got.put((m.topic, json.loads(m.payload), bool(m.retain)))
        sub.connect(broker.host, broker.port)
        sub.subscribe("glucotwin/adv/loop/advice", qos=1)
        sub.loop_start()
        topic, payload, retained = got.get(timeout=10)  # a late subscriber sees the latest advice state
        assert topic == "glucotwin/adv/loop/advice" and retained
        standing = results[-1].dose.diagnostics.get("advice")
        if standing:
            assert payload["kind"] == standing["kind"]
        else:
            assert payload["kind"] is None and payload["ended"] == "carbs"
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


# --- a real simglucose patient following the advice --------------------------------------------


def test_a_patient_following_the_advice_eats_it_and_the_controller_is_never_told():
    from sim.trial.protocol import TrialProtocol
    from sim.trial.runner import simulate_patient

    seen: list[float] = []

    def factory(patient, arm):
        from sim.trial.controllers import SimglucoseController

        ctrl = SimglucoseController(meal_announcement=arm == "hcl")
        inner = ctrl.policy

        def policy(observation, reward, done, **info):
            action = inner(observation, reward, done, **info)
            seen.append(ctrl.last_input.announced_carbs_g)
            return action

        ctrl.policy = policy
        return ctrl

    base = dict(arm="hcl", days=0.3, seed_offset=7000, physiology_scale=(("Vmx", 1.4), ("kp3", 1.4)))
    follow = simulate_patient("child#008", factory, TrialProtocol(follow_advice=True, **base))
    told_follow, seen[:] = list(seen), []
    plain = simulate_patient("child#008", factory, TrialProtocol(**base))
    told_plain = list(seen)
    rescue = np.array([float(x or 0.0) for x in follow.trace.diagnostics["rescue_carbs_g"][:-1]])
    new_carbs = [i for i, (k, n) in enumerate(zip(follow.trace.diagnostics["advice_kind"],
                                                  follow.trace.diagnostics["advice_new"])) if k == "carbs" and n]
    assert new_carbs, "this sensitive child gets carb advice within 0.3 day"
    assert [i for i in range(len(rescue)) if rescue[i] > 0] == new_carbs  # eaten exactly when advised ...
    eaten = np.nansum(follow.trace.carbs_g) - np.nansum(plain.trace.carbs_g)
    assert eaten == pytest.approx(rescue.sum(), abs=1e-6)  # ... and really eaten by the patient
    assert sum(told_follow) == pytest.approx(sum(told_plain))  # the meals only: rescues never announced
    first = new_carbs[0]
    assert np.array_equal(follow.trace.insulin_u[: first + 1], plain.trace.insulin_u[: first + 1])
    window = slice(first + 5, first + 40)  # 15 min to 2 h after the first rescue: the patient's glucose is higher
    assert np.mean(follow.trace.bg_mg_dl[window]) > np.mean(plain.trace.bg_mg_dl[window])


def test_validation_compares_the_runs_measures_the_least_rescue_and_the_report_shows_the_advice(tmp_path):
    from sim.report.trial_page import trial_report_html
    from sim.report.trial_run import load_trial_run
    from sim.trial.advice_validation import EVENTS_FILENAME, compare, markdown, run_follow
    from sim.trial.protocol import TrialProtocol
    from sim.trial.run import run_trial
    from sim.trial.trace import advice_events, read_trace_csv

    base = dict(arm="hcl", days=0.3, seed_offset=7000, physiology_scale=(("Vmx", 1.4), ("kp3", 1.4)))
    run_trial("mpc", ["child#008"], TrialProtocol(**base), out_dir=tmp_path / "without", workers=1, progress=False)
    run_follow("mpc", ["child#008"], TrialProtocol(follow_advice=True, **base), tmp_path / "with", workers=1,
               least_every=1)
    result = compare(tmp_path / "without", tmp_path / "with")
    events = json.loads((tmp_path / "with" / EVENTS_FILENAME).read_text())["events"]["child#008"]
    trace = read_trace_csv(tmp_path / "with" / "child#008.csv")
    assert len(events) == result["overall"]["carb_events"] == len([e for e in advice_events(trace) if e[1] == "carbs"]) > 0
    assert all(e["least_g"] is None or (e["least_g"] % 5 == 0 and 0 <= e["least_g"] <= 60) for e in events)
    assert result["overall"]["least_measured"] == len(events)
    row = result["patients"]["child#008"]
    summary = json.loads((tmp_path / "with" / "summary.json").read_text())
    assert row["with"]["below_70"] == summary["patients"]["child#008"]["bg"]["below_70"]
    assert "child#008" in markdown(result, "smoke")
    html = trial_report_html(load_trial_run(tmp_path / "with"))
    assert html.count('id="advice"') == 1 and "rescue eaten" in html and "conservative forecast" in html
