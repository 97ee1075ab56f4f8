"""Glucose ranges: the 70-180 mg/dL target, the time-in-ranges bands and the consensus targets that flag a table cell."""

from __future__ import annotations

import math
from collections.abc import Mapping

from sim.trial.metrics.units import MG_DL, GlucoseUnits

TARGET_MG_DL = (70.0, 180.0)

# Time-in-ranges bands: (label, lower edge, colour); percentages follow sim.trial.metrics:
# <54 = below_54, 54-69 = below_70 - below_54, 70-180 = in_range_70_180,
# 181-250 = above_180 - above_250, >250 = above_250.
TIR_BANDS = (
    ("<54", "#8c1c13"),
    ("54-69", "#e4572e"),
    ("70-180", "#3b9b4a"),
    ("181-250", "#f3b61f"),
    (">250", "#e07b24"),
)

def tir_band_labels(u: GlucoseUnits = MG_DL) -> tuple[str, ...]:
    """The band labels of :data:`TIR_BANDS` in ``u``: mg/dL as above; mmol/L <3.0, 3.0-3.8, 3.9-10.0, 10.1-13.9, >13.9."""
    if u.name == MG_DL.name:
        return tuple(label for label, _ in TIR_BANDS)
    t = u.threshold
    step = 10.0 ** -u.decimals / u.per_mg_dl  # one shown unit, in mg/dL
    return (f"<{t(54)}", f"{t(54)}-{t(70 - step)}", f"{t(70)}-{t(180)}", f"{t(180 + step)}-{t(250)}", f">{t(250)}")


# Consensus targets (Battelino et al. 2019), for highlighting table cells.
_TARGETS = {
    "in_range_70_180": (">", 70.0),
    "below_70": ("<", 4.0),
    "below_54": ("<", 1.0),
    "above_180": ("<", 25.0),
    "above_250": ("<", 5.0),
    "CV": ("<=", 36.0),
}


def _off_target(key: str, value: float) -> bool:
    rule = _TARGETS.get(key)
    if rule is None or not math.isfinite(value):
        return False
    op, limit = rule
    return not (value > limit if op == ">" else value < limit if op == "<" else value <= limit)


def tir_segments(metrics: Mapping[str, float]) -> list[float]:
    """Percent of samples in <54, 54-69, 70-180, 181-250, >250 mg/dL (sums to 100)."""
    return [
        metrics["below_54"],
        metrics["below_70"] - metrics["below_54"],
        metrics["in_range_70_180"],
        metrics["above_180"] - metrics["above_250"],
        metrics["above_250"],
    ]
