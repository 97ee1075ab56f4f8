"""GRI, time in tight range, MAGE, MODD, CONGA and J-index against iglu's published values.

Reference: the iglu R package (Broll et al.), version 4.3.0. The values are the
example outputs that iglu's documentation site prints for its example data
``example_data_1_subject`` (tests/data/cgm_example_1_subject.csv, the same data
as "Subject 1" of ``example_data_5_subject``). Source: repository
irinagain/iglu, branch gh-pages, commit 153f7bf284958f060c1ee92409616053ca6e1fcf
("Deploying to gh-pages from @ irinagain/iglu@33d72695d77900c62d4f408a748d821a08df9b0e",
2025-07-12), files:

- reference/gri.html: ``gri(example_data_1_subject)`` GRI 7.19
- reference/j_index.html: ``j_index(example_data_1_subject)`` 24.6
- reference/modd.html: ``modd(example_data_1_subject)`` 27.8; ``lag = 2``: 27.7
- reference/conga.html: ``conga(example_data_1_subject)`` 37.0 (iglu's default n = 24 h)
- reference/mage.html: ``mage(example_data_5_subject, version = 'ma')`` Subject 1: 72.4
- reference/mage_ma_single.html: ``mage_ma_single(example_data_1_subject, short_ma = 4,
  long_ma = 24, direction = 'plus')`` 73.47135; ``mage_ma_single(example_data_1_subject,
  inter_gap = 300)`` 79.72259
- reference/below_percent.html, reference/above_percent.html: below_70 0.137,
  above_140 26.1 (for time in tight range, which iglu does not print: see below)
- articles/iglu.html: ``str(CGMS2DayByDay(example_data_1_subject))``: gd2d 14 × 288, first
  column 112.2, 92, 90.1, 143.1 for days 2-5; with ``dt0 = 10``: 14 × 144, 111.1, 92.9, 89.1, 138.2

Tibble output is printed to 3 significant digits, so the tolerance is half a unit
of the last printed digit; ``mage_ma_single`` prints 7 digits, tested to 5e-5 mg/dL.
iglu computes MODD, CONGA and MAGE on its interpolated grid (CGMS2DayByDay, 45-min
gaps left empty), which :mod:`sim.trial.metrics.day_grid` reproduces; the grid
depends on the time zone only through daylight-saving changes (none in these
13 days of June), so the published values, built in UTC, hold for the file's
local times.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from sim.trial.metrics import (
    conga_mg_dl,
    day_grid,
    glucose_metrics,
    gri_zone,
    j_index,
    mage_mg_dl,
    minutes_since_midnight,
    modd_mg_dl,
)

DATA = Path(__file__).parent / "data"
EXAMPLE = DATA / "cgm_example_1_subject.csv"


def _printed(value: float, digits: int = 3) -> float:
    """Half a unit in the last of ``digits`` significant digits: the tolerance of a printed value."""
    return 0.5 * 10 ** (np.floor(np.log10(abs(value))) - digits + 1)


@pytest.fixture(scope="module")
def example():
    """(times, glucose mg/dL, minutes since midnight of the first day) of iglu's example subject."""
    with open(EXAMPLE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    times = [datetime.fromisoformat(r["time"]) for r in rows]
    glucose = np.array([float(r["gl"]) for r in rows])
    assert len(times) == 2915  # as dim(example_data_1_subject) in iglu's vignette
    return times, glucose, minutes_since_midnight(times)


def test_the_grid_is_iglus_cgms2daybyday(example):
    _, g, t = example
    grid = day_grid(t, g)
    assert grid.glucose_mg_dl.shape == (14, 288) and grid.dt_min == 5.0
    assert np.isnan(grid.glucose_mg_dl[0, 0])  # 00:05 on day 1 is before the first reading
    assert np.round(grid.glucose_mg_dl[1:5, 0], 1) == pytest.approx([112.2, 92.0, 90.1, 143.1], abs=1e-9)
    coarse = day_grid(t, g, dt_min=10)
    assert coarse.glucose_mg_dl.shape == (14, 144)
    assert np.round(coarse.glucose_mg_dl[1:5, 0], 1) == pytest.approx([111.1, 92.9, 89.1, 138.2], abs=1e-9)


def test_gri_is_iglus(example):
    _, g, t = example
    m = glucose_metrics(g, t)
    assert m["gri"] == pytest.approx(7.19, abs=_printed(7.19))
    assert m["gri"] == pytest.approx(3 * m["gri_hypo_pct"] + 1.6 * m["gri_hyper_pct"], rel=1e-12)
    assert gri_zone(m["gri"]) == "A"


def test_time_in_tight_range_from_iglus_below_70_and_above_140(example):
    # iglu prints no 70-140 range; TITR = 100 - below_70 - above_140 (both published), within their rounding
    _, g, _ = example
    expected = 100 - 0.137 - 26.1
    assert glucose_metrics(g)["in_tight_range_70_140_pct"] == pytest.approx(expected, abs=_printed(0.137) + _printed(26.1))


def test_j_index_is_iglus(example):
    _, g, _ = example
    assert j_index(g) == pytest.approx(24.6, abs=_printed(24.6))
    assert glucose_metrics(g)["j_index"] == j_index(g)


def test_modd_is_iglus(example):
    _, g, t = example
    grid = day_grid(t, g)
    assert modd_mg_dl(grid) == pytest.approx(27.8, abs=_printed(27.8))
    assert modd_mg_dl(grid, lag_days=2) == pytest.approx(27.7, abs=_printed(27.7))
    assert glucose_metrics(g, t)["modd_mg_dl"] == modd_mg_dl(grid)


def test_conga_24h_is_iglus_default(example):
    _, g, t = example
    assert conga_mg_dl(day_grid(t, g), n_hours=24) == pytest.approx(37.0, abs=_printed(37.0))


def test_mage_is_iglus_moving_average_version(example):
    _, g, t = example
    assert mage_mg_dl(t, g) == pytest.approx(72.4, abs=_printed(72.4))
    assert glucose_metrics(g, t)["mage_mg_dl"] == mage_mg_dl(t, g)
    assert mage_mg_dl(t, g, direction="plus", short_ma=4, long_ma=24) == pytest.approx(73.47135, abs=5e-5)
    assert mage_mg_dl(t, g, inter_gap_min=300) == pytest.approx(79.72259, abs=5e-5)


def test_the_replay_reading_path_gives_the_same_metrics(example):
    """The file read as ``glucotwin replay`` reads it (aware times in a zone) gives the same metrics."""
    from zoneinfo import ZoneInfo

    from sensors import read_cgm_file

    zone = ZoneInfo("America/New_York")
    readings, rejected = read_cgm_file(EXAMPLE, tz="America/New_York")
    assert not rejected and len(readings) == 2915
    times = [r.time.astimezone(zone) for r in readings]
    g = np.array([r.glucose_mg_dl for r in readings])
    _, g0, t0 = example
    ours, theirs = glucose_metrics(g, minutes_since_midnight(times)), glucose_metrics(g0, t0)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12), key
