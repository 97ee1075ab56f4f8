"""Model-predictive control over the twin.

Each cycle, by successive linearization of the nonlinear twin around its
current state:

1. the twin predicts glucose over the horizon if the scheduled basal simply
   continues (the nominal prediction: insulin on board, announced
   carbohydrates and the estimated disturbance included), and how glucose
   answers one extra unit of insulin given now (the insulin response at the
   current state: sensitivity, glucose level and insulin on board shape it);
2. an insulin plan of three blocks (this cycle; until 60 min; until the end
   of the horizon) moves the prediction by superposition of that response;
3. the plan minimizes an asymmetric zone cost: glucose above the zone costs
   little, below it far more, and below a hypoglycaemia line (with a margin
   growing over the horizon for model error) most of all; moving away from
   the scheduled basal costs a little. Bounds: no negative insulin, the
   supervisor's maxima.

Only the first block is given (as a temporary basal for the cycle, the
excess as a bolus); the plan is recomputed next cycle. The solver is SciPy's
L-BFGS-B on this small smooth problem (3 variables, analytic gradient): it
ships with SciPy (wheels for x86 and aarch64) and needs no separate build.
A failure falls back to the scheduled basal with the reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize

MIN_PER_H = 60.0


@dataclass(frozen=True)
class MPCSettings:
    """Tuning of the MPC.

    Attributes
    ----------
    horizon_min: prediction horizon (at least 120: insulin acts for hours).
    step_min: prediction grid.
    zone_low_offset_mg_dl, zone_high_offset_mg_dl: the zone is
        [target - low offset, target + high offset].
    weight_high, weight_low: cost per (mg/dL)^2 above and below the zone.
    hypo_line_mg_dl, weight_hypo: an extra, steep cost below this line.
    hypo_margin_mg_dl_per_h: the hypo line rises by this much per hour of
        horizon (predictions far ahead are less certain).
    weight_move: cost of insulin away from the scheduled basal, per U^2.
    hypo_insulin_factor: the hypoglycaemia terms are evaluated as if extra
        insulin acted this many times more strongly than the twin predicts
        (robustness to a person more sensitive than their twin).
    block_end_min: end of the second block (the third runs to the horizon).
    """

    horizon_min: float = 180.0
    step_min: float = 5.0
    zone_low_offset_mg_dl: float = 10.0
    zone_high_offset_mg_dl: float = 10.0
    weight_high: float = 1.0
    weight_low: float = 20.0
    hypo_line_mg_dl: float = 85.0
    weight_hypo: float = 400.0
    hypo_margin_mg_dl_per_h: float = 10.0
    weight_move: float = 50.0
    block_end_min: float = 60.0
    hypo_insulin_factor: float = 1.0

    def __post_init__(self) -> None:
        if not (120.0 <= self.horizon_min <= 480.0):
            raise ValueError(f"horizon_min must be within 120..480, got {self.horizon_min}")
        if not (1.0 <= self.step_min <= 15.0) or self.horizon_min % self.step_min:
            raise ValueError("step_min must be within 1..15 and divide horizon_min")
        for name in ("weight_high", "weight_low", "weight_hypo", "weight_move", "zone_low_offset_mg_dl",
                     "zone_high_offset_mg_dl", "hypo_line_mg_dl", "hypo_margin_mg_dl_per_h"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if not (self.step_min < self.block_end_min < self.horizon_min):
            raise ValueError("block_end_min must lie inside the horizon")


@dataclass(frozen=True)
class MPCResult:
    """The MPC's proposal and how it got there."""

    basal_u_per_h: float
    bolus_u: float
    status: str
    plan_u_per_h: tuple[float, ...]
    predicted_mg_dl: np.ndarray = field(compare=False)
    nominal_mg_dl: np.ndarray = field(compare=False)
    cost: float = float("nan")
    compute_ms: float = float("nan")

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "plan_u_per_h": list(self.plan_u_per_h), "cost": self.cost,
                "compute_ms": self.compute_ms}


class ZoneMPC:
    """The controller (see the module docstring)."""

    def __init__(self, target_mg_dl: float, settings: MPCSettings | None = None) -> None:
        self.target_mg_dl = target_mg_dl
        self.settings = settings or MPCSettings()

    def _blocks(self, cycle_min: float) -> list[tuple[float, float]]:
        s = self.settings
        first = max(cycle_min, 1.0)
        return [(0.0, first), (first, s.block_end_min), (s.block_end_min, s.horizon_min)]

    def solve(self, estimator: Any, cycle_min: float, scheduled_u_per_h: float, max_basal_u_per_h: float,
              max_bolus_u: float, min_bolus_u: float = 0.0, target_mg_dl: float | None = None) -> MPCResult:
        """Propose (basal for this cycle, bolus now) from the estimator's current twin.

        ``min_bolus_u`` is a bolus decided before the MPC (the meal bolus): the plan
        starts from it and may add to it, and the basal may still go down to zero.
        ``target_mg_dl`` is this cycle's target (the profile's schedule, or a temporary
        target); None: the one the controller was built with."""
        tic = time.perf_counter()
        s = self.settings
        steps = int(round(s.horizon_min / s.step_min))
        scheduled_per_min = scheduled_u_per_h / MIN_PER_H
        plans = np.full((2, steps), scheduled_per_min)
        plans[1, 0] += 1.0 / s.step_min  # one extra unit in the first step
        try:
            glucose = estimator.plan_glucose(plans, s.step_min)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            return self._fallback(scheduled_u_per_h, f"prediction failed: {exc}", tic)
        nominal, dosed = glucose[0], glucose[1]
        response = dosed - nominal  # mg/dL per U given at t = 0 (negative)
        if not (np.all(np.isfinite(nominal)) and np.all(np.isfinite(response))):
            return self._fallback(scheduled_u_per_h, "prediction not finite", tic)

        t = np.arange(steps + 1) * s.step_min
        blocks = self._blocks(cycle_min)
        # M[:, j]: glucose change per U spread evenly over block j (shifted responses, averaged)
        m = np.zeros((steps + 1, len(blocks)))
        for j, (a, b) in enumerate(blocks):
            ka, kb = int(a // s.step_min), max(int(math.ceil(b / s.step_min)), int(a // s.step_min) + 1)
            for k in range(ka, min(kb, steps)):
                m[k:, j] += response[: steps + 1 - k] / (kb - ka)
        lengths_h = np.array([(b - a) / MIN_PER_H for a, b in blocks])
        u_nominal = scheduled_u_per_h * lengths_h  # U per block on the scheduled basal
        min_bolus_u = min(max(min_bolus_u, 0.0), max_bolus_u)
        u_nominal[0] += min_bolus_u  # moving away from the meal bolus costs, not the bolus itself

        target = self.target_mg_dl if target_mg_dl is None else target_mg_dl
        low = target - s.zone_low_offset_mg_dl
        high = target + s.zone_high_offset_mg_dl
        hypo = s.hypo_line_mg_dl + s.hypo_margin_mg_dl_per_h * t / MIN_PER_H
        weights = np.ones(steps + 1)
        weights[0] = 0.0  # the present cannot be changed
        n = weights.sum()

        k = s.hypo_insulin_factor

        def cost(u: np.ndarray) -> tuple[float, np.ndarray]:
            move = u - u_nominal
            effect = m @ move
            g = nominal + effect
            g_sensitive = nominal + k * effect if k != 1.0 else g
            over = np.maximum(g - high, 0.0)
            under = np.maximum(low - g_sensitive, 0.0)
            deep = np.maximum(hypo - g_sensitive, 0.0)
            value = (weights * (s.weight_high * over**2 + s.weight_low * under**2 + s.weight_hypo * deep**2)).sum() / n
            d_high = weights * 2 * s.weight_high * over / n
            d_low = -weights * (2 * s.weight_low * under + 2 * s.weight_hypo * deep) / n * k
            value += s.weight_move * float(move @ move)
            grad = m.T @ (d_high + d_low) + 2 * s.weight_move * move
            return float(value), grad

        first_max = max_basal_u_per_h * lengths_h[0] + max_bolus_u
        bounds = [(min_bolus_u, first_max)] + [(0.0, max_basal_u_per_h * lh) for lh in lengths_h[1:]]
        x0 = np.minimum(u_nominal, [b[1] for b in bounds])
        try:
            res = minimize(cost, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 60})
        except (ValueError, FloatingPointError) as exc:
            return self._fallback(scheduled_u_per_h, f"solver failed: {exc}", tic)
        u = np.clip(res.x, [b[0] for b in bounds], [b[1] for b in bounds])
        if not np.all(np.isfinite(u)):
            return self._fallback(scheduled_u_per_h, "solver returned non-finite insulin", tic)
        status = "optimal" if res.success else f"solver stopped early ({res.message}); best plan used"
        bolus = max(min_bolus_u, u[0] - max_basal_u_per_h * lengths_h[0], 0.0)
        basal = min(max(u[0] - bolus, 0.0) / lengths_h[0], max_basal_u_per_h)
        predicted = nominal + m @ (u - u_nominal)
        return MPCResult(
            basal_u_per_h=float(basal),
            bolus_u=float(bolus),
            status=status,
            plan_u_per_h=tuple(float(x) for x in u / lengths_h),
            predicted_mg_dl=predicted,
            nominal_mg_dl=nominal,
            cost=float(res.fun),
            compute_ms=(time.perf_counter() - tic) * 1000.0,
        )

    def _fallback(self, scheduled_u_per_h: float, why: str, tic: float) -> MPCResult:
        empty = np.array([])
        return MPCResult(scheduled_u_per_h, 0.0, f"fallback to scheduled basal: {why}", (scheduled_u_per_h,),
                         empty, empty, float("nan"), (time.perf_counter() - tic) * 1000.0)
