"""Self-contained HTML reports of trials, HIL runs and CGM-file replays.

A report is ONE HTML file: inline CSS, PNG figures embedded as base64
``data:`` URIs, no scripts and no external links, so it can be mailed,
archived next to the result or opened offline.

Trial and HIL runs (a directory with ``summary.json`` and one trace CSV per
patient, as :func:`sim.trial.run.run_trial` writes it):

- the protocol and plant, from ``summary.json`` (controller, arm, days,
  sensor, pump, seeds, scenario, versions), so the result can be rerun;
- the Ambulatory Glucose Profile (median, 25-75 % and 5-95 % bands of true
  blood glucose by time of day, CGM median dashed, target 70-180 shaded) of
  the cohort and of each group;
- time-in-ranges stacked bars (<54, 54-69, 70-180, 181-250, >250 mg/dL) per
  patient and per group;
- metrics tables per patient, on true BG and separately on CGM (the values of
  ``summary.json``, computed by :mod:`sim.trial.metrics`; GMI = 3.31 + 0.02392 ×
  mean), with group and cohort rows (means over patients);
- the worst patient's trace in detail and every patient's trace as small
  multiples: BG, CGM, the twin's estimate and forecasts when the trace has
  them (``*_mg_dl`` columns; ``forecast_H_mg_dl`` drawn at its target time),
  meals, and insulin (basal U/h and bolus U, or delivered U per sample) on a
  second axis;
- with other runs to compare (another controller or arm): comparison tables
  by group and by patient (with the difference to the first run when there
  are two), overlaid AGP medians and side-by-side TIR bars.

Replays (``glucotwin replay``): the forecast scores per method and horizon,
RMSE/MAE by horizon, the AGP, time in ranges and metrics of the readings per
subject, each subject's readings, and forecasts against the readings over
the first day of forecasts.

matplotlib is imported only inside the functions that draw (no pyplot, no
global backend change): importing this module stays light.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sim.trial.metrics import glucose_metrics, mean_metrics
from sim.trial.trace import Trace, read_trace_csv, trace_filename

REPORT_FILENAME = "report.html"
DISCLAIMER = "glucotwin is research software, not a medical device: not for treatment decisions."
DPI = 80
TARGET_MG_DL = (70.0, 180.0)
GROUP_ORDER = ("adolescent", "adult", "child")
_PLURAL = {"adolescent": "adolescents", "adult": "adults", "child": "children"}

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
AGP_BIN_MIN = 15.0
AGP_WINDOW_MIN = 60.0
AGP_MIN_SAMPLES = 3
TRACE_GRID_MAX = 36  # small multiples drawn; more patients are listed, not drawn
REPLAY_SUBJECTS_MAX = 12
REPLAY_FORECAST_SUBJECTS_MAX = 3

# Consensus targets (Battelino et al. 2019), for highlighting table cells.
_TARGETS = {
    "in_range_70_180": (">", 70.0),
    "below_70": ("<", 4.0),
    "below_54": ("<", 1.0),
    "above_180": ("<", 25.0),
    "above_250": ("<", 5.0),
    "CV": ("<=", 36.0),
}


class ReportError(Exception):
    """An input the report cannot be built from (one line, for the CLI)."""


# --- small helpers ------------------------------------------------------------------


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, spec: str = ".1f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "–"
    return "–" if not math.isfinite(v) else format(v, spec)


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


def _group_of(patient: str, info: Mapping[str, Any] | None = None) -> str:
    if info and info.get("group"):
        return str(info["group"])
    return patient.split("#")[0]


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("glucotwin")
    except metadata.PackageNotFoundError:
        return "unknown"


def _figure_class():
    """matplotlib's Figure, imported lazily (no pyplot: no global state, no display)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ReportError(f"reports need matplotlib: pip install 'glucotwin[sim]' ({exc})") from None
    return Figure


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="{uri}">'


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


# --- the Ambulatory Glucose Profile -------------------------------------------------


def agp_percentiles(
    times: Sequence[datetime],
    glucose_mg_dl: Sequence[float],
    bin_min: float = AGP_BIN_MIN,
    window_min: float = AGP_WINDOW_MIN,
    min_samples: int = AGP_MIN_SAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """AGP percentiles by time of day.

    Every ``bin_min`` minutes of the day, the 5th, 25th, 50th, 75th and 95th
    percentiles of all finite samples whose time of day lies within
    ``window_min / 2`` of it (pooled over days and patients; circularly
    around midnight when every hour of the day has data).
    Returns (hours of day, array of shape (5, bins)); NaN where fewer than
    ``min_samples`` samples fall in the window.
    """
    g = np.asarray(glucose_mg_dl, dtype=float)
    tod = np.array([t.hour * 60.0 + t.minute + t.second / 60.0 for t in times])
    ok = np.isfinite(g)
    g, tod = g[ok], tod[ok]
    n_bins = int(round(1440.0 / bin_min))
    centers = np.arange(n_bins) * bin_min
    out = np.full((5, n_bins), np.nan)
    # Wrap around midnight only when every hour of the day has data (not for runs shorter than a day).
    circular = np.unique((tod // 60).astype(int)).size == 24
    for b, c in enumerate(centers):
        d = np.abs(tod - c)
        if circular:
            d = np.minimum(d, 1440.0 - d)
        vals = g[d <= window_min / 2.0]
        if vals.size >= min_samples:
            out[:, b] = np.percentile(vals, [5, 25, 50, 75, 95])
    # close the circle so the curve reaches 24:00
    return np.append(centers, 1440.0) / 60.0, np.concatenate([out, out[:, :1]], axis=1)


def _agp_axes(ax, title: str) -> None:
    ax.axhspan(*TARGET_MG_DL, color="#3b9b4a", alpha=0.10, lw=0)
    for y in TARGET_MG_DL:
        ax.axhline(y, color="#3b9b4a", lw=0.8)
    ax.axhline(54, color="#8c1c13", lw=0.6, ls=":")
    ax.axhline(250, color="#e07b24", lw=0.6, ls=":")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)], fontsize=7)
    ax.set_ylabel("mg/dL", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.25, lw=0.5)


def _draw_agp(ax, hours, pct, cgm_median=None, color="#1f4e9c", what="BG") -> float:
    ax.fill_between(hours, pct[0], pct[4], color=color, alpha=0.15, lw=0, label="5-95 %")
    ax.fill_between(hours, pct[1], pct[3], color=color, alpha=0.35, lw=0, label="25-75 %")
    ax.plot(hours, pct[2], color=color, lw=1.8, label=f"median ({what})")
    if cgm_median is not None:
        ax.plot(hours, cgm_median, color="#555555", lw=1.0, ls="--", label="median (CGM)")
    top = np.nanmax(pct[4]) if np.isfinite(pct[4]).any() else 300.0
    return float(top)


def _panel_grid(fig_class, n: int, ncols: int, width_in: float, height_in: float):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = fig_class(figsize=(width_in * ncols, height_in * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


# --- trial runs ---------------------------------------------------------------------


@dataclass
class TrialRun:
    """A trial or HIL output directory, read back."""

    directory: Path
    summary: dict[str, Any]
    traces: dict[str, Trace] = field(default_factory=dict)
    missing_traces: list[str] = field(default_factory=list)
    label: str = ""

    @property
    def patients(self) -> list[str]:
        return list(self.summary.get("patients", {}))

    def groups(self) -> list[str]:
        present = {_group_of(p, self.summary["patients"][p]) for p in self.patients}
        return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))

    def patients_in(self, group: str) -> list[str]:
        return [p for p in self.patients if _group_of(p, self.summary["patients"][p]) == group]

    def metrics(self, patient: str, kind: str = "bg") -> dict[str, float]:
        """The patient's metrics from summary.json; computed from the trace if absent."""
        found = self.summary["patients"][patient].get(kind)
        if isinstance(found, dict) and "in_range_70_180" in found:
            return found
        trace = self.traces.get(patient)
        if trace is None:
            return glucose_metrics(np.array([]))
        return glucose_metrics(trace.bg_mg_dl if kind == "bg" else trace.cgm_mg_dl)

    def group_metrics(self, group: str | None, kind: str = "bg") -> dict[str, float]:
        """Mean over the group's patients (None: the cohort), as summary.json's group rows."""
        agg = self.summary.get("cohort") if group is None else self.summary.get("groups", {}).get(group)
        if isinstance(agg, dict) and isinstance(agg.get(kind), dict) and "in_range_70_180" in agg[kind]:
            return agg[kind]
        names = self.patients if group is None else self.patients_in(group)
        return mean_metrics([self.metrics(p, kind) for p in names])

    def mean_of(self, key: str, group: str | None = None) -> float:
        names = self.patients if group is None else self.patients_in(group)
        vals = [float(self.summary["patients"][p].get(key, float("nan"))) for p in names]
        return float(np.mean(vals)) if vals else float("nan")


def _run_label(summary: Mapping[str, Any]) -> str:
    controller = str(summary.get("controller", "?"))
    short = controller.split(" ")[0]
    if "HIL" in controller:
        short += "-HIL"
    arm = str(summary.get("protocol", {}).get("arm", "")).upper()
    return f"{short} {arm}".strip()


def load_trial_run(directory: str | Path) -> TrialRun:
    """Read ``summary.json`` and the trace CSVs of a trial or HIL output directory."""
    directory = Path(directory)
    path = directory / "summary.json"
    try:
        with open(path, encoding="utf-8") as handle:
            summary = json.load(handle)
    except FileNotFoundError:
        raise ReportError(f"{directory}: no summary.json (not a trial or HIL output directory)") from None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("patients"), dict) or not summary["patients"]:
        raise ReportError(f"{path}: not a glucotwin trial summary (no patients)")
    run = TrialRun(directory=directory, summary=summary, label=_run_label(summary))
    for patient in summary["patients"]:
        trace_path = directory / trace_filename(patient)
        try:
            run.traces[patient] = read_trace_csv(trace_path, patient=patient)
        except (OSError, ValueError, IndexError):
            run.missing_traces.append(patient)
    return run


def _trace_hours(trace: Trace, t0: datetime) -> np.ndarray:
    return np.array([(t - t0).total_seconds() / 3600.0 for t in trace.time])


def _meals(trace: Trace) -> list[tuple[int, float]]:
    """Meals as (first sample index, grams): consecutive samples with carbs are one meal."""
    carbs = np.nan_to_num(trace.carbs_g)
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


_FORECAST_COLUMN = re.compile(r"^forecast_(\d+(?:\.\d+)?)_mg_dl$")


def _twin_columns(trace: Trace) -> list[tuple[str, np.ndarray, float]]:
    """Numeric ``*_mg_dl`` diagnostics as (name, values, shift in minutes)."""
    found = []
    for name, values in trace.diagnostics.items():
        if not name.endswith("_mg_dl"):
            continue
        arr = _to_float_column(values)
        if arr is None or not np.isfinite(arr).any():
            continue
        m = _FORECAST_COLUMN.match(name)
        found.append((name, arr, float(m.group(1)) if m else 0.0))
    return found


_TWIN_COLORS = ("#c2185b", "#7b1fa2", "#00838f", "#6d4c41")


def _draw_trace(ax, trace: Trace, t0: datetime, detail: bool) -> None:
    hours = _trace_hours(trace, t0)
    ax.axhspan(*TARGET_MG_DL, color="#3b9b4a", alpha=0.10, lw=0)
    ax.plot(hours, trace.cgm_mg_dl, color="#4a90d9", lw=0.8 if detail else 0.6, label="CGM")
    ax.plot(hours, trace.bg_mg_dl, color="black", lw=1.2 if detail else 0.9, label="BG (true)")
    for k, (name, values, shift_min) in enumerate(_twin_columns(trace)):
        label = name if not shift_min else f"{name} (at target time)"
        ax.plot(hours + shift_min / 60.0, values, color=_TWIN_COLORS[k % len(_TWIN_COLORS)],
                lw=0.9 if detail else 0.6, ls=":" if shift_min else "--", label=label)
    finite = np.concatenate([trace.bg_mg_dl[np.isfinite(trace.bg_mg_dl)],
                             trace.cgm_mg_dl[np.isfinite(trace.cgm_mg_dl)]])
    top = max(300.0, float(finite.max()) + 20.0) if finite.size else 300.0
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
        u = np.nan_to_num(trace.insulin_u)
        ax2.vlines(hours, 0, u, color="#6a3d9a", lw=0.8, alpha=0.8, label="insulin U per sample")
        peak = max(float(u.max()) if u.size else 0.0, 0.1)
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
        ax.set_ylabel("glucose mg/dL", fontsize=8)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right", ncol=3, framealpha=0.85)


def _fig_agp(runs: Sequence[TrialRun]) -> str:
    """AGP of the first run (cohort + groups); with several runs, their medians and IQRs overlaid."""
    Figure = _figure_class()
    main = runs[0]
    groups = main.groups()
    n = len(main.patients)
    panels: list[tuple[str, str | None]] = [(f"cohort ({n} patient{'s' if n != 1 else ''})", None)]
    if len(groups) > 1 or len(runs) > 1:
        panels += [(f"{_PLURAL.get(g, g)} ({len(main.patients_in(g))})", g) for g in groups]
    if len(panels) == 2 and len(groups) == 1:  # one group: the cohort is that group
        panels = panels[:1]
    fig, axes = _panel_grid(Figure, len(panels), 2, 6.0, 3.0)
    colors = ("#1f4e9c", "#c0392b", "#27874a", "#8e44ad")
    for ax, (title, group) in zip(axes, panels):
        top = 300.0
        for k, run in enumerate(runs):
            names = run.patients if group is None else run.patients_in(group)
            traces = [run.traces[p] for p in names if p in run.traces]
            if not traces:
                continue
            times = [t for tr in traces for t in tr.time]
            hours, pct = agp_percentiles(times, np.concatenate([tr.bg_mg_dl for tr in traces]))
            color = colors[k % len(colors)]
            if len(runs) == 1:
                _, cgm = agp_percentiles(times, np.concatenate([tr.cgm_mg_dl for tr in traces]))
                top = max(top, _draw_agp(ax, hours, pct, cgm[2], color))
            else:
                ax.fill_between(hours, pct[1], pct[3], color=color, alpha=0.18, lw=0)
                ax.plot(hours, pct[2], color=color, lw=1.6, label=f"{run.label}: median, 25-75 %")
                top = max(top, float(np.nanmax(pct[3])) if np.isfinite(pct[3]).any() else 0.0)
        _agp_axes(ax, title)
        ax.set_ylim(0, min(max(300.0, top + 20.0), 450.0))
    axes[0].legend(fontsize=7, loc="upper right", framealpha=0.85)
    fig.tight_layout()
    return _png(fig)


def _draw_tir_bars(ax, labels: Sequence[str], segments: Sequence[Sequence[float]], horizontal: bool,
                   annotate: bool = True) -> None:
    positions = np.arange(len(labels))
    left = np.zeros(len(labels))
    for k, (band, color) in enumerate(TIR_BANDS):
        vals = np.array([s[k] for s in segments], dtype=float)
        if horizontal:
            ax.barh(positions, vals, left=left, color=color, height=0.75, label=band, edgecolor="white", lw=0.3)
        else:
            ax.bar(positions, vals, bottom=left, color=color, width=0.7, label=band, edgecolor="white", lw=0.3)
        if annotate:
            for i, v in enumerate(vals):
                if v >= 8:
                    c = left[i] + v / 2
                    xy = (c, positions[i]) if horizontal else (positions[i], c)
                    ax.text(*xy, f"{v:.0f}", ha="center", va="center", fontsize=6.5,
                            color="white" if k in (0, 2) else "black")
        left += np.nan_to_num(vals)
    if horizontal:
        ax.set_yticks(positions)
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of samples (true BG)", fontsize=8)
    else:
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=7, rotation=0)
        ax.set_ylim(0, 100)
        ax.set_ylabel("% of samples (true BG)", fontsize=8)
    ax.tick_params(labelsize=7)


def _fig_tir(run: TrialRun) -> str:
    Figure = _figure_class()
    patients = run.patients
    groups = run.groups()
    height = max(2.2, 0.2 * len(patients) + 0.9)
    fig = Figure(figsize=(10.0, height))
    gs = fig.add_gridspec(1, 2, width_ratios=(2.3, 1.0))
    ax_p = fig.add_subplot(gs[0, 0])
    _draw_tir_bars(ax_p, patients, [tir_segments(run.metrics(p)) for p in patients], horizontal=True)
    ax_p.set_title("per patient", fontsize=9)
    ax_g = fig.add_subplot(gs[0, 1])
    labels = ["cohort"] + [_PLURAL.get(g, g) for g in groups]
    segs = [tir_segments(run.group_metrics(None))] + [tir_segments(run.group_metrics(g)) for g in groups]
    _draw_tir_bars(ax_g, labels, segs, horizontal=False)
    ax_g.set_title("per group (mean of patients)", fontsize=9)
    ax_g.legend(title="mg/dL", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)


def _fig_traces(run: TrialRun, patients: Sequence[str], detail: bool) -> str:
    Figure = _figure_class()
    traces = [run.traces[p] for p in patients if p in run.traces]
    if detail:
        fig = Figure(figsize=(12.0, 4.0))
        ax = fig.add_subplot(1, 1, 1)
        _draw_trace(ax, traces[0], traces[0].time[0], detail=True)
        ax.set_title(traces[0].patient, fontsize=9)
    else:
        ncols = 1 if len(traces) <= 2 else 2 if len(traces) <= 8 else 3
        fig, axes = _panel_grid(Figure, len(traces), ncols, 12.0 / ncols, 2.1 if ncols > 1 else 2.6)
        for ax, tr in zip(axes, traces):
            _draw_trace(ax, tr, tr.time[0], detail=False)
            ax.set_title(tr.patient, fontsize=8, pad=2)
        # fixed spacing: tight_layout would cost one more full draw of many axes
        rows = math.ceil(len(traces) / ncols)
        fig.subplots_adjust(left=0.04, right=0.96, bottom=0.2 / rows, top=1 - 0.15 / rows,
                            wspace=0.28, hspace=0.55)
        return _png(fig)
    fig.tight_layout()
    return _png(fig)


def _fig_compare_tir(runs: Sequence[TrialRun], patients: Sequence[str]) -> str:
    Figure = _figure_class()
    groups = [g for g in runs[0].groups() if all(g in r.groups() for r in runs)]
    entities: list[tuple[str, str | None]] = [("cohort", None)] + [(_PLURAL.get(g, g), g) for g in groups]
    n = len(runs)
    rows = len(patients) * n
    fig = Figure(figsize=(11.0, max(2.6, 0.16 * rows + 1.0)))
    gs = fig.add_gridspec(1, 2, width_ratios=(2.0, 1.2))
    ax_p = fig.add_subplot(gs[0, 0])
    labels, segs = [], []
    for p in patients:
        for r in runs:
            labels.append(f"{p} · {r.label}")
            segs.append(tir_segments(r.metrics(p)))
    _draw_tir_bars(ax_p, labels, segs, horizontal=True, annotate=rows <= 40)
    for i in range(1, len(patients)):
        ax_p.axhline(i * n - 0.5, color="black", lw=0.6)
    ax_p.set_title("per patient", fontsize=9)
    ax_g = fig.add_subplot(gs[0, 1])
    labels, segs = [], []
    for name, g in entities:
        for r in runs:
            labels.append(f"{name}\n{r.label}")
            segs.append(tir_segments(r.group_metrics(g)))
    _draw_tir_bars(ax_g, labels, segs, horizontal=False)
    for i in range(1, len(entities)):
        ax_g.axvline(i * n - 0.5, color="black", lw=0.6)
    ax_g.tick_params(axis="x", labelsize=6)
    ax_g.set_title("per group (mean of patients)", fontsize=9)
    ax_g.legend(title="mg/dL", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)


# --- HTML ---------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fff;font-size:14px}
header{background:#1f4e9c;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.9}
nav{padding:8px 24px;background:#eef2f8;border-bottom:1px solid #cdd6e4;font-size:13px}
nav a{margin-right:14px;color:#1f4e9c;text-decoration:none}
main{padding:0 24px 24px;max-width:1240px}
h2{border-bottom:2px solid #1f4e9c;padding-bottom:3px;margin-top:28px;font-size:18px}
h3{font-size:15px;margin-bottom:6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px}
th,td{border:1px solid #d0d7e2;padding:3px 7px;text-align:right}
th{background:#eef2f8} td.l,th.l{text-align:left}
tr.agg td{background:#f6f8fb;font-weight:600} tr.delta td{background:#fffbe6;font-style:italic}
tr.worst td{background:#fdecea}
td.off{color:#b3261e;font-weight:600}
table.kv td{text-align:left} table.kv td:first-child{font-weight:600;background:#f6f8fb;white-space:nowrap}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.note{color:#555;font-size:12.5px;max-width:1100px}
.warn{color:#8a4b00;background:#fff4e0;padding:6px 10px;border-left:4px solid #e0a030}
footer{border-top:1px solid #ccc;padding:10px 24px;color:#555;font-size:12px;background:#fafafa}
"""


def _page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str, source: str) -> str:
    links = "".join(f'<a href="#{anchor}">{_esc(text)}</a>' for anchor, text in nav)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{_esc(title)}</title>"
        f"<style>{_CSS}</style></head><body>\n"
        f"<header><h1>{_esc(title)}</h1><p>{_esc(subtitle)}</p></header>\n<nav>{links}</nav>\n<main>\n{body}\n</main>\n"
        f"<footer><strong>Research software, not a medical device.</strong> {_esc(DISCLAIMER)} "
        f"In-silico and retrospective results do not predict how a person will do. "
        f"Generated by glucotwin {_esc(_version())} on {generated} from {_esc(source)}.</footer>\n"
        "</body></html>\n"
    )


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


_BG_COLUMNS = (
    ("TIR 70-180 %", "in_range_70_180", ".1f"),
    ("<54 %", "below_54", ".1f"),
    ("<70 %", "below_70", ".1f"),
    (">180 %", "above_180", ".1f"),
    (">250 %", "above_250", ".1f"),
    ("mean mg/dL", "mean", ".0f"),
    ("SD mg/dL", "SD", ".0f"),
    ("CV %", "CV", ".1f"),
    ("GMI %", "GMI", ".2f"),
    ("LBGI", "LBGI", ".2f"),
    ("HBGI", "HBGI", ".2f"),
)
_COMPARE_COLUMNS = tuple(c for c in _BG_COLUMNS if c[1] not in ("SD",))


def _metric_cells(metrics: Mapping[str, float], columns=_BG_COLUMNS) -> str:
    out = []
    for _, key, spec in columns:
        v = float(metrics.get(key, float("nan")))
        cls = ' class="off"' if _off_target(key, v) else ""
        out.append(f"<td{cls}>{_num(v, spec)}</td>")
    return "".join(out)


def _metrics_table(run: TrialRun, kind: str) -> str:
    extra = kind == "bg"
    head = "".join(f"<th>{_esc(t)}</th>" for t, _, _ in _BG_COLUMNS)
    if extra:
        head = '<th class="l">patient</th><th class="l">group</th><th>seed</th>' + head
        head += "<th>insulin U/day</th><th>carbs g/day</th>"
    else:
        head = '<th class="l">patient</th><th class="l">group</th>' + head
    worst = run.summary.get("worst_patient", {}).get("name")
    rows = []
    for p in run.patients:
        info = run.summary["patients"][p]
        cls = ' class="worst"' if (p == worst and extra) else ""
        cells = f'<td class="l">{_esc(p)}</td><td class="l">{_esc(_group_of(p, info))}</td>'
        if extra:
            cells += f"<td>{_esc(info.get('seed', '–'))}</td>"
        cells += _metric_cells(run.metrics(p, kind))
        if extra:
            cells += f"<td>{_num(info.get('insulin_u_per_day'), '.1f')}</td><td>{_num(info.get('carbs_g_per_day'), '.0f')}</td>"
        rows.append(f"<tr{cls}>{cells}</tr>")
    for g in run.groups():
        names = run.patients_in(g)
        cells = f'<td class="l">{_esc(_PLURAL.get(g, g))} ({len(names)})</td><td class="l">mean</td>'
        if extra:
            cells += "<td></td>"
        cells += _metric_cells(run.group_metrics(g, kind))
        if extra:
            cells += f"<td>{_num(run.mean_of('insulin_u_per_day', g), '.1f')}</td><td>{_num(run.mean_of('carbs_g_per_day', g), '.0f')}</td>"
        rows.append(f'<tr class="agg">{cells}</tr>')
    cells = f'<td class="l">all ({len(run.patients)})</td><td class="l">mean</td>' + ("<td></td>" if extra else "")
    cells += _metric_cells(run.group_metrics(None, kind))
    if extra:
        cells += f"<td>{_num(run.mean_of('insulin_u_per_day'), '.1f')}</td><td>{_num(run.mean_of('carbs_g_per_day'), '.0f')}</td>"
    rows.append(f'<tr class="agg">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _protocol_rows(run: TrialRun) -> list[tuple[str, Any]]:
    s = run.summary
    proto = s.get("protocol", {})
    seeds = ", ".join(f"{p} {s['patients'][p].get('seed', '?')}" for p in run.patients)
    rows: list[tuple[str, Any]] = [
        ("controller", s.get("controller", "?")),
        ("plant", s.get("plant", "?")),
        ("arm", f"{proto.get('arm', '?')} ({'meal information given at meal time' if proto.get('arm') == 'hcl' else 'no meal information'})"),
        ("duration", f"{proto.get('days', '?')} days from {proto.get('start', '?')}"),
        ("sensor / pump", f"{proto.get('sensor', '?')} CGM, {proto.get('pump', '?')} pump"),
        ("scenario", proto.get("scenario", "?")),
        ("seeds", f"seed offset {proto.get('seed_offset', '?')}; sensor seed {proto.get('sensor_seed', '?')}; per patient: {seeds}"),
    ]
    factor = proto.get("carb_announcement_factor", 1.0)
    if factor not in (1, 1.0, None):
        rows.append(("carb announcement", f"carbohydrates announced × {factor} (off-protocol check)"))
    delay = proto.get("meal_delay_min", 0.0)
    if delay:
        rows.append(("meal delay", f"meals announced {delay:g} min after they start (off-protocol check)"))
    scale = proto.get("physiology_scale") or {}
    if scale:
        rows.append(("physiology scale", ", ".join(f"{k} × {v}" for k, v in scale.items()) + " (the controller is not told)"))
    if "versions" in s:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in s["versions"].items())))
    if "run" in s:
        r = s["run"]
        rows.append(("run", f"wall time {r.get('wall_s', '?')} s with {r.get('workers', '?')} worker(s)"))
    if "hil" in s:
        rows.append(("HIL journals", json.dumps(s["hil"], sort_keys=True)))
    rows.append(("output directory", str(run.directory)))
    rerun = _rerun_command(run)
    if rerun:
        rows.append(("rerun", rerun))
    return rows


def _rerun_command(run: TrialRun) -> str | None:
    s = run.summary
    proto = s.get("protocol", {})
    controller = str(s.get("controller", ""))
    if "HIL" in controller:
        cmd = ["glucotwin", "hil"]
    elif controller and " " not in controller:
        cmd = ["glucotwin", "trial", "--controller", controller]
    else:
        return None
    cmd += ["--arm", str(proto.get("arm", "hcl")), "--days", f"{proto.get('days', 3)}",
            "--seed-offset", str(proto.get("seed_offset", 0)), "--sensor", str(proto.get("sensor", "Dexcom"))]
    if len(run.patients) != 30 or cmd[1] == "hil":
        cmd += ["--patients", *run.patients]
    factor = proto.get("carb_announcement_factor", 1.0)
    if factor not in (1, 1.0, None) and cmd[1] == "trial":
        cmd += ["--carb-error", f"{(float(factor) - 1.0) * 100:g}"]
    if proto.get("meal_delay_min") and cmd[1] == "trial":
        cmd += ["--meal-delay", f"{float(proto['meal_delay_min']):g}"]
    for k, v in (proto.get("physiology_scale") or {}).items():
        cmd += ["--scale", f"{k}={v}"]
    return " ".join(cmd)


def _compare_section(runs: Sequence[TrialRun]) -> str:
    base = runs[0]
    parts = ["<h2 id=\"compare\">Comparison</h2>"]
    parts.append("<p class=\"note\">Runs compared: " + "; ".join(
        f"<strong>{_esc(r.label)}</strong> ({_esc(r.summary.get('controller', '?'))}, {_esc(r.directory)})" for r in runs
    ) + ". True BG; group rows are means over patients."
        + (" Δ = " + _esc(runs[1].label) + " − " + _esc(base.label) + "." if len(runs) == 2 else "") + "</p>")
    ignore = {"arm"}
    diffs = []
    for r in runs[1:]:
        a, b = base.summary.get("protocol", {}), r.summary.get("protocol", {})
        for key in sorted(set(a) | set(b)):
            if key not in ignore and a.get(key) != b.get(key):
                diffs.append(f"{key}: {base.label} {a.get(key)!r} vs {r.label} {b.get(key)!r}")
    if diffs:
        parts.append('<p class="warn">The protocols differ beyond controller and arm: '
                     + _esc("; ".join(diffs)) + ". The comparison is not like for like.</p>")
    common = [p for p in base.patients if all(p in r.summary["patients"] for r in runs[1:])]
    only = sorted({p for r in runs for p in r.patients} - set(common))
    if only:
        parts.append(f'<p class="warn">Patients not in every run, left out: {_esc(", ".join(only))}.</p>')
    head = ('<tr><th class="l">patient / group</th><th class="l">run</th>'
            + "".join(f"<th>{_esc(t)}</th>" for t, _, _ in _COMPARE_COLUMNS) + "<th>insulin U/day</th></tr>")

    def block(name: str, metrics_of, insulin_of) -> str:
        rows = []
        for i, r in enumerate(runs):
            first = f'<td class="l" rowspan="{len(runs) + (len(runs) == 2)}">{_esc(name)}</td>' if i == 0 else ""
            rows.append(f"<tr>{first}<td class=\"l\">{_esc(r.label)}</td>{_metric_cells(metrics_of(r), _COMPARE_COLUMNS)}"
                        f"<td>{_num(insulin_of(r), '.1f')}</td></tr>")
        if len(runs) == 2:
            a, b = metrics_of(runs[0]), metrics_of(runs[1])
            cells = "".join(f"<td>{_num(float(b[k]) - float(a[k]), '+' + spec)}</td>" for _, k, spec in _COMPARE_COLUMNS)
            d_ins = insulin_of(runs[1]) - insulin_of(runs[0])
            rows.append(f'<tr class="delta"><td class="l">Δ</td>{cells}<td>{_num(d_ins, "+.1f")}</td></tr>')
        return "".join(rows)

    groups = [g for g in base.groups() if all(g in r.groups() for r in runs)]
    grows = [block(f"all ({len(base.patients)})", lambda r: r.group_metrics(None), lambda r: r.mean_of("insulin_u_per_day"))]
    for g in groups:
        grows.append(block(f"{_PLURAL.get(g, g)} ({len(base.patients_in(g))})",
                           lambda r, g=g: r.group_metrics(g), lambda r, g=g: r.mean_of("insulin_u_per_day", g)))
    parts.append("<h3>By group</h3>")
    parts.append(f'<table class="compare">{head}{"".join(grows)}</table>')
    prows = [block(p, lambda r, p=p: r.metrics(p), lambda r, p=p: float(r.summary["patients"][p].get("insulin_u_per_day", float("nan"))))
             for p in common]
    parts.append("<h3>By patient</h3>")
    parts.append(f'<table class="compare">{head}{"".join(prows)}</table>')
    if common:
        parts.append("<h3>Time in ranges, side by side</h3>")
        parts.append(_img(_fig_compare_tir(runs, common), "time in ranges of the compared runs by patient and group"))
    return "\n".join(parts)


def trial_report_html(run: TrialRun, compare: Sequence[TrialRun] = ()) -> str:
    """The HTML report of a trial or HIL run, optionally compared with other runs."""
    runs = [run, *compare]
    labels = [r.label for r in runs]
    for r in runs:  # make labels unique
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.directory.name})"
    s = run.summary
    proto = s.get("protocol", {})
    hil = "HIL" in str(s.get("controller", ""))
    title = f"glucotwin {'HIL' if hil else 'trial'} report: {run.label}"
    subtitle = (f"{len(run.patients)} patient(s), {proto.get('days', '?')} days, {proto.get('sensor', '?')} CGM, "
                f"seed offset {proto.get('seed_offset', '?')}, plant {s.get('plant', '?')}")
    nav = [("protocol", "Protocol"), ("agp", "AGP"), ("tir", "Time in ranges"), ("metrics", "Metrics"),
           ("traces", "Traces")]
    if compare:
        nav.append(("compare", "Comparison"))
    parts = ['<h2 id="protocol">Protocol and plant</h2>', _kv_table(_protocol_rows(run))]
    if run.missing_traces:
        parts.append(f'<p class="warn">Trace CSV missing or unreadable for: {_esc(", ".join(run.missing_traces))}; '
                     "their metrics come from summary.json, they are left out of the figures.</p>")
    cohort, cgm = run.group_metrics(None), run.group_metrics(None, "cgm")
    worst = s.get("worst_patient", {})
    parts.append(
        f"<p><strong>Cohort (true BG):</strong> TIR {_num(cohort['in_range_70_180'])} %, "
        f"&lt;70 {_num(cohort['below_70'])} %, &lt;54 {_num(cohort['below_54'])} %, "
        f"&gt;180 {_num(cohort['above_180'])} %, mean {_num(cohort['mean'], '.0f')} mg/dL, "
        f"GMI {_num(cohort['GMI'], '.2f')} %, CV {_num(cohort['CV'])} %. "
        f"<strong>On CGM:</strong> TIR {_num(cgm['in_range_70_180'])} %, &lt;70 {_num(cgm['below_70'])} %, "
        f"mean {_num(cgm['mean'], '.0f')} mg/dL."
        + (f" <strong>Worst patient:</strong> {_esc(worst.get('name'))} ({_esc(worst.get('rule', ''))})." if worst else "")
        + "</p>"
    )
    drawn = [p for p in run.patients if p in run.traces]
    parts.append('<h2 id="agp">Ambulatory Glucose Profile</h2>')
    if drawn:
        parts.append(_img(_fig_agp(runs), "Ambulatory Glucose Profile of the cohort and each group"))
        parts.append(
            f'<p class="note">True blood glucose by time of day, pooled over days and patients: median, '
            f"25-75 % and 5-95 % bands (every {AGP_BIN_MIN:g} min over a {AGP_WINDOW_MIN:g}-min window); "
            "dashed: CGM median; green band: target 70-180 mg/dL; dotted: 54 and 250 mg/dL."
            + (" With compared runs: each run's median and 25-75 % band." if compare else "")
            + " Hours without data are left blank (runs shorter than a day).</p>"
        )
    else:
        parts.append('<p class="warn">No trace could be read: no AGP.</p>')
    parts.append('<h2 id="tir">Time in ranges</h2>')
    parts.append(_img(_fig_tir(run), "time in ranges per patient and per group (stacked bars)"))
    parts.append('<p class="note">Stacked bars of % of samples of true BG in &lt;54, 54-69, 70-180, 181-250 and '
                 "&gt;250 mg/dL. Consensus targets: TIR &gt;70 %, &lt;70 under 4 %, &lt;54 under 1 %, "
                 "&gt;180 under 25 %, &gt;250 under 5 %, CV at most 36 %.</p>")
    parts.append('<h2 id="metrics">Metrics</h2>')
    parts.append("<h3>True blood glucose (simglucose BG)</h3>")
    parts.append(_metrics_table(run, "bg"))
    parts.append("<h3>CGM (what the controller saw)</h3>")
    parts.append(_metrics_table(run, "cgm"))
    parts.append('<p class="note">Percentages are of samples; GMI = 3.31 + 0.02392 × mean mg/dL; CV = SD / mean; '
                 "LBGI/HBGI: Kovatchev's risk indices. Red: outside the consensus target. Group and cohort rows "
                 "are means over patients. Highlighted row: the worst patient.</p>")
    parts.append('<h2 id="traces">Traces</h2>')
    if drawn:
        worst_name = worst.get("name") if worst.get("name") in run.traces else drawn[0]
        parts.append(f"<h3>Worst patient in detail: {_esc(worst_name)}</h3>")
        parts.append(_img(_fig_traces(run, [worst_name], detail=True), f"trace of {worst_name}"))
        shown = drawn[:TRACE_GRID_MAX]
        parts.append("<h3>Every patient</h3>")
        parts.append(_img(_fig_traces(run, shown, detail=False), "traces of every patient, small multiples"))
        if len(drawn) > len(shown):
            parts.append(f'<p class="note">Only the first {len(shown)} of {len(drawn)} patients are drawn.</p>')
        twin = sorted({name for p in shown for name, _, _ in _twin_columns(run.traces[p])})
        parts.append(
            '<p class="note">Black: true BG; blue: CGM; orange triangles: meals (grams in the detail view); purple, '
            "right axis: insulin (basal U/h as a step and bolus U as bars when the controller reports them, "
            "otherwise insulin delivered per sample). x: hours since the start; grey lines: days."
            + (f" Twin columns: {_esc(', '.join(twin))} (dashed: estimate; dotted: forecasts drawn at their target time)."
               if twin else "")
            + "</p>"
        )
    if compare:
        parts.append(_compare_section(runs))
    sources = ", ".join(str(r.directory) for r in runs)
    return _page(title, subtitle, nav, "\n".join(parts), sources)


def write_trial_report(directory: str | Path, out: str | Path | None = None,
                       compare: Sequence[str | Path] = ()) -> Path:
    """Write the report of a trial/HIL output directory (default ``DIR/report.html``)."""
    run = load_trial_run(directory)
    others = [load_trial_run(d) for d in compare]
    page = trial_report_html(run, others)
    path = Path(out) if out is not None else Path(directory) / REPORT_FILENAME
    path.write_text(page, encoding="utf-8")
    return path


def report_after_run(directory: str | Path) -> Path | None:
    """For ``glucotwin trial`` and ``hil``: write ``DIR/report.html`` and say so.

    Never raises: a failure prints one warning line to stderr and returns None.
    """
    try:
        tic = time.perf_counter()
        path = write_trial_report(directory)
    except Exception as exc:  # a report must never fail the trial it reports on
        _warn(exc)
        return None
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB, {time.perf_counter() - tic:.1f} s)")
    return path


# --- replays ------------------------------------------------------------------------


def read_forecasts_csv(path: str | Path):
    """Forecast rows from a CSV written by :func:`sim.forecast.replay.write_forecasts_csv`."""
    from sim.forecast.scoring import ForecastRow
    from sim.forecast.replay import FORECAST_COLUMNS

    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if tuple(header or ()) != FORECAST_COLUMNS:
            raise ValueError(f"{path}: not a glucotwin forecasts CSV")
        for r in reader:
            rows.append(ForecastRow(r[0], r[7], datetime.fromisoformat(r[1]), float(r[2]),
                                    float(r[4]), float(r[5]), float(r[6])))
    return rows


def _local(t: datetime, zone) -> datetime:
    return t.astimezone(zone) if zone is not None and t.tzinfo is not None else t


def _subject_name(s: str) -> str:
    return s or "(one subject)"


def _fig_rmse(evaluation: Mapping[str, Any]) -> str:
    Figure = _figure_class()
    methods = evaluation["methods"]
    horizons = [f"{h:g}" for h in evaluation["horizons_min"]]
    fig = Figure(figsize=(9.0, 2.8))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(methods))
    for ax, key, title in ((axes[0], "rmse_mg_dl", "RMSE"), (axes[1], "mae_mg_dl", "MAE")):
        for k, m in enumerate(methods):
            vals = [evaluation["scores"][m][h][key] for h in horizons]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(np.arange(len(horizons)) + (k - (len(methods) - 1) / 2) * width, vals, width, label=m,
                   color=f"C{k % 10}")
        ax.set_xticks(np.arange(len(horizons)))
        ax.set_xticklabels([f"{h} min" for h in horizons], fontsize=8)
        ax.set_ylabel(f"{title} mg/dL", fontsize=8)
        ax.set_title(f"{title} by horizon (same pairs for every method)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _fig_replay_agp(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], zone) -> str:
    Figure = _figure_class()
    names = list(by_subject)
    panels = [("all subjects" if len(names) > 1 else _subject_name(names[0]), names)]
    if 1 < len(names) <= REPLAY_SUBJECTS_MAX:
        panels += [(_subject_name(s), [s]) for s in names]
    fig, axes = _panel_grid(Figure, len(panels), 2, 6.0, 3.0)
    for ax, (title, subjects) in zip(axes, panels):
        times = [_local(t, zone) for s in subjects for t in by_subject[s][0]]
        g = np.concatenate([by_subject[s][1] for s in subjects])
        hours, pct = agp_percentiles(times, g)
        top = _draw_agp(ax, hours, pct, what="CGM")
        _agp_axes(ax, title)
        ax.set_ylim(0, min(max(300.0, top + 20.0), 450.0))
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _png(fig)


def _fig_replay_tir(labels: Sequence[str], metrics: Sequence[Mapping[str, float]]) -> str:
    Figure = _figure_class()
    fig = Figure(figsize=(9.0, max(1.6, 0.28 * len(labels) + 0.9)))
    ax = fig.add_subplot(1, 1, 1)
    _draw_tir_bars(ax, labels, [tir_segments(m) for m in metrics], horizontal=True)
    ax.set_xlabel("% of readings (CGM)", fontsize=8)
    ax.legend(title="mg/dL", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)


def _fig_replay_traces(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], zone) -> str:
    Figure = _figure_class()
    import matplotlib.dates as mdates

    names = list(by_subject)[:REPLAY_SUBJECTS_MAX]
    fig, axes = _panel_grid(Figure, len(names), 1, 12.0, 2.2)
    for ax, s in zip(axes, names):
        times, g = by_subject[s]
        ax.axhspan(*TARGET_MG_DL, color="#3b9b4a", alpha=0.10, lw=0)
        ax.plot([_local(t, zone).replace(tzinfo=None) for t in times], g, color="#4a90d9", lw=0.7)
        ax.set_title(_subject_name(s), fontsize=8, pad=2)
        ax.set_ylim(0, max(300.0, float(np.nanmax(g)) + 20.0))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.2, lw=0.4)
        ax.set_ylabel("mg/dL", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _fig_replay_forecasts(by_subject, forecasts, horizons: Sequence[float], zone) -> tuple[str, str]:
    """Forecasts (drawn at their target time) against readings over the first 24 h of forecasts."""
    Figure = _figure_class()
    import matplotlib.dates as mdates

    subjects = [s for s in by_subject if any(f.subject == s for f in forecasts)][:REPLAY_FORECAST_SUBJECTS_MAX]
    panels = [(s, h) for s in subjects for h in horizons]
    fig, axes = _panel_grid(Figure, len(panels), 1, 12.0, 2.6)
    methods = list(dict.fromkeys(f.method for f in forecasts))
    window = ""
    for ax, (s, h) in zip(axes, panels):
        rows = [f for f in forecasts if f.subject == s and f.horizon_min == h]
        start = min(f.issued_at for f in forecasts if f.subject == s)
        end = start + timedelta(hours=24)
        window = f"{_local(start, zone):%Y-%m-%d %H:%M} + 24 h"
        times, g = by_subject[s]
        sel = [(t, v) for t, v in zip(times, g) if start <= t <= end + timedelta(minutes=max(horizons))]
        ax.axhspan(*TARGET_MG_DL, color="#3b9b4a", alpha=0.10, lw=0)
        ax.plot([_local(t, zone).replace(tzinfo=None) for t, _ in sel], [v for _, v in sel], "o",
                ms=2.0, color="black", label="readings")
        for k, m in enumerate(methods):
            mr = [f for f in rows if f.method == m and f.issued_at <= end]
            ax.plot([_local(f.target_time, zone).replace(tzinfo=None) for f in mr], [f.forecast_mg_dl for f in mr],
                    color=f"C{k % 10}", lw=0.9, label=m)
        ax.set_title(f"{_subject_name(s)}: {h:g}-min forecasts at their target time", fontsize=8, pad=2)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.2, lw=0.4)
        ax.set_ylabel("mg/dL", fontsize=7)
        ax.legend(fontsize=6, loc="upper right", ncol=len(methods) + 1)
    fig.tight_layout()
    return _png(fig), window


def replay_report_html(report: Mapping[str, Any], readings: Sequence[Any] | None = None,
                       forecasts: Sequence[Any] | None = None, tz: str | None = None,
                       source: str = "") -> str:
    """The HTML report of a replay: ``report`` is :func:`sim.forecast.replay.build_report`'s dict.

    ``readings`` (the file's :class:`~sensors.GlucoseReading` list) give the AGP,
    time in ranges and traces; ``forecasts`` (ForecastRow list) the forecasts
    against readings. ``tz``: the zone for times of day (default UTC).
    """
    zone = None
    if tz:
        from zoneinfo import ZoneInfo

        try:
            zone = ZoneInfo(tz)
        except (KeyError, ValueError):
            zone = None
    tz_name = tz if zone is not None else "UTC"
    if zone is None:
        zone = timezone.utc
    evaluation = report.get("evaluation", {})
    methods = evaluation.get("methods", [])
    horizons = evaluation.get("horizons_min", [])
    title = "glucotwin replay report"
    subtitle = (f"{report.get('file', '?')}: {report.get('file_format', '?')}, {report.get('readings', '?')} readings of "
                f"{len(report.get('readings_per_subject', {}))} subject(s); methods {', '.join(methods)}")
    nav = [("input", "Input"), ("scores", "Forecast scores")]
    parts = ['<h2 id="input">Input and assumptions</h2>']
    rows: list[tuple[str, Any]] = [
        ("file", f"{report.get('file', '?')} ({report.get('file_format', '?')})"),
        ("readings", f"{report.get('readings', '?')} fed; {report.get('readings_clipped', 0)} clipped (Low/High, never a truth); "
                     f"{report.get('readings_skipped_same_time', 0)} skipped (same time); {report.get('rejected', 0)} rejected"
                     + (f" ({', '.join(f'{k} {v}' for k, v in report.get('rejected_reasons', {}).items())})"
                        if report.get("rejected_reasons") else "")),
        ("subjects", ", ".join(f"{_subject_name(k)}: {v}" for k, v in report.get("readings_per_subject", {}).items())),
        ("profile", f"{report.get('profile', {}).get('name', '?')}, from {report.get('profile_source', '?')}"),
    ]
    for m, text in report.get("insulin_assumption", {}).items():
        rows.append((f"insulin, {m}", text))
    for m, why in report.get("methods_not_compared", {}).items():
        rows.append((f"not compared: {m}", why))
    warm = report.get("warmup", {})
    rows.append(("warm-up", f"{warm.get('readings', '?')} readings spanning {warm.get('minutes', '?')} min per subject"))
    rows.append(("scoring", f"truth = the reading within ±{evaluation.get('tolerance_min', '?')} min of the target time; "
                            f"same pairs for every method; band nominal coverage {report.get('band_coverage_nominal', '?')}"))
    rows.append(("time of day", tz_name))
    parts.append(_kv_table(rows))

    parts.append('<h2 id="scores">Forecast scores</h2>')
    head = ('<tr><th class="l">method</th><th>horizon min</th><th>n</th><th>RMSE mg/dL</th><th>MAE mg/dL</th>'
            "<th>bias mg/dL</th><th>band coverage</th><th>issued</th></tr>")
    trs = []
    for h in horizons:
        key = f"{h:g}"
        best = evaluation.get("best", {}).get(key)
        for m in methods:
            sc = evaluation["scores"][m][key]
            cls = ' class="agg"' if m == best else ""
            trs.append(f"<tr{cls}><td class=\"l\">{_esc(m)}{' (best)' if m == best else ''}</td><td>{key}</td>"
                       f"<td>{sc['n']}</td><td>{_num(sc['rmse_mg_dl'], '.2f')}</td><td>{_num(sc['mae_mg_dl'], '.2f')}</td>"
                       f"<td>{_num(sc['bias_mg_dl'], '+.2f')}</td><td>{_num(sc['coverage'], '.2f')}</td>"
                       f"<td>{evaluation.get('issued', {}).get(m, {}).get(key, '–')}</td></tr>")
    parts.append(f"<table>{head}{''.join(trs)}</table>")
    if methods and horizons:
        parts.append(_img(_fig_rmse(evaluation), "forecast RMSE and MAE by horizon and method"))

    if readings:
        by_subject: dict[str, tuple[list[datetime], np.ndarray]] = {}
        tmp: dict[str, list[tuple[datetime, float]]] = {}
        for r in readings:
            tmp.setdefault(r.subject, []).append((r.time, float(r.glucose_mg_dl)))
        for s, pairs in tmp.items():
            pairs.sort(key=lambda p: p[0])
            by_subject[s] = ([p[0] for p in pairs], np.array([p[1] for p in pairs]))
        nav += [("agp", "AGP"), ("tir", "Time in ranges"), ("metrics", "Metrics"), ("traces", "Traces")]
        parts.append('<h2 id="agp">Ambulatory Glucose Profile (CGM readings)</h2>')
        parts.append(_img(_fig_replay_agp(by_subject, zone), "Ambulatory Glucose Profile of the readings"))
        parts.append(f'<p class="note">Readings by time of day ({_esc(tz_name)}), pooled over days: median, 25-75 % '
                     "and 5-95 % bands; green: target 70-180 mg/dL.</p>")
        names = list(by_subject)
        metrics = [glucose_metrics(by_subject[s][1]) for s in names]
        labels = [_subject_name(s) for s in names]
        if len(names) > 1:
            labels.append("all (mean of subjects)")
            metrics.append(mean_metrics(metrics))
        parts.append('<h2 id="tir">Time in ranges</h2>')
        parts.append(_img(_fig_replay_tir(labels, metrics), "time in ranges per subject"))
        parts.append('<h2 id="metrics">Metrics (CGM readings)</h2>')
        head = '<tr><th class="l">subject</th><th>readings</th>' + "".join(f"<th>{_esc(t)}</th>" for t, _, _ in _BG_COLUMNS) + "</tr>"
        trs = []
        for i, (label, m) in enumerate(zip(labels, metrics)):
            n = len(by_subject[names[i]][1]) if i < len(names) else sum(len(v[1]) for v in by_subject.values())
            cls = ' class="agg"' if i >= len(names) else ""
            trs.append(f'<tr{cls}><td class="l">{_esc(label)}</td><td>{n}</td>{_metric_cells(m)}</tr>')
        parts.append(f"<table>{head}{''.join(trs)}</table>")
        parts.append('<p class="note">Metrics of sensor readings (clipped Low/High readings count at their range '
                     "limit); GMI = 3.31 + 0.02392 × mean mg/dL. Red: outside the consensus target.</p>")
        parts.append('<h2 id="traces">Readings and forecasts</h2>')
        parts.append(_img(_fig_replay_traces(by_subject, zone), "readings of each subject"))
        if len(by_subject) > REPLAY_SUBJECTS_MAX:
            parts.append(f'<p class="note">Only the first {REPLAY_SUBJECTS_MAX} subjects are drawn.</p>')
        if forecasts:
            uri, window = _fig_replay_forecasts(by_subject, forecasts, [float(h) for h in horizons], zone)
            parts.append(f"<h3>Forecasts against readings ({_esc(window)})</h3>")
            parts.append(_img(uri, "forecasts against readings"))
            parts.append('<p class="note">Each forecast is drawn at its target time (issue time + horizon); '
                         f"black dots: readings. First {REPLAY_FORECAST_SUBJECTS_MAX} subjects at most.</p>")
        else:
            parts.append('<p class="note">No forecasts CSV: forecasts against readings not drawn.</p>')
    else:
        parts.append('<p class="warn">The CGM file could not be read again: no AGP, time in ranges or traces.</p>')
    return _page(title, subtitle, nav, "\n".join(parts), source or str(report.get("file", "")))


def write_replay_report(json_path: str | Path, out: str | Path | None = None) -> Path:
    """Rebuild a replay's HTML report from its JSON report (and forecasts CSV beside it).

    The readings are read again from the file the JSON names (as given, or
    relative to the JSON's directory); a forecasts CSV is looked for beside
    the JSON (same name with ``.csv`` first, else the only forecasts CSV there).
    """
    from sim.forecast.replay import REPORT_FORMAT, load_cgm_file

    json_path = Path(json_path)
    try:
        report = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {json_path}: {exc}") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ReportError(f"{json_path}: not a glucotwin replay report ({REPORT_FORMAT})")
    readings = None
    for candidate in (Path(report.get("file", "")), json_path.parent / report.get("file", "")):
        if report.get("file") and candidate.is_file():
            try:
                readings = load_cgm_file(candidate, format=report.get("file_format", "auto")).result[0]
            except (OSError, ValueError):
                readings = None
            break
    forecasts = None
    csvs = [json_path.with_suffix(".csv")] + sorted(p for p in json_path.parent.glob("*.csv") if p != json_path.with_suffix(".csv"))
    for candidate in csvs:
        if candidate.is_file():
            try:
                forecasts = read_forecasts_csv(candidate)
                break
            except (OSError, ValueError, IndexError):
                continue
    page = replay_report_html(report, readings, forecasts, source=str(json_path))
    path = Path(out) if out is not None else replay_report_path(json_path)
    path.write_text(page, encoding="utf-8")
    return path


def replay_report_path(output: str | Path) -> Path:
    """Where a replay's HTML report goes: its JSON or forecasts CSV with ``.html``."""
    output = Path(output)
    path = output.with_suffix(".html")
    return path if path != output else output.with_name(output.name + ".html")


def replay_report_after_run(path: str | Path, report: Mapping[str, Any], readings: Sequence[Any],
                            forecasts: Sequence[Any], tz: str | None = None) -> Path | None:
    """For ``glucotwin replay``: write the HTML report and say so.

    Never raises: a failure prints one warning line to stderr and returns None.
    """
    try:
        tic = time.perf_counter()
        path = Path(path)
        path.write_text(replay_report_html(report, readings, forecasts, tz=tz), encoding="utf-8")
    except Exception as exc:  # a report must never fail the replay it reports on
        _warn(exc)
        return None
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB, {time.perf_counter() - tic:.1f} s)")
    return path


def _warn(exc: BaseException) -> None:
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    print(f"glucotwin: warning: report not written: {message}", file=sys.stderr)


def _replay_json_in(directory: Path) -> Path | None:
    for p in sorted(directory.glob("*.json")):
        try:
            with open(p, encoding="utf-8") as handle:
                head = handle.read(200)
        except OSError:
            continue
        if '"glucotwin.replay-report/' in head:
            return p
    return None


def write_report(source: str | Path, out: str | Path | None = None, compare: Sequence[str | Path] = ()) -> Path:
    """``glucotwin report``: a trial/HIL directory, or a replay JSON (or a directory holding one)."""
    source = Path(source)
    if source.is_dir() and (source / "summary.json").exists():
        return write_trial_report(source, out, compare)
    replay_json = source if source.is_file() else _replay_json_in(source) if source.is_dir() else None
    if replay_json is None:
        if not source.exists():
            raise ReportError(f"{source}: no such file or directory")
        raise ReportError(f"{source}: neither a trial/HIL output directory (summary.json) nor a replay report JSON")
    if compare:
        raise ReportError("--compare works with trial and HIL output directories, not with replays")
    return write_replay_report(replay_json, out)
