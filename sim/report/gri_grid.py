"""The GRI grid (Klonoff et al. 2023): each patient of each run as a dot, hypoglycemia component
against hyperglycemia component, over the zones A-E that the GRI's quintiles draw as diagonals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.report.figures import _figure_class, _png
from sim.report.trial_run import GROUP_ORDER, TrialRun
from sim.trial.metrics.gri import HYPER_WEIGHT, HYPO_WEIGHT, ZONE_UPPER, ZONES

HYPO_AXIS_MAX_PCT = 30.0
HYPER_AXIS_MAX_PCT = 60.0
ZONE_COLORS = ("#5cb85c", "#d4e157", "#ffca28", "#fb8c00", "#e53935")
_RUN_COLORS = ("#1f4e9c", "#c0392b", "#27874a", "#8e44ad")
_GROUP_MARKERS = {"adolescent": "s", "adult": "o", "child": "^"}
_GROUP_COLORS = {"adolescent": "#7b1fa2", "adult": "#1f4e9c", "child": "#c0392b"}
"""One run: colour by group; several runs: colour by run, marker by group."""
NAMED_ABOVE_GRI = 40.0
"""Dots of a GRI above this (zones C-E) are labelled with the patient's name."""


def _draw_zones(ax) -> None:
    x = np.linspace(0, HYPO_AXIS_MAX_PCT, 301)
    y = np.linspace(0, HYPER_AXIS_MAX_PCT, 301)
    xx, yy = np.meshgrid(x, y)
    gri = HYPO_WEIGHT * xx + HYPER_WEIGHT * yy
    ax.contourf(xx, yy, gri, levels=[0.0, *ZONE_UPPER[:-1], np.inf], colors=ZONE_COLORS, alpha=0.30)
    for upper in ZONE_UPPER[:-1]:  # the diagonals 3 x + 1.6 y = 20, 40, 60, 80
        ax.plot([0, upper / HYPO_WEIGHT], [upper / HYPER_WEIGHT, 0], color="#555555", lw=0.8)
    for zone, low, high in zip(ZONES, (0.0, *ZONE_UPPER[:-1]), ZONE_UPPER):
        mid = (low + high) / 2  # on the line y = 2 x
        ax.text(mid / (HYPO_WEIGHT + 2 * HYPER_WEIGHT), 2 * mid / (HYPO_WEIGHT + 2 * HYPER_WEIGHT), zone,
                fontsize=11, fontweight="bold", color="#333333", ha="center", va="center", alpha=0.8)
    ax.set_xlim(0, HYPO_AXIS_MAX_PCT)
    ax.set_ylim(0, HYPER_AXIS_MAX_PCT)
    ax.set_xlabel("hypoglycemia component, % (VLow + 0.8 × Low)", fontsize=8)
    ax.set_ylabel("hyperglycemia component, % (VHigh + 0.5 × High)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25, lw=0.5)


def gri_points(run: TrialRun, kind: str = "bg") -> list[tuple[str, str, float, float, float]]:
    """(patient, group, hypo %, hyper %, GRI) of every patient with a GRI."""
    out = []
    for p in run.patients:
        m = run.metrics(p, kind)
        hypo, hyper, gri = (float(m.get(k, np.nan)) for k in ("gri_hypo_pct", "gri_hyper_pct", "gri"))
        if np.isfinite(hypo) and np.isfinite(hyper):
            group = str(run.summary["patients"][p].get("group") or p.split("#")[0])
            out.append((p, group, hypo, hyper, gri))
    return out


def _draw_points(ax, runs: Sequence[TrialRun], kind: str) -> int:
    """The dots (clipped to the axes, then drawn open); returns how many lie beyond the axes."""
    beyond = 0
    for k, run in enumerate(runs):
        color = _RUN_COLORS[k % len(_RUN_COLORS)]
        points = gri_points(run, kind)
        groups = [g for g in GROUP_ORDER if any(pt[1] == g for pt in points)]
        groups += sorted({pt[1] for pt in points} - set(groups))
        for group in groups:
            sel = [pt for pt in points if pt[1] == group]
            x = np.array([pt[2] for pt in sel])
            y = np.array([pt[3] for pt in sel])
            out = (x > HYPO_AXIS_MAX_PCT) | (y > HYPER_AXIS_MAX_PCT)
            beyond += int(out.sum())
            xc, yc = np.minimum(x, HYPO_AXIS_MAX_PCT), np.minimum(y, HYPER_AXIS_MAX_PCT)
            label = f"{run.label}: {group}" if len(runs) > 1 else group
            marker = _GROUP_MARKERS.get(group, "D")
            if len(runs) == 1:
                color = _GROUP_COLORS.get(group, "#555555")
            ax.scatter(xc[~out], yc[~out], s=26, marker=marker, color=color, edgecolor="white", lw=0.5,
                       zorder=4, label=label)
            if out.any():
                ax.scatter(xc[out], yc[out], s=30, marker=marker, facecolor="none", edgecolor=color, lw=1.2,
                           zorder=4, clip_on=False)
        if len(runs) == 1:
            for p, _, hypo, hyper, gri in points:
                if gri > NAMED_ABOVE_GRI:
                    ax.annotate(p, (min(hypo, HYPO_AXIS_MAX_PCT), min(hyper, HYPER_AXIS_MAX_PCT)),
                                xytext=(4, 3), textcoords="offset points", fontsize=6, color="#222222")
    return beyond


def _fig_gri_grid(runs: Sequence[TrialRun]) -> tuple[str, int]:
    """The GRI grid of true BG and of CGM, every patient of every run; also how many dots lie beyond the axes."""
    Figure = _figure_class()
    fig = Figure(figsize=(11.0, 4.4))
    axes = fig.subplots(1, 2)
    beyond = 0
    for ax, kind, title in ((axes[0], "bg", "true BG"), (axes[1], "cgm", "CGM")):
        _draw_zones(ax)
        beyond += _draw_points(ax, runs, kind)
        ax.set_title(f"GRI grid, {title}", fontsize=9)
    axes[0].legend(fontsize=7, loc="upper right", framealpha=0.9)
    fig.tight_layout()
    return _png(fig), beyond
