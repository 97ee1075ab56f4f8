"""Construction of simglucose environments for the benchmark protocol.

Everything that touches simglucose's simulator objects lives here and in
:mod:`sim.trial.adapter`; the rest of glucotwin never sees a ``T1DPatient``.

``FastT1DPatient`` is simglucose's own ``T1DPatient`` (same equations, same
``dopri5`` integrator, same meal logic) with one change: the model right-hand
side reads its parameters from a plain attribute namespace instead of a
``pandas.Series``. The arithmetic is the same float64 arithmetic on the same
values, so trajectories are identical (checked in the tests against a stock
simglucose run), and a patient-day costs roughly a third of the time.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pandas as pd
from simglucose.actuator.pump import InsulinPump
from simglucose.patient.t1dpatient import T1DPatient
from simglucose.sensor.cgm import CGMSensor
from simglucose.simulation.env import T1DSimEnv
from simglucose.simulation.scenario_gen import RandomScenario

from sim.trial.cohort import simulator_parameters


class _Params(SimpleNamespace):
    """Attribute view of one row of simglucose's ``vpatient_params.csv``."""


def _fast_params(series: pd.Series) -> _Params:
    return _Params(**{str(k): v for k, v in series.items()})


class FastT1DPatient(T1DPatient):
    """simglucose's ``T1DPatient`` with attribute-namespace parameters."""

    def __init__(self, params: pd.Series, **kwargs):
        self._series = params
        super().__init__(params, **kwargs)

    def reset(self):
        # simglucose's reset slices the pandas row (iloc[2:15]) for the
        # initial state; give it the Series, then swap in the fast view.
        self._params = self._series
        super().reset()
        self._params = _fast_params(self._series)

    @classmethod
    def withName(cls, name: str, **kwargs) -> "FastT1DPatient":  # noqa: N802 (simglucose API)
        return cls(simulator_parameters(name), **kwargs)


def make_env(
    patient_name: str,
    seed: int,
    start: datetime,
    sensor_name: str = "Dexcom",
    pump_name: str = "Insulet",
    fast: bool = True,
    physiology_scale: tuple[tuple[str, float], ...] = (),
) -> T1DSimEnv:
    """The benchmark environment for one virtual patient.

    ``RandomScenario(start_time=start, seed=seed)``,
    ``CGMSensor.withName(sensor_name, seed=seed)``,
    ``InsulinPump.withName(pump_name)``. With ``fast=False`` the stock
    ``T1DPatient`` is used (for cross-checks). ``physiology_scale`` multiplies
    simulator parameters (e.g. ``(("Vmx", 1.4), ("kp3", 1.4))``: a patient more
    sensitive to insulin than the clinical profile says); the controller is not told.
    """
    patient_cls = FastT1DPatient if fast else T1DPatient
    if physiology_scale:
        params = simulator_parameters(patient_name).copy()
        for name, factor in physiology_scale:
            params[name] = float(params[name]) * factor
        patient = patient_cls(params)
    else:
        patient = patient_cls.withName(patient_name)
    sensor = CGMSensor.withName(sensor_name, seed=seed)
    pump = InsulinPump.withName(pump_name)
    scenario = RandomScenario(start_time=start, seed=seed)
    return T1DSimEnv(patient, sensor, pump, scenario)
