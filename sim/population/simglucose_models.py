"""simglucose's meal scenario, CGM noise and pump, reproduced for a batch of virtual patients.

The bottom layer of :mod:`sim.population`: these read simglucose's parameter
files and generators only (no population types), so every other module may use them.
"""

from __future__ import annotations

import csv
import functools
import math
from datetime import datetime, timedelta
from importlib import resources
from typing import Sequence

import numpy as np

from sim.trial.protocol import BENCHMARK_START

MIN_PER_DAY = 24 * 60
PUMP = "Insulet"


def meal_schedule(seed: int, minutes: int, start: datetime = BENCHMARK_START) -> np.ndarray:
    """Carbohydrate announced at each minute (g), ``RandomScenario(start, seed)`` as a simglucose run sees it.

    simglucose draws a new day of meals whenever the clock passes midnight
    (``RandomScenario.get_action``); a meal is announced at its minute.
    """
    from simglucose.simulation.scenario_gen import RandomScenario

    if start.time() != datetime.min.time():
        raise ValueError("populations start at midnight")
    scenario = RandomScenario(start_time=start, seed=seed)
    out = np.zeros(minutes)
    for day in range(int(math.ceil(minutes / MIN_PER_DAY))):
        scenario.get_action(start + timedelta(days=day))  # midnight: the day's meals are drawn
        meals = scenario.scenario["meal"]
        taken: set[int] = set()
        for t, amount in zip(meals["time"], meals["amount"]):
            minute = int(t)
            if minute in taken:  # simglucose's list.index finds the first meal of a minute
                continue
            taken.add(minute)
            k = day * MIN_PER_DAY + minute
            if k < minutes:
                out[k] = float(amount)
    return out


@functools.lru_cache(maxsize=None)
def sensor_parameters(name: str) -> dict[str, float]:
    """A row of simglucose's ``sensor_params.csv``."""
    with resources.files("simglucose").joinpath("params", "sensor_params.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == name:
                return {k: float(v) for k, v in row.items() if k != "Name"}
    raise ValueError(f"unknown sensor {name!r}")


@functools.lru_cache(maxsize=None)
def pump_parameters(name: str = PUMP) -> dict[str, float]:
    """A row of simglucose's ``pump_params.csv``."""
    with resources.files("simglucose").joinpath("params", "pump_params.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == name:
                return {k: float(v) for k, v in row.items() if k != "Name"}
    raise ValueError(f"unknown pump {name!r}")


_NOISE_PRECOMPUTE = 10  # simglucose CGMNoise.PRECOMPUTE
_NOISE_MODEL_MIN = 15  # simglucose CGMNoise.MDL_SAMPLE_TIME


def sensor_noise(sensor: str, seeds: Sequence[int], samples: int) -> np.ndarray:
    """CGM noise (mg/dL), shape (len(seeds), samples): simglucose's ``CGMNoise(params, seed)`` for each seed.

    The first ``samples`` values its iterator yields (the first is the noise of
    the reading at time 0), computed for the whole batch at once.
    """
    from scipy.interpolate import make_interp_spline

    prm = sensor_parameters(sensor)
    sample = prm["sample_time"]
    per_segment = int(math.floor(_NOISE_PRECOMPUTE * _NOISE_MODEL_MIN / sample))
    segments = int(math.ceil(samples / per_segment))
    points = segments * _NOISE_PRECOMPUTE + 1
    draws = np.stack([np.random.RandomState(int(s)).randn(points) for s in seeds])  # noqa: NPY002 (simglucose's generator)
    e = np.empty_like(draws)
    e[:, 0] = draws[:, 0]
    for k in range(1, points):
        e[:, k] = prm["PACF"] * (e[:, k - 1] + draws[:, k])
    eps = prm["xi"] + prm["lambda"] * np.sinh((e - prm["gamma"]) / prm["delta"])  # Johnson SU
    t15 = np.arange(_NOISE_PRECOMPUTE + 1) * float(_NOISE_MODEL_MIN)
    t = np.arange(per_segment + 1) * sample
    out = np.empty((len(seeds), segments * per_segment))
    for s in range(segments):
        block = eps[:, s * _NOISE_PRECOMPUTE: (s + 1) * _NOISE_PRECOMPUTE + 1]
        spline = make_interp_spline(t15, block.T, k=3)  # interp1d(kind="cubic")
        out[:, s * per_segment: (s + 1) * per_segment] = spline(t)[1:].T
    return out[:, :samples]


def pump_u_per_min(rate_u_per_min: np.ndarray, kind: str, pump: str = PUMP) -> np.ndarray:
    """simglucose ``InsulinPump.basal``/``.bolus`` for a batch: round to the increment, clip to the limits."""
    prm = pump_parameters(pump)
    inc, low, high = prm[f"inc_{kind}"], prm[f"min_{kind}"], prm[f"max_{kind}"]
    pmol = np.round(np.asarray(rate_u_per_min, dtype=float) * 6000.0 / inc) * inc
    return np.clip(pmol / 6000.0, low, high)
