"""The trial/HIL report page: its sections in order, and writing it next to the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sim.report.advice import advice_section, has_advice
from sim.report.agp import AGP_BIN_MIN, AGP_WINDOW_MIN, _fig_agp
from sim.report.compare import _compare_section
from sim.report.gri_grid import HYPER_AXIS_MAX_PCT, HYPO_AXIS_MAX_PCT, _fig_gri_grid
from sim.report.html_page import _esc, _img, _kv_table, _num, _page
from sim.report.metrics_table import _metrics_table, variability_columns
from sim.report.protocol import _protocol_rows
from sim.report.learned import learned_section, load_learning
from sim.report.ranges import tir_band_labels
from sim.report.references import references_section
from sim.report.tir_bars import _fig_tir
from sim.report.traces import TRACE_GRID_MAX, _fig_traces, _twin_columns
from sim.report.trial_run import TrialRun, load_trial_run
from sim.trial.metrics.gri import gri_zone
from sim.trial.metrics.units import MG_DL, GlucoseUnits, glucose_units

REPORT_FILENAME = "report.html"


def _make_labels_unique(runs: Sequence[TrialRun]) -> None:
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = f"{r.label} ({r.directory.name})"


def _title_and_subtitle(run: TrialRun) -> tuple[str, str]:
    s = run.summary
    proto = s.get("protocol", {})
    hil = "HIL" in str(s.get("controller", ""))
    title = f"glucotwin {'HIL' if hil else 'trial'} report: {run.label}"
    subtitle = (f"{len(run.patients)} patient(s), {proto.get('days', '?')} days, {proto.get('sensor', '?')} CGM, "
                f"seed offset {proto.get('seed_offset', '?')}, plant {s.get('plant', '?')}")
    return title, subtitle


def _cohort_paragraph(run: TrialRun, u: GlucoseUnits = MG_DL) -> str:
    """One paragraph: the cohort's main metrics on true BG and on CGM, and the worst patient."""
    cohort, cgm = run.group_metrics(None), run.group_metrics(None, "cgm")
    worst = run.summary.get("worst_patient", {})
    t = u.threshold
    return (
        f"<p><strong>Cohort (true BG):</strong> TIR {_num(cohort['in_range_70_180'])} %, "
        f"&lt;{t(70)} {_num(cohort['below_70'])} %, &lt;{t(54)} {_num(cohort['below_54'])} %, "
        f"&gt;{t(180)} {_num(cohort['above_180'])} %, mean {_num(u.value(cohort['mean']), u.spec)} {u.label}, "
        f"GMI {_num(cohort['GMI'], '.2f')} %, CV {_num(cohort['CV'])} %, "
        f"TITR {_num(cohort['in_tight_range_70_140_pct'])} %, GRI {_num(cohort['gri'])}, "
        f"MAGE {_num(u.value(cohort['mage_mg_dl']), u.fine_spec)} {u.label}. "
        f"<strong>On CGM:</strong> TIR {_num(cgm['in_range_70_180'])} %, &lt;{t(70)} {_num(cgm['below_70'])} %, "
        f"mean {_num(u.value(cgm['mean']), u.spec)} {u.label}, GRI {_num(cgm['gri'])}."
        + (f" <strong>Worst patient:</strong> {_esc(worst.get('name'))} ({_esc(worst.get('rule', ''))})." if worst else "")
        + "</p>"
    )


def _protocol_section(run: TrialRun, u: GlucoseUnits = MG_DL) -> list[str]:
    parts = ['<h2 id="protocol">Protocol and plant</h2>', _kv_table(_protocol_rows(run))]
    if run.missing_traces:
        parts.append(f'<p class="warn">Trace CSV missing or unreadable for: {_esc(", ".join(run.missing_traces))}; '
                     "their metrics come from summary.json, they are left out of the figures.</p>")
    parts.append(_cohort_paragraph(run, u))
    return parts


def _agp_section(runs: Sequence[TrialRun], drawn: Sequence[str], u: GlucoseUnits = MG_DL) -> list[str]:
    parts = ['<h2 id="agp">Ambulatory Glucose Profile</h2>']
    t = u.threshold
    if drawn:
        parts.append(_img(_fig_agp(runs, u), "Ambulatory Glucose Profile of the cohort and each group"))
        parts.append(
            f'<p class="note">True blood glucose by time of day, pooled over days and patients: median, '
            f"25-75 % and 5-95 % bands (every {AGP_BIN_MIN:g} min over a {AGP_WINDOW_MIN:g}-min window); "
            f"dashed: CGM median; green band: target {t(70)}-{t(180)} {u.label}; dotted: {t(54)} and {t(250)} {u.label}."
            + (" With compared runs: each run's median and 25-75 % band." if len(runs) > 1 else "")
            + " Hours without data are left blank (runs shorter than a day).</p>"
        )
    else:
        parts.append('<p class="warn">No trace could be read: no AGP.</p>')
    return parts


def _tir_section(run: TrialRun, u: GlucoseUnits = MG_DL) -> list[str]:
    bands = tir_band_labels(u)
    t = u.threshold
    return [
        '<h2 id="tir">Time in ranges</h2>',
        _img(_fig_tir(run, u), "time in ranges per patient and per group (stacked bars)"),
        (f'<p class="note">Stacked bars of % of samples of true BG in {_esc(", ".join(bands[:-1]))} and '
         f"{_esc(bands[-1])} {u.label}. Consensus targets: TIR &gt;70 %, &lt;{t(70)} under 4 %, &lt;{t(54)} under 1 %, "
         f"&gt;{t(180)} under 25 %, &gt;{t(250)} under 5 %, CV at most 36 %.</p>"),
    ]


def _metrics_section(run: TrialRun, u: GlucoseUnits = MG_DL) -> list[str]:
    risk = variability_columns(u)
    return [
        '<h2 id="metrics">Metrics</h2>',
        "<h3>True blood glucose (simglucose BG)</h3>",
        _metrics_table(run, "bg", u),
        "<h3>CGM (what the controller saw)</h3>",
        _metrics_table(run, "cgm", u),
        (f'<p class="note">Percentages are of samples; GMI = 3.31 + 0.02392 × mean mg/dL; CV = SD / mean; '
         "LBGI/HBGI: Kovatchev's risk indices. Red: outside the consensus target. Group and cohort rows "
         "are means over patients. Highlighted row: the worst patient.</p>"),
        '<h3 id="variability">Glycemic risk and variability, true BG</h3>',
        _metrics_table(run, "bg", u, risk),
        "<h3>Glycemic risk and variability, CGM</h3>",
        _metrics_table(run, "cgm", u, risk),
        (f'<p class="note">TITR: time in tight range {u.threshold(70)}-{u.threshold(140)} {u.label}, % of samples. '
         "GRI: Glycemia Risk Index (Klonoff et al. 2023) = 3.0 × VLow + 2.4 × Low + 1.6 × VHigh + 0.8 × High, "
         "capped at 100, from the % of samples &lt;54, 54-69, &gt;250 and 181-250 mg/dL; hypo component = "
         "VLow + 0.8 × Low, hyper component = VHigh + 0.5 × High; zones A (GRI 0-20) to E (80-100); a group "
         "row's zone is that of its mean GRI. MAGE: iglu's moving-average algorithm (Fernandes et al. 2022; "
         "short 5 and long 32 points, mean of MAGE+ and MAGE−); MODD: mean absolute difference between "
         "days at the same time of day; CONGA-1: SD of differences 1 h apart. MAGE, MODD and CONGA are "
         "computed as iglu 4.3.0 does, on glucose interpolated onto an even grid (gaps over 45 min left "
         "empty). J-index = 0.001 × (mean + SD)² in mg/dL (the same number in mmol/L).</p>"),
    ]


def _gri_section(runs: Sequence[TrialRun]) -> list[str]:
    uri, beyond = _fig_gri_grid(runs)
    run_zones = runs[0].summary.get("cohort", {}).get("gri_zone_patients", {}).get("bg")
    if not run_zones:
        found = [gri_zone(float(runs[0].metrics(p).get("gri", float("nan")))) for p in runs[0].patients]
        run_zones = {z: found.count(z) for z in "ABCDE"}
    counts = ", ".join(f"{z} {n}" for z, n in run_zones.items())
    return [
        '<h2 id="gri">Glycemia Risk Index</h2>',
        _img(uri, "GRI grid: hypoglycemia against hyperglycemia component, one dot per patient"),
        (f'<p class="note">One dot per patient{" and run" if len(runs) > 1 else ""}: hypoglycemia component '
         f"(x, 0-{HYPO_AXIS_MAX_PCT:g} %) against hyperglycemia component (y, 0-{HYPER_AXIS_MAX_PCT:g} %); "
         "the diagonals are GRI 20, 40, 60 and 80, the edges of zones A (best) to E. Patients of GRI over 40 "
         f"are named. Patients per zone ({_esc(runs[0].label)}, true BG): {_esc(counts)}."
         + (f" {beyond} dot(s) lie beyond the axes and are drawn open on the border." if beyond else "")
         + "</p>"),
    ]


def _traces_section(run: TrialRun, drawn: Sequence[str], u: GlucoseUnits = MG_DL) -> list[str]:
    parts = ['<h2 id="traces">Traces</h2>']
    if not drawn:
        return parts
    worst = run.summary.get("worst_patient", {})
    worst_name = worst.get("name") if worst.get("name") in run.traces else drawn[0]
    parts.append(f"<h3>Worst patient in detail: {_esc(worst_name)}</h3>")
    parts.append(_img(_fig_traces(run, [worst_name], detail=True, u=u), f"trace of {worst_name}"))
    shown = drawn[:TRACE_GRID_MAX]
    parts.append("<h3>Every patient</h3>")
    parts.append(_img(_fig_traces(run, shown, detail=False, u=u), "traces of every patient, small multiples"))
    if len(drawn) > len(shown):
        parts.append(f'<p class="note">Only the first {len(shown)} of {len(drawn)} patients are drawn.</p>')
    twin = sorted({name for p in shown for name, _, _ in _twin_columns(run.traces[p])})
    parts.append(
        '<p class="note">Black: true BG; blue: CGM; orange triangles: meals (grams in the detail view); markers at '
        "the top: new advice (green: eat carbs, grams in the detail view; red: a high the limits will not treat; "
        "violet: check the infusion site); purple, "
        "right axis: insulin (basal U/h as a step and bolus U as bars when the controller reports them, "
        "otherwise insulin delivered per sample). x: hours since the start; grey lines: days."
        + (f" Twin columns: {_esc(', '.join(twin))} (dashed: estimate; dotted: forecasts drawn at their target time)."
           if twin else "")
        + "</p>"
    )
    return parts


def trial_report_html(run: TrialRun, compare: Sequence[TrialRun] = (), units: str | GlucoseUnits | None = "mg") -> str:
    """The HTML report of a trial or HIL run, optionally compared with other runs; glucose in ``units``."""
    u = glucose_units(units)
    runs = [run, *compare]
    _make_labels_unique(runs)
    title, subtitle = _title_and_subtitle(run)
    nav = [("protocol", "Protocol"), ("agp", "AGP"), ("tir", "Time in ranges"), ("metrics", "Metrics"),
           ("gri", "GRI"), ("traces", "Traces")]
    trial = "seed_offset" in run.summary.get("protocol", {})  # a simglucose trial, not a HIL run
    if trial:
        nav.append(("references", "References"))
    learning = load_learning(run.directory)
    if learning:
        nav.append(("learned", "Learned twins"))
    advice = has_advice(run)
    if advice:
        nav.append(("advice", "Advice"))
    if compare:
        nav.append(("compare", "Comparison"))
    drawn = [p for p in run.patients if p in run.traces]
    parts = _protocol_section(run, u)
    parts += _agp_section(runs, drawn, u)
    parts += _tir_section(run, u)
    parts += _metrics_section(run, u)
    parts += _gri_section(runs)
    if trial:
        parts.append(references_section(run.summary))
    if learning:
        parts.append(learned_section(learning, u))
    parts += _traces_section(run, drawn, u)
    if advice:
        parts.append(advice_section(run))
    if compare:
        parts.append(_compare_section(runs, u))
    sources = ", ".join(str(r.directory) for r in runs)
    return _page(title, subtitle, nav, "\n".join(parts), sources)


def write_trial_report(directory: str | Path, out: str | Path | None = None,
                       compare: Sequence[str | Path] = (), units: str | GlucoseUnits | None = "mg") -> Path:
    """Write the report of a trial/HIL output directory (default ``DIR/report.html``); glucose in ``units``."""
    run = load_trial_run(directory)
    others = [load_trial_run(d) for d in compare]
    page = trial_report_html(run, others, units)
    path = Path(out) if out is not None else Path(directory) / REPORT_FILENAME
    path.write_text(page, encoding="utf-8")
    return path
