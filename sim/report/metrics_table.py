"""Metrics tables: the metric column sets, their cells (red when off the consensus target) and a trial run's table per patient.

Two column sets: the consensus set (time in ranges, mean, SD, CV, GMI, risk
indices) and the risk and variability set (time in tight range, GRI with its
components and zone, MAGE, MODD, CONGA-1, J-index). Titles and glucose values
follow the display units (:mod:`sim.trial.metrics.units`); the summary's
values stay in mg/dL.
"""

from __future__ import annotations

from collections.abc import Mapping

from sim.report.html_page import _esc, _num
from sim.report.ranges import _off_target
from sim.report.trial_run import _PLURAL, TrialRun, _group_of
from sim.trial.metrics.gri import gri_zone
from sim.trial.metrics.units import MG_DL, GlucoseUnits, metric_in_units

ZONE_KEY = "gri_zone"
"""A pseudo-column: the GRI zone letter, derived from ``gri`` when shown."""


def bg_columns(u: GlucoseUnits = MG_DL) -> tuple[tuple[str, str, str], ...]:
    """(title, metric, format) of the consensus set."""
    t = u.threshold
    return (
        (f"TIR {t(70)}-{t(180)} %", "in_range_70_180", ".1f"),
        (f"<{t(54)} %", "below_54", ".1f"),
        (f"<{t(70)} %", "below_70", ".1f"),
        (f">{t(180)} %", "above_180", ".1f"),
        (f">{t(250)} %", "above_250", ".1f"),
        (f"mean {u.label}", "mean", u.spec),
        (f"SD {u.label}", "SD", u.spec),
        ("CV %", "CV", ".1f"),
        ("GMI %", "GMI", ".2f"),
        ("LBGI", "LBGI", ".2f"),
        ("HBGI", "HBGI", ".2f"),
    )


def variability_columns(u: GlucoseUnits = MG_DL) -> tuple[tuple[str, str, str], ...]:
    """(title, metric, format) of the risk and variability set."""
    t = u.threshold
    return (
        (f"TITR {t(70)}-{t(140)} %", "in_tight_range_70_140_pct", ".1f"),
        ("GRI", "gri", ".1f"),
        ("GRI zone", ZONE_KEY, ""),
        ("GRI hypo %", "gri_hypo_pct", ".2f"),
        ("GRI hyper %", "gri_hyper_pct", ".2f"),
        (f"MAGE {u.label}", "mage_mg_dl", u.fine_spec),
        (f"MODD {u.label}", "modd_mg_dl", u.fine_spec),
        (f"CONGA-1 {u.label}", "conga_1h_mg_dl", u.fine_spec),
        ("J-index", "j_index", ".1f"),
    )


def compare_columns(u: GlucoseUnits = MG_DL) -> tuple[tuple[str, str, str], ...]:
    """The comparison tables' set: the consensus one without SD, with TITR, GRI and MAGE."""
    extra = tuple(c for c in variability_columns(u) if c[1] in ("in_tight_range_70_140_pct", "gri", "mage_mg_dl"))
    return tuple(c for c in bg_columns(u) if c[1] != "SD") + extra


# The mg/dL column sets (kept for readers of the earlier names).
_BG_COLUMNS = bg_columns()
_COMPARE_COLUMNS = compare_columns()


def _cell_value(metrics: Mapping[str, float], key: str, u: GlucoseUnits) -> float:
    return metric_in_units(key, float(metrics.get(key, float("nan"))), u)


def _metric_cells(metrics: Mapping[str, float], columns=_BG_COLUMNS, u: GlucoseUnits = MG_DL) -> str:
    out = []
    for _, key, spec in columns:
        if key == ZONE_KEY:
            out.append(f"<td>{_esc(gri_zone(float(metrics.get('gri', float('nan')))) or '–')}</td>")
            continue
        v = _cell_value(metrics, key, u)
        cls = ' class="off"' if _off_target(key, v) else ""
        out.append(f"<td{cls}>{_num(v, spec)}</td>")
    return "".join(out)


def _delta_cells(a: Mapping[str, float], b: Mapping[str, float], columns, u: GlucoseUnits = MG_DL) -> str:
    """b − a per column, in the display units (the zone column shows the zone change)."""
    out = []
    for _, key, spec in columns:
        if key == ZONE_KEY:
            za, zb = gri_zone(float(a.get("gri", float("nan")))), gri_zone(float(b.get("gri", float("nan"))))
            out.append(f"<td>{_esc(f'{za}→{zb}' if za != zb else '=')}</td>")
            continue
        out.append(f"<td>{_num(_cell_value(b, key, u) - _cell_value(a, key, u), '+' + spec)}</td>")
    return "".join(out)


def _metrics_table(run: TrialRun, kind: str, u: GlucoseUnits = MG_DL, columns=None) -> str:
    """The per-patient table of ``columns`` (default the consensus set) with group and cohort rows."""
    columns = bg_columns(u) if columns is None else columns
    extra = kind == "bg" and columns == bg_columns(u)  # seed, insulin and carbs once, in the first table
    head = "".join(f"<th>{_esc(t)}</th>" for t, _, _ in columns)
    if extra:
        head = '<th class="l">patient</th><th class="l">group</th><th>seed</th>' + head
        head += "<th>insulin U/day</th><th>carbs g/day</th>"
    else:
        head = '<th class="l">patient</th><th class="l">group</th>' + head
    worst = run.summary.get("worst_patient", {}).get("name")
    rows = []
    for p in run.patients:
        info = run.summary["patients"][p]
        cls = ' class="worst"' if (p == worst and kind == "bg") else ""
        cells = f'<td class="l">{_esc(p)}</td><td class="l">{_esc(_group_of(p, info))}</td>'
        if extra:
            cells += f"<td>{_esc(info.get('seed', '–'))}</td>"
        cells += _metric_cells(run.metrics(p, kind), columns, u)
        if extra:
            cells += f"<td>{_num(info.get('insulin_u_per_day'), '.1f')}</td><td>{_num(info.get('carbs_g_per_day'), '.0f')}</td>"
        rows.append(f"<tr{cls}>{cells}</tr>")
    for g in run.groups():
        names = run.patients_in(g)
        cells = f'<td class="l">{_esc(_PLURAL.get(g, g))} ({len(names)})</td><td class="l">mean</td>'
        if extra:
            cells += "<td></td>"
        cells += _metric_cells(run.group_metrics(g, kind), columns, u)
        if extra:
            cells += f"<td>{_num(run.mean_of('insulin_u_per_day', g), '.1f')}</td><td>{_num(run.mean_of('carbs_g_per_day', g), '.0f')}</td>"
        rows.append(f'<tr class="agg">{cells}</tr>')
    cells = f'<td class="l">all ({len(run.patients)})</td><td class="l">mean</td>' + ("<td></td>" if extra else "")
    cells += _metric_cells(run.group_metrics(None, kind), columns, u)
    if extra:
        cells += f"<td>{_num(run.mean_of('insulin_u_per_day'), '.1f')}</td><td>{_num(run.mean_of('carbs_g_per_day'), '.0f')}</td>"
    rows.append(f'<tr class="agg">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
