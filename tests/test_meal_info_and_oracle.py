"""What a trial tells the controller about meals (late announcements), and the oracle reference."""

from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.trial.cohort import clinical_profile, simulator_parameters
from sim.trial.meal_info import MealInformation
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import simulate_patient

START = datetime(2025, 1, 1)


def _announce(meals_g_per_min, info: MealInformation, sample_min: float = 3.0) -> np.ndarray:
    return np.array([info.announced_g_per_min(START + timedelta(minutes=i * sample_min), m, sample_min)
                     for i, m in enumerate(meals_g_per_min)])


def test_fcl_is_told_nothing_and_hcl_at_meal_time():
    meals = [0.0, 10.0, 5.0, 0.0]
    assert _announce(meals, MealInformation(announce=False)).sum() == 0.0
    np.testing.assert_allclose(_announce(meals, MealInformation(announce=True, factor=1.3)), 1.3 * np.array(meals))


def test_a_late_announcement_comes_whole_after_the_delay():
    told = _announce([0.0, 10.0, 5.0] + [0.0] * 12, MealInformation(announce=True, delay_min=30.0))
    # eaten at minutes 3 and 6 (30 g and 15 g); told at minutes 33 and 36, same amounts
    assert told[:11].sum() == 0.0
    assert told[11] * 3 == pytest.approx(30.0) and told[12] * 3 == pytest.approx(15.0)
    assert told[13:].sum() == 0.0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 20.0)), min_size=1, max_size=80),
       st.floats(0.0, 120.0), st.sampled_from([1.0, 3.0, 5.0]), st.floats(0.5, 1.5))
def test_late_announcements_never_come_early_and_lose_nothing(meals, delay_min, sample_min, factor):
    info = MealInformation(announce=True, factor=factor, delay_min=delay_min)
    meals = meals + [0.0] * int(delay_min // sample_min + 2)
    told = _announce(meals, info, sample_min)
    eaten_g = np.cumsum(np.array(meals) * sample_min) * factor
    told_g = np.cumsum(told * sample_min)
    assert told_g[-1] == pytest.approx(eaten_g[-1], rel=1e-9, abs=1e-9)  # nothing lost
    for i, total in enumerate(told_g):  # by minute t, at most what was eaten by minute t - delay
        eaten_before = eaten_g[int((i * sample_min - delay_min) // sample_min)] \
            if i * sample_min - delay_min >= 0 else 0.0
        assert total <= eaten_before + 1e-9


def test_meal_delay_is_validated_and_reaches_the_controller_late():
    with pytest.raises(ValueError, match="meal delay"):
        TrialProtocol(meal_delay_min=-1)
    with pytest.raises(ValueError, match="meal delay"):
        MealInformation(announce=True, delay_min=float("nan"))
    assert TrialProtocol(meal_delay_min=30).to_dict()["meal_delay_min"] == 30
    on_time = simulate_patient("adult#006", "bb", TrialProtocol(days=0.5))
    late = simulate_patient("adult#006", "bb", TrialProtocol(days=0.5, meal_delay_min=30))
    first_meal = int(np.flatnonzero(np.nan_to_num(on_time.trace.carbs_g) > 0)[0])
    bolus_on_time = int(np.flatnonzero(np.nan_to_num(on_time.trace.insulin_u) > 0.5)[0])
    bolus_late = int(np.flatnonzero(np.nan_to_num(late.trace.insulin_u) > 0.5)[0])
    assert first_meal <= bolus_on_time <= first_meal + 1  # BB boluses when told (next sample at most)
    assert bolus_late == bolus_on_time + 10  # told 30 min later: 10 samples of 3 min
    assert late.trace.bg_mg_dl.max() > on_time.trace.bg_mg_dl.max()


def test_the_oracle_twin_is_the_simulator_patient_and_runs_a_trial():
    from sim.trial.oracle import oracle_twin

    row = simulator_parameters("child#008")
    twin = oracle_twin(clinical_profile("child#008"))
    for name in ("Vmx", "kp3", "kabs", "kmax", "ka1", "ka2", "kd", "BW"):
        assert float(getattr(twin.params, name)[0]) == pytest.approx(float(row[name]))
    assert twin.basal_glucose_mg_dl == pytest.approx(float(row["Gb"]))
    run = simulate_patient("child#008", "mpc-oracle", TrialProtocol(days=0.25, seed_offset=100))
    assert np.all(np.isfinite(run.trace.bg_mg_dl)) and run.trace.bg_mg_dl.min() > 54
    assert run.trace.diagnostics["reason"][0]


def test_the_cli_labels_oracle_runs(tmp_path, capsys):
    from sim.cli import main

    assert main(["trial", "--controller", "mpc-oracle", "--patients", "adult#001", "--days", "0.05", "--quiet",
                 "--no-report", "--out", str(tmp_path / "o")]) == 0
    assert "NOT a fair controller" in capsys.readouterr().out


def test_no_control_path_module_builds_the_oracle():
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    for package in ("controller", "twin", "sensors", "firmware_bridge"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            assert "sim.trial.oracle" not in text and "simulator_parameters" not in text, path
            assert "twin_parameters" not in text and "sim.learn.recovery" not in text, path
    for path in (root / "sim" / "learn").glob("*.py"):  # the learner: only validation reads the truth
        if path.name not in ("recovery.py", "onboarding.py"):
            text = path.read_text()
            assert "twin_parameters" not in text and "simulator_parameters" not in text, path
            assert "recovery" not in text, path
    for path in (root / "sim").glob("*.py"):  # only the trial's controller table names it
        if path.name not in ("oracle.py", "baselines.py"):
            assert "sim.trial.oracle" not in path.read_text(), path


def test_glucotwin_decides_the_same_whatever_the_patients_hidden_simulator_parameters(monkeypatch):
    """Honesty rule: the trial's controller (prior, personalization, estimator, MPC, supervisor) sees a
    patient's clinical profile only. Change every simulator parameter of adult#004 except those its
    clinical profile is made of (body weight and u2ss for the programmed basal): the twin it builds
    and its doses over a day with a meal are the same to the bit."""
    from datetime import datetime, timedelta

    import sim.trial.cohort as cohort
    import sim.trial.priors as priors
    from controller.policy import ControlInput
    from sim.trial.controllers import SimglucoseController

    def doses(scale: float) -> list[tuple]:
        real = cohort.simulator_parameters.__wrapped__ if hasattr(cohort.simulator_parameters, "__wrapped__") \
            else cohort.simulator_parameters

        def hidden_changed(name: str):
            row = real(name).copy()
            if name == "adult#004":
                for key in row.index:
                    if key not in ("Name", "BW", "u2ss") and isinstance(row[key], float):
                        row[key] = row[key] * scale
            return row

        monkeypatch.setattr(cohort, "simulator_parameters", hidden_changed)
        monkeypatch.setattr(priors, "simulator_parameters", hidden_changed)
        priors._cohort.cache_clear()
        cohort._clinical_values.cache_clear()
        controller = SimglucoseController()
        policy = controller._build(cohort.clinical_profile("adult#004"))
        start, out = datetime(2025, 1, 1, 6, 0), []
        for k in range(96):  # 8 h of 5-min cycles, a 50 g meal at 07:00, glucose rising then falling
            glucose = 130.0 + 60.0 * max(0.0, 1.0 - abs(k - 30) / 25.0)
            dose = policy.decide(ControlInput(start + timedelta(minutes=5 * k), glucose,
                                              announced_carbs_g=50.0 if k == 12 else 0.0, cycle_min=5.0))
            out.append((dose.basal_u_per_h, dose.bolus_u, dose.reason))
        return out

    same, changed = doses(1.0), doses(1.3)
    priors._cohort.cache_clear()
    cohort._clinical_values.cache_clear()
    assert any(bolus > 0 for _, bolus, _ in same)  # the day did ask the controller for insulin
    assert changed == same
