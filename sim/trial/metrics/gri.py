"""The Glycemia Risk Index (Klonoff et al. 2023, J Diabetes Sci Technol 17(5):1226-1242).

From the percentages of samples in four ranges (mg/dL):

- VLow: < 54; Low: 54-69 (``below_70 - below_54``);
- VHigh: > 250; High: 181-250 (``above_180 - above_250``).

Hypoglycemia component = VLow + 0.8 × Low (%); hyperglycemia component =
VHigh + 0.5 × High (%); GRI = 3.0 × VLow + 2.4 × Low + 1.6 × VHigh + 0.8 × High
= 3 × hypo + 1.6 × hyper, capped at 100. GRI is a score from 0 (best) to 100
(worst); the components are weighted percentages of time. iglu 4.3.0 computes
the same (irinagain/iglu R/gri.R at commit 33d72695), also on raw samples.

Zones A (best) to E are the GRI quintiles 0-20, 20-40, 40-60, 60-80 and 80-100;
a GRI on a boundary belongs to the better zone (Klonoff's 0-20, 21-40, ...).
On the GRI grid (hypo component on x, hyper on y) the zone boundaries are the
diagonals 3 × x + 1.6 × y = 20, 40, 60, 80.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

HYPO_WEIGHT = 3.0
HYPER_WEIGHT = 1.6
GRI_MAX = 100.0
ZONES = ("A", "B", "C", "D", "E")
ZONE_UPPER = (20.0, 40.0, 60.0, 80.0, 100.0)
"""The GRI at the upper edge of each zone, A to E."""


def gri_components_pct(below_54: float, below_70: float, above_180: float, above_250: float) -> tuple[float, float]:
    """(hypoglycemia, hyperglycemia) components in % from the four time-in-range percentages."""
    very_low, low = below_54, below_70 - below_54
    very_high, high = above_250, above_180 - above_250
    return very_low + 0.8 * low, very_high + 0.5 * high


def gri_from_components(hypo_pct: float, hyper_pct: float) -> float:
    """GRI = min(3 × hypo + 1.6 × hyper, 100)."""
    return min(HYPO_WEIGHT * hypo_pct + HYPER_WEIGHT * hyper_pct, GRI_MAX)


def gri_metrics(ranges_pct: Mapping[str, float]) -> dict[str, float]:
    """``gri``, ``gri_hypo_pct`` and ``gri_hyper_pct`` from ``below_54``, ``below_70``, ``above_180``, ``above_250``."""
    hypo, hyper = gri_components_pct(ranges_pct["below_54"], ranges_pct["below_70"],
                                     ranges_pct["above_180"], ranges_pct["above_250"])
    return {"gri": gri_from_components(hypo, hyper), "gri_hypo_pct": hypo, "gri_hyper_pct": hyper}


def gri_zone(gri: float) -> str:
    """Zone A-E of a GRI (boundaries belong to the better zone); '' for a missing GRI."""
    if not math.isfinite(gri):
        return ""
    for zone, upper in zip(ZONES, ZONE_UPPER):
        if gri <= upper:
            return zone
    return ZONES[-1]
