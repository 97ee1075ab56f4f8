"""Metrics tables: the metric columns, their cells (red when off the consensus target) and a trial run's table per patient."""

from __future__ import annotations

from collections.abc import Mapping

from sim.report.html_page import _esc, _num
from sim.report.ranges import _off_target
from sim.report.trial_run import _PLURAL, TrialRun, _group_of

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
