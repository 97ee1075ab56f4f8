"""Bring your own controller: ``glucotwin trial --controller MODULE:ATTR`` on real simglucose patients.

A user's simglucose ``Controller`` (class or instance) or plain callable policy runs through the
same protocol, metrics, report and result files as glucotwin's own controllers, gets what
simglucose gives its controllers and nothing more, and has no glucotwin safety supervisor. Every
trial also writes simglucose's own results CSVs, which simglucose's analysis reads.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main
from sim.trial.cohort import clinical_profile
from sim.trial.controllers import SIMGLUCOSE_INFO_KEYS, UserControllerError, user_controller_factory
from sim.trial.protocol import TrialProtocol
from sim.trial.run import run_trial
from sim.trial.simglucose_csv import COLUMNS, read_simglucose_results, simglucose_csv_path
from sim.trial.simglucose_env import make_env
from twin.profile import PatientProfile

ROOT = Path(__file__).resolve().parents[1]
TOY = "examples.toy_controller:ToyController"
BB_SPEC = "simglucose.controller.basal_bolus_ctrller:BBController"
# 05:00 to 08:36: the RandomScenario breakfast of seed 1 falls in it (checked below: carbs > 0)
MORNING = dict(start=datetime(2025, 1, 1, 5, 0), days=0.15)

PROBE = '''
from simglucose.controller.base import Action, Controller

CALLS = []          # (policy kwargs) of every call, in this process
BUILT = []          # constructor kwargs of every ProbeController
RESETS = []


class ProbeController(Controller):
    """Records what it is given; doses the programmed basal, no bolus."""

    def __init__(self, init_state, patient_name, profile, gain=1.0):
        super().__init__(init_state)
        BUILT.append({"init_state": init_state, "patient_name": patient_name, "profile": profile})
        self.basal_u_per_min = profile.basal_u_per_h_at(0) / 60.0

    def policy(self, observation, reward, done, **info):
        CALLS.append(dict(info, _observation=observation, _reward=reward, _done=done))
        return Action(basal=self.basal_u_per_min, bolus=0.0)

    def reset(self):
        RESETS.append(True)


def callable_policy(observation, reward, done, **info):
    CALLS.append(dict(info, _observation=observation))
    return Action(basal=0.01 if observation.CGM > 100 else 0.0, bolus=0.0)


class Counting(Controller):
    def __init__(self):
        super().__init__(0)
        self.calls = 0

    def policy(self, observation, reward, done, **info):
        self.calls += 1
        return Action(basal=0.01, bolus=0.0)

    def reset(self):
        self.calls = 0


SHARED = Counting()  # an instance: deep-copied per patient, this one never runs
'''

BAD = '''
import math
from simglucose.controller.base import Action, Controller

NOT_A_CONTROLLER = 3


class NoPolicy:
    def reset(self):
        pass


class OnlyBase(Controller):
    def reset(self):
        pass


class NeedsSecret(Controller):
    def __init__(self, secret):
        super().__init__(0)

    def policy(self, observation, reward, done, **info):
        return Action(0.0, 0.0)

    def reset(self):
        pass


def two_args(a, b):
    return None


def returns_none(observation, reward, done, **info):
    return None


def returns_nan(observation, reward, done, **info):
    return Action(basal=math.nan, bolus=0.0)
'''


def _write_module(directory: Path, name: str, text: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(text))
    importlib.invalidate_caches()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A directory with the user's modules, as the current directory (sys.path restored afterwards)."""
    home = tmp_path / "user"
    home.mkdir()
    _write_module(home, "byo_probe", PROBE)
    _write_module(home, "byo_bad", BAD)
    _write_module(home, "byo_broken", "import a_module_that_is_not_installed_anywhere\n")
    monkeypatch.chdir(home)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("byo_probe", "byo_bad", "byo_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield home
    for name in ("byo_probe", "byo_bad", "byo_broken"):
        sys.modules.pop(name, None)


def _simglucose_info_keys() -> set[str]:
    """What simglucose's own T1DSimEnv passes a controller's policy (reset and step)."""
    from simglucose.controller.base import Action

    env = make_env("adult#001", 1, datetime(2025, 1, 1), fast=False)
    _, _, _, reset_info = env.reset()
    _, _, _, step_info = env.step(Action(basal=0.0, bolus=0.0))
    assert set(reset_info) == set(step_info)
    return set(step_info)


# --- the toy class through the CLI: summary.json, report, simglucose CSVs ---------------------


def test_toy_controller_runs_through_the_protocol_in_worker_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # examples/ is found from the current directory, in the workers too
    out = tmp_path / "toy"
    assert main(["trial", "--controller", TOY, "--patients", "adult#001", "child#001", "--days", "0.125",
                 "--workers", "2", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "no glucotwin safety supervisor" in stdout and "all (2)" in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["controller"] == f"{TOY} (user controller, no glucotwin safety supervisor)"
    user = summary["user_controller"]
    assert user["kind"] == "class" and user["constructor_kwargs"] == ["profile"] and user["safety_supervisor"] is False
    assert user["source"] == {"file": "examples/toy_controller.py",
                              "sha256": hashlib.sha256((ROOT / "examples/toy_controller.py").read_bytes()).hexdigest()}
    assert summary["run"]["workers"] == 2
    html = (out / "report.html").read_text()
    assert "no glucotwin safety supervisor" in html and "Time in ranges" in html

    for patient in ("adult#001", "child#001"):
        assert (out / f"{patient}.csv").exists()
        lines = simglucose_csv_path(out, patient).read_text().splitlines()
        assert lines[0] == ",".join(COLUMNS)
        assert len(lines) == 1 + summary["patients"][patient]["samples"] == 1 + 0.125 * 24 * 20 + 1
    # the toy's rule, read back from simglucose's CSV: basal only, zero below 90 mg/dL CGM
    frame = read_simglucose_results(out / "simglucose").loc["child#001"]
    basal_u_per_min = clinical_profile("child#001").basal_u_per_h_at(0) / 60.0
    insulin = frame["insulin"].to_numpy()[:-1]
    assert np.all(insulin <= 4 * basal_u_per_min + 1e-9)
    assert np.all(insulin[frame["CGM"].to_numpy()[:-1] < 90.0] == 0.0)


# --- what the user's controller is given ---------------------------------------------------


def test_a_class_gets_simglucose_info_and_the_clinical_profile_only(user_dir):
    protocol = TrialProtocol(arm="hcl", **MORNING)
    result = run_trial("byo_probe:ProbeController", ["adult#001"], protocol, out_dir=user_dir / "out",
                       workers=1, progress=False)
    probe = sys.modules["byo_probe"]  # imported by the trial, from the current directory
    # the constructor: exactly the names its signature asks for; a clinical profile, no simulator row
    assert probe.BUILT == [{"init_state": 0, "patient_name": "adult#001", "profile": clinical_profile("adult#001")}]
    assert type(probe.BUILT[0]["profile"]) is PatientProfile
    assert probe.RESETS == [True]
    # each policy call: simglucose's own info keys, no more (no env, no simulator parameters)
    keys = _simglucose_info_keys()
    assert keys == set(SIMGLUCOSE_INFO_KEYS)
    assert len(probe.CALLS) == result.summary["patients"]["adult#001"]["samples"] - 1
    for call in probe.CALLS:
        assert set(call) - {"_observation", "_reward", "_done"} == keys
        assert call["patient_name"] == "adult#001" and call["sample_time"] == 3.0
        assert type(call["_observation"]).__name__ == "Observation" and call["_observation"]._fields == ("CGM",)
    # HCL: the meal announced at meal time, gram for gram what simglucose records as eaten
    frame = read_simglucose_results(user_dir / "out" / "simglucose").loc["adult#001"]
    eaten_g = float(np.nansum(frame["CHO"].to_numpy()) * 3.0)
    announced_g = sum(call["meal"] * call["sample_time"] for call in probe.CALLS)
    assert eaten_g > 20.0 and announced_g == pytest.approx(eaten_g, abs=1e-9)


def test_a_callable_policy_in_fcl_is_told_no_meal(user_dir):
    result = run_trial("byo_probe:callable_policy", ["adult#001"], TrialProtocol(arm="fcl", **MORNING),
                       out_dir=user_dir / "out", workers=1, progress=False)
    probe = sys.modules["byo_probe"]
    assert result.summary["user_controller"]["kind"] == "callable"
    assert all(call["meal"] == 0.0 for call in probe.CALLS) and len(probe.CALLS) > 50
    assert result.summary["patients"]["adult#001"]["carbs_g_per_day"] > 0  # the patient did eat
    assert {key for call in probe.CALLS for key in call} - {"_observation"} == set(SIMGLUCOSE_INFO_KEYS)


def test_an_instance_is_copied_per_patient(user_dir):
    result = run_trial("byo_probe:SHARED", ["adult#001", "child#001"], TrialProtocol(days=0.05),
                       workers=1, progress=False)
    probe = sys.modules["byo_probe"]
    assert result.summary["user_controller"]["kind"] == "instance"
    assert probe.SHARED.calls == 0  # each patient ran on its own deep copy
    for run in result.runs:
        assert np.allclose(run.trace.insulin_u[:-1], 0.01 * 3.0)


def test_what_a_class_is_built_with_does_not_depend_on_hidden_simulator_parameters(user_dir, monkeypatch):
    """Honesty rule: change every simglucose parameter of adult#004 except the clinical ones (body
    weight, and u2ss for the programmed basal): the constructor gets the very same arguments."""
    import sim.trial.cohort as cohort

    factory = user_controller_factory("byo_probe:ProbeController")
    probe = sys.modules["byo_probe"]
    factory("adult#004", "hcl")
    real = cohort.simulator_parameters

    def hidden_changed(name):
        row = real(name).copy()
        for key in row.index:
            if key not in ("Name", "BW", "u2ss") and isinstance(row[key], float):
                row[key] = row[key] * 1.3
        return row

    monkeypatch.setattr(cohort, "simulator_parameters", hidden_changed)
    cohort._clinical_values.cache_clear()
    try:
        assert hidden_changed("adult#004")["Vmx"] != real("adult#004")["Vmx"]
        factory("adult#004", "hcl")
    finally:
        cohort._clinical_values.cache_clear()
    assert len(probe.BUILT) == 2 and probe.BUILT[0] == probe.BUILT[1]


# --- the same protocol as the built-ins: simglucose's BBController by spec equals `bb` --------


def test_bbcontroller_by_spec_equals_the_builtin_and_simglucose_own_engine_writes_the_same_csv(tmp_path):
    from simglucose.controller.basal_bolus_ctrller import BBController
    from simglucose.simulation.sim_engine import SimObj

    protocol = TrialProtocol(arm="hcl", **MORNING)
    by_name = run_trial("bb", ["adult#001"], protocol, out_dir=tmp_path / "bb", workers=1, progress=False)
    by_spec = run_trial(BB_SPEC, ["adult#001"], protocol, out_dir=tmp_path / "spec", workers=1, progress=False)
    assert np.array_equal(by_name.runs[0].trace.bg_mg_dl, by_spec.runs[0].trace.bg_mg_dl)
    assert json.dumps(by_name.summary["patients"]) == json.dumps(by_spec.summary["patients"])  # NaN-safe
    assert by_spec.summary["user_controller"]["constructor_kwargs"] == []

    # simglucose's own engine on the same environment saves the very same file
    env = make_env("adult#001", protocol.seed_for("adult#001"), protocol.start, fast=False)
    own = SimObj(env, BBController(), protocol.duration, animate=False, path=str(tmp_path / "own"))
    own.simulate()
    own.save_results()
    ours = simglucose_csv_path(tmp_path / "bb", "adult#001").read_bytes()
    assert ours == (tmp_path / "own" / "adult#001.csv").read_bytes()
    assert simglucose_csv_path(tmp_path / "spec", "adult#001").read_bytes() == ours


def test_simglucose_analysis_reads_the_csvs(tmp_path, monkeypatch):
    """simglucose.analysis.report's own loader and report() on a glucotwin trial's CSVs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    # simglucose 0.2.11 draws with Axes.plot_date, which matplotlib 3.11 removed; give it back as
    # the plain plot it was, so that simglucose's report runs as it did (not a change to the data)
    if not hasattr(Axes, "plot_date"):
        monkeypatch.setattr(Axes, "plot_date", lambda self, x, y, fmt="o", **kw: self.plot(x, y, fmt, **kw),
                            raising=False)
    import simglucose.analysis.report as analysis

    result = run_trial("basal", ["adult#001", "child#001"], TrialProtocol(arm="fcl", **MORNING),
                       out_dir=tmp_path / "run", workers=1, progress=False)
    # simglucose's analysis script: glob('*#*.csv'), read_csv(f, index_col=0), concat(keys=names)
    monkeypatch.chdir(tmp_path / "run" / "simglucose")
    import glob

    import pandas as pd

    filename = glob.glob("*#*.csv")
    name = [_f[:-4] for _f in filename]
    df = pd.concat([pd.read_csv(f, index_col=0) for f in filename], keys=name)
    assert list(df.columns) == list(COLUMNS[1:]) and df.index.names[1] == "Time"
    (tmp_path / "stats").mkdir()
    results, ri_per_hour, zone_stats, figs, axes = analysis.report(df, save_path=str(tmp_path / "stats"))
    for fig in figs:
        plt.close(fig)
    assert (tmp_path / "stats" / "performance_stats.csv").exists()
    for patient, metrics in result.summary["patients"].items():
        assert results.loc[patient, "70<=BG<=180"] == pytest.approx(metrics["bg"]["in_range_70_180"], abs=1e-9)
        assert results.loc[patient, "BG>180"] == pytest.approx(metrics["bg"]["above_180"], abs=1e-9)
        assert results.loc[patient, "BG<70"] == pytest.approx(metrics["bg"]["below_70"], abs=1e-9)
    assert list(zone_stats.columns) == ["A", "B", "C", "D", "E"] and len(zone_stats) == 1
    assert set(ri_per_hour.index.get_level_values(1)) == set(result.summary["patients"])
    assert len(ri_per_hour.columns) == 3  # the full hours of 3.6 simulated hours


# --- specs that cannot run: one clear line ---------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:Thing", "no module named 'no_such_module_xyz'"),
    ("byo_broken:Thing", "importing byo_broken failed: ModuleNotFoundError"),
    ("byo_bad:Missing", "module byo_bad has no attribute 'Missing'"),
    ("byo_bad:NOT_A_CONTROLLER", "is of type int, not a controller"),
    ("byo_bad:NoPolicy", "class NoPolicy is not a controller: it does not implement policy()"),
    ("byo_bad:OnlyBase", "class OnlyBase is not a controller: it does not implement policy()"),
    ("byo_bad:NeedsSecret", "its parameter 'secret' has no default"),
    ("byo_bad:two_args", "cannot be called as policy(observation, reward, done, **info)"),
    ("byo_bad:", "expected MODULE:ATTR"),
    ("nonsense", "unknown controller 'nonsense'"),
])
def test_bad_specs_are_one_line_errors(user_dir, capsys, spec, message):
    assert main(["trial", "--controller", spec, "--patients", "adult#001", "--days", "0.01", "--quiet",
                 "--no-report", "--out", str(user_dir / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("glucotwin: error:") and "Traceback" not in err
    assert message in err
    assert not (user_dir / "out" / "summary.json").exists()


@pytest.mark.parametrize("spec, message", [
    ("byo_bad:returns_none", "returned None for adult#001 at 2025-01-01 00:00:00: expected Action(basal, bolus)"),
    ("byo_bad:returns_nan", "returned basal nan, bolus 0.0 U/min for adult#001"),
])
def test_a_bad_action_stops_the_trial_with_one_line(user_dir, capsys, spec, message):
    assert main(["trial", "--controller", spec, "--patients", "adult#001", "--days", "0.01", "--quiet",
                 "--no-report", "--out", str(user_dir / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_the_factory_refuses_before_any_simulation(user_dir):
    with pytest.raises(UserControllerError, match="no attribute 'Nope'"):
        user_controller_factory("byo_probe:Nope")


# --- one command: the user's controller against glucotwin and BB -----------------------------


def test_repeated_controller_runs_each_and_writes_a_comparison(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "cmp"
    assert main(["trial", "--controller", TOY, "--controller", "bb", "--patients", "adult#001", "--days", "0.05",
                 "--workers", "1", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "comparison (true BG" in stdout
    for directory, controller in (("examples.toy_controller.ToyController", f"{TOY} (user controller, no glucotwin "
                                   "safety supervisor)"), ("bb", "bb")):
        summary = json.loads((out / directory / "summary.json").read_text())
        assert summary["controller"] == controller
        assert (out / directory / "simglucose" / "adult#001.csv").exists()
        assert (out / directory / "report.html").exists()
    page = (out / "report.html").read_text()
    assert 'id="compare"' in page and "bb HCL" in page and f"{TOY} HCL" in page


@pytest.mark.parametrize("argv, message", [
    (["--controller", "bb", "--controller", "bb"], "the same --controller is given twice"),
    (["--controller", "mpc", "--controller", "bb", "--learn-days", "1"], "not with several controllers"),
])
def test_repeated_controller_errors(argv, message, capsys, tmp_path):
    assert main(["trial", *argv, "--patients", "adult#001", "--days", "0.01", "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
