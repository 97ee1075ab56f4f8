"""How low forecast error can go when meals are not announced: an oracle's floor.

An oracle forecaster knows everything about the virtual patient except when
the next meal starts: the simulator's own parameters and state, every meal
that has already started, and all the insulin the closed loop will deliver.
Its error is what unannounced future meals alone cost, with no sensor noise,
no estimation error and no model mismatch. A forecaster that sees only the
CGM cannot beat it (short of guessing meal times), so it tells how far a
measured forecast RMSE is from what is possible.

Per patient, the trial's own meals (``RandomScenario`` with the trial's seed)
and the insulin the trace records (spread evenly over each sample interval)
drive the twin model with the simulator's parameters (it matches simglucose
to 0.03 mg/dL with identical inputs). One trajectory is simulated per number
of meals started so far (k = 0..K); the oracle forecast issued at t is the
trajectory with exactly the meals that started by t, read at t + h.

This is validation glue: it reads the simulator's parameter rows, which a
controller must never do (DESIGN.md honesty rules).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from simglucose.simulation.scenario_gen import RandomScenario

from sim.trial.cohort import twin_parameters
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import PatientRun
from twin.model import simulate


def scenario_carbs_per_min(protocol: TrialProtocol, patient: str, minutes: int) -> np.ndarray:
    """Grams announced at each minute of the trial's scenario for ``patient``."""
    scenario = RandomScenario(start_time=protocol.start, seed=protocol.seed_for(patient))
    return np.array([float(scenario.get_action(protocol.start + timedelta(minutes=m)).meal) for m in range(minutes)])


def oracle_errors(run: PatientRun, protocol: TrialProtocol, horizons_min: tuple[int, ...],
                  sensor_range_mg_dl: tuple[float, float]) -> dict[int, np.ndarray]:
    """Oracle forecast minus truth per horizon, counted like the twin's (both ends inside the sensor range)."""
    trace = run.trace
    step = int(round(trace.sample_min))
    minutes = (len(trace) - 1) * step
    carbs = scenario_carbs_per_min(protocol, run.patient, minutes)
    insulin = np.repeat(np.nan_to_num(trace.insulin_u[:-1]) / trace.sample_min, step)[:minutes]
    onsets = np.flatnonzero(carbs > 0)
    k_max = onsets.size
    known = np.zeros((k_max + 1, minutes))
    for k in range(1, k_max + 1):
        known[k, onsets[:k]] = carbs[onsets[:k]]
    params, x0 = twin_parameters([run.patient])
    rows = np.zeros(k_max + 1, dtype=int)
    glucose = simulate(params.take(rows), np.repeat(x0, k_max + 1, axis=0), known, insulin[None, :],
                       dt_min=1.0).glucose_mg_dl
    truth = glucose[k_max]
    low, high = sensor_range_mg_dl
    out = {}
    for h in horizons_min:
        issued = np.arange(0, minutes - h + 1, step)
        meals_known = np.searchsorted(onsets, issued, side="right")
        forecast, actual = glucose[meals_known, issued + h], truth[issued + h]
        valid = (actual > low) & (actual < high) & (truth[issued] > low) & (truth[issued] < high)
        out[h] = (forecast - actual)[valid]
    return out
