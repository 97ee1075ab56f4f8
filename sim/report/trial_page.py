"""The trial/HIL report page: its sections in order, and writing it next to the run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sim.report.advice import advice_section, has_advice
from sim.report.agp import AGP_BIN_MIN, AGP_WINDOW_MIN, _fig_agp
from sim.report.compare import _compare_section
from sim.report.html_page import _esc, _img, _kv_table, _num, _page
from sim.report.metrics_table import _metrics_table
from sim.report.protocol import _protocol_rows
from sim.report.learned import learned_section, load_learning
from sim.report.references import references_section
from sim.report.tir_bars import _fig_tir
from sim.report.traces import TRACE_GRID_MAX, _fig_traces, _twin_columns
from sim.report.trial_run import TrialRun, load_trial_run

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


def _cohort_paragraph(run: TrialRun) -> str:
    """One paragraph: the cohort's main metrics on true BG and on CGM, and the worst patient."""
    cohort, cgm = run.group_metrics(None), run.group_metrics(None, "cgm")
    worst = run.summary.get("worst_patient", {})
    return (
        f"<p><strong>Cohort (true BG):</strong> TIR {_num(cohort['in_range_70_180'])} %, "
        f"&lt;70 {_num(cohort['below_70'])} %, &lt;54 {_num(cohort['below_54'])} %, "
        f"&gt;180 {_num(cohort['above_180'])} %, mean {_num(cohort['mean'], '.0f')} mg/dL, "
        f"GMI {_num(cohort['GMI'], '.2f')} %, CV {_num(cohort['CV'])} %. "
        f"<strong>On CGM:</strong> TIR {_num(cgm['in_range_70_180'])} %, &lt;70 {_num(cgm['below_70'])} %, "
        f"mean {_num(cgm['mean'], '.0f')} mg/dL."
        + (f" <strong>Worst patient:</strong> {_esc(worst.get('name'))} ({_esc(worst.get('rule', ''))})." if worst else "")
        + "</p>"
    )


def _protocol_section(run: TrialRun) -> list[str]:
    parts = ['<h2 id="protocol">Protocol and plant</h2>', _kv_table(_protocol_rows(run))]
    if run.missing_traces:
        parts.append(f'<p class="warn">Trace CSV missing or unreadable for: {_esc(", ".join(run.missing_traces))}; '
                     "their metrics come from summary.json, they are left out of the figures.</p>")
    parts.append(_cohort_paragraph(run))
    return parts


def _agp_section(runs: Sequence[TrialRun], drawn: Sequence[str]) -> list[str]:
    parts = ['<h2 id="agp">Ambulatory Glucose Profile</h2>']
    if drawn:
        parts.append(_img(_fig_agp(runs), "Ambulatory Glucose Profile of the cohort and each group"))
        parts.append(
            f'<p class="note">True blood glucose by time of day, pooled over days and patients: median, '
            f"25-75 % and 5-95 % bands (every {AGP_BIN_MIN:g} min over a {AGP_WINDOW_MIN:g}-min window); "
            "dashed: CGM median; green band: target 70-180 mg/dL; dotted: 54 and 250 mg/dL."
            + (" With compared runs: each run's median and 25-75 % band." if len(runs) > 1 else "")
            + " Hours without data are left blank (runs shorter than a day).</p>"
        )
    else:
        parts.append('<p class="warn">No trace could be read: no AGP.</p>')
    return parts


def _tir_section(run: TrialRun) -> list[str]:
    return [
        '<h2 id="tir">Time in ranges</h2>',
        _img(_fig_tir(run), "time in ranges per patient and per group (stacked bars)"),
        ('<p class="note">Stacked bars of % of samples of true BG in &lt;54, 54-69, 70-180, 181-250 and '
         "&gt;250 mg/dL. Consensus targets: TIR &gt;70 %, &lt;70 under 4 %, &lt;54 under 1 %, "
         "&gt;180 under 25 %, &gt;250 under 5 %, CV at most 36 %.</p>"),
    ]


def _metrics_section(run: TrialRun) -> list[str]:
    return [
        '<h2 id="metrics">Metrics</h2>',
        "<h3>True blood glucose (simglucose BG)</h3>",
        _metrics_table(run, "bg"),
        "<h3>CGM (what the controller saw)</h3>",
        _metrics_table(run, "cgm"),
        ('<p class="note">Percentages are of samples; GMI = 3.31 + 0.02392 × mean mg/dL; CV = SD / mean; '
         "LBGI/HBGI: Kovatchev's risk indices. Red: outside the consensus target. Group and cohort rows "
         "are means over patients. Highlighted row: the worst patient.</p>"),
    ]


def _traces_section(run: TrialRun, drawn: Sequence[str]) -> list[str]:
    parts = ['<h2 id="traces">Traces</h2>']
    if not drawn:
        return parts
    worst = run.summary.get("worst_patient", {})
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


def trial_report_html(run: TrialRun, compare: Sequence[TrialRun] = ()) -> str:
    """The HTML report of a trial or HIL run, optionally compared with other runs."""
    runs = [run, *compare]
    _make_labels_unique(runs)
    title, subtitle = _title_and_subtitle(run)
    nav = [("protocol", "Protocol"), ("agp", "AGP"), ("tir", "Time in ranges"), ("metrics", "Metrics"),
           ("traces", "Traces")]
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
    parts = _protocol_section(run)
    parts += _agp_section(runs, drawn)
    parts += _tir_section(run)
    parts += _metrics_section(run)
    if trial:
        parts.append(references_section(run.summary))
    if learning:
        parts.append(learned_section(learning))
    parts += _traces_section(run, drawn)
    if advice:
        parts.append(advice_section(run))
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
