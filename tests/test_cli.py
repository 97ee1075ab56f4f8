"""The glucotwin command line: help, errors as one line, a smoke trial."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sim.cli import main


def _glucotwin() -> list[str]:
    exe = shutil.which("glucotwin")
    return [exe] if exe else [sys.executable, "-m", "sim.cli"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "trial" in out and "not a medical device" in out


def test_trial_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        main(["trial", "--help"])
    out = capsys.readouterr().out
    for option in ("--controller", "--arm", "--patients", "--group", "--days", "--seed-offset", "--workers", "--out"):
        assert option in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trial", "--patients", "adult#042"], "unknown patient 'adult#042'"),
        (["trial", "--days", "-1"], "expected a positive number"),
        (["trial", "--days", "abc"], "expected a number"),
        (["trial", "--workers", "0"], "whole number >= 1"),
        (["trial", "--seed-offset", "1.5"], "whole number"),
        (["trial", "--controller", "nope"], "unknown controller 'nope'"),
        (["trial", "--arm", "xcl"], "invalid choice"),
        (["trial", "--days", "400"], "days must be"),
        (["frobnicate"], "invalid choice"),
        (["trial", "--scale", "Vmx"], "--scale expects PARAM=FACTOR"),
        (["trial", "--scale", "BW=2"], "physiology scale"),
        (["trial", "--carb-error", "-150"], "carb announcement factor"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("glucotwin: error:")
    assert message in err
    assert "Traceback" not in err


def test_unwritable_output_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["trial", "--patients", "adult#001", "--days", "0.01", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to output directory" in err


def test_smoke_trial_subprocess(tmp_path):
    out = tmp_path / "run"
    cmd = _glucotwin() + ["trial", "--patients", "adolescent#002", "adult#003", "child#004",
                          "--days", "0.25", "--workers", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "all (3)" in proc.stdout and "worst patient:" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["patients"]) == ["adolescent#002", "adult#003", "child#004"]
    for name in summary["patients"]:
        assert (out / f"{name}.csv").exists()
        assert summary["patients"][name]["samples"] == 0.25 * 24 * 20 + 1


def test_cli_import_is_light():
    code = "import sys, sim.cli; print(sorted(m for m in ('simglucose','pandas','matplotlib') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
