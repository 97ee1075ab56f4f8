"""The comparison section: other runs against the first, by group and by patient."""

from __future__ import annotations

from collections.abc import Sequence

from sim.report.html_page import _esc, _img, _num
from sim.report.metrics_table import _delta_cells, _metric_cells, compare_columns
from sim.report.tir_bars import _fig_compare_tir
from sim.report.trial_run import _PLURAL, TrialRun
from sim.trial.metrics.units import MG_DL, GlucoseUnits


def _compare_section(runs: Sequence[TrialRun], u: GlucoseUnits = MG_DL) -> str:
    base = runs[0]
    columns = compare_columns(u)
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
            + "".join(f"<th>{_esc(t)}</th>" for t, _, _ in columns) + "<th>insulin U/day</th></tr>")

    def block(name: str, metrics_of, insulin_of) -> str:
        rows = []
        for i, r in enumerate(runs):
            first = f'<td class="l" rowspan="{len(runs) + (len(runs) == 2)}">{_esc(name)}</td>' if i == 0 else ""
            rows.append(f"<tr>{first}<td class=\"l\">{_esc(r.label)}</td>{_metric_cells(metrics_of(r), columns, u)}"
                        f"<td>{_num(insulin_of(r), '.1f')}</td></tr>")
        if len(runs) == 2:
            cells = _delta_cells(metrics_of(runs[0]), metrics_of(runs[1]), columns, u)
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
        parts.append(_img(_fig_compare_tir(runs, common, u), "time in ranges of the compared runs by patient and group"))
    return "\n".join(parts)
