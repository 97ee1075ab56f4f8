"""Glucose units for presentation: mg/dL (glucotwin's internal unit) or mmol/L.

Everything is computed and stored in mg/dL; tables, reports and figures
convert only what they show. The factor is the project's one conversion
constant, :data:`sensors.reading.MG_DL_PER_MMOL_L`, which the file readers use
to read mmol/L exports.

Which metrics are glucose concentrations (and so convert) is said here, next
to their names: ``mean``, ``SD``, ``mage_mg_dl``, ``modd_mg_dl`` and
``conga_1h_mg_dl``. Percentages, CV, GMI (%), LBGI/HBGI, GRI and the J-index
do not change with the unit (the J-index is defined so that its mg/dL and
mmol/L forms give the same number).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sensors.reading import MG_DL_PER_MMOL_L

GLUCOSE_METRIC_KEYS = frozenset({"mean", "SD", "mage_mg_dl", "modd_mg_dl", "conga_1h_mg_dl"})
"""Metrics that are glucose concentrations (in mg/dL in every summary)."""


@dataclass(frozen=True)
class GlucoseUnits:
    """How to show glucose: ``name`` as the CLI spells it, ``label``, and the factor from mg/dL."""

    name: str
    label: str
    per_mg_dl: float
    decimals: int
    """Decimals of a glucose value in a table (0 for mg/dL, 1 for mmol/L)."""

    def value(self, glucose_mg_dl):
        """A glucose value or array (mg/dL) in these units."""
        return glucose_mg_dl * self.per_mg_dl

    def threshold(self, glucose_mg_dl: float) -> str:
        """A range limit as it is written in these units: 70 → '70' or '3.9', 180 → '180' or '10.0'."""
        return f"{self.value(glucose_mg_dl):.{self.decimals}f}"

    @property
    def spec(self) -> str:
        """Format of a glucose value (mean, SD)."""
        return f".{self.decimals}f"

    @property
    def fine_spec(self) -> str:
        """Format of a glucose difference with one more decimal (MAGE, MODD, CONGA)."""
        return f".{self.decimals + 1}f"


MG_DL = GlucoseUnits("mg", "mg/dL", 1.0, 0)
MMOL_L = GlucoseUnits("mmol", "mmol/L", 1.0 / MG_DL_PER_MMOL_L, 1)
UNITS = {u.name: u for u in (MG_DL, MMOL_L)}


def glucose_units(name: str | GlucoseUnits | None) -> GlucoseUnits:
    """``"mg"`` (or None) → mg/dL, ``"mmol"`` → mmol/L; a GlucoseUnits is returned as is."""
    if isinstance(name, GlucoseUnits):
        return name
    if name is None:
        return MG_DL
    try:
        return UNITS[name]
    except KeyError:
        raise ValueError(f"glucose units must be one of {', '.join(UNITS)}, got {name!r}") from None


def metric_in_units(key: str, value: float, units: GlucoseUnits) -> float:
    """A metric's value as shown in ``units`` (only glucose concentrations change)."""
    return value * units.per_mg_dl if key in GLUCOSE_METRIC_KEYS else value


def metrics_in_units(metrics: Mapping[str, float], units: GlucoseUnits) -> dict[str, float]:
    """Every metric of a dict as shown in ``units`` (keys unchanged: they keep naming mg/dL)."""
    return {k: metric_in_units(k, v, units) for k, v in metrics.items()}
