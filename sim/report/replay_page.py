"""The replay report page: built right after a replay, or rebuilt from its JSON report and forecasts CSV."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sim.report.errors import ReportError, _warn
from sim.report.html_page import _esc, _img, _kv_table, _num, _page
from sim.report.metrics_table import _metric_cells, bg_columns, variability_columns
from sim.report.replay_figures import (
    REPLAY_FORECAST_SUBJECTS_MAX,
    REPLAY_SUBJECTS_MAX,
    _fig_replay_agp,
    _fig_replay_forecasts,
    _fig_replay_tir,
    _fig_replay_traces,
    _fig_rmse,
    _local,
    _subject_name,
)
from sim.trial.metrics import glucose_metrics, mean_metrics, minutes_since_midnight
from sim.trial.metrics.units import MG_DL, GlucoseUnits, glucose_units


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


def _time_zone(tz: str | None):
    """The zone for times of day and its name: ``tz`` if it is a known IANA zone, else UTC."""
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
    return zone, tz_name


def _input_rows(report: Mapping[str, Any], tz_name: str) -> list[tuple[str, Any]]:
    evaluation = report.get("evaluation", {})
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
                            f"same pairs for every method; band nominal coverage {_nominal(report.get('band_coverage_nominal'))}"))
    rows.append(("time of day", tz_name))
    return rows


def _nominal(value: Any) -> str:
    """Nominal band coverage: one number (older reports) or one per method."""
    if isinstance(value, Mapping):
        return ", ".join(f"{m} {_num(c, '.0%')}" for m, c in value.items()) or "?"
    return "?" if value is None else str(value)


def _in(u: GlucoseUnits, value: Any) -> Any:
    """A glucose value or error (mg/dL) in ``u``; None (no score) as it is."""
    return u.value(value) if isinstance(value, (int, float)) else value


def _scores_section(evaluation: Mapping[str, Any], u: GlucoseUnits = MG_DL) -> list[str]:
    methods = evaluation.get("methods", [])
    horizons = evaluation.get("horizons_min", [])
    parts = ['<h2 id="scores">Forecast scores</h2>']
    lab = _esc(u.label)
    head = (f'<tr><th class="l">method</th><th>horizon min</th><th>n</th><th>RMSE {lab}</th><th>MAE {lab}</th>'
            f"<th>bias {lab}</th><th>band coverage</th><th>issued</th></tr>")
    spec = f".{u.decimals + 2}f"
    trs = []
    for h in horizons:
        key = f"{h:g}"
        best = evaluation.get("best", {}).get(key)
        for m in methods:
            sc = evaluation["scores"][m][key]
            cls = ' class="agg"' if m == best else ""
            trs.append(f"<tr{cls}><td class=\"l\">{_esc(m)}{' (best)' if m == best else ''}</td><td>{key}</td>"
                       f"<td>{sc['n']}</td><td>{_num(_in(u, sc['rmse_mg_dl']), spec)}</td>"
                       f"<td>{_num(_in(u, sc['mae_mg_dl']), spec)}</td>"
                       f"<td>{_num(_in(u, sc['bias_mg_dl']), '+' + spec)}</td><td>{_num(sc['coverage'], '.2f')}</td>"
                       f"<td>{evaluation.get('issued', {}).get(m, {}).get(key, '–')}</td></tr>")
    parts.append(f"<table>{head}{''.join(trs)}</table>")
    if methods and horizons:
        parts.append(_img(_fig_rmse(evaluation, u), "forecast RMSE and MAE by horizon and method"))
    return parts


def _readings_by_subject(readings: Sequence[Any]) -> dict[str, tuple[list[datetime], np.ndarray]]:
    """Each subject's reading times and glucose values, in time order."""
    by_subject: dict[str, tuple[list[datetime], np.ndarray]] = {}
    tmp: dict[str, list[tuple[datetime, float]]] = {}
    for r in readings:
        tmp.setdefault(r.subject, []).append((r.time, float(r.glucose_mg_dl)))
    for s, pairs in tmp.items():
        pairs.sort(key=lambda p: p[0])
        by_subject[s] = ([p[0] for p in pairs], np.array([p[1] for p in pairs]))
    return by_subject


def subject_metrics(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], zone=None) -> dict[str, dict[str, float]]:
    """Every metric of each subject's readings; the time-gridded ones on days of ``zone`` (None: the times as given)."""
    out = {}
    for s, (times, g) in by_subject.items():
        local = [_local(t, zone) for t in times]
        out[s] = glucose_metrics(g, minutes_since_midnight(local))
    return out


def _metrics_section(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], zone=None,
                     u: GlucoseUnits = MG_DL) -> list[str]:
    """Time in ranges and the metrics tables of the readings, per subject and (several subjects) their mean."""
    names = list(by_subject)
    per_subject = subject_metrics(by_subject, zone)
    metrics = [per_subject[s] for s in names]
    labels = [_subject_name(s) for s in names]
    if len(names) > 1:
        labels.append("all (mean of subjects)")
        metrics.append(mean_metrics(metrics))
    parts = ['<h2 id="tir">Time in ranges</h2>']
    parts.append(_img(_fig_replay_tir(labels, metrics, u), "time in ranges per subject"))
    parts.append('<h2 id="metrics">Metrics (CGM readings)</h2>')
    for title, columns in (("", bg_columns(u)), ("Glycemic risk and variability", variability_columns(u))):
        if title:
            parts.append(f"<h3>{_esc(title)}</h3>")
        head = ('<tr><th class="l">subject</th><th>readings</th>'
                + "".join(f"<th>{_esc(t)}</th>" for t, _, _ in columns) + "</tr>")
        trs = []
        for i, (label, m) in enumerate(zip(labels, metrics)):
            n = len(by_subject[names[i]][1]) if i < len(names) else sum(len(v[1]) for v in by_subject.values())
            cls = ' class="agg"' if i >= len(names) else ""
            trs.append(f'<tr{cls}><td class="l">{_esc(label)}</td><td>{n}</td>{_metric_cells(m, columns, u)}</tr>')
        parts.append(f"<table>{head}{''.join(trs)}</table>")
    parts.append('<p class="note">Metrics of sensor readings (clipped Low/High readings count at their range '
                 "limit); GMI = 3.31 + 0.02392 × mean mg/dL. Red: outside the consensus target. "
                 f"TITR: {u.threshold(70)}-{u.threshold(140)} {_esc(u.label)}; GRI: Glycemia Risk Index (zones A-E); "
                 "MAGE (iglu's moving-average version), MODD and CONGA-1 on iglu's interpolated grid (gaps over 45 min "
                 "left empty), days of the report's time zone.</p>")
    return parts


def _traces_section(by_subject: Mapping[str, tuple[list[datetime], np.ndarray]], forecasts: Sequence[Any] | None,
                    horizons: Sequence[float], zone, u: GlucoseUnits = MG_DL) -> list[str]:
    parts = ['<h2 id="traces">Readings and forecasts</h2>']
    parts.append(_img(_fig_replay_traces(by_subject, zone, u), "readings of each subject"))
    if len(by_subject) > REPLAY_SUBJECTS_MAX:
        parts.append(f'<p class="note">Only the first {REPLAY_SUBJECTS_MAX} subjects are drawn.</p>')
    if forecasts:
        uri, window = _fig_replay_forecasts(by_subject, forecasts, [float(h) for h in horizons], zone, u)
        parts.append(f"<h3>Forecasts against readings ({_esc(window)})</h3>")
        parts.append(_img(uri, "forecasts against readings"))
        parts.append('<p class="note">Each forecast is drawn at its target time (issue time + horizon); '
                     f"black dots: readings. First {REPLAY_FORECAST_SUBJECTS_MAX} subjects at most.</p>")
    else:
        parts.append('<p class="note">No forecasts CSV: forecasts against readings not drawn.</p>')
    return parts


def _readings_sections(readings: Sequence[Any], forecasts: Sequence[Any] | None, horizons: Sequence[float],
                       zone, tz_name: str, u: GlucoseUnits = MG_DL) -> list[str]:
    """AGP, time in ranges, metrics and traces of the readings, and forecasts against them."""
    by_subject = _readings_by_subject(readings)
    parts = ['<h2 id="agp">Ambulatory Glucose Profile (CGM readings)</h2>']
    parts.append(_img(_fig_replay_agp(by_subject, zone, u), "Ambulatory Glucose Profile of the readings"))
    parts.append(f'<p class="note">Readings by time of day ({_esc(tz_name)}), pooled over days: median, 25-75 % '
                 f"and 5-95 % bands; green: target {u.threshold(70)}-{u.threshold(180)} {_esc(u.label)}.</p>")
    parts += _metrics_section(by_subject, zone, u)
    parts += _traces_section(by_subject, forecasts, horizons, zone, u)
    return parts


def replay_report_html(report: Mapping[str, Any], readings: Sequence[Any] | None = None,
                       forecasts: Sequence[Any] | None = None, tz: str | None = None,
                       source: str = "", units: str | GlucoseUnits | None = "mg") -> str:
    """The HTML report of a replay: ``report`` is :func:`sim.forecast.replay.build_report`'s dict.

    ``readings`` (the file's :class:`~sensors.GlucoseReading` list) give the AGP,
    time in ranges and traces; ``forecasts`` (ForecastRow list) the forecasts
    against readings. ``tz``: the zone for times of day (default UTC). ``units``: "mg" or "mmol".
    """
    u = glucose_units(units)
    zone, tz_name = _time_zone(tz)
    evaluation = report.get("evaluation", {})
    methods = evaluation.get("methods", [])
    horizons = evaluation.get("horizons_min", [])
    title = "glucotwin replay report"
    subtitle = (f"{report.get('file', '?')}: {report.get('file_format', '?')}, {report.get('readings', '?')} readings of "
                f"{len(report.get('readings_per_subject', {}))} subject(s); methods {', '.join(methods)}")
    nav = [("input", "Input"), ("scores", "Forecast scores")]
    parts = ['<h2 id="input">Input and assumptions</h2>', _kv_table(_input_rows(report, tz_name))]
    parts += _scores_section(evaluation, u)
    if readings:
        nav += [("agp", "AGP"), ("tir", "Time in ranges"), ("metrics", "Metrics"), ("traces", "Traces")]
        parts += _readings_sections(readings, forecasts, horizons, zone, tz_name, u)
    else:
        parts.append('<p class="warn">The CGM file could not be read again: no AGP, time in ranges or traces.</p>')
    return _page(title, subtitle, nav, "\n".join(parts), source or str(report.get("file", "")))


def write_replay_report(json_path: str | Path, out: str | Path | None = None, units: str | None = "mg") -> Path:
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
    page = replay_report_html(report, readings, forecasts, source=str(json_path), units=units)
    path = Path(out) if out is not None else replay_report_path(json_path)
    path.write_text(page, encoding="utf-8")
    return path


def replay_report_path(output: str | Path) -> Path:
    """Where a replay's HTML report goes: its JSON or forecasts CSV with ``.html``."""
    output = Path(output)
    path = output.with_suffix(".html")
    return path if path != output else output.with_name(output.name + ".html")


def replay_report_after_run(path: str | Path, report: Mapping[str, Any], readings: Sequence[Any],
                            forecasts: Sequence[Any], tz: str | None = None, units: str | None = "mg") -> Path | None:
    """For ``glucotwin replay``: write the HTML report and say so.

    Never raises: a failure prints one warning line to stderr and returns None.
    """
    try:
        tic = time.perf_counter()
        path = Path(path)
        path.write_text(replay_report_html(report, readings, forecasts, tz=tz, units=units), encoding="utf-8")
    except Exception as exc:  # a report must never fail the replay it reports on
        _warn(exc)
        return None
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB, {time.perf_counter() - tic:.1f} s)")
    return path
