"""The new metrics where people read them: summary.json, the trial tables, the HTML report (risk and
variability tables, the GRI grid) and the replay report, in mg/dL and with --units mmol.

One real trial (simglucose, basal-only controller, 2 patients, 1.25 days so that MODD has two
days to compare) is shared by the tests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sensors.reading import MG_DL_PER_MMOL_L
from sim.cli import main
from sim.trial.metrics import METRIC_NAMES, TIMED_NAMES, glucose_metrics, gri_zone, minutes_since_midnight
from sim.trial.summary import format_tables
from sim.trial.trace import read_trace_csv

pytest.importorskip("matplotlib")

DATA = Path(__file__).parent / "data"
PATIENTS = ["adult#001", "child#001"]


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    out = tmp_path_factory.mktemp("metrics") / "basal"
    assert main(["trial", "--controller", "basal", "--arm", "fcl", "--patients", *PATIENTS, "--days", "1.25",
                 "--workers", "1", "--quiet", "--no-report", "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def _row_cells(page: str, patient: str, after: str) -> list[str]:
    """The cells after the patient's name in the first table row of ``patient`` following ``after``."""
    section = page.split(after, 1)[1]
    row = re.search(rf"<tr[^>]*><td class=\"l\">{re.escape(patient)}</td>(.*?)</tr>", section).group(1)
    return re.findall(r"<td[^>]*>([^<]*)</td>", row)


def test_summary_holds_every_metric_as_computed_from_the_written_traces(trial):
    out, summary = trial
    for p in PATIENTS:
        info = summary["patients"][p]
        trace = read_trace_csv(out / f"{p}.csv")
        t = minutes_since_midnight(trace.time)
        for kind, g in (("bg", trace.bg_mg_dl), ("cgm", trace.cgm_mg_dl)):
            assert set(info[kind]) == set(METRIC_NAMES)
            assert all(np.isfinite(info[kind][k]) for k in METRIC_NAMES), (p, kind)
            expected = glucose_metrics(g, t)
            for key in METRIC_NAMES:
                assert info[kind][key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), (p, kind, key)
            assert info["gri_zone"][kind] == gri_zone(info[kind]["gri"])
    cohort = summary["cohort"]
    assert cohort["bg"]["mage_mg_dl"] == pytest.approx(np.mean([summary["patients"][p]["bg"]["mage_mg_dl"]
                                                                 for p in PATIENTS]))
    for kind in ("bg", "cgm"):
        zones = cohort["gri_zone_patients"][kind]
        assert sum(zones.values()) == 2
        assert all(zones[summary["patients"][p]["gri_zone"][kind]] >= 1 for p in PATIENTS)


def test_trial_tables_in_mg_dl_and_mmol_l(trial):
    _, summary = trial
    child = summary["patients"]["child#001"]["bg"]
    mg, mmol = format_tables(summary), format_tables(summary, "mmol")
    row_mg = next(line for line in mg.splitlines() if line.startswith("child#001") and "." in line)
    assert f"{child['mean']:.0f}" in row_mg.split() and f"{child['gri']:.1f}" in row_mg.split()
    assert row_mg.split()[-1] == gri_zone(child["gri"])
    assert "<70" in mg and "<3.9" in mmol and ">10.0" in mmol and "glucose in mmol/L" in mmol
    row_mmol = next(line for line in mmol.splitlines() if line.startswith("child#001"))
    assert f"{child['mean'] / MG_DL_PER_MMOL_L:.1f}" in row_mmol.split()
    variability = [line for line in mmol.splitlines() if line.startswith("child#001")][1].split()
    assert variability[3] == f"{child['mage_mg_dl'] / MG_DL_PER_MMOL_L:.2f}"  # hypo, hyper, MAGE
    assert variability[6] == f"{child['j_index']:.1f}"  # the J-index does not change with the unit


def test_report_shows_risk_and_variability_and_the_gri_grid_in_both_units(trial, tmp_path):
    out, summary = trial
    child = summary["patients"]["child#001"]["bg"]
    for units, label, factor, spec in (("mg", "mg/dL", 1.0, ".1f"), ("mmol", "mmol/L", 1 / MG_DL_PER_MMOL_L, ".2f")):
        html = tmp_path / f"{units}.html"
        assert main(["report", str(out), "--units", units, "--out", str(html)]) == 0
        page = html.read_text(encoding="utf-8")
        for text in (f"MAGE {label}", f"MODD {label}", f"CONGA-1 {label}", "J-index", "GRI zone",
                     'id="gri"', "GRI grid", f"mean {label}"):
            assert text in page, (units, text)
        cells = _row_cells(page, "child#001", "Glycemic risk and variability, true BG")
        # TITR, GRI, zone, hypo, hyper, MAGE, MODD, CONGA-1, J-index
        assert cells[1:] == [f"{child['in_tight_range_70_140_pct']:.1f}", f"{child['gri']:.1f}", gri_zone(child["gri"]),
                             f"{child['gri_hypo_pct']:.2f}", f"{child['gri_hyper_pct']:.2f}",
                             format(child["mage_mg_dl"] * factor, spec), format(child["modd_mg_dl"] * factor, spec),
                             format(child["conga_1h_mg_dl"] * factor, spec), f"{child['j_index']:.1f}"]
    assert "TIR 3.9-10.0 %" in page and "TITR 3.9-7.8 %" in page  # the mmol/L page, last written


def test_a_summary_written_before_the_new_metrics_gets_them_from_the_traces(trial, tmp_path):
    out, summary = trial
    old = tmp_path / "old"
    shutil.copytree(out, old)
    stripped = json.loads(json.dumps(summary))
    for part in [*stripped["patients"].values(), *stripped["groups"].values(), stripped["cohort"]]:
        for kind in ("bg", "cgm"):
            part[kind] = {k: v for k, v in part[kind].items() if k not in METRIC_NAMES[11:]}
    (old / "summary.json").write_text(json.dumps(stripped))
    from sim.report import load_trial_run

    run = load_trial_run(old)
    for p in PATIENTS:
        for key in TIMED_NAMES + ("gri", "j_index"):
            assert run.metrics(p)[key] == pytest.approx(summary["patients"][p]["bg"][key], rel=1e-9), (p, key)
    assert run.group_metrics(None)["gri"] == pytest.approx(summary["cohort"]["bg"]["gri"])
    assert main(["report", str(old), "--out", str(tmp_path / "old.html")]) == 0
    assert "Glycemia Risk Index" in (tmp_path / "old.html").read_text(encoding="utf-8")


def test_the_gri_grid_has_one_dot_per_patient_and_run(trial):
    from sim.report import load_trial_run
    from sim.report.gri_grid import gri_points

    out, summary = trial
    run = load_trial_run(out)
    for kind in ("bg", "cgm"):
        points = gri_points(run, kind)
        assert [p[0] for p in points] == PATIENTS
        for name, group, hypo, hyper, gri in points:
            m = summary["patients"][name][kind]
            assert (group, hypo, hyper, gri) == (name.split("#")[0], m["gri_hypo_pct"], m["gri_hyper_pct"], m["gri"])


def test_replay_report_metrics_of_iglus_example_in_mmol():
    """The replay page computes the new metrics of the readings, on days of the report's zone."""
    from sensors import read_cgm_file
    from sim.report import replay_report_html
    from sim.report.replay_page import _readings_by_subject, subject_metrics

    readings, _ = read_cgm_file(DATA / "cgm_example_1_subject.csv", tz="UTC")
    metrics = subject_metrics(_readings_by_subject(readings))["Subject 1"]
    assert metrics["mage_mg_dl"] == pytest.approx(72.4, abs=0.05)  # iglu's published MAGE of this subject
    assert metrics["gri"] == pytest.approx(7.19, abs=0.005)
    page = replay_report_html({"format": "glucotwin.replay-report/1", "file": "example.csv"}, readings, units="mmol")
    cells = _row_cells(page, "Subject 1", "Glycemic risk and variability")
    assert cells[0] == "2915" and cells[6] == f"{metrics['mage_mg_dl'] / MG_DL_PER_MMOL_L:.2f}"
    assert "RMSE mmol/L" in page and "target 3.9-10.0 mmol/L" in page
