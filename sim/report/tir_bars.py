"""Time-in-ranges stacked bars: their drawing, the figure of a trial run and the side-by-side figure of compared runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.report.figures import _figure_class, _png
from sim.report.ranges import TIR_BANDS, tir_band_labels, tir_segments
from sim.report.trial_run import _PLURAL, TrialRun
from sim.trial.metrics.units import MG_DL, GlucoseUnits


def _draw_tir_bars(ax, labels: Sequence[str], segments: Sequence[Sequence[float]], horizontal: bool,
                   annotate: bool = True, u: GlucoseUnits = MG_DL) -> None:
    positions = np.arange(len(labels))
    left = np.zeros(len(labels))
    for k, (band, (_, color)) in enumerate(zip(tir_band_labels(u), TIR_BANDS)):
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


def _fig_tir(run: TrialRun, u: GlucoseUnits = MG_DL) -> str:
    Figure = _figure_class()
    patients = run.patients
    groups = run.groups()
    height = max(2.2, 0.2 * len(patients) + 0.9)
    fig = Figure(figsize=(10.0, height))
    gs = fig.add_gridspec(1, 2, width_ratios=(2.3, 1.0))
    ax_p = fig.add_subplot(gs[0, 0])
    _draw_tir_bars(ax_p, patients, [tir_segments(run.metrics(p)) for p in patients], horizontal=True, u=u)
    ax_p.set_title("per patient", fontsize=9)
    ax_g = fig.add_subplot(gs[0, 1])
    labels = ["cohort"] + [_PLURAL.get(g, g) for g in groups]
    segs = [tir_segments(run.group_metrics(None))] + [tir_segments(run.group_metrics(g)) for g in groups]
    _draw_tir_bars(ax_g, labels, segs, horizontal=False, u=u)
    ax_g.set_title("per group (mean of patients)", fontsize=9)
    ax_g.legend(title=u.label, fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)


def _fig_compare_tir(runs: Sequence[TrialRun], patients: Sequence[str], u: GlucoseUnits = MG_DL) -> str:
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
    _draw_tir_bars(ax_p, labels, segs, horizontal=True, annotate=rows <= 40, u=u)
    for i in range(1, len(patients)):
        ax_p.axhline(i * n - 0.5, color="black", lw=0.6)
    ax_p.set_title("per patient", fontsize=9)
    ax_g = fig.add_subplot(gs[0, 1])
    labels, segs = [], []
    for name, g in entities:
        for r in runs:
            labels.append(f"{name}\n{r.label}")
            segs.append(tir_segments(r.group_metrics(g)))
    _draw_tir_bars(ax_g, labels, segs, horizontal=False, u=u)
    for i in range(1, len(entities)):
        ax_g.axvline(i * n - 0.5, color="black", lw=0.6)
    ax_g.tick_params(axis="x", labelsize=6)
    ax_g.set_title("per group (mean of patients)", fontsize=9)
    ax_g.legend(title=u.label, fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _png(fig)
