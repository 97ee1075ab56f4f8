"""Consensus metrics against hand-computed values and simglucose's risk index."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from simglucose.analysis.risk import risk_index

from sim.trial.metrics import METRIC_NAMES, TIMED_NAMES, glucose_metrics, mean_metrics, risk_f, safety_rank_key


def test_time_in_ranges_by_hand():
    # 10 samples: 2 below 54, 1 in [54, 70), 4 in range (70 and 180 inclusive), 2 in (180, 250], 1 above 250
    g = np.array([40, 50, 60, 70, 100, 150, 180, 200, 250, 300], dtype=float)
    m = glucose_metrics(g)
    assert m["below_54"] == pytest.approx(20.0)
    assert m["below_70"] == pytest.approx(30.0)
    assert m["in_range_70_180"] == pytest.approx(40.0)
    assert m["above_180"] == pytest.approx(30.0)
    assert m["above_250"] == pytest.approx(10.0)
    assert m["mean"] == pytest.approx(140.0)  # 1400 / 10
    sd = math.sqrt(sum((x - 140.0) ** 2 for x in g) / 9)
    assert m["SD"] == pytest.approx(sd)
    assert m["CV"] == pytest.approx(100 * sd / 140.0)
    assert m["GMI"] == pytest.approx(3.31 + 0.02392 * 140.0)


def test_risk_by_hand_at_known_points():
    # f(112.5) is ~0 by construction of the transform; at 50 and 300 mg/dL compute by hand
    for bg in (50.0, 300.0):
        f = 1.509 * (math.log(bg) ** 1.084 - 5.381)
        m = glucose_metrics(np.array([bg]))
        if f < 0:
            assert m["LBGI"] == pytest.approx(10 * f * f) and m["HBGI"] == 0.0
        else:
            assert m["HBGI"] == pytest.approx(10 * f * f) and m["LBGI"] == 0.0
    assert abs(risk_f(np.array([112.5]))[0]) < 0.01


def test_lbgi_hbgi_equal_mean_of_simglucose_per_sample_risk():
    rng = np.random.default_rng(7)
    g = rng.uniform(30, 450, size=500)
    per_sample = [risk_index([x], 1) for x in g]
    m = glucose_metrics(g)
    assert m["LBGI"] == pytest.approx(np.mean([r[0] for r in per_sample]), rel=1e-12)
    assert m["HBGI"] == pytest.approx(np.mean([r[1] for r in per_sample]), rel=1e-12)


def test_non_finite_samples_are_ignored_and_empty_is_nan():
    m = glucose_metrics(np.array([100.0, np.nan, np.inf, 200.0]))
    assert m["mean"] == pytest.approx(150.0)
    assert m["in_range_70_180"] == pytest.approx(50.0)
    assert all(math.isnan(v) for v in glucose_metrics(np.array([])).values())


def test_zero_glucose_gives_finite_maximal_low_risk():
    m = glucose_metrics(np.array([0.0, 0.0]))
    assert math.isfinite(m["LBGI"]) and m["LBGI"] > 600
    assert m["below_54"] == 100.0


def test_mean_metrics_and_worst_ranking():
    a = glucose_metrics(np.array([100.0, 120.0]))
    b = glucose_metrics(np.array([50.0, 120.0]))
    avg = mean_metrics([a, b])
    assert avg["in_range_70_180"] == pytest.approx(75.0)
    assert max([a, b], key=safety_rank_key) is b


@given(st.lists(st.floats(min_value=0.0, max_value=700.0), min_size=1, max_size=300))
def test_ranges_partition_the_samples(values):
    m = glucose_metrics(np.array(values))
    assert set(m) == set(METRIC_NAMES) - set(TIMED_NAMES)  # no times: no time-gridded metrics
    assert m["below_70"] + m["in_range_70_180"] + m["above_180"] == pytest.approx(100.0)
    assert 0.0 <= m["below_54"] <= m["below_70"] <= 100.0
    assert 0.0 <= m["above_250"] <= m["above_180"] <= 100.0
    assert m["LBGI"] >= 0.0 and m["HBGI"] >= 0.0
