"""A learned twin: the fit's result as a file (``twin.json``), and the twin it gives the loop.

The file is self-contained: besides the fitted factors, their uncertainty
and what the fit could identify, it holds two full twins (model parameters,
basal state), so loading it needs neither the population prior nor the
history:

- ``twin``: the fit as it is, for forecasts (``glucotwin replay --twin``);
- ``dosing_twin``: the fit taken only in the directions that give less
  insulin than the profile's twin (:mod:`twin.learning.trust`), for the
  control path (``glucotwin run``, ``glucotwin trial --twin``).

Format ``glucotwin.learned-twin/2`` (``/1`` files, which had no dosing twin,
are refused with the command that rewrites them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twin.learning.fit import NAMES, PARAMETERS, FitResult, TwinBase, fit
from twin.learning.habits import MealHabit, meal_habits
from twin.learning.history import History
from twin.learning.therapy import Therapy, implied_therapy
from twin.learning.trust import DOSING_RULES, dosing_theta
from twin.personalize import Twin

FORMAT = "glucotwin.learned-twin/2"
PURPOSES = ("dosing", "forecast")


@dataclass(frozen=True)
class LearnedTwin:
    twin: Twin
    dosing_twin: Twin
    theta: dict[str, float]
    sd: dict[str, float]
    status: dict[str, str]
    therapy: Therapy
    profile_therapy: Therapy
    habits: tuple[MealHabit, ...]
    fit_stats: dict[str, Any]
    history_stats: dict[str, Any] = field(default_factory=dict)
    dosing_theta: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        t = self.twin
        return {
            "format": FORMAT,
            "profile": t.profile.to_dict(),
            "parameters": [{"name": p.name, "meaning": p.meaning, "prior_sd": p.prior_sd,
                            "value": round(self.theta[p.name], 4), "sd": round(self.sd[p.name], 4),
                            "factor": round(float(np.exp(self.theta[p.name])), 4), "status": self.status[p.name]}
                           for p in PARAMETERS],
            "therapy": {"learned": self.therapy.to_dict(), "profile": self.profile_therapy.to_dict()},
            "meal_habits": [h.to_dict() for h in self.habits],
            "fit": self.fit_stats,
            "history": self.history_stats,
            "twin": t.to_dict(),
            "dosing": {"rules": DOSING_RULES,
                       "factors": {n: round(float(np.exp(v)), 4) for n, v in self.dosing_theta.items()}},
            "dosing_twin": self.dosing_twin.to_dict(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")


def learn(base: TwinBase, history: History) -> LearnedTwin:
    """Fit ``history`` and package the result."""
    result: FitResult = fit(base, history)
    theta = {n: float(v) for n, v in zip(NAMES, result.theta)}
    sd = {n: float(v) for n, v in zip(NAMES, result.sd)}
    status = {n: result.status(i) for i, n in enumerate(NAMES)}
    stats = {"rmse_6h_mg_dl": round(result.residual_rmse_mg_dl, 2),
             "rmse_6h_profile_mg_dl": round(result.prior_rmse_mg_dl, 2),
             "residual_lag1_autocorrelation": round(result.residual_autocorr, 3),
             "readings_scored": result.readings_used, "evaluations": result.evaluations,
             "method": "MAP, scipy.optimize.least_squares (trf, soft-L1), anchored 6-h segments"}
    history_stats = {"start": history.start.isoformat(), "days": round(history.days, 2),
                     "readings": history.readings, "insulin_recorded": history.insulin_recorded,
                     "carbs_recorded": history.carbs_recorded}
    therapy, profile_therapy = implied_therapy(base, result.theta), implied_therapy(base, np.zeros(len(NAMES)))
    # Only what the records can tell changes: without insulin records the fit says nothing about ISF or
    # CR (the model's ratios would still move with the basal glucose, through its nonlinearity).
    if not history.insulin_recorded:
        therapy = dataclasses.replace(therapy, isf_mg_dl_per_u=profile_therapy.isf_mg_dl_per_u,
                                      cr_g_per_u=profile_therapy.cr_g_per_u)
    elif not history.carbs_recorded:
        therapy = dataclasses.replace(therapy, cr_g_per_u=profile_therapy.cr_g_per_u)
    dosing = dosing_theta(result.theta)
    return LearnedTwin(base.learned_twin(result.theta), base.learned_twin(dosing), theta, sd, status, therapy,
                       profile_therapy, tuple(meal_habits(history)), stats, history_stats,
                       {n: float(v) for n, v in zip(NAMES, dosing)})


def load_learned_twin(path: str | os.PathLike[str], purpose: str = "dosing") -> Twin:
    """A twin of a ``twin.json`` written by ``glucotwin learn`` (:meth:`LearnedTwin.save`).

    ``purpose="dosing"`` (the control path) gives the dosing twin,
    ``"forecast"`` the fit as it is (module docstring).
    """
    with open(path) as handle:
        data = json.load(handle)
    return twin_from_dict(data, source=str(path), purpose=purpose)


def twin_from_dict(data: dict[str, Any], source: str = "learned twin", purpose: str = "dosing") -> Twin:
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
    if isinstance(data, dict) and data.get("format") == "glucotwin.learned-twin/1":
        raise ValueError(f"{source}: a glucotwin.learned-twin/1 file has no dosing twin; "
                         "run glucotwin learn again on the history to rewrite it")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{source}: not a learned twin (format {FORMAT!r} expected)")
    try:
        twin = Twin.from_dict(data["dosing_twin" if purpose == "dosing" else "twin"])
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{source}: incomplete learned twin ({exc})") from None
    if twin.x_basal.shape != (13,) or not np.all(np.isfinite(twin.x_basal)) or twin.params.size != 1:
        raise ValueError(f"{source}: learned twin has a bad basal state")
    return twin
