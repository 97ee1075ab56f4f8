"""Consensus CGM metrics (Battelino et al. 2019), time in tight range and Kovatchev's risk indices.

Names follow the iglu package (``in_range_70_180``, ``below_54``, ...).
Percentages are of samples. Pure numpy; used on true blood glucose and,
separately, on CGM.
"""

from __future__ import annotations

import numpy as np

CONSENSUS_NAMES = (
    "in_range_70_180",
    "below_70",
    "below_54",
    "above_180",
    "above_250",
    "mean",
    "SD",
    "CV",
    "GMI",
    "LBGI",
    "HBGI",
)

# Risk is undefined at 0 mg/dL (log); simglucose patients can reach 0, so the
# risk transform floors glucose at 1 mg/dL (maximum low risk, still finite).
_RISK_FLOOR_MG_DL = 1.0


def risk_f(glucose_mg_dl: np.ndarray) -> np.ndarray:
    """Kovatchev's symmetrizing transform f = 1.509 * ((ln BG)^1.084 - 5.381)."""
    g = np.maximum(np.asarray(glucose_mg_dl, dtype=float), _RISK_FLOOR_MG_DL)
    return 1.509 * (np.log(g) ** 1.084 - 5.381)


def risk_components(glucose_mg_dl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample low and high risk: rl = 10 f^2 where f < 0, rh = 10 f^2 where f > 0."""
    f = risk_f(glucose_mg_dl)
    risk = 10.0 * f**2
    return np.where(f < 0, risk, 0.0), np.where(f > 0, risk, 0.0)


def finite_samples(glucose_mg_dl: np.ndarray) -> np.ndarray:
    """The finite samples of a glucose series (mg/dL), as a float array."""
    g = np.asarray(glucose_mg_dl, dtype=float)
    return g[np.isfinite(g)]


def time_in_tight_range_pct(glucose_mg_dl: np.ndarray) -> float:
    """Time in tight range: % of finite samples with 70 <= g <= 140 mg/dL (NaN without samples)."""
    g = finite_samples(glucose_mg_dl)
    return float(100.0 * np.count_nonzero((g >= 70) & (g <= 140)) / g.size) if g.size else float("nan")


def consensus_metrics(glucose_mg_dl: np.ndarray) -> dict[str, float]:
    """Consensus metrics of a glucose series (mg/dL); non-finite samples are ignored.

    Time in ranges (in % of samples): ``in_range_70_180`` is 70 <= g <= 180,
    ``below_70`` g < 70, ``below_54`` g < 54, ``above_180`` g > 180,
    ``above_250`` g > 250. ``mean`` (mg/dL), ``SD`` (mg/dL, n-1), ``CV`` (%),
    ``GMI`` (%) = 3.31 + 0.02392 * mean. ``LBGI`` and ``HBGI`` are the means
    over all samples of the low and high risk (zero on the other side).
    """
    g = finite_samples(glucose_mg_dl)
    if g.size == 0:
        return {name: float("nan") for name in CONSENSUS_NAMES}

    def pct(mask: np.ndarray) -> float:
        return float(100.0 * np.count_nonzero(mask) / g.size)

    mean = float(np.mean(g))
    sd = float(np.std(g, ddof=1)) if g.size > 1 else 0.0
    low_risk, high_risk = risk_components(g)
    return {
        "in_range_70_180": pct((g >= 70) & (g <= 180)),
        "below_70": pct(g < 70),
        "below_54": pct(g < 54),
        "above_180": pct(g > 180),
        "above_250": pct(g > 250),
        "mean": mean,
        "SD": sd,
        "CV": 100.0 * sd / mean if mean > 0 else float("nan"),
        "GMI": 3.31 + 0.02392 * mean,
        "LBGI": float(np.mean(low_risk)),
        "HBGI": float(np.mean(high_risk)),
    }


def safety_rank_key(metrics: dict[str, float]) -> tuple[float, float, float]:
    """Sort key where larger is worse: time below 54, then below 70, then lowest TIR."""
    return (metrics["below_54"], metrics["below_70"], -metrics["in_range_70_180"])
