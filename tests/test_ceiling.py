"""The ceiling references (NOT fair controllers): their model is the simulator's, their meals the scenario's."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from sim.trial.ceiling import ClairvoyantReference, ceiling_causal_controller, risk, risk_slope
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import simulate_patient


def test_risk_is_zero_at_its_minimum_and_its_slope_is_its_derivative():
    bg = np.linspace(40.0, 400.0, 721)
    r = risk(bg)
    assert abs(bg[np.argmin(r)] - 112.5) < 1.0 and r.min() < 0.01
    assert risk(np.array([60.0]))[0] > risk(np.array([250.0]))[0]  # a low costs more than a high
    numeric = (risk(bg + 1e-4) - risk(bg - 1e-4)) / 2e-4
    np.testing.assert_allclose(risk_slope(bg), numeric, rtol=1e-4, atol=1e-6)


def test_the_causal_reference_predicts_what_simglucose_then_does_and_keeps_glucose_in_range():
    made = {}

    def factory(patient: str, arm: str):
        made["ref"] = ceiling_causal_controller(patient, arm)
        made["ref"].check_every_min = 60.0
        return made["ref"]

    run = simulate_patient("adult#001", factory, TrialProtocol(arm="hcl", days=0.25))
    checks = made["ref"].prediction_checks
    assert len(checks) >= 6 and all(c.horizon_min == 420.0 for c in checks)
    # the optimizer's 7-h open-loop prediction against the replay in a copy of the simglucose patient
    assert max(c.max_abs_diff_mg_dl for c in checks) < 1.0
    assert 70.0 <= run.trace.bg_mg_dl.min() and run.trace.bg_mg_dl.max() <= 180.0
    assert np.nansum(run.trace.insulin_u) > 0.0


def test_the_causal_reference_refuses_to_run_without_the_simulation():
    ref = ceiling_causal_controller("adult#001", "hcl")
    with pytest.raises(RuntimeError, match="needs the simulation"):
        ref.policy(None, 0.0, False, sample_time=3.0)


def test_the_clairvoyant_knows_exactly_the_meals_the_run_then_has():
    made = {}

    def factory(patient: str, arm: str):
        made["ref"] = ClairvoyantReference(patient, meal_announcement=True)
        made["ref"].reset()
        return made["ref"]

    run = simulate_patient("adolescent#003", factory, TrialProtocol(arm="fcl", days=1.0 / 3.0))
    ref = made["ref"]
    eaten = {int(round((t - run.trace.time[0]).total_seconds() / 60.0)): g
             for t, g in zip(run.trace.time, run.trace.carbs_g) if g > 0}
    known = {m: g for m, g in ref._future_meals().items() if m < len(run.trace) * 3}
    assert eaten, "the scenario has meals in its first 8 hours"
    # each meal eaten in a 3-min sample was known in advance at its minute, with its grams
    assert sorted(eaten) == sorted(3 * (m // 3) for m in known)
    assert sum(eaten.values()) == pytest.approx(sum(known.values()))
    assert ref._t0 + timedelta(minutes=min(known)) >= run.trace.time[0]
