"""Forecast accuracy of the twin in closed-loop simglucose runs (unannounced meals).

Each patient runs basal-only in the fully-closed-loop arm; at every CGM
sample the twin estimator (personalized from the clinical profile with a
leave-one-out prior) takes the reading and forecasts glucose. Forecasts are
compared with the true blood glucose at their target times.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

import numpy as np

from controller.baselines import BasalOnly
from controller.policy import ControlInput, Dose
from sim.trial.adapter import PolicyController
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import PatientRun, run_patients
from twin.estimator import EstimatorSettings, TwinEstimator
from twin.forecast_blend import BLEND_COVERAGE
from twin.personalize import personalize

HORIZONS_MIN = (30, 60)


class ObservedBasal:
    """Programmed basal, with the twin estimator following along and forecasting."""

    def __init__(self, patient: str, settings: EstimatorSettings | None = None) -> None:
        self.profile = clinical_profile(patient)
        self.twin = personalize(self.profile, population_prior(exclude=patient))
        self.settings = settings
        self.basal = BasalOnly(self.profile)
        self.estimator: TwinEstimator | None = None

    def reset(self) -> None:
        self.estimator = None

    def decide(self, inp: ControlInput) -> Dose:
        if self.estimator is None:
            self.estimator = TwinEstimator(self.twin, inp.time, self.settings)
        est = self.estimator
        if inp.announced_carbs_g:
            est.add_carbs(inp.announced_carbs_g)
        outcome = est.update(inp.time, inp.cgm_mg_dl)
        forecast = est.forecast(horizon_min=max(HORIZONS_MIN), step_min=5.0)
        dose = self.basal.decide(inp)
        est.set_basal(dose.basal_u_per_h)
        diagnostics = {f"forecast_{h}_mg_dl": forecast.at(h)[0] for h in HORIZONS_MIN}
        diagnostics.update({
            "twin_glucose_mg_dl": est.glucose_mg_dl,
            "disturbance_mg_per_kg_min": est.disturbance_mg_per_kg_min,
            "sensitivity_factor": est.sensitivity_factor,
            "reading_accepted": float(outcome.accepted),
        })
        return Dose(dose.basal_u_per_h, 0.0, dose.reason, diagnostics=diagnostics)


def observed_basal_controller(patient: str, arm: str):
    return PolicyController(ObservedBasal(patient), meal_announcement=arm == "hcl")


class ObservedMPC:
    """glucotwin's controller, with the twin's 30/60-minute forecasts recorded after each decision."""

    def __init__(self, patient: str) -> None:
        from controller.twin_policy import TwinMPCPolicy

        self.inner = TwinMPCPolicy(personalize(clinical_profile(patient), population_prior(exclude=patient)))

    def reset(self) -> None:
        self.inner.reset()

    def decide(self, inp: ControlInput) -> Dose:
        dose = self.inner.decide(inp)
        est = self.inner.estimator
        diagnostics = dict(dose.diagnostics)
        if est is not None and est.readings_accepted:
            forecast = est.forecast(horizon_min=max(HORIZONS_MIN), step_min=5.0)
            diagnostics.update({f"forecast_{h}_mg_dl": forecast.at(h)[0] for h in HORIZONS_MIN})
        else:
            diagnostics.update({f"forecast_{h}_mg_dl": None for h in HORIZONS_MIN})
        return Dose(dose.basal_u_per_h, dose.bolus_u, dose.reason, diagnostics=diagnostics)


def observed_mpc_controller(patient: str, arm: str):
    return PolicyController(ObservedMPC(patient), meal_announcement=arm == "hcl")


CONTROLLERS = {"basal": observed_basal_controller, "mpc": observed_mpc_controller}


SENSOR_RANGE_MG_DL = (39.0, 600.0)


def _counted_pairs(run: PatientRun, horizon_min: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(n, twin forecasts issued at samples 0..n-1, true BG at their targets, which pairs count)."""
    trace = run.trace
    lag = int(round(horizon_min / trace.sample_min))
    n = max(len(trace) - lag, 0)
    forecasts = np.array([np.nan if v is None else float(v)
                          for v in trace.diagnostics[f"forecast_{horizon_min}_mg_dl"][:n]])
    low, high = SENSOR_RANGE_MG_DL
    truth, issued_from = trace.bg_mg_dl[lag:], trace.cgm_mg_dl[:n]
    valid = (truth > low) & (truth < high) & (issued_from > low) & (issued_from < high) & np.isfinite(forecasts)
    return n, forecasts, truth, valid


def forecast_errors(run: PatientRun, horizon_min: int) -> np.ndarray:
    """Forecast minus true BG at the target time.

    Counted: every forecast whose target time is in the run, issued from a
    CGM reading inside the sensor's range, with the true BG at the target
    inside that range too. (simglucose's CGM saturates at 39 and 600 mg/dL
    while untreated virtual children reach over 1,000 mg/dL: no forecaster
    that sees only the CGM can follow glucose it cannot measure.)
    """
    _, forecasts, truth, valid = _counted_pairs(run, horizon_min)
    return (forecasts - truth)[valid]


def baseline_errors(run: PatientRun, horizons_min: tuple[int, ...]) -> dict[int, dict[str, np.ndarray]]:
    """glucotwin replay's baselines (:class:`~twin.forecaster.Persistence`,
    :class:`~twin.forecaster.LinearExtrapolation`) fed the run's CGM once, minus
    true BG, per horizon on exactly the pairs :func:`forecast_errors` counts for the twin."""
    from twin.forecaster import LinearExtrapolation, Persistence

    trace = run.trace
    methods = (Persistence(), LinearExtrapolation())
    forecasts = {(m.name, h): np.full(len(trace), np.nan) for m in methods for h in horizons_min}
    for i in range(len(trace)):
        if not np.isfinite(trace.cgm_mg_dl[i]):
            continue
        for method in methods:
            method.observe(trace.time[i].replace(tzinfo=timezone.utc), float(trace.cgm_mg_dl[i]))
            for point in method.forecast(horizons_min):
                forecasts[method.name, int(point.horizon_min)][i] = point.forecast_mg_dl
    out: dict[int, dict[str, np.ndarray]] = {}
    for h in horizons_min:
        n, _, truth, valid = _counted_pairs(run, h)
        out[h] = {m.name: (forecasts[m.name, h][:n] - truth)[valid] for m in methods}
    return out


class RecordedForecasts:
    """A :class:`~twin.forecaster.Forecaster` that gives back the forecasts a run recorded.

    The closed loop's twin (the MPC's estimator, which knows every dose the
    loop delivered) issued ``forecast_H_mg_dl`` at each sample; this replays
    them by the time of the reading observed, so a blend can be fed the
    twin's forecasts exactly as they were issued, with no band (``lower =
    upper = forecast``).
    """

    name = "twin-recorded"

    def __init__(self, by_time: dict[Any, dict[float, float]]) -> None:
        self.by_time = by_time
        self._now: dict[float, float] = {}

    def reset(self) -> None:
        self._now = {}

    def observe(self, time, glucose_mg_dl: float) -> None:
        self._now = self.by_time.get(time, {})

    def forecast(self, horizons_min):
        from twin.forecaster import ForecastPoint

        return [ForecastPoint(h, self._now[h], self._now[h], self._now[h]) for h in horizons_min if h in self._now]


def _recorded_twin(run: PatientRun, horizons_min: tuple[int, ...]) -> RecordedForecasts:
    trace = run.trace
    by_time: dict[Any, dict[float, float]] = {}
    for i, t in enumerate(trace.time):
        row = {}
        for h in horizons_min:
            value = trace.diagnostics[f"forecast_{h}_mg_dl"][i]
            if value is not None and np.isfinite(value):
                row[float(h)] = float(value)
        by_time[t.replace(tzinfo=timezone.utc)] = row
    return RecordedForecasts(by_time)


def blend_errors(run: PatientRun, horizons_min: tuple[int, ...], settings: Any = None) -> dict[int, dict[str, np.ndarray]]:
    """The blend (:class:`~twin.forecast_blend.BlendForecaster` around the twin's recorded
    forecasts) fed the run's CGM once: per horizon its errors (``blend``) and whether its
    80 % band held the true BG (``inside``, 1.0 or 0.0), on the pairs :func:`forecast_errors` counts.
    ``settings``: :class:`~twin.forecast_blend.BlendSettings` (default: the defaults)."""
    from twin.forecast_blend import BlendForecaster

    trace = run.trace
    blend = BlendForecaster(_recorded_twin(run, horizons_min), settings)
    shape = len(trace)
    point = {h: np.full(shape, np.nan) for h in horizons_min}
    lower = {h: np.full(shape, np.nan) for h in horizons_min}
    upper = {h: np.full(shape, np.nan) for h in horizons_min}
    for i in range(shape):
        if not np.isfinite(trace.cgm_mg_dl[i]):
            continue
        blend.observe(trace.time[i].replace(tzinfo=timezone.utc), float(trace.cgm_mg_dl[i]))
        for p in blend.forecast([float(h) for h in horizons_min]):
            h = int(p.horizon_min)
            point[h][i], lower[h][i], upper[h][i] = p.forecast_mg_dl, p.lower_mg_dl, p.upper_mg_dl
    out: dict[int, dict[str, np.ndarray]] = {}
    for h in horizons_min:
        n, _, truth, valid = _counted_pairs(run, h)
        inside = (lower[h][:n] <= truth) & (truth <= upper[h][:n])
        out[h] = {"blend": (point[h][:n] - truth)[valid], "inside": inside[valid].astype(float)}
    return out


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err**2))) if err.size else float("nan")


def forecast_accuracy(patients: list[str], days: float = 3.0, seed_offset: int = 0, workers: int | None = None,
                      progress: bool = False, controller: str = "basal") -> dict[str, Any]:
    """RMSE (mg/dL) per horizon, per patient and pooled over all forecasts, FCL arm.

    ``controller``: ``basal`` (programmed basal only) or ``mpc`` (glucotwin's closed loop).
    Beside the twin (``rmse_H_mg_dl``), on the same runs: persistence
    (``persistence_rmse_H_mg_dl``), linear extrapolation
    (``linear_rmse_H_mg_dl``), the blend around the twin's forecasts
    (``blend_rmse_H_mg_dl``, :func:`blend_errors`; the share of true BG inside its
    80 % band: ``blend_band_coverage_H``) and the floor set by unannounced future
    meals alone (``floor_rmse_H_mg_dl``, :mod:`sim.forecast.floor`).
    """
    protocol = TrialProtocol(arm="fcl", days=days, seed_offset=seed_offset)
    runs = run_patients(patients, CONTROLLERS[controller], protocol, workers=workers, progress=progress)
    return score_runs(runs, protocol, controller)


def score_runs(runs: list[PatientRun], protocol: TrialProtocol, controller: str) -> dict[str, Any]:
    """The figures of :func:`forecast_accuracy` for runs already made with ``CONTROLLERS[controller]``."""
    from sim.forecast.floor import oracle_errors

    result: dict[str, Any] = {"protocol": protocol.to_dict(), "controller": controller, "patients": {}, "pooled": {}}
    kinds = ("", "persistence_", "linear_", "blend_", "floor_")
    pooled: dict[str, list[np.ndarray]] = {f"{k}{h}": [] for k in kinds for h in HORIZONS_MIN}
    inside: dict[int, list[np.ndarray]] = {h: [] for h in HORIZONS_MIN}
    for run in runs:
        row = {}
        floor = oracle_errors(run, protocol, HORIZONS_MIN, SENSOR_RANGE_MG_DL)
        baselines = baseline_errors(run, HORIZONS_MIN)
        blend = blend_errors(run, HORIZONS_MIN)
        for h in HORIZONS_MIN:
            base = baselines[h]
            errors = {"": forecast_errors(run, h), "persistence_": base["persistence"], "linear_": base["linear"],
                      "blend_": blend[h]["blend"], "floor_": floor[h]}
            for kind, err in errors.items():
                pooled[f"{kind}{h}"].append(err)
                row[f"{kind}rmse_{h}_mg_dl"] = _rmse(err)
            inside[h].append(blend[h]["inside"])
            row[f"blend_band_coverage_{h}"] = float(np.mean(blend[h]["inside"])) if blend[h]["inside"].size else None
        result["patients"][run.patient] = row
    for kind in kinds:
        for h in HORIZONS_MIN:
            err = np.concatenate(pooled[f"{kind}{h}"])
            result["pooled"][f"{kind}rmse_{h}_mg_dl"] = _rmse(err)
            result["pooled"][f"{kind}n_{h}"] = int(err.size)
    for h in HORIZONS_MIN:
        held = np.concatenate(inside[h])
        result["pooled"][f"blend_band_coverage_{h}"] = float(np.mean(held)) if held.size else float("nan")
    result["blend_band_nominal"] = BLEND_COVERAGE
    return result
