"""``--units mmol`` on the commands that print glucose: tables say mmol/L, files stay mg/dL (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main

DATA = Path(__file__).resolve().parent / "data"


def test_trial_tables_in_mmol_and_the_summary_in_mg(tmp_path, capsys):
    pytest.importorskip("simglucose")
    out = tmp_path / "t"
    assert main(["trial", "--patients", "adult#001", "--days", "0.1", "--quiet", "--no-report", "--units", "mmol",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "glucose in mmol/L" in text and "<3.9" in text and ">10.0" in text
    row = next(line for line in text.splitlines() if line.startswith("adult#001"))
    mean_mmol = float(row.split()[7])  # TIR <70 <54 >180 >250 TITR mean
    summary = json.loads((out / "summary.json").read_text())
    mean_mg = summary["patients"]["adult#001"]["bg"]["mean"]
    assert 60 < mean_mg < 250 and mean_mmol == pytest.approx(mean_mg / 18.0182, abs=0.06)


def test_population_and_learn_print_mmol(tmp_path, capsys):
    assert main(["population", "--size", "2", "--days", "0.1", "--quiet", "--units", "mmol",
                 "--out", str(tmp_path / "p")]) == 0
    text = capsys.readouterr().out
    assert "glucose in mmol/L" in text and "<3.9" in text
    mean = next(line for line in text.splitlines() if line.startswith("mean"))
    assert 3.0 < float(mean.split()[1]) < 15.0  # a mean glucose in mmol/L, not mg/dL
    assert main(["learn", str(DATA / "cgm_example_1_subject.csv"), "--out", str(tmp_path / "twin.json"),
                 "--units", "mmol"]) == 0
    text = capsys.readouterr().out
    rmse = next(line for line in text.splitlines() if "6-h forecast" in line)
    assert rmse.count("mmol/L") == 2 and "ISF, mmol/L per U" in text
