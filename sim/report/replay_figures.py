"""The figures of a replay report: forecast errors by horizon, AGP, time in ranges, readings, and forecasts against readings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from sim.report.agp import _agp_axes, _draw_agp, agp_percentiles
from sim.report.figures import _figure_class, _panel_grid, _png
from sim.report.ranges import TARGET_MG_DL, tir_segments
from sim.report.tir_bars import _draw_tir_bars
from sim.trial.metrics.units import MG_DL, GlucoseUnits

REPLAY_SUBJECTS_MAX = 12
REPLAY_FORECAST_SUBJECTS_MAX = 3


def _local(t: datetime, zone) -> datetime:
    return t.astimezone(zone) if zone is not None and t.tzinfo is not None else t


def _subject_name(s: str) -> str:
    return s or "(one subject)"


def _fig_rmse(evaluation: Mapping[str, Any], u: GlucoseUnits = MG_DL) -> str:
    Figure = _figure_class()
    methods = evaluation["methods"]
    horizons = [f"{h:g}" for h in evaluation["horizons_min"]]
    fig = Figure(figsize=(9.0, 2.8))
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(methods))
    for ax, key, title in ((axes[0], "rmse_mg_dl", "RMSE"), (axes[1], "mae_mg_dl", "MAE")):
        for k, m in enumerate(methods):
            vals = [evaluation["scores"][m][h][key] for h in horizons]
            vals = [np.nan if v is None else u.value(v) for v in vals]
            ax.bar(np.arange(len(horizons)) + (k - (len(methods) - 1) / 2) * width, vals, width, label=m,
                   color=f"C{k % 10}")
        ax.set_xticks(np.arange(len(horizons)))
        ax.set_xticklabels([f"{h} min" for h in horizons], fontsize=8)
        ax.set_ylabel(f"{title} {u.label}", fontsize=8)
        ax.set_title(f"{title} by horizon (same pairs for every method)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _fig_replay_agp(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], zone, u: GlucoseUnits = MG_DL) -> str:
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
        top = _draw_agp(ax, hours, pct, what="CGM", u=u)
        _agp_axes(ax, title, u)
        ax.set_ylim(0, u.value(min(max(300.0, top + 20.0), 450.0)))
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _png(fig)


def _fig_replay_tir(labels: Sequence[str], metrics: Sequence[Mapping[str, float]], u: GlucoseUnits = MG_DL) -> str:
    Figure = _figure_class()
    fig = Figure(figsize=(9.0, max(1.6, 0.28 * len(labels) + 0.9)))
    ax = fig.add_subplot(1, 1, 1)
    _draw_tir_bars(ax, labels, [tir_segments(m) for m in metrics], horizontal=True, u=u)
    ax.set_xlabel("% of readings (CGM)", fontsize=8)
    ax.legend(title=u.label, fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)


def _fig_replay_traces(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], zone,
                       u: GlucoseUnits = MG_DL) -> str:
    Figure = _figure_class()
    import matplotlib.dates as mdates

    names = list(by_subject)[:REPLAY_SUBJECTS_MAX]
    fig, axes = _panel_grid(Figure, len(names), 1, 12.0, 2.2)
    for ax, s in zip(axes, names):
        times, g = by_subject[s]
        ax.axhspan(*(u.value(y) for y in TARGET_MG_DL), color="#3b9b4a", alpha=0.10, lw=0)
        ax.plot([_local(t, zone).replace(tzinfo=None) for t in times], u.value(g), color="#4a90d9", lw=0.7)
        ax.set_title(_subject_name(s), fontsize=8, pad=2)
        ax.set_ylim(0, u.value(max(300.0, float(np.nanmax(g)) + 20.0)))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.2, lw=0.4)
        ax.set_ylabel(u.label, fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _fig_replay_forecasts(by_subject, forecasts, horizons: Sequence[float], zone,
                          u: GlucoseUnits = MG_DL) -> tuple[str, str]:
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
        ax.axhspan(*(u.value(y) for y in TARGET_MG_DL), color="#3b9b4a", alpha=0.10, lw=0)
        ax.plot([_local(t, zone).replace(tzinfo=None) for t, _ in sel], [u.value(v) for _, v in sel], "o",
                ms=2.0, color="black", label="readings")
        for k, m in enumerate(methods):
            mr = [f for f in rows if f.method == m and f.issued_at <= end]
            ax.plot([_local(f.target_time, zone).replace(tzinfo=None) for f in mr], [u.value(f.forecast_mg_dl) for f in mr],
                    color=f"C{k % 10}", lw=0.9, label=m)
        ax.set_title(f"{_subject_name(s)}: {h:g}-min forecasts at their target time", fontsize=8, pad=2)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.2, lw=0.4)
        ax.set_ylabel(u.label, fontsize=7)
        ax.legend(fontsize=6, loc="upper right", ncol=len(methods) + 1)
    fig.tight_layout()
    return _png(fig), window
