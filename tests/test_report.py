"""HTML reports (glucotwin report): built from tiny real trials and a real replay, checked
for being self-contained and complete, and rendered in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.trial.metrics import glucose_metrics
from sim.report import agp_percentiles, tir_segments
from skip_reasons import skip_reason

pytest.importorskip("matplotlib", reason="needs matplotlib (the sim extra): pip install 'glucotwin[sim]'")

DATA = Path(__file__).parent / "data"
PATIENTS = ["adult#001", "child#001"]


def _trial(out: Path, controller: str, *extra: str) -> int:
    return main(["trial", "--controller", controller, "--patients", *PATIENTS, "--days", "0.25",
                 "--workers", "1", "--quiet", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny real trials (bb and basal-only), written by ``glucotwin trial`` with its report."""
    root = tmp_path_factory.mktemp("report")
    assert _trial(root / "bb", "bb") == 0
    assert _trial(root / "basal", "basal", "--no-report") == 0
    return root


def _assert_self_contained(page: str) -> list[bytes]:
    """No external resource of any kind; every image an embedded PNG. Returns the PNGs."""
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<iframe" not in page.lower()
    srcs = re.findall(r"""<img[^>]*\ssrc="([^"]*)\"""", page)
    assert srcs, "no figures"
    pngs = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:40]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        pngs.append(png)
    return pngs


def test_trial_writes_a_self_contained_report(runs):
    path = runs / "bb" / "report.html"
    assert path.exists(), "glucotwin trial wrote no report.html"
    assert not (runs / "basal" / "report.html").exists(), "--no-report was ignored"
    page = path.read_text(encoding="utf-8")
    pngs = _assert_self_contained(page)
    assert len(pngs) >= 4  # AGP, TIR bars, worst-patient trace, small multiples
    for text in ("Ambulatory Glucose Profile", "Time in ranges", "GMI %", "CV %", "TIR 70-180 %",
                 "True blood glucose", "CGM (what the controller saw)", "research software, not a medical device",
                 "simglucose 0.2.11 T1DPatient", "Dexcom", "seed offset 0", "adult#001 11", "child#001 21",
                 "hcl", "children (1)", "adults (1)", "all (2)", "glucotwin trial --controller bb"):
        assert text.lower() in page.lower(), text
    assert "Comparison" not in page
    assert len(page) < 2_000_000


def test_metrics_in_the_report_are_those_of_the_summary(runs):
    import json

    summary = json.loads((runs / "bb" / "summary.json").read_text())
    page = (runs / "bb" / "report.html").read_text(encoding="utf-8")
    bg = summary["patients"]["child#001"]["bg"]
    row = re.search(r"<tr[^>]*><td class=\"l\">child#001</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row)
    assert f"{bg['in_range_70_180']:.1f}" == cells[2]
    assert f"{bg['GMI']:.2f}" in cells and f"{bg['CV']:.1f}" in cells
    assert bg["GMI"] == pytest.approx(3.31 + 0.02392 * bg["mean"])


def test_report_compares_two_runs(runs, capsys):
    out = runs / "compare.html"
    assert main(["report", str(runs / "bb"), "--compare", str(runs / "basal"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    _assert_self_contained(page)
    for text in ('id="compare"', "By group", "By patient", "bb HCL", "basal HCL", "Δ = basal HCL − bb HCL",
                 "Time in ranges, side by side", str(runs / "basal")):
        assert text in page, text
    compare = page.split('id="compare"', 1)[1]
    assert compare.count('class="delta"') == 3 + 2  # all, adults, children; two patients


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or directory" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a trial/HIL output directory" in capsys.readouterr().err


def test_a_failing_report_does_not_fail_the_trial(tmp_path, monkeypatch, capsys):
    import sim.report

    def broken(*args, **kwargs):
        raise RuntimeError("renderer exploded\nwith two lines")

    monkeypatch.setattr(sim.report, "write_trial_report", broken)
    assert main(["trial", "--controller", "basal", "--patients", "adult#001", "--days", "0.05", "--workers", "1",
                 "--quiet", "--out", str(tmp_path / "t")]) == 0
    err = capsys.readouterr().err
    assert err == "glucotwin: warning: report not written: RuntimeError: renderer exploded with two lines\n"
    assert (tmp_path / "t" / "summary.json").exists()


def test_replay_writes_a_report_and_report_rebuilds_it(tmp_path, capsys):
    out = tmp_path / "replay"
    out.mkdir()
    assert main(["replay", str(DATA / "iglu_two_subjects.csv"), "--methods", "persistence", "linear",
                 "--forecasts", str(out / "f.csv"), "--json", str(out / "f.json")]) == 0
    assert str(out / "f.html") in capsys.readouterr().out
    page = (out / "f.html").read_text(encoding="utf-8")
    _assert_self_contained(page)
    for text in ("Forecast scores", "RMSE", "Ambulatory Glucose Profile", "Time in ranges", "GMI %", "CV %",
                 "Subject 1", "Subject 2", "Forecasts against readings", "not a medical device"):
        assert text in page, text
    assert main(["report", str(out), "--out", str(out / "again.html")]) == 0
    again = (out / "again.html").read_text(encoding="utf-8")
    assert "Forecasts against readings" in again and "Subject 2" in again
    assert main(["report", str(out / "f.json"), "--compare", str(out)]) == 2
    assert "--compare works with trial" in capsys.readouterr().err


def test_agp_percentiles_by_time_of_day():
    t0 = datetime(2025, 1, 1)
    times = [t0 + timedelta(minutes=5 * i) for i in range(288 * 4)]  # four whole days
    rng = np.random.default_rng(1)
    glucose = 100 + 50 * (np.array([t.hour for t in times]) >= 12) + rng.normal(0, 10, len(times))
    hours, pct = agp_percentiles(times, glucose)
    assert hours[0] == 0 and hours[-1] == 24 and pct.shape == (5, len(hours))
    morning, evening = pct[:, np.searchsorted(hours, 6)], pct[:, np.searchsorted(hours, 18)]
    assert np.all(np.diff(morning) >= 0)
    assert morning[2] == pytest.approx(100, abs=5) and evening[2] == pytest.approx(150, abs=5)
    assert morning[4] - morning[0] == pytest.approx(2 * 1.645 * 10, rel=0.3)
    part_hours, part = agp_percentiles(times[:36], glucose[:36])  # 3 hours: the rest is blank
    assert np.isnan(part[2, np.searchsorted(part_hours, 12)]) and np.isfinite(part[2, 1])


def test_tir_segments_sum_to_100():
    g = np.array([40, 50, 60, 69.9, 70, 120, 180, 180.1, 250, 251, 400])
    seg = tir_segments(glucose_metrics(g))
    assert sum(seg) == pytest.approx(100)
    assert [round(s * len(g) / 100) for s in seg] == [2, 2, 3, 2, 2]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def test_report_renders_in_headless_chromium(runs, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(skip_reason("chromium"))
    from matplotlib.image import imread

    page = runs / "compare.html"
    if not page.exists():
        assert main(["report", str(runs / "bb"), "--compare", str(runs / "basal"), "--out", str(page)]) == 0

    def shot(url: str, name: str) -> np.ndarray:
        png = tmp_path / name
        subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
                        "--window-size=1280,2000", url],
                       check=True, timeout=120, capture_output=True)
        return imread(png)

    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>")
    blank = shot(blank_page.resolve().as_uri(), "blank.png")
    image = shot(page.resolve().as_uri(), "report.png")
    assert image.shape[:2] == (2000, 1280)

    def colours(img: np.ndarray) -> int:
        rgb = (img[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
        return len(np.unique(rgb, axis=0))

    assert float(blank.std()) < 0.01 and colours(blank) <= 2
    assert float(image[..., :3].std()) > 0.1
    assert colours(image) > 500
    # the header bar is the report's blue, and its figures (not only text) are drawn
    assert np.allclose(image[20, 640, :3], np.array([0x1F, 0x4E, 0x9C]) / 255, atol=0.03)
