"""glucotwin learn: the twin fitted to a person's own history (issue 18).

Histories come from three real sources: the twin's own model with known
multipliers (so recovery can be checked exactly), a real simglucose trial
trace, and a real SQLite journal written through the loop's Journal class.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.learn.synthetic import synthetic_history
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from twin.learning.fit import NAMES, TwinBase, fit, predict
from twin.learning.habits import meal_habits
from twin.learning.history import History, build_history
from twin.learning.learned import learn, load_learned_twin

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def base() -> TwinBase:
    profile = clinical_profile("adult#005")
    return TwinBase.from_profile(profile, population_prior(exclude=profile.name))


def _truth(**factors: float) -> np.ndarray:
    theta = np.zeros(len(NAMES))
    for name, factor in factors.items():
        theta[NAMES.index(name)] = np.log(factor)
    return theta


@pytest.fixture(scope="module")
def sensitive_person(base):
    """A person 40 % more insulin-sensitive than the profile says, absorbing carbs 30 % faster."""
    truth = _truth(sensitivity=1.4, absorption_speed=1.3)
    return truth, synthetic_history(base, truth, days=4, seed=11)


def test_the_fit_recovers_a_person_more_sensitive_than_the_profile(base, sensitive_person):
    truth, history = sensitive_person
    result = fit(base, history)
    i = NAMES.index("sensitivity")
    day_sensitivity = result.theta[i] + np.mean(result.theta[i + 1:i + 5])
    assert day_sensitivity == pytest.approx(np.log(1.4), abs=0.12)
    assert result.theta[NAMES.index("absorption_speed")] == pytest.approx(np.log(1.3), abs=0.12)
    assert result.status(i).startswith(("learned", "partly"))
    assert result.residual_rmse_mg_dl < 0.6 * result.prior_rmse_mg_dl
    assert result.residual_rmse_mg_dl < 12.0  # the CGM noise is 8 mg/dL


def test_a_person_like_the_profile_stays_at_the_prior(base):
    history = synthetic_history(base, np.zeros(len(NAMES)), days=3, seed=5)
    result = fit(base, history)
    assert np.all(np.abs(result.theta) < 2.5 * result.sd + 0.05)
    assert result.prior_rmse_mg_dl < 12.0


def test_cgm_only_fits_only_the_basal_need_and_says_so(base, sensitive_person):
    _, history = sensitive_person
    cgm_only = History(history.start, history.step_min, history.cgm_mg_dl,
                       np.full(history.steps, base.basal_u_per_h * history.step_min / 60.0),
                       np.zeros(history.steps), insulin_recorded=False, carbs_recorded=False)
    result = fit(base, cgm_only)
    free = [NAMES[i] for i in np.flatnonzero(result.free)]
    assert free == ["basal_glucose"]
    for i, name in enumerate(NAMES):
        if name != "basal_glucose":
            assert result.theta[i] == 0.0 and result.status(i).startswith("prior (not identifiable")


def test_predict_anchors_each_segment_at_the_cgm(base, sensitive_person):
    _, history = sensitive_person
    pred = predict(base, history, np.zeros((2, len(NAMES))))
    assert pred.shape == (2, history.steps + 1) and np.all(np.isfinite(pred))
    six_am = int(6 * 60 / history.step_min)
    assert pred[0, six_am] == pytest.approx(history.cgm_mg_dl[six_am], abs=1e-6)


def test_learned_twin_file_round_trips_and_implies_less_insulin_for_the_sensitive(base, sensitive_person, tmp_path):
    _, history = sensitive_person
    learned = learn(base, history)
    path = tmp_path / "twin.json"
    learned.save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "glucotwin.learned-twin/2"
    assert {p["name"] for p in data["parameters"]} == set(NAMES)
    twin = load_learned_twin(path, purpose="forecast")
    assert np.array_equal(twin.params.Vmx, learned.twin.params.Vmx)
    assert np.array_equal(load_learned_twin(path).params.Vmx, learned.dosing_twin.params.Vmx)
    assert twin.drop_mg_dl_per_u > 1.2 * base.twin.drop_mg_dl_per_u  # more sensitive: 1 U drops more
    assert learned.therapy.isf_mg_dl_per_u[1] > 1.2 * learned.profile_therapy.isf_mg_dl_per_u[1]
    assert learned.profile_therapy.cr_g_per_u == pytest.approx(base.twin.profile.carb_ratio_g_per_u, rel=1e-6)
    bad = dict(data, format="something else")
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="not a learned twin"):
        load_learned_twin(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps(dict(data, format="glucotwin.learned-twin/1")))
    with pytest.raises(ValueError, match="no dosing twin; run glucotwin learn again"):
        load_learned_twin(tmp_path / "old.json")


def test_meal_habits_find_the_usual_meals(base):
    history = synthetic_history(base, np.zeros(len(NAMES)), days=10, seed=3)
    habits = meal_habits(history)
    assert [round(h.minute_of_day / 60) for h in habits] == [7, 12, 19]
    assert all(0.8 <= h.per_day <= 1.1 for h in habits)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 * 24 * 3600), st.floats(0.01, 10.0)), min_size=1, max_size=40),
       st.lists(st.tuples(st.integers(0, 2 * 24 * 3600), st.floats(1, 120)), max_size=10))
def test_the_grid_keeps_every_unit_and_gram_inside_the_history(insulin, carbs):
    """Property: the history grid conserves the recorded insulin and carbs that fall inside its span."""
    cgm = [(T0 + timedelta(minutes=m), 120.0) for m in range(0, 2 * 24 * 60 + 1, 5)]
    h = build_history(cgm, [(T0 + timedelta(seconds=s), u) for s, u in insulin],
                      [(T0 + timedelta(seconds=s), g) for s, g in carbs])
    inside = lambda events: sum(a for s, a in events if s < h.steps * h.step_min * 60)  # noqa: E731
    assert h.insulin_u.sum() == pytest.approx(inside(insulin))
    assert h.carbs_g.sum() == pytest.approx(inside(carbs))
    assert len(h.cgm_mg_dl) == h.steps + 1 and np.all(h.cgm_mg_dl[np.isfinite(h.cgm_mg_dl)] == 120.0)


def test_a_history_without_insulin_needs_the_profile_basal():
    cgm = [(T0 + timedelta(minutes=m), 110.0) for m in range(0, 600, 5)]
    with pytest.raises(ValueError, match="programmed basal"):
        build_history(cgm, None, None)
    h = build_history(cgm, None, None, profile=clinical_profile("adult#001"))
    assert not h.insulin_recorded and not h.carbs_recorded
    assert h.insulin_u.sum() == pytest.approx(clinical_profile("adult#001").basal_u_per_h_at(0) * h.steps * 5 / 60)


def test_learn_from_a_real_journal(base, sensitive_person, tmp_path):
    """A journal written by the loop's own Journal class (real SQLite): readings, deliveries, announcements."""
    from controller.loop.journal import Journal
    from sim.learn.sources import load_history

    _, history = sensitive_person
    journal = Journal(tmp_path / "loop.sqlite")
    for k in range(history.steps):
        t = history.time_at(k)
        if np.isfinite(history.cgm_mg_dl[k]):
            journal.append("reading", t.isoformat(), {"time": t.isoformat(), "glucose_mg_dl": history.cgm_mg_dl[k],
                                                      "source": "test"})
        basal = base.basal_u_per_h
        bolus = max(0.0, history.insulin_u[k] - basal * history.step_min / 60.0)
        journal.append("delivery", t.isoformat(), {"basal_u_per_h": basal, "bolus_u": bolus, "minutes": 5.0})
        if history.carbs_g[k] > 0:
            journal.append("announcement", t.isoformat(), {"time": t.isoformat(), "carbs_g": history.carbs_g[k]})
    journal.close()
    loaded = load_history(tmp_path / "loop.sqlite", base.twin.profile)
    assert loaded.kind == "journal" and loaded.history.insulin_recorded and loaded.history.carbs_recorded
    assert loaded.history.insulin_u.sum() == pytest.approx(history.insulin_u.sum(), rel=1e-3)
    assert loaded.history.carbs_g.sum() == pytest.approx(history.carbs_g.sum())
    result = fit(base, loaded.history)
    assert result.residual_rmse_mg_dl < 0.6 * result.prior_rmse_mg_dl


def test_glucotwin_learn_on_a_simglucose_trace_then_trial_on_the_learned_twin(tmp_path, capsys):
    """End to end through the CLI: a real simglucose BB history, learn, and a trial with --twin."""
    from sim.cli import main

    assert main(["trial", "--controller", "bb", "--patients", "child#002", "--days", "1.5", "--seed-offset",
                 "9000", "--quiet", "--no-report", "--workers", "1", "--out", str(tmp_path / "h")]) == 0
    twins = tmp_path / "twins"
    twins.mkdir()
    assert main(["learn", str(tmp_path / "h" / "child#002.csv"), "--out", str(twins / "child#002.json")]) == 0
    out = capsys.readouterr().out
    assert "learned twin of child#002" in out and "ISF" in out and "CR, g per U" in out
    assert main(["trial", "--twin", str(twins), "--patients", "child#002", "--days", "0.25", "--quiet",
                 "--no-report", "--workers", "1", "--out", str(tmp_path / "t")]) == 0
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["controller"] == "mpc-learned"
    learning = json.loads((tmp_path / "t" / "learning.json").read_text())
    assert learning["patients"][0]["patient"] == "child#002"
    from sim.report.learned import learned_section

    assert "child#002" in learned_section(learning) and "Learned twins" in learned_section(learning)
    assert main(["trial", "--twin", str(twins), "--patients", "adult#001", "--days", "0.1", "--quiet"]) == 2
    assert "no learned twin for adult#001" in capsys.readouterr().err


def test_the_live_loop_loads_the_learned_twin_and_refuses_one_of_another_profile(base, sensitive_person, tmp_path):
    """[twin] learned in the loop's config: the twin glucotwin run doses on, checked against [profile]."""
    import dataclasses

    import tomllib

    from controller.loop.config.live_config import load_twin, parse_config, profile_to_toml
    from controller.loop.config.ranges import ConfigError

    _, history = sensitive_person
    learned = learn(base, history.last_days(1.5))
    learned.save(tmp_path / "twin.json")
    profile = base.twin.profile
    data = tomllib.loads(profile_to_toml(profile) + '\n[pump]\ntransport = "mqtt"\nkey_file = "k"\n')
    data["twin"] = {"learned": "twin.json"}
    config = parse_config(data, base=tmp_path)
    twin = load_twin(config)
    assert np.array_equal(twin.params.Vmx, learned.dosing_twin.params.Vmx) and twin.profile == config.profile
    heavier = dataclasses.replace(profile, weight_kg=profile.weight_kg + 10)
    dataclasses.replace(learned, twin=dataclasses.replace(learned.twin, profile=heavier),
                        dosing_twin=dataclasses.replace(learned.dosing_twin, profile=heavier)).save(tmp_path / "other.json")
    data["twin"] = {"learned": "other.json"}
    with pytest.raises(ConfigError, match="fitted for a profile"):
        load_twin(parse_config(data, base=tmp_path))


def test_the_onboarding_arm_learns_then_runs_and_reports_recovery(tmp_path):
    """trial --learn-days: BB history on other seeds, learned, then the trial on the learned twin, with the report."""
    from sim.cli import main

    out = tmp_path / "onboard"
    assert main(["trial", "--learn-days", "1.5", "--patients", "adult#002", "--days", "0.2", "--quiet",
                 "--workers", "1", "--out", str(out)]) == 0
    history = json.loads((out / "history" / "summary.json").read_text())
    assert history["protocol"]["seed_offset"] == 9000 and history["controller"] == "bb"
    learning = json.loads((out / "learning.json").read_text())
    entry = learning["patients"][0]
    assert entry["patient"] == "adult#002" and (out / "twins" / "adult#002.json").exists()
    assert set(entry["recovery"]["error_pct"]) == {"profile", "learned", "dosing"}
    assert entry["fit"]["rmse_6h_mg_dl"] < entry["fit"]["rmse_6h_profile_mg_dl"]
    report = (out / "report.html").read_text()
    assert "Learned twins" in report and "dosing twin: sensitivity factor" in report
