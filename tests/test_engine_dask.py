"""The Dask engine gives the same trial as the local engine (summary.json equal but for ``run``)."""

import json
import sys

import numpy as np
import pytest

from sim.engine import LocalEngine, make_engine
from sim.trial.protocol import TrialProtocol
from sim.trial.trace import read_trace_csv
from sim.trial.run import run_trial

pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'glucotwin[dask]'")


@pytest.fixture(scope="module")
def dask_engine():
    """One LocalCluster of 2 single-threaded worker processes for the module."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this test module
    with make_engine("dask", workers=2) as engine:
        yield engine


def _without_run(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "run"}


def test_dask_trial_equals_local_trial(tmp_path, dask_engine):
    patients = ["adult#002", "child#004"]
    protocol = TrialProtocol(arm="hcl", days=0.1, seed_offset=3)
    local = run_trial("mpc", patients, protocol, out_dir=tmp_path / "local", workers=1, progress=False)
    dask = run_trial("mpc", patients, protocol, out_dir=tmp_path / "dask", progress=False, engine=dask_engine)
    a = json.loads((tmp_path / "local" / "summary.json").read_text())
    b = json.loads((tmp_path / "dask" / "summary.json").read_text())
    assert _without_run(a) == _without_run(b)
    assert a["run"]["engine"] == {"engine": "local", "workers": 1}
    assert b["run"]["engine"]["engine"] == "dask" and b["run"]["workers"] == 2
    assert [r.patient for r in dask.runs] == patients == [r.patient for r in local.runs]
    for p in patients:  # traces too, but for the controller's own timing (cycle_ms)
        x, y = read_trace_csv(tmp_path / "local" / f"{p}.csv"), read_trace_csv(tmp_path / "dask" / f"{p}.csv")
        for column in ("bg_mg_dl", "cgm_mg_dl", "carbs_g", "insulin_u"):
            np.testing.assert_array_equal(getattr(x, column), getattr(y, column))
        assert x.time == y.time
        assert {k: v for k, v in x.diagnostics.items() if k != "cycle_ms"} == {
            k: v for k, v in y.diagnostics.items() if k != "cycle_ms"}


def _job(x, y, progress=None):
    if progress is not None:
        progress(f"job{x}", 30.0)
    return x * y


def test_dask_engine_keeps_job_order(dask_engine):
    jobs = [(i, 10) for i in range(7)]
    assert dask_engine.map(_job, jobs, progress=lambda key, minutes: None) == [10 * i for i in range(7)]
    assert LocalEngine(1).map(_job, jobs) == [10 * i for i in range(7)]
    assert dask_engine.describe()["workers"] == 2


def test_engine_choice_errors():
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("spark")
    with pytest.raises(ValueError, match="needs the dask engine"):
        make_engine("local", scheduler="tcp://127.0.0.1:8786")


def test_population_on_dask_equals_local(dask_engine):
    from sim.population import PopulationSpec, run_population

    spec = PopulationSpec(size=6, seed=2, days=0.1, controller="bb", arm="hcl")
    local = run_population(spec, workers=1, progress=False)
    dask = run_population(spec, engine=dask_engine, progress=False, chunk_size=2)
    assert {k: v for k, v in dask.summary.items() if k != "run"} == {
        k: v for k, v in local.summary.items() if k != "run"}
    assert dask.summary["run"]["engine"]["engine"] == "dask" and dask.summary["run"]["chunks"] == 3
