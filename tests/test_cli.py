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


# --- glucotwin run: every configuration mistake is one line, exit 2, before anything connects (issue 15) ------

import socket  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from controller.loop.config.ranges import toml_repr  # noqa: E402


def _toml(sections: dict) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{key} = {toml_repr(value)}" for key, value in values.items()]
        out.append("")
    return "\n".join(out)


@pytest.fixture()
def listener():
    """A loopback TCP socket that would see any connection the loop makes (MQTT broker, pump, Nightscout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield sock
    sock.close()


def _connections(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def _run_config(tmp_path: Path, port: int, change) -> dict:
    key = tmp_path / "pump.key"
    key.write_text("ab" * 32 + "\n")
    secret = tmp_path / "ns.secret"
    secret.write_text("a-good-nightscout-secret\n")
    sections = {
        "profile": {"name": "t", "weight_kg": 70, "total_daily_insulin_u": 42, "carb_ratio_g_per_u": 12,
                    "correction_factor_mg_dl_per_u": 45, "age_years": 30,
                    "basal": [{"start": "00:00", "rate_u_per_h": 0.8}]},
        "loop": {"journal": str(tmp_path / "journal.sqlite")},
        "mqtt": {"host": "127.0.0.1", "port": port, "subject": "t"},
        "sensor": {"transport": "mqtt"},
        "pump": {"transport": "mqtt", "device_id": "pump-1", "key_file": str(key)},
        "nightscout": {"url": f"http://127.0.0.1:{port}", "api_secret_file": str(secret), "upload": True},
    }
    change(sections, tmp_path)
    return sections


def _set(section, key, value):
    def change(sections, tmp_path):
        sections[section][key] = value
    return change


def _write(name, text):
    def change(sections, tmp_path):
        (tmp_path / name).write_text(text)
    return change


ISSUE_VALUES = [  # issue 15, items 4 and 5, verbatim
    ("[limits] max_bolus_u = 1000", _set("limits", "max_bolus_u", 1000)),
    ("[limits] max_iob_u = 1000", _set("limits", "max_iob_u", 1000)),
    ("[limits] low_mg_dl = 0", lambda s, t: s.update(limits={"low_mg_dl": 0, "suspend_forecast_mg_dl": 0})),
    ("[limits] stale_after_min = 1000000000.0", _set("limits", "stale_after_min", 1e9)),
    ("[limits] sensor_max_mg_dl = 100000", _set("limits", "sensor_max_mg_dl", 100000)),
    ("[limits] max_basal_multiple = 1000", _set("limits", "max_basal_multiple", 1000)),
    ("[loop] command_validity_s = 1000000000.0", _set("loop", "command_validity_s", 1e9)),
    ("[loop] temp_basal_duration_min = 100000", _set("loop", "temp_basal_duration_min", 100000)),
    ("[limits] max_bolus_u = true", _set("limits", "max_bolus_u", True)),
    ('[loop] publish_cycles = "false"', _set("loop", "publish_cycles", "false")),
    ('[mqtt] port = "abc"', _set("mqtt", "port", "abc")),
    ("[mqtt] port = -1", _set("mqtt", "port", -1)),
    ("[pump] reply_timeout_s = -5", _set("pump", "reply_timeout_s", -5)),
    ("[pump] key_file = ", _write("pump.key", "00112233\n")),  # a 4-byte key
    ("[nightscout] api_secret_file = ", _write("ns.secret", "ab\n")),  # a 2-character secret
]


def _limits_section(change):
    def wrapped(sections, tmp_path):
        sections.setdefault("limits", {})
        change(sections, tmp_path)
    return wrapped


@pytest.mark.parametrize("message, change", ISSUE_VALUES, ids=[m for m, _ in ISSUE_VALUES])
def test_run_refuses_each_bad_value_in_one_line_before_connecting(tmp_path, listener, message, change):
    port = listener.getsockname()[1]
    config = tmp_path / "bad.toml"
    config.write_text(_toml(_run_config(tmp_path, port, _limits_section(change))))
    started = time.monotonic()
    proc = subprocess.run(_glucotwin() + ["run", "--config", str(config)], capture_output=True, text=True,
                          timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"glucotwin: error: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _connections(listener) == 0, "the loop connected before refusing its configuration"
    assert not (tmp_path / "journal.sqlite").exists()
    assert elapsed < 10.0


def test_run_with_a_good_config_does_connect(tmp_path, listener):
    """The control for the test above: the same config, unchanged, reaches the listener."""
    port = listener.getsockname()[1]
    config = tmp_path / "good.toml"
    config.write_text(_toml(_run_config(tmp_path, port, lambda s, t: None)))
    proc = subprocess.Popen(_glucotwin() + ["run", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = 0
        while time.monotonic() < deadline and not seen and proc.poll() is None:
            seen = _connections(listener)
            time.sleep(0.05)
        assert seen > 0, proc.stderr.read() if proc.poll() is not None else "no connection"
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("change, message", [
    (_set("limits", "max_bolsu_u", 3), "[limits]: unknown key 'max_bolsu_u' (did you mean max_bolus_u?)"),
    (lambda s, t: s["pump"].update(transport="serial", port="/nonexistent/ttyUSB0"),
     "[pump] port = '/nonexistent/ttyUSB0': no such device"),
    (lambda s, t: s["loop"].update(journal=str(t / "no-such-dir" / "j.sqlite")), "[loop] journal = "),
    (lambda s, t: s["mqtt"].update(tls_ca_file=str(t / "ca.crt"), port=8883), "[mqtt] tls_ca_file = "),
])
def test_run_refuses_preflight_problems_in_one_line(tmp_path, listener, change, message):
    port = listener.getsockname()[1]
    config = tmp_path / "bad.toml"
    config.write_text(_toml(_run_config(tmp_path, port, _limits_section(change))))
    proc = subprocess.run(_glucotwin() + ["run", "--config", str(config)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"glucotwin: error: {message}") and "Traceback" not in proc.stderr
    assert _connections(listener) == 0


def test_the_shipped_example_names_what_is_missing_on_this_machine():
    example = Path(__file__).resolve().parents[1] / "deploy" / "glucotwin.example.toml"
    proc = subprocess.run(_glucotwin() + ["run", "--config", str(example)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("glucotwin: error: [pump] key_file = '/etc/glucotwin/pump.key': cannot read")


def test_run_help_starts_fast():
    started = time.monotonic()
    proc = subprocess.run(_glucotwin() + ["run", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--config" in proc.stdout
    assert time.monotonic() - started < 1.0
