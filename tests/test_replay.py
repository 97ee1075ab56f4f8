"""CGM file replay and forecast scoring: baselines, the scoring rules, the CSV, the CLI.

Hand-computed scores on tiny series, the baselines on a straight ramp (linear
extrapolation exact, persistence off by slope × horizon), gaps, the same-pairs
rule, and ``glucotwin replay`` end to end on the real trace and the fixtures.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sensors.reading import GlucoseReading
from sim.cli import main
from sim.forecast.scoring import ForecastRow, TruthIndex, evaluate
from sim.forecast.replay import (
    FORECAST_COLUMNS,
    ForecastMethod,
    available_methods,
    default_profile,
    replay,
    write_forecasts_csv,
)
from twin.forecaster import ForecastPoint, Forecaster, LinearExtrapolation, Persistence

DATA = Path(__file__).parent / "data"
REAL_TRACE = DATA / "cgm_example_1_subject.csv"
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def reading(minutes: float, glucose: float, subject: str = "", clipped: bool = False) -> GlucoseReading:
    return GlucoseReading(at(minutes), glucose, "test", subject=subject, clipped=clipped)


def row(method: str, issued_min: float, horizon: float, forecast: float,
        band: tuple[float, float] = (0.0, 1000.0), subject: str = "") -> ForecastRow:
    return ForecastRow(subject, method, at(issued_min), horizon, forecast, *band)


def one_line_error(argv, capsys) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("glucotwin: error:"), err
    assert "Traceback" not in err
    return err


# --- scoring by hand ---------------------------------------------------------------

RAMP_TRUTHS = [reading(m, 100 + 2 * m) for m in range(0, 25, 5)]  # 100, 110, ..., 140


def test_scores_by_hand():
    # truths at +10 min: issued 0 -> 120, issued 5 -> 130, issued 10 -> 140
    rows = [
        row("a", 0, 10, 125, (110, 130)), row("a", 5, 10, 125, (120, 129)), row("a", 10, 10, 140, (139, 141)),
        row("b", 0, 10, 123), row("b", 5, 10, 126), row("b", 10, 10, 140),
    ]
    ev = evaluate(rows, RAMP_TRUTHS)
    a, b = ev.scores["a"][10.0], ev.scores["b"][10.0]
    assert (a.n, b.n, ev.pairs[10.0]) == (3, 3, 3)
    assert a.rmse_mg_dl == pytest.approx(math.sqrt(50 / 3))  # errors +5, -5, 0
    assert a.mae_mg_dl == pytest.approx(10 / 3)
    assert a.bias_mg_dl == pytest.approx(0.0)
    assert a.coverage == pytest.approx(2 / 3)  # 130 is outside [120, 129]
    assert b.rmse_mg_dl == pytest.approx(math.sqrt(25 / 3))  # errors +3, -4, 0
    assert b.mae_mg_dl == pytest.approx(7 / 3)
    assert b.bias_mg_dl == pytest.approx(-1 / 3)
    assert ev.best(10.0) == "b"


def test_every_method_is_scored_on_the_same_pairs():
    rows = [
        row("a", 0, 10, 120), row("a", 5, 10, 100), row("a", 10, 10, 140),  # a's big miss at 5 ...
        row("b", 0, 10, 121), row("b", 10, 10, 141),  # ... is a pair b skipped
    ]
    ev = evaluate(rows, RAMP_TRUTHS)
    assert ev.pairs[10.0] == 2 and ev.candidate_pairs[10.0] == 3
    assert ev.scores["a"][10.0].n == ev.scores["b"][10.0].n == 2
    assert ev.scores["a"][10.0].rmse_mg_dl == pytest.approx(0.0)
    assert ev.scores["b"][10.0].rmse_mg_dl == pytest.approx(1.0)
    assert ev.issued["a"][10.0] == 3 and ev.issued["b"][10.0] == 2
    # a compared method that issued nothing leaves nothing to score
    silent = evaluate(rows, RAMP_TRUTHS, methods=["a", "b", "silent"])
    assert all(silent.scores[m][10.0].n == 0 for m in ("a", "b", "silent"))
    assert silent.best(10.0) is None


def test_truth_is_the_nearest_reading_within_tolerance():
    truths = [reading(0, 100), reading(10 + 2.4, 150), reading(20 + 2.6, 170), reading(27.5, 180),
              reading(32.5, 190), reading(40, 300, clipped=True)]
    index = TruthIndex(truths)
    assert index.nearest("", at(10), 2.5) == 150
    assert index.nearest("", at(20), 2.5) is None  # 2.6 min away
    assert index.nearest("", at(30), 2.5) == 180  # equidistant: the earlier reading
    assert index.nearest("", at(40), 2.5) is None  # clipped Low/High is not a truth
    assert index.nearest("other", at(10), 2.5) is None
    with pytest.raises(ValueError, match="tolerance"):
        evaluate([], truths, tolerance_min=-1)


def test_two_forecasts_of_one_method_for_one_pair_are_refused():
    with pytest.raises(ValueError, match="two forecasts"):
        evaluate([row("a", 0, 10, 120), row("a", 0, 10, 121)], RAMP_TRUTHS)


# --- the baselines -----------------------------------------------------------------


def feed(forecaster: Forecaster, points: list[tuple[float, float]]) -> Forecaster:
    for minutes, glucose in points:
        forecaster.observe(at(minutes), glucose)
    return forecaster


def test_baselines_implement_the_protocol():
    for forecaster in (Persistence(), LinearExtrapolation()):
        assert isinstance(forecaster, Forecaster)
        assert forecaster.forecast([30]) == []  # nothing seen yet


def test_on_a_ramp_linear_is_exact_and_persistence_misses_by_slope_times_horizon():
    slope = 1.5  # mg/dL/min
    readings = [reading(m, 90 + slope * m) for m in range(0, 12 * 60, 5)]
    result = replay(readings, {"persistence": Persistence, "linear": LinearExtrapolation}, (30, 60))
    ev = result.evaluation
    for h in (30.0, 60.0):
        p, lin = ev.scores["persistence"][h], ev.scores["linear"][h]
        assert p.n == lin.n == len(readings) - 2 - int(h / 5)  # warm-up of 2 intervals, last targets beyond
        assert p.rmse_mg_dl == pytest.approx(slope * h)
        assert p.mae_mg_dl == pytest.approx(slope * h)
        assert p.bias_mg_dl == pytest.approx(-slope * h)
        assert lin.rmse_mg_dl == pytest.approx(0.0, abs=1e-9)
        assert ev.best(h) == "linear"


def test_forecast_bands_contain_the_forecast_and_widen_with_horizon():
    rng = np.random.default_rng(7)
    deviation = np.zeros(600)  # mean-reverting noise around 140 mg/dL (AR(1), SD about 25)
    for i in range(1, 600):
        deviation[i] = 0.97 * deviation[i - 1] + rng.normal(0, 6.0)
    readings = [reading(5 * i, 140 + d) for i, d in enumerate(deviation)]
    for factory in (Persistence, LinearExtrapolation):
        forecaster = factory()
        widths = {}
        for r in readings[:3]:
            forecaster.observe(r.time, r.glucose_mg_dl)
        prior = {p.horizon_min: p.upper_mg_dl - p.lower_mg_dl for p in forecaster.forecast([30, 60])}
        assert prior[30.0] == pytest.approx(2 * 1.6449 * 30, rel=1e-3) and prior[60.0] > prior[30.0]
        for r in readings[3:]:
            forecaster.observe(r.time, r.glucose_mg_dl)
        for p in forecaster.forecast([30, 60]):
            assert p.lower_mg_dl <= p.forecast_mg_dl <= p.upper_mg_dl
            widths[p.horizon_min] = p.upper_mg_dl - p.lower_mg_dl
        assert widths[60.0] > widths[30.0]
    result = replay(readings, [Persistence, LinearExtrapolation], (30, 60))
    for method in ("persistence", "linear"):
        for h in (30.0, 60.0):
            assert 0.8 <= result.evaluation.scores[method][h].coverage <= 0.97  # nominal 0.9


def test_linear_uses_the_last_20_minutes_only():
    # falling 3 mg/dL/min for an hour, then rising 2 mg/dL/min for 20 minutes
    points = [(m, 250 - 3 * m) for m in range(0, 65, 5)] + [(60 + m, 70 + 2 * m) for m in range(5, 25, 5)]
    forecaster = feed(LinearExtrapolation(), points)
    assert forecaster.slope_mg_dl_per_min == pytest.approx(2.0)
    (point,) = forecaster.forecast([30])
    assert point.forecast_mg_dl == pytest.approx(110 + 60)


def test_linear_falls_back_to_persistence_after_a_gap():
    forecaster = feed(LinearExtrapolation(), [(0, 100), (5, 110), (10, 120)])
    assert forecaster.forecast([30])[0].forecast_mg_dl == pytest.approx(180)
    forecaster.observe(at(10 + 16), 150)  # more than 15 minutes later
    assert forecaster.slope_mg_dl_per_min == 0.0
    assert forecaster.forecast([30])[0].forecast_mg_dl == 150
    forecaster.observe(at(31), 160)
    assert forecaster.slope_mg_dl_per_min == pytest.approx(2.0)
    forecaster.reset()
    assert forecaster.forecast([30]) == []


def test_forecasters_refuse_bad_input():
    forecaster = feed(Persistence(), [(10, 100)])
    with pytest.raises(ValueError, match="time order"):
        forecaster.observe(at(5), 100)
    with pytest.raises(ValueError, match="timezone-aware"):
        forecaster.observe(datetime(2024, 3, 1, 9, 0), 100)
    with pytest.raises(ValueError, match="horizons"):
        forecaster.forecast([0])
    with pytest.raises(ValueError, match="lower <= forecast <= upper"):
        ForecastPoint(30, 100, 101, 120)
    with pytest.raises(ValueError, match="finite"):
        ForecastPoint(30, math.nan, 0, 200)


# --- replay --------------------------------------------------------------------------


def test_no_forecast_is_scored_across_a_gap_without_a_reading():
    readings = [reading(m, 100 + m) for m in range(0, 35, 5)] + [reading(m, 200) for m in range(90, 125, 5)]
    result = replay(readings, [Persistence, LinearExtrapolation], (30,))
    issued = [r.issued_at for r in result.forecasts if r.method == "persistence"]
    # warm-up: the first forecast comes with the third reading (2 readings and 10 minutes)
    assert issued[0] == at(10) and len(issued) == len(readings) - 2
    # targets 40..60 fall in the gap, 120 is the only target after it with a reading
    assert result.evaluation.pairs[30.0] == 1
    assert result.evaluation.scores["persistence"][30.0].rmse_mg_dl == 0.0  # 200 -> 200


def test_replay_streams_each_subject_through_fresh_forecasters():
    a = [reading(m, 100 + m, subject="A") for m in range(0, 60, 5)]
    b = [reading(m, 300 - m, subject="B") for m in range(0, 60, 5)]
    result = replay(b + a, {"lin": LinearExtrapolation}, (10,))
    assert result.readings_per_subject == {"B": 12, "A": 12}
    assert result.evaluation.scores["lin"][10.0].rmse_mg_dl == pytest.approx(0.0, abs=1e-9)
    first_a = next(r for r in result.forecasts if r.subject == "A")
    assert first_a.issued_at == at(10) and first_a.forecast_mg_dl == pytest.approx(120)


def test_replay_skips_a_repeated_time_and_refuses_unasked_horizons():
    readings = [reading(0, 100), reading(5, 105), reading(5, 107), reading(10, 110)]
    result = replay(readings, [Persistence], (30,))
    assert result.skipped_same_time == 1 and result.readings_per_subject == {"": 3}

    class WrongHorizon(Persistence):
        def forecast(self, horizons_min):
            return [ForecastPoint(45, 100, 90, 110)]

    with pytest.raises(ValueError, match="returned horizon 45"):
        replay(readings, {"wrong": WrongHorizon}, (30,))
    with pytest.raises(ValueError, match="horizons"):
        replay(readings, [Persistence], (-30,))


def test_forecasts_csv_columns_and_iso_times(tmp_path):
    result = replay([reading(m, 100 + m, subject="S 1") for m in range(0, 40, 5)], [Persistence], (30, 60))
    path = tmp_path / "forecasts.csv"
    assert write_forecasts_csv(result.forecasts, path) == len(result.forecasts) == 6 * 2
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == FORECAST_COLUMNS
    assert rows[0][:7] == ["id", "issued_at", "horizon_min", "target_time", "forecast_mg_dl", "lower_mg_dl",
                           "upper_mg_dl"]
    first = dict(zip(rows[0], rows[1]))
    assert first["id"] == "S 1" and first["method"] == "persistence" and first["horizon_min"] == "30"
    issued, target = datetime.fromisoformat(first["issued_at"]), datetime.fromisoformat(first["target_time"])
    assert issued == at(10) and target - issued == timedelta(minutes=30) and issued.utcoffset() == timedelta(0)
    assert float(first["lower_mg_dl"]) <= float(first["forecast_mg_dl"]) == 110.0 <= float(first["upper_mg_dl"])


def test_methods_are_pluggable_and_twin_is_listed_either_way(monkeypatch):
    import sim.forecast.replay

    available, unavailable = available_methods()
    assert {"persistence", "linear"} <= set(available)
    assert ("twin" in available) != ("twin" in unavailable)

    class LastOfThree(Persistence):
        name = "last-of-three"

    monkeypatch.setitem(sim.forecast.replay._registered, "last-of-three",
                        ForecastMethod("last-of-three", lambda profile: LastOfThree, "none"))
    available, _ = available_methods()
    factory = available["last-of-three"].build(default_profile())
    assert isinstance(factory(), LastOfThree)


# --- the CLI ---------------------------------------------------------------------------


def test_cli_replays_the_real_trace(tmp_path, capsys):
    csv_path, json_path = tmp_path / "f.csv", tmp_path / "r.json"
    code = main(["replay", str(REAL_TRACE), "--methods", "persistence", "linear",
                 "--forecasts", str(csv_path), "--json", str(json_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "iglu, 2915 readings of 1 subject(s)" in out
    assert "best at 30 min: persistence" in out and "best at 60 min: persistence" in out
    report = json.loads(json_path.read_text())
    scores = report["evaluation"]["scores"]
    # Regression figures: they depend only on the readings and the matching rule.
    assert scores["persistence"]["30"]["rmse_mg_dl"] == pytest.approx(16.30, abs=0.01)
    assert scores["persistence"]["60"]["rmse_mg_dl"] == pytest.approx(24.93, abs=0.01)
    assert scores["linear"]["30"]["rmse_mg_dl"] == pytest.approx(19.62, abs=0.01)
    assert scores["linear"]["60"]["rmse_mg_dl"] == pytest.approx(41.27, abs=0.01)
    for h in ("30", "60"):
        assert scores["persistence"][h]["n"] == scores["linear"][h]["n"] == report["evaluation"]["pairs"][h] > 2500
    assert report["file_format"] == "iglu" and report["readings"] == 2915 and report["rejected"] == 0
    assert report["profile"] == default_profile().to_dict() and "assumption" in report["profile_source"]
    assert report["insulin_assumption"] == {"persistence": "none: uses glucose readings only",
                                            "linear": "none: uses glucose readings only"}
    with open(csv_path, newline="") as handle:
        assert sum(1 for _ in handle) - 1 == report["forecasts_issued"]


@pytest.mark.parametrize("name, fmt, clipped", [
    ("clarity_export_mgdl.csv", "clarity", 4),
    ("clarity_export_mmol.csv", "clarity", 3),
    ("nightscout_entries.json", "nightscout", 0),
])
def test_cli_replays_the_fixtures(name, fmt, clipped, tmp_path, capsys):
    json_path = tmp_path / "r.json"
    assert main(["replay", str(DATA / name), "--methods", "persistence", "linear", "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert f": {fmt}, " in out and "best at 30 min:" in out
    report = json.loads(json_path.read_text())
    assert report["file_format"] == fmt and report["readings_clipped"] == clipped
    assert report["rejected"] == sum(report["rejected_reasons"].values()) > 0
    assert report["evaluation"]["pairs"]["30"] > 0


def test_cli_subject_horizons_and_profile(tmp_path, capsys):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps({**default_profile().to_dict(), "name": "clinic profile"}))
    assert main(["replay", str(DATA / "iglu_two_subjects.csv"), "--subject", "Subject 2", "--profile", str(profile),
                 "--methods", "linear", "--horizons", "15", "30", "15"]) == 0
    out = capsys.readouterr().out
    assert "11 readings of 1 subject(s)" in out and "profile: clinic profile" in out
    assert "15 min" in out and "60 min" not in out and "persistence" not in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    not_cgm = tmp_path / "notes.csv"
    not_cgm.write_text("a,b,c\n1,2,3\n")
    empty_trace = tmp_path / "empty.csv"
    empty_trace.write_text('"","id","time","gl"\n"1","S",2020-01-01 00:00:00,NA\n')
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps({"name": "x"}))
    out_of_range = tmp_path / "range.json"
    out_of_range.write_text(json.dumps({**default_profile().to_dict(), "weight_kg": 2000}))
    cases = [
        (["replay", tmp_path / "missing.csv"], "cannot read"),
        (["replay", not_cgm], "cannot tell the CGM file format"),
        (["replay", REAL_TRACE, "--format", "xml"], "invalid choice"),
        (["replay", REAL_TRACE, "--format", "nightscout"], "not valid JSON"),
        (["replay", empty_trace], "no glucose readings"),
        (["replay", REAL_TRACE, "--profile", tmp_path / "nope.json"], "cannot read profile"),
        (["replay", REAL_TRACE, "--profile", bad_json], "not JSON"),
        (["replay", REAL_TRACE, "--profile", incomplete], "incomplete patient profile"),
        (["replay", REAL_TRACE, "--profile", out_of_range], "weight_kg"),
        (["replay", REAL_TRACE, "--methods", "oracle"], "unknown method 'oracle'"),
        (["replay", REAL_TRACE, "--subject", "Subject 9"], "no subject 'Subject 9'"),
        (["replay", REAL_TRACE, "--tz", "Mars/Olympus"], "unknown time zone"),
        (["replay", REAL_TRACE, "--horizons", "-5"], "positive number"),
        (["replay", REAL_TRACE, "--methods", "persistence", "--forecasts", tmp_path / "no" / "f.csv"],
         "cannot write"),
    ]
    for argv, message in cases:
        assert message in one_line_error(argv, capsys), argv


def test_cli_help_explains_replay(capsys):
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = capsys.readouterr().out
    for option in ("FILE", "--format", "--tz", "--profile", "--horizons", "--methods", "--subject",
                   "--forecasts", "--json", "nightscout"):
        assert option in out
