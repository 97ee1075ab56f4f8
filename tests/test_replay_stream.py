"""Replay as a stream: the same scores as scoring.evaluate, bounded memory, and the CLI's progress and estimate."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.reading import GlucoseReading
from sim.cli import main
from sim.forecast.replay import replay, replay_stream
from sim.forecast.scoring import evaluate
from twin.forecaster import ForecastPoint, LinearExtrapolation, Persistence

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
REAL_TRACE = DATA / "cgm_example_1_subject.csv"
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


class LastValue:
    """The latest reading, with a fixed ±20 mg/dL band: a forecaster that costs nothing."""

    name = "last"

    def __init__(self) -> None:
        self._g: float | None = None

    def reset(self) -> None:
        self._g = None

    def observe(self, time: datetime, glucose_mg_dl: float) -> None:
        self._g = glucose_mg_dl

    def forecast(self, horizons_min):
        if self._g is None:
            return []
        return [ForecastPoint(h, self._g, self._g - 20.0, self._g + 20.0) for h in horizons_min]


_steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 4.0, 5.0, 5.0, 5.0, 6.5, 2.5, 7.5, 30.0]),  # minutes to the next reading (0: same time)
        st.integers(40, 400),
        st.booleans(),  # clipped
    ),
    min_size=1, max_size=60,
)


@settings(derandomize=True, max_examples=120, deadline=None)
@given(subjects=st.lists(_steps, min_size=1, max_size=3), horizons=st.sampled_from([(30.0, 60.0), (5.0,), (7.5, 15.0)]),
       tolerance=st.sampled_from([2.5, 0.0, 5.0]))
def test_streamed_scores_equal_evaluate_bit_for_bit(subjects, horizons, tolerance):
    readings = []
    for k, steps in enumerate(subjects):
        t = T0
        for step, g, clipped in steps:
            t += timedelta(minutes=step)
            readings.append(GlucoseReading(t, float(g), "test", subject=f"S{k}", clipped=clipped and g in (40, 400)))
    factories = {"persistence": Persistence, "linear": LinearExtrapolation, "last": LastValue}
    rows = []
    streamed = replay_stream(readings, factories, horizons, tolerance_min=tolerance, on_forecast=rows.append)
    assert streamed.evaluation == evaluate(rows, readings, methods=list(factories), horizons_min=horizons,
                                           tolerance_min=tolerance)
    in_memory = replay(readings, factories, horizons, tolerance_min=tolerance)
    assert in_memory.forecasts == rows and in_memory.evaluation == streamed.evaluation
    assert streamed.forecasts_issued == len(rows) and streamed.forecasts == []


def test_a_stream_out_of_order_is_refused():
    a = [GlucoseReading(T0 + timedelta(minutes=5 * i), 100.0, "test", subject="A") for i in range(3)]
    b = [GlucoseReading(T0, 100.0, "test", subject="B")]
    with pytest.raises(ValueError, match="in time order"):
        replay_stream(list(reversed(a)), [LastValue], (30,))
    with pytest.raises(ValueError, match="grouped by subject"):
        replay_stream(a[:1] + b + a[1:], [LastValue], (30,))
    assert replay(a[:1] + b + a[1:], [LastValue], (30,)).readings_per_subject == {"A": 3, "B": 1}


def test_streamed_replay_memory_does_not_grow_with_the_stream():
    def readings(n: int):
        for i in range(n):
            yield GlucoseReading(T0 + timedelta(minutes=5 * i), 100.0 + (i * 7) % 90, "test", subject="A")

    def peak(n: int) -> int:
        tracemalloc.start()
        try:
            result = replay_stream(readings(n), [LastValue], (30, 60))
            assert result.evaluation.pairs[60.0] == n - 2 - 12
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak(2_000), peak(20_000)
    assert long < short + 100_000  # ten times the readings, the same memory (give or take 100 kB)
    tracemalloc.start()
    try:
        held = list(readings(20_000))
        listed = tracemalloc.get_traced_memory()[1]  # what replay() holds before it starts
    finally:
        tracemalloc.stop()
    assert len(held) == 20_000 and long * 10 < listed


def test_replay_states_its_estimated_time_on_stderr_unless_quiet(capsys):
    assert main(["replay", str(REAL_TRACE), "--methods", "persistence"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("replay of 2,915 readings with persistence: ") and "ms per reading on the first" in err
    assert "in all" in err and err.count("\n") == 1 and "\r" not in err  # no bar: stderr is not a terminal
    assert main(["replay", str(REAL_TRACE), "--methods", "persistence", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_outputs_that_cannot_be_written_are_refused_before_the_replay(tmp_path, capsys):
    assert main(["replay", str(REAL_TRACE), "--json", str(tmp_path / "no" / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and "no such directory" in err and "replay of" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal (os.openpty)")
def test_a_terminal_gets_a_progress_bar(tmp_path):
    leader, follower = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "replay", str(REAL_TRACE), "--methods", "persistence",
                             "linear"], stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(leader)
    assert proc.returncode == 0 and b"best at 30 min" in out
    text = seen.decode(errors="replace")
    assert "readings with persistence, linear" in text and "\r[" in text and "elapsed" in text


def test_bench_measures_the_replay_process_peak_memory():
    from sim.bench.replay_memory import replay_memory

    figures = replay_memory(quick=True)
    assert set(figures) == {"replay_rss_mb"} and 20.0 < figures["replay_rss_mb"] < 150.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-400, 400, allow_nan=False), min_size=1, max_size=300),
       st.floats(0.0, 0.5))
def test_the_bands_quantiles_are_numpys_bit_for_bit(values, tail):
    import numpy as np

    from twin.forecaster import _quantiles

    v = np.array(values)
    assert _quantiles(v, (tail, 1.0 - tail)) == [float(x) for x in np.quantile(v, [tail, 1.0 - tail])]
