"""The Ambulatory Glucose Profile: percentiles by time of day, their drawing, and the AGP figure of trial runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from sim.report.figures import _figure_class, _panel_grid, _png
from sim.report.ranges import TARGET_MG_DL
from sim.report.trial_run import _PLURAL, TrialRun
from sim.trial.metrics.units import MG_DL, GlucoseUnits

AGP_BIN_MIN = 15.0
AGP_WINDOW_MIN = 60.0
AGP_MIN_SAMPLES = 3


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


def _agp_axes(ax, title: str, u: GlucoseUnits = MG_DL) -> None:
    target = [u.value(y) for y in TARGET_MG_DL]
    ax.axhspan(*target, color="#3b9b4a", alpha=0.10, lw=0)
    for y in target:
        ax.axhline(y, color="#3b9b4a", lw=0.8)
    ax.axhline(u.value(54.0), color="#8c1c13", lw=0.6, ls=":")
    ax.axhline(u.value(250.0), color="#e07b24", lw=0.6, ls=":")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)], fontsize=7)
    ax.set_ylabel(u.label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.25, lw=0.5)


def _draw_agp(ax, hours, pct, cgm_median=None, color="#1f4e9c", what="BG", u: GlucoseUnits = MG_DL) -> float:
    """Draw percentiles given in mg/dL, in ``u``; returns the top of the 95th percentile (mg/dL)."""
    top = np.nanmax(pct[4]) if np.isfinite(pct[4]).any() else 300.0
    pct = u.value(np.asarray(pct))
    cgm_median = None if cgm_median is None else u.value(np.asarray(cgm_median))
    ax.fill_between(hours, pct[0], pct[4], color=color, alpha=0.15, lw=0, label="5-95 %")
    ax.fill_between(hours, pct[1], pct[3], color=color, alpha=0.35, lw=0, label="25-75 %")
    ax.plot(hours, pct[2], color=color, lw=1.8, label=f"median ({what})")
    if cgm_median is not None:
        ax.plot(hours, cgm_median, color="#555555", lw=1.0, ls="--", label="median (CGM)")
    return float(top)


def _fig_agp(runs: Sequence[TrialRun], u: GlucoseUnits = MG_DL) -> str:
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
                top = max(top, _draw_agp(ax, hours, pct, cgm[2], color, u=u))
            else:
                ax.fill_between(hours, u.value(pct[1]), u.value(pct[3]), color=color, alpha=0.18, lw=0)
                ax.plot(hours, u.value(pct[2]), color=color, lw=1.6, label=f"{run.label}: median, 25-75 %")
                top = max(top, float(np.nanmax(pct[3])) if np.isfinite(pct[3]).any() else 0.0)
        _agp_axes(ax, title, u)
        ax.set_ylim(0, u.value(min(max(300.0, top + 20.0), 450.0)))
    axes[0].legend(fontsize=7, loc="upper right", framealpha=0.85)
    fig.tight_layout()
    return _png(fig)
