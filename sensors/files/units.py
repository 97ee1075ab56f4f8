"""Glucose units of a CGM file: their names, the conversion to mg/dL, and telling them from the values.

Every reading is stored in mg/dL. A CSV export names its unit in a column
header (Clarity ``Glucose Value (mmol/L)``, LibreView ``Historic Glucose
mmol/L``) or, like iglu's ``gl``, not at all. Without a header unit or a
``units=`` argument, the values decide: mmol/L values lie within 1..33.3 and
mg/dL values within 39..501 (the plausible range), so a file whose values are
mostly below :data:`MMOL_L_BELOW` is in mmol/L. The decision needs at least
:data:`MIN_VALUES` values and :data:`MMOL_L_SHARE` of them below the line;
otherwise the format's own unit holds (iglu: mg/dL).
"""

from __future__ import annotations

from collections.abc import Iterable

from sensors.reading import MG_DL_PER_MMOL_L

MG_DL = "mg/dL"
MMOL_L = "mmol/L"
UNITS = (MG_DL, MMOL_L)
"""The unit names accepted by ``units=`` (and ``--units``), as written."""

MMOL_L_BELOW = 35.0
MIN_VALUES = 20
MMOL_L_SHARE = 0.9


def normalize_units(text: str | None) -> str | None:
    """``"mg/dL"`` or ``"mmol/L"`` for any spelling (``mg/dl``, ``MMOL/L``, ``mmol``); ``None`` for
    ``None``, ``""`` and ``"auto"``. Raises ValueError for anything else."""
    if text is None:
        return None
    s = text.strip().lower().replace(" ", "")
    if s in ("", "auto"):
        return None
    if s in ("mg/dl", "mgdl", "mg"):
        return MG_DL
    if s in ("mmol/l", "mmoll", "mmol"):
        return MMOL_L
    raise ValueError(f"unknown glucose unit {text!r}: use 'mg/dL' or 'mmol/L'")


def mg_dl_per(units: str) -> float:
    """mg/dL per unit of ``units`` (1 or :data:`~sensors.reading.MG_DL_PER_MMOL_L`)."""
    return 1.0 if units == MG_DL else MG_DL_PER_MMOL_L


def units_from_values(values: Iterable[float], default: str) -> tuple[str, str]:
    """(units, why) from a sample of a file's numeric glucose values.

    mmol/L when at least :data:`MIN_VALUES` values and :data:`MMOL_L_SHARE` of them are
    positive and below :data:`MMOL_L_BELOW`; otherwise ``default``.
    """
    sample = list(values)
    below = sum(1 for v in sample if 0 < v < MMOL_L_BELOW)
    n = len(sample)
    if n >= MIN_VALUES and below >= MMOL_L_SHARE * n:
        return MMOL_L, f"from the values: {below} of the first {n} are below {MMOL_L_BELOW:g}, as mmol/L values are"
    if n and below >= MMOL_L_SHARE * n:
        return default, (f"the format's unit: only {n} values to tell from, most below {MMOL_L_BELOW:g}; "
                         "pass --units mmol/L if they are mmol/L")
    if below:
        return default, (f"the format's unit; {below} of the first {n} values are below {MMOL_L_BELOW:g}: "
                         "rejected as out of range unless you pass --units mmol/L")
    return default, "the format's unit"
