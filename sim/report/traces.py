"""Glucose and insulin traces: meals, the twin's columns, one trace's drawing and the trace figures of a trial run."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from sim.report.figures import _figure_class, _panel_grid, _png
from sim.report.ranges import TARGET_MG_DL
from sim.report.trial_run import TrialRun
from sim.trial.metrics.units import MG_DL, GlucoseUnits
from sim.trial.trace import Trace, advice_events

TRACE_GRID_MAX = 36  # small multiples drawn; more patients are listed, not drawn


def _to_float_column(values: Sequence[Any]) -> np.ndarray | None:
    """A diagnostics column as floats (empty → NaN), or None if it is not numeric."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v is None or v == "":
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            return None
    return out


def _trace_hours(trace: Trace, t0: datetime) -> np.ndarray:
    return np.array([(t - t0).total_seconds() / 3600.0 for t in trace.time])


def _meals(trace: Trace) -> list[tuple[int, float]]:
    """Meals as (first sample index, grams): consecutive samples with carbs are one meal. Rescue
    carbs eaten on advice (``rescue_carbs_g``, follow-advice trials) are not meals: they are drawn
    with the advice."""
    carbs = np.nan_to_num(trace.carbs_g)
    rescue = _to_float_column(trace.diagnostics["rescue_carbs_g"]) if "rescue_carbs_g" in trace.diagnostics else None
    if rescue is not None:
        carbs = _without_rescue(carbs, np.nan_to_num(rescue))
    meals: list[tuple[int, float]] = []
    i = 0
    while i < len(carbs):
        if carbs[i] > 0:
            j = i
            while j + 1 < len(carbs) and carbs[j + 1] > 0:
                j += 1
            meals.append((i, float(carbs[i : j + 1].sum())))
            i = j + 1
        else:
            i += 1
    return meals


def _without_rescue(carbs: np.ndarray, rescue: np.ndarray) -> np.ndarray:
    """Carbs per sample minus the rescue grams eaten from each advice row on (eaten at 5 g/min,
    so a rescue may spread over the next samples)."""
    out = carbs.astype(float).copy()
    for i in np.nonzero(rescue > 0)[0]:
        left = float(rescue[i])
        j = int(i)
        while left > 1e-9 and j < len(out):
            take = min(left, out[j])
            out[j] -= take
            left -= take
            j += 1
    out[np.abs(out) < 1e-9] = 0.0
    return out


_ADVICE_STYLE = {"carbs": ("v", "#2e7d32", "advice: carbs"), "high": ("s", "#d32f2f", "advice: high, limits bind"),
                 "site_check": ("X", "#8e24aa", "advice: check site")}


def _draw_advice(ax, trace: Trace, hours: np.ndarray, top: float, detail: bool) -> None:
    """New advice as markers near the top of the glucose axis (grams of carb advice in detail)."""
    events = advice_events(trace)
    for kind, (marker, color, label) in _ADVICE_STYLE.items():
        rows = [(i, g) for i, k, g in events if k == kind]
        if not rows:
            continue
        xs = [hours[i] for i, _ in rows]
        y = 0.93 * top
        ax.scatter(xs, [y] * len(xs), marker=marker, s=30 if detail else 12, color=color, zorder=6, label=label)
        if detail and kind == "carbs":
            for (i, g), x in zip(rows, xs):
                ax.annotate(f"{g:.0f} g", (x, y), xytext=(0, -10), textcoords="offset points", ha="center",
                            fontsize=6, color=color)


_FORECAST_COLUMN = re.compile(r"^forecast_(\d+(?:\.\d+)?)_mg_dl$")


def _twin_columns(trace: Trace) -> list[tuple[str, np.ndarray, float]]:
    """Numeric ``*_mg_dl`` diagnostics as (name, values, shift in minutes)."""
    found = []
    for name, values in trace.diagnostics.items():
        if not name.endswith("_mg_dl") or name == "target_mg_dl":  # the target is drawn by _draw_target
            continue
        arr = _to_float_column(values)
        if arr is None or not np.isfinite(arr).any():
            continue
        m = _FORECAST_COLUMN.match(name)
        found.append((name, arr, float(m.group(1)) if m else 0.0))
    return found


_TWIN_COLORS = ("#c2185b", "#7b1fa2", "#00838f", "#6d4c41")


def _draw_target(ax, trace: Trace, hours: np.ndarray, u: GlucoseUnits) -> None:
    """The controller's target when it moves (a target schedule or a temporary target), and the
    temporary targets' spans shaded."""
    target = _to_float_column(trace.diagnostics.get("target_mg_dl") or [])
    if target is None or len(target) != len(hours) or not np.isfinite(target).any():
        return
    finite = target[np.isfinite(target)]
    if finite.max() - finite.min() > 1e-9:
        ax.step(hours, u.value(target), where="post", color="#2e7d32", lw=0.8, ls="-.", label="controller target")
    temp = [bool(v) for v in (trace.diagnostics.get("temp_target") or [])]
    if len(temp) == len(hours) and any(temp):
        start = None
        for i, on in enumerate(temp + [False]):
            if on and start is None:
                start = i
            elif not on and start is not None:
                end = hours[i] if i < len(hours) else hours[-1]
                ax.axvspan(hours[start], end, color="#fbc02d", alpha=0.15, lw=0,
                           label="temporary target" if start == temp.index(True) else None)
                start = None


def _draw_trace(ax, trace: Trace, t0: datetime, detail: bool, u: GlucoseUnits = MG_DL) -> None:
    hours = _trace_hours(trace, t0)
    ax.axhspan(*(u.value(y) for y in TARGET_MG_DL), color="#3b9b4a", alpha=0.10, lw=0)
    ax.plot(hours, u.value(trace.cgm_mg_dl), color="#4a90d9", lw=0.8 if detail else 0.6, label="CGM")
    ax.plot(hours, u.value(trace.bg_mg_dl), color="black", lw=1.2 if detail else 0.9, label="BG (true)")
    for k, (name, values, shift_min) in enumerate(_twin_columns(trace)):
        label = name if not shift_min else f"{name} (at target time)"
        ax.plot(hours + shift_min / 60.0, u.value(values), color=_TWIN_COLORS[k % len(_TWIN_COLORS)],
                lw=0.9 if detail else 0.6, ls=":" if shift_min else "--", label=label)
    finite = np.concatenate([trace.bg_mg_dl[np.isfinite(trace.bg_mg_dl)],
                             trace.cgm_mg_dl[np.isfinite(trace.cgm_mg_dl)]])
    top = u.value(max(300.0, float(finite.max()) + 20.0) if finite.size else 300.0)
    ax.set_ylim(0, top)
    meals = _meals(trace)
    if meals:
        xs = [hours[i] for i, _ in meals]
        ax.scatter(xs, [0.05 * top] * len(xs), marker="^", s=40 if detail else 16, color="#e07b24",
                   zorder=5, label="meal")
        if detail:
            for (i, grams), x in zip(meals, xs):
                ax.annotate(f"{grams:.0f} g", (x, 0.05 * top), xytext=(0, 6), textcoords="offset points",
                            ha="center", fontsize=7, color="#a0521a")
    _draw_advice(ax, trace, hours, top, detail)
    _draw_target(ax, trace, hours, u)
    ax2 = ax.twinx()
    basal = _to_float_column(trace.diagnostics["basal_u_per_h"]) if "basal_u_per_h" in trace.diagnostics else None
    bolus = _to_float_column(trace.diagnostics["bolus_u"]) if "bolus_u" in trace.diagnostics else None
    if basal is not None and bolus is not None:
        ax2.step(hours, basal, where="post", color="#6a3d9a", lw=0.8, label="basal U/h")
        b = np.nan_to_num(bolus)
        if (b > 0).any():
            ax2.vlines(hours[b > 0], 0, b[b > 0], color="#6a3d9a", lw=1.6, alpha=0.8, label="bolus U")
        peak = np.nanmax(np.concatenate([np.nan_to_num(basal), b, [0.1]]))
        ylabel = "basal U/h, bolus U"
    else:
        delivered = np.nan_to_num(trace.insulin_u)
        ax2.vlines(hours, 0, delivered, color="#6a3d9a", lw=0.8, alpha=0.8, label="insulin U per sample")
        peak = max(float(delivered.max()) if delivered.size else 0.0, 0.1)
        ylabel = "insulin U per sample"
    ax2.set_ylim(0, 3.0 * peak)  # insulin in the lower third
    ax2.tick_params(labelsize=6, colors="#6a3d9a")
    if detail:
        ax2.set_ylabel(ylabel, fontsize=8, color="#6a3d9a")
    ax.set_xlim(0, max(float(hours[-1]) if len(hours) else 1.0, 1.0))
    span = ax.get_xlim()[1]
    step = 1 if span <= 6 else 3 if span <= 24 else 6 if span <= 72 else 12 if span <= 168 else 24
    ax.set_xticks(np.arange(0, span + 1e-9, step))
    for day in np.arange(24, span, 24):
        ax.axvline(day, color="#999999", lw=0.6)
    ax.tick_params(labelsize=6 if not detail else 7)
    ax.grid(alpha=0.2, lw=0.4)
    if detail:
        ax.set_xlabel(f"hours since {t0:%Y-%m-%d %H:%M}", fontsize=8)
        ax.set_ylabel(f"glucose {u.label}", fontsize=8)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right", ncol=3, framealpha=0.85)


def _fig_traces(run: TrialRun, patients: Sequence[str], detail: bool, u: GlucoseUnits = MG_DL) -> str:
    Figure = _figure_class()
    traces = [run.traces[p] for p in patients if p in run.traces]
    if detail:
        fig = Figure(figsize=(12.0, 4.0))
        ax = fig.add_subplot(1, 1, 1)
        _draw_trace(ax, traces[0], traces[0].time[0], detail=True, u=u)
        ax.set_title(traces[0].patient, fontsize=9)
    else:
        ncols = 1 if len(traces) <= 2 else 2 if len(traces) <= 8 else 3
        fig, axes = _panel_grid(Figure, len(traces), ncols, 12.0 / ncols, 2.1 if ncols > 1 else 2.6)
        for ax, tr in zip(axes, traces):
            _draw_trace(ax, tr, tr.time[0], detail=False, u=u)
            ax.set_title(tr.patient, fontsize=8, pad=2)
        # fixed spacing: tight_layout would cost one more full draw of many axes
        rows = math.ceil(len(traces) / ncols)
        fig.subplots_adjust(left=0.04, right=0.96, bottom=0.2 / rows, top=1 - 0.15 / rows,
                            wspace=0.28, hspace=0.55)
        return _png(fig)
    fig.tight_layout()
    return _png(fig)
