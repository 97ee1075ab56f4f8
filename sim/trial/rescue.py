"""Following the loop's advice in a trial: the virtual patient eats the rescue carbs it is told to.

With ``TrialProtocol.follow_advice`` the patient eats the grams of each *new* carbohydrate
advice (:mod:`controller.advice`, kind ``carbs``, ``new`` true) at the minute it is given
("eat now"). A standing advice that is not new (the same advice in the cycles after it, until
``repeat_min`` passes) is not eaten again: the person ate and waits, as people are told to.

The rescue is eaten, not announced: the controller is never told (in HCL the runner takes the
rescue out of the meal information it passes on). The loop learns of it only through the CGM,
as it would of any unannounced snack. The rescue goes into the simulator as a meal, absorbed
by the patient's own gut model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from simglucose.simulation.scenario import Action


class RescueScenario:
    """A simglucose scenario (the protocol's meals) plus rescue carbs eaten when advised.

    Delegates everything to the wrapped scenario and adds, at the minutes given to
    :meth:`eat`, the rescue grams (simglucose queues a meal and eats it at 5 g/min).
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self._due: dict[datetime, float] = {}
        self.eaten: list[tuple[datetime, float]] = []  # (minute, grams) of rescues handed to the patient

    @property
    def start_time(self) -> datetime:
        return self.base.start_time

    def eat(self, time: datetime, carbs_g: float) -> None:
        """The patient eats ``carbs_g`` at ``time`` (rounded down to the simulator's minute)."""
        if carbs_g > 0:
            minute = time.replace(second=0, microsecond=0)
            self._due[minute] = self._due.get(minute, 0.0) + float(carbs_g)

    def rescue_g(self, start: datetime, minutes: float) -> float:
        """Rescue grams handed to the patient in ``[start, start + minutes)``."""
        end = start + timedelta(minutes=minutes)
        return sum(g for t, g in self.eaten if start <= t < end)

    def get_action(self, t: datetime) -> Action:
        meal = float(self.base.get_action(t).meal)
        rescue = self._due.pop(t, 0.0)
        if rescue:
            self.eaten.append((t, rescue))
        return Action(meal=meal + rescue)

    def reset(self) -> None:
        self.base.reset()
        self._due.clear()
        self.eaten.clear()


def least_sufficient_g(env: Any, ctrl: Any, meals: Any, action: Any, *, max_g: float, step_g: float = 5.0,
                       from_min: float = 30.0, window_min: float = 120.0, low_mg_dl: float = 70.0) -> float | None:
    """The least rescue (a multiple of ``step_g`` up to ``max_g``), eaten now, that keeps the
    patient's true BG at or above ``low_mg_dl`` from ``from_min`` to ``window_min`` after now.

    A counterfactual on deep copies of the run at a new advice (``rescue_probe`` of
    :func:`sim.trial.runner.simulate_patient`): the controller decides as it would (it is not
    told of the rescue), this cycle's ``action`` is applied, and no other rescue is eaten in the
    window. 0 means the low would not have come; None means even ``max_g`` was not enough.
    Validation only: it reads the simulator's true BG.
    """
    grams = 0.0
    while grams <= max_g + 1e-9:
        if _min_true_bg(env, ctrl, meals, action, grams, from_min, window_min) >= low_mg_dl:
            return grams
        grams += step_g
    return None


def _min_true_bg(env: Any, ctrl: Any, meals: Any, action: Any, grams: float, from_min: float,
                 window_min: float) -> float:
    from copy import deepcopy

    env, ctrl, meals = deepcopy((env, ctrl, meals))
    start = env.time
    env.scenario.eat(start, grams)
    lowest = float("inf")
    obs, reward, done, info = env.step(action)
    while True:
        elapsed = (env.time - start).total_seconds() / 60.0
        if elapsed >= from_min:
            lowest = min(lowest, float(env.BG_hist[-1]))
        if elapsed >= window_min:
            return lowest
        meal = float(info.get("meal", 0.0) or 0.0)
        step_start = info["time"] - timedelta(minutes=env.sample_time)
        meal = max(meal - env.scenario.rescue_g(step_start, env.sample_time) / env.sample_time, 0.0)
        info = dict(info, meal=meals.announced_g_per_min(info["time"], meal, env.sample_time))
        action = ctrl.policy(obs, reward, done, **info)
        obs, reward, done, info = env.step(action)
