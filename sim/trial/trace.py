"""Per-patient trial traces and their CSV form.

Row i holds the sample at ``time[i]`` (true BG and CGM as simglucose reports
them: averages over the preceding sample interval) and what happened in the
interval that follows it: carbohydrates eaten (g) and insulin delivered (U)
by the pump, plus the controller's diagnostics for the decision taken at
``time[i]``. The last row ends the run, so its interval columns are empty.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

BASE_COLUMNS = ("time", "bg_mg_dl", "cgm_mg_dl", "carbs_g", "insulin_u")


@dataclass
class Trace:
    patient: str
    sample_min: float
    time: list[datetime]
    bg_mg_dl: np.ndarray
    cgm_mg_dl: np.ndarray
    carbs_g: np.ndarray
    insulin_u: np.ndarray
    diagnostics: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, (np.floating,)):
        return "" if np.isnan(value) else repr(float(value))
    return str(value)


def trace_filename(patient: str) -> str:
    """Trace files are named after the patient, as simglucose names its results."""
    return f"{patient}.csv"


def write_trace_csv(trace: Trace, path: Path) -> None:
    diag_columns = list(trace.diagnostics)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(BASE_COLUMNS) + diag_columns)
        for i in range(len(trace)):
            row = [
                trace.time[i].isoformat(),
                _cell(float(trace.bg_mg_dl[i])),
                _cell(float(trace.cgm_mg_dl[i])),
                _cell(float(trace.carbs_g[i])),
                _cell(float(trace.insulin_u[i])),
            ]
            row += [_cell(trace.diagnostics[c][i]) for c in diag_columns]
            writer.writerow(row)


def _float_or_nan(text: str) -> float:
    return float(text) if text != "" else float("nan")


def read_trace_csv(path: Path, patient: str | None = None) -> Trace:
    """Read a trace written by :func:`write_trace_csv`."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if tuple(header[: len(BASE_COLUMNS)]) != BASE_COLUMNS:
            raise ValueError(f"{path}: not a glucotwin trace (header {header[:5]})")
        rows = list(reader)
    times = [datetime.fromisoformat(r[0]) for r in rows]
    cols = list(zip(*rows)) if rows else [[] for _ in header]
    diag = {name: list(cols[j]) for j, name in enumerate(header) if j >= len(BASE_COLUMNS)}
    sample_min = (times[1] - times[0]).total_seconds() / 60.0 if len(times) > 1 else float("nan")
    return Trace(
        patient=patient or path.stem,
        sample_min=sample_min,
        time=times,
        bg_mg_dl=np.array([_float_or_nan(v) for v in cols[1]]),
        cgm_mg_dl=np.array([_float_or_nan(v) for v in cols[2]]),
        carbs_g=np.array([_float_or_nan(v) for v in cols[3]]),
        insulin_u=np.array([_float_or_nan(v) for v in cols[4]]),
        diagnostics=diag,
    )


def advice_events(trace: Trace) -> list[tuple[int, str, float]]:
    """New advice on a trace (glucotwin's ``advice_*`` columns, :mod:`sim.trial.adapter`): (row, kind, grams) for each row whose ``advice_new`` is true."""
    new = trace.diagnostics.get("advice_new") or []
    kinds = trace.diagnostics.get("advice_kind") or [""] * len(new)
    grams = trace.diagnostics.get("advice_carbs_g") or [""] * len(new)
    out = []
    for i, flag in enumerate(new):
        if str(flag) == "True":
            g = grams[i]
            out.append((i, str(kinds[i]), float(g) if g not in ("", None) else 0.0))
    return out
