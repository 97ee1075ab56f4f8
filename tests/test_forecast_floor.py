"""The oracle floor of forecast error (sim/forecast/floor.py), on a real simglucose run."""

import numpy as np
import pytest

from sim.forecast.closed_loop import CONTROLLERS, baseline_errors, forecast_errors
from sim.forecast.floor import oracle_errors, scenario_carbs_per_min
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import run_patients

RANGE = (39.0, 600.0)


@pytest.fixture(scope="module")
def fcl_run():
    protocol = TrialProtocol(arm="fcl", days=0.5)
    (run,) = run_patients(["adult#002"], CONTROLLERS["basal"], protocol, workers=1, progress=False)
    return run, protocol


def test_the_oracle_is_exact_until_a_meal_starts_in_its_window(fcl_run):
    """It knows everything but future meal onsets, so its error is zero (to the insulin's spreading
    over each sample interval) where no meal starts between issue and target, and large where one does."""
    run, protocol = fcl_run
    minutes = (len(run.trace) - 1) * 3
    onsets = np.flatnonzero(scenario_carbs_per_min(protocol, run.patient, minutes) > 0)
    assert onsets.size >= 2  # the half-day scenario has meals to miss
    err = oracle_errors(run, protocol, (60,), RANGE)[60]
    issued = np.arange(0, minutes - 60 + 1, 3)
    meal_in_window = np.array([np.any((onsets > t) & (onsets <= t + 60)) for t in issued])
    assert err.size == issued.size  # basal-only adult#002 stays inside the sensor range
    assert np.max(np.abs(err[~meal_in_window])) < 1e-6
    assert np.sqrt(np.mean(err[meal_in_window] ** 2)) > 10.0
    assert np.mean(err[meal_in_window]) < -5.0  # a missed meal makes the oracle low


def test_the_twin_sits_between_the_floor_and_the_baselines(fcl_run):
    run, protocol = fcl_run
    floor = oracle_errors(run, protocol, (30, 60), RANGE)
    baselines = baseline_errors(run, (30, 60))
    for h in (30, 60):
        twin = forecast_errors(run, h)
        base = baselines[h]
        rmse = {k: float(np.sqrt(np.mean(v**2))) for k, v in
                {"twin": twin, "floor": floor[h], **base}.items()}
        assert rmse["floor"] < rmse["twin"] < min(rmse["persistence"], rmse["linear"]), (h, rmse)
