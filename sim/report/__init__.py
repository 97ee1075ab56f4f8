"""Self-contained HTML reports of trials, HIL runs and CGM-file replays.

A report is ONE HTML file: inline CSS, PNG figures embedded as base64
``data:`` URIs, no scripts and no external links, so it can be mailed,
archived next to the result or opened offline.

Trial and HIL runs (a directory with ``summary.json`` and one trace CSV per
patient, as :func:`sim.trial.run.run_trial` writes it):

- the protocol and plant, from ``summary.json`` (controller, arm, days,
  sensor, pump, seeds, scenario, versions), so the result can be rerun;
- the Ambulatory Glucose Profile (median, 25-75 % and 5-95 % bands of true
  blood glucose by time of day, CGM median dashed, target 70-180 shaded) of
  the cohort and of each group;
- time-in-ranges stacked bars (<54, 54-69, 70-180, 181-250, >250 mg/dL) per
  patient and per group;
- metrics tables per patient, on true BG and separately on CGM (the values of
  ``summary.json``, computed by :mod:`sim.trial.metrics`; GMI = 3.31 + 0.02392 ×
  mean), with group and cohort rows (means over patients): the consensus set,
  then glycemic risk and variability (time in tight range, GRI and its zone,
  MAGE, MODD, CONGA-1, J-index);
- the GRI grid: each patient of each run as a dot, hypoglycemia against
  hyperglycemia component, over the zones A-E;
- the worst patient's trace in detail and every patient's trace as small
  multiples: BG, CGM, the twin's estimate and forecasts when the trace has
  them (``*_mg_dl`` columns; ``forecast_H_mg_dl`` drawn at its target time),
  meals, and insulin (basal U/h and bolus U, or delivered U per sample) on a
  second axis;
- with other runs to compare (another controller or arm): comparison tables
  by group and by patient (with the difference to the first run when there
  are two), overlaid AGP medians and side-by-side TIR bars.

Replays (``glucotwin replay``): the forecast scores per method and horizon,
RMSE/MAE by horizon, the AGP, time in ranges and metrics of the readings per
subject, each subject's readings, and forecasts against the readings over
the first day of forecasts.

Glucose is shown in mg/dL or, with ``units="mmol"`` (``--units mmol``), in
mmol/L: tables, labels and figures convert (:mod:`sim.trial.metrics.units`);
the files read stay in mg/dL.

matplotlib is imported only inside the functions that draw (no pyplot, no
global backend change): importing this package stays light.

Modules, from the building blocks up:

- ``errors``: ReportError and the one-line warning of a report not written;
- ``html_page``: the page shell, CSS, escaping, number formatting, small HTML pieces;
- ``figures``: matplotlib plumbing (lazy Figure class, PNG data URIs, panel grids);
- ``ranges``: the target range, time-in-ranges bands and consensus targets;
- ``trial_run``: a trial/HIL output directory read back (TrialRun) and patient groups;
- ``agp``: the Ambulatory Glucose Profile (percentiles, drawing, trial figure);
- ``tir_bars``: time-in-ranges stacked bars (drawing, trial and comparison figures);
- ``traces``: glucose and insulin traces (meals, twin columns, trial figures);
- ``metrics_table``: metric column sets (consensus; risk and variability), cells and a trial run's table per patient;
- ``gri_grid``: the GRI grid figure;
- ``protocol``: the protocol and plant rows, with the rerun command;
- ``compare``: the comparison section of compared runs;
- ``trial_page``: the trial/HIL report page and writing it;
- ``replay_figures``: the figures of a replay report;
- ``replay_page``: the replay report page, written after a replay or rebuilt from its JSON;
- ``dispatch``: ``glucotwin report``'s choice between a trial/HIL directory and a replay JSON.

:func:`report_after_run` is defined here, not in ``trial_page``: it calls
``sim.report.write_trial_report`` through this package's namespace, the seam
the tests replace to check that a failing report never fails the trial.
"""

from __future__ import annotations

import time
from pathlib import Path

from sim.report.agp import AGP_BIN_MIN, AGP_MIN_SAMPLES, AGP_WINDOW_MIN, agp_percentiles
from sim.report.dispatch import write_report
from sim.report.errors import ReportError, _warn
from sim.report.figures import DPI
from sim.report.html_page import DISCLAIMER
from sim.report.ranges import TARGET_MG_DL, TIR_BANDS, tir_segments
from sim.report.replay_figures import REPLAY_FORECAST_SUBJECTS_MAX, REPLAY_SUBJECTS_MAX
from sim.report.replay_page import (
    read_forecasts_csv,
    replay_report_after_run,
    replay_report_html,
    replay_report_path,
    write_replay_report,
)
from sim.report.traces import TRACE_GRID_MAX
from sim.report.trial_page import REPORT_FILENAME, trial_report_html, write_trial_report
from sim.report.trial_run import GROUP_ORDER, TrialRun, load_trial_run

__all__ = [
    "AGP_BIN_MIN",
    "AGP_MIN_SAMPLES",
    "AGP_WINDOW_MIN",
    "DISCLAIMER",
    "DPI",
    "GROUP_ORDER",
    "REPLAY_FORECAST_SUBJECTS_MAX",
    "REPLAY_SUBJECTS_MAX",
    "REPORT_FILENAME",
    "TARGET_MG_DL",
    "TIR_BANDS",
    "TRACE_GRID_MAX",
    "ReportError",
    "TrialRun",
    "agp_percentiles",
    "load_trial_run",
    "read_forecasts_csv",
    "replay_report_after_run",
    "replay_report_html",
    "replay_report_path",
    "report_after_run",
    "tir_segments",
    "trial_report_html",
    "write_replay_report",
    "write_report",
    "write_trial_report",
]


def report_after_run(directory: str | Path, units: str | None = "mg") -> Path | None:
    """For ``glucotwin trial`` and ``hil``: write ``DIR/report.html`` (glucose in ``units``) and say so.

    Never raises: a failure prints one warning line to stderr and returns None.
    """
    try:
        tic = time.perf_counter()
        path = write_trial_report(directory, units=units)
    except Exception as exc:  # a report must never fail the trial it reports on
        _warn(exc)
        return None
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB, {time.perf_counter() - tic:.1f} s)")
    return path
