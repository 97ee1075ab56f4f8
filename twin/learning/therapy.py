"""The therapy settings a twin implies, in oref0 autotune's terms: basal, ISF, CR.

Each is the profile's own setting scaled by what the fit changed, measured on
the model (so a twin that learned nothing implies the profile unchanged):

- **basal** (U/h): the rate under which the learned twin holds the glucose
  the profile's twin holds under the programmed basal (autotune's aim: no
  drift overnight), found by bisection on 48-h simulations;
- **ISF** (mg/dL per U), per block of the day: the profile's correction
  factor times the ratio of the 1-U nadir drops (learned / profile twin);
- **CR** (g per U): grams whose 8-h glucose excursion area equals that of
  1 U, as a ratio to the profile twin's, times the profile's carb ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.learning.fit import BLOCKS, TwinBase
from twin.model import PMOL_PER_U, simulate
from twin.model_params import ModelParams
from twin.personalize import insulin_drop_mg_dl, steady_state

WINDOW_MIN = 480
STEP_MIN = 5.0
TEST_CARBS_G = 10.0


@dataclass(frozen=True)
class Therapy:
    basal_u_per_h: float
    isf_mg_dl_per_u: tuple[float, ...]   # one per block of the day (00-06, 06-12, 12-18, 18-24)
    cr_g_per_u: float

    def to_dict(self) -> dict[str, object]:
        return {"basal_u_per_h": round(self.basal_u_per_h, 3),
                "isf_mg_dl_per_u": [round(v, 1) for v in self.isf_mg_dl_per_u],
                "cr_g_per_u": round(self.cr_g_per_u, 2)}


def _areas(params: ModelParams, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-h excursion areas (mg/dL x min) of 1 U and of TEST_CARBS_G g, per patient of the batch."""
    n = params.size
    steps = int(WINDOW_MIN / STEP_MIN)
    basal = (params.u2ss * params.BW / PMOL_PER_U)[:, None] * np.ones((1, steps))
    dosed = basal.copy()
    dosed[:, 0] += 1.0 / STEP_MIN
    carbs = np.zeros((3 * n, steps))
    carbs[2 * n:, 0] = TEST_CARBS_G
    batch = ModelParams.concatenate([params, params, params])
    traj = simulate(batch, np.concatenate([x0, x0, x0]), carbs, np.concatenate([basal, dosed, basal]),
                    dt_min=STEP_MIN, exact_insulin=True)
    g = traj.glucose_mg_dl
    base = g[:n]
    return (base - g[n:2 * n]).sum(axis=1) * STEP_MIN, (g[2 * n:] - base).sum(axis=1) * STEP_MIN


def _holding_rate(params: ModelParams, x0: np.ndarray, level_mg_dl: float) -> float:
    """Basal rate (U/h) under which the model (N=1) settles at ``level_mg_dl`` after 48 h."""
    programmed = float(params.u2ss[0] * params.BW[0] / PMOL_PER_U) * 60.0
    rates = programmed * np.exp(np.linspace(-1.2, 1.2, 49))
    steps = int(48 * 60 / STEP_MIN)
    traj = simulate(params.take(np.zeros(rates.size, dtype=int)), np.repeat(x0, rates.size, axis=0),
                    np.zeros((rates.size, steps)), (rates / 60.0)[:, None] * np.ones((1, steps)),
                    dt_min=STEP_MIN, exact_insulin=True)
    final = traj.glucose_mg_dl[:, -1]
    order = np.argsort(final)
    return float(np.interp(level_mg_dl, final[order], rates[order]))


def implied_therapy(base: TwinBase, theta: np.ndarray) -> Therapy:
    """Basal / ISF / CR implied by parameters ``theta`` (module docstring)."""
    profile = base.twin.profile
    learned, gb = base.params_for(np.asarray(theta, dtype=float))
    prior, gb0 = base.params_for(np.zeros_like(np.asarray(theta, dtype=float)))
    x_l = steady_state(learned, gb, base.basal_egp)
    x_p = steady_state(prior, gb0, base.basal_egp)
    drops = insulin_drop_mg_dl(learned, x_l) / insulin_drop_mg_dl(prior, x_p)
    isf = tuple(float(profile.correction_factor_mg_dl_per_u * d) for d in drops[:BLOCKS])
    ins_l, carb_l = _areas(learned.take([0]), x_l[:1])
    ins_p, carb_p = _areas(prior.take([0]), x_p[:1])
    cr_ratio = float((ins_l[0] / carb_l[0]) / (ins_p[0] / carb_p[0]))
    basal = _holding_rate(learned.take([0]), x_l[:1], gb0) * profile.daily_basal_u / 24.0 / base.basal_u_per_h
    return Therapy(basal, isf, float(profile.carb_ratio_g_per_u * cr_ratio))
