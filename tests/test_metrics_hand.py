"""The new metrics on small examples worked out by hand: the grid's gap rule, CONGA-1 (iglu
publishes only its 24-h default), MODD, MAGE on triangle waves, GRI and its zones, J-index,
time in tight range, and the presentation units."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensors.reading import MG_DL_PER_MMOL_L
from sim.trial.metrics import (
    METRIC_NAMES,
    TIMED_NAMES,
    conga_mg_dl,
    day_grid,
    glucose_metrics,
    gri_metrics,
    gri_zone,
    j_index,
    mage_mg_dl,
    mean_metrics,
    minutes_since_midnight,
    modd_mg_dl,
)
from sim.trial.metrics.mage import mage_segments
from sim.trial.metrics.units import MG_DL, MMOL_L, glucose_units, metrics_in_units


def _triangle(minutes: np.ndarray, low: float, high: float, period_min: float = 240.0) -> np.ndarray:
    """Up from ``low`` to ``high`` in half a period, back down in the other half."""
    phase = (minutes % period_min) / (period_min / 2)
    return np.where(phase <= 1, low + (high - low) * phase, 2 * high - low - (high - low) * phase)


# --- the grid -----------------------------------------------------------------------------

def test_grid_interpolates_but_leaves_gaps_over_45_min_empty():
    # readings at 00:05, 00:45 (a 40-min interval: bridged) and 01:35 (50 min: left empty)
    grid = day_grid(np.array([5.0, 45.0, 95.0]), np.array([100.0, 140.0, 200.0]), dt_min=5)
    row = grid.glucose_mg_dl[0]
    assert grid.glucose_mg_dl.shape == (2, 288)  # iglu's ceil(span in days + 1) days
    assert np.isnan(grid.glucose_mg_dl[1]).all()
    assert row[0] == 100.0 and row[1] == pytest.approx(105.0) and row[8] == 140.0  # 00:10 is 1/8 of the way
    assert np.isnan(row[9:18]).all() and row[18] == 200.0  # 00:50..01:30 empty, 01:35 the reading
    assert np.isnan(row[19:]).all()  # no extrapolation after the last reading


def test_grid_sorts_keeps_the_last_of_equal_times_and_rounds_the_step():
    grid = day_grid(np.array([10.0, 5.0, 10.0, 15.0]), np.array([120.0, 100.0, 130.0, 140.0]))
    assert grid.dt_min == 5.0 and list(grid.glucose_mg_dl[0, :3]) == [100.0, 130.0, 140.0]
    # a 7-min median interval does not divide a day: rounded to 5; 25 min becomes 20
    assert day_grid(np.arange(0, 300, 7.0), np.full(43, 100.0)).dt_min == 5.0
    assert day_grid(np.arange(0, 1000, 25.0), np.full(40, 100.0)).dt_min == 20.0
    with pytest.raises(ValueError, match="above the longest interpolated gap"):
        day_grid(np.arange(0, 600, 60.0), np.full(10, 100.0))


def test_minutes_since_midnight_of_the_first_day():
    from datetime import datetime

    t = minutes_since_midnight([datetime(2025, 1, 1, 6, 30), datetime(2025, 1, 2, 0, 15)])
    assert list(t) == [390.0, 1455.0]


# --- CONGA and MODD ---------------------------------------------------------------------

def test_conga_1h_by_hand():
    # on a 5-min grid, g_j = j^2 mg/dL: differences 12 steps apart are 24 j + 144, so their SD is
    # 24 × SD(j) over the m pairs, with SD(0..m-1) = sqrt(m (m + 1) / 12)
    j = np.arange(48, dtype=float)
    grid = day_grid(5.0 * (j + 1), j**2, dt_min=5)
    m = 48 - 12
    assert conga_mg_dl(grid, n_hours=1) == pytest.approx(24 * math.sqrt(m * (m + 1) / 12))
    assert glucose_metrics(j**2, 5.0 * (j + 1))["conga_1h_mg_dl"] == pytest.approx(24 * math.sqrt(m * (m + 1) / 12))


def test_modd_by_hand_with_a_gap_on_the_second_day():
    t = np.arange(5.0, 2 * 1440 + 1, 5.0)
    g = np.where(t <= 1440, 100.0, 110.0) + 10 * np.sin(2 * np.pi * t / 1440)  # day 2 = day 1 + 10 mg/dL
    keep = ~((t > 1440 + 600) & (t < 1440 + 720))  # two hours missing on day 2
    grid = day_grid(t[keep], g[keep])
    assert np.isnan(grid.glucose_mg_dl[1]).sum() == 23  # the points inside the gap
    assert modd_mg_dl(grid) == pytest.approx(10.0)
    assert math.isnan(modd_mg_dl(grid, lag_days=2))  # no pair of days two apart


# --- MAGE -----------------------------------------------------------------------------------

def test_mage_of_a_triangle_wave_is_its_amplitude_in_every_direction():
    t = np.arange(5.0, 1445 + 1, 5.0)  # six whole waves, from a nadir to a nadir
    g = _triangle(t - 5, 100.0, 200.0)
    for direction in ("avg", "plus", "minus", "service", "max"):
        assert mage_mg_dl(t, g, direction=direction) == pytest.approx(100.0), direction


def test_mage_segments_split_at_gaps_over_3_h_and_are_weighted_by_duration():
    t1 = np.arange(0, 8 * 60 + 1, 5.0)  # 8 h of a 100-mg/dL wave
    t2 = np.arange(0, 4 * 60 + 1, 5.0)  # then 4 h without data, then 4 h of a 50-mg/dL wave
    t = np.concatenate([t1 + 5, t2 + 8 * 60 + 5 + 240])
    g = np.concatenate([_triangle(t1, 100.0, 200.0), _triangle(t2, 100.0, 150.0)])
    segments = mage_segments(t, g)
    assert [(s.end_min - s.start_min, s.plus_mg_dl, s.minus_mg_dl) for s in segments] == [
        (480.0, pytest.approx(100.0), pytest.approx(100.0)), (240.0, pytest.approx(50.0), pytest.approx(50.0))]
    assert mage_mg_dl(t, g) == pytest.approx((100.0 * 480 + 50.0 * 240) / 720)
    # a 3-h gap (not over 3 h) is one segment
    t_joined = np.concatenate([t1 + 5, t2 + 8 * 60 + 5 + 180])
    assert len(mage_segments(t_joined, g)) == 1


def test_mage_is_nan_when_too_short_or_flat():
    t = np.arange(5.0, 31 * 5 + 1, 5.0)  # 31 grid points: shorter than the 32-point long average
    assert math.isnan(mage_mg_dl(t, _triangle(t, 100.0, 200.0, period_min=60.0)))
    t = np.arange(5.0, 1440 + 1, 5.0)
    assert math.isnan(mage_mg_dl(t, np.full(t.size, 120.0)))
    with pytest.raises(ValueError, match="direction"):
        mage_mg_dl(t, _triangle(t, 100.0, 200.0), direction="up")


# --- GRI, J-index, tight range ----------------------------------------------------------------

def test_gri_by_hand_and_its_cap():
    # 10 samples: VLow 10 %, Low 10 %, in range 40 %, High 30 %, VHigh 10 %
    g = np.array([40, 60, 100, 120, 150, 170, 200, 220, 240, 300], dtype=float)
    m = glucose_metrics(g)
    assert m["gri_hypo_pct"] == pytest.approx(10 + 0.8 * 10)
    assert m["gri_hyper_pct"] == pytest.approx(10 + 0.5 * 30)
    assert m["gri"] == pytest.approx(3.0 * 10 + 2.4 * 10 + 1.6 * 10 + 0.8 * 30)  # 94
    assert gri_zone(m["gri"]) == "E"
    all_low = gri_metrics({"below_54": 100.0, "below_70": 100.0, "above_180": 0.0, "above_250": 0.0})
    assert all_low == {"gri": 100.0, "gri_hypo_pct": 100.0, "gri_hyper_pct": 0.0}


def test_gri_zones_are_quintiles_with_boundaries_in_the_better_zone():
    assert [gri_zone(v) for v in (0.0, 20.0, 20.01, 40.0, 59.9, 60.0, 80.0, 80.5, 100.0)] == [
        "A", "A", "B", "B", "C", "C", "D", "E", "E"]
    assert gri_zone(float("nan")) == ""


def test_j_index_and_time_in_tight_range_by_hand():
    g = np.array([69.0, 70.0, 100.0, 140.0, 141.0, np.nan])
    m = glucose_metrics(g)
    assert m["in_tight_range_70_140_pct"] == pytest.approx(60.0)  # 70, 100, 140 of 5 finite samples
    assert j_index(np.array([100.0, 200.0])) == pytest.approx(0.001 * (150 + math.sqrt(5000)) ** 2)
    assert math.isnan(j_index(np.array([100.0])))


def test_without_times_the_gridded_metrics_are_left_out_and_the_rest_are_the_same():
    t = np.arange(5.0, 2 * 1440 + 1, 5.0)
    g = _triangle(t, 80.0, 220.0)
    timeless, timed = glucose_metrics(g), glucose_metrics(g, t)
    assert set(timed) == set(METRIC_NAMES) and set(timeless) == set(METRIC_NAMES) - set(TIMED_NAMES)
    assert all(math.isfinite(timed[k]) for k in METRIC_NAMES)
    assert timeless == {k: v for k, v in timed.items() if k not in TIMED_NAMES}
    empty = glucose_metrics(np.array([]), np.array([]))
    assert set(empty) == set(METRIC_NAMES) and all(math.isnan(v) for v in empty.values())
    assert mean_metrics([timed, timed])["mage_mg_dl"] == pytest.approx(timed["mage_mg_dl"])


# --- presentation units ----------------------------------------------------------------------

def test_mmol_converts_glucose_concentrations_only_with_the_one_constant():
    m = {"mean": 180.0, "SD": 36.0, "mage_mg_dl": 90.0, "modd_mg_dl": 27.0, "conga_1h_mg_dl": 18.0,
         "gri": 30.0, "j_index": 46.7, "in_range_70_180": 80.0, "CV": 20.0, "GMI": 7.6, "LBGI": 1.0}
    shown = metrics_in_units(m, MMOL_L)
    for key in ("mean", "SD", "mage_mg_dl", "modd_mg_dl", "conga_1h_mg_dl"):
        assert shown[key] == pytest.approx(m[key] / MG_DL_PER_MMOL_L), key
    for key in ("gri", "j_index", "in_range_70_180", "CV", "GMI", "LBGI"):
        assert shown[key] == m[key], key
    assert metrics_in_units(m, MG_DL) == m
    assert [MMOL_L.threshold(v) for v in (54, 70, 140, 180, 250)] == ["3.0", "3.9", "7.8", "10.0", "13.9"]
    assert glucose_units("mmol") is MMOL_L and glucose_units(None) is MG_DL
    with pytest.raises(ValueError, match="mg, mmol"):
        glucose_units("mmol/L")


def test_the_cli_offers_exactly_the_units_of_the_metrics():
    import argparse

    from sim.cli.args import GLUCOSE_UNIT_CHOICES, add_units_argument
    from sim.trial.metrics.units import UNITS

    assert tuple(UNITS) == GLUCOSE_UNIT_CHOICES
    parser = argparse.ArgumentParser()
    add_units_argument(parser)
    assert parser.parse_args([]).units == "mg" and parser.parse_args(["--units", "mmol"]).units == "mmol"
    other = argparse.ArgumentParser()
    add_units_argument(other, flag="--report-units", dest="report_units")
    assert other.parse_args(["--report-units", "mmol"]).report_units == "mmol"
