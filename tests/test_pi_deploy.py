"""Raspberry Pi deployment: the systemd unit, sd_notify from the loop, the light live path."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller.loop.systemd_notify import Notifier
from skip_reasons import skip_reason

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "glucotwin.service"


def unit_directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_file_has_what_the_loop_needs():
    d = unit_directives()
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"] and int(d["WatchdogSec"][0]) > 0
    assert d["User"] == ["glucotwin"] and "dialout" in d["SupplementaryGroups"][0]
    assert d["StateDirectory"] == ["glucotwin"] and d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"] and d["CapabilityBoundingSet"] == [""]
    assert "glucotwin run --config" in d["ExecStart"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason=skip_reason("systemd-analyze"))
def test_unit_file_verifies(tmp_path):
    unit = tmp_path / "glucotwin.service"
    unit.write_text(UNIT.read_text().replace("/opt/glucotwin/venv/bin/glucotwin", sys.executable))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    bad = [l for l in out.stderr.splitlines() if "glucotwin.service" in l and "Unknown" in l]
    assert not bad, out.stderr


def test_notifier_speaks_the_sd_notify_protocol(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        n = Notifier(path, min_interval_s=60)
        assert n.ready("restored") and server.recv(256) == b"READY=1\nSTATUS=restored"
        assert n.watchdog() and server.recv(256) == b"WATCHDOG=1"
        assert not n.watchdog()  # rate-limited
        assert n.stopping() and server.recv(256) == b"STOPPING=1"
        n.close()
    assert not Notifier("").enabled and Notifier("").notify("READY=1") is False


def test_live_path_imports_no_simulator_pandas_or_matplotlib():
    code = ("import sys; from sim.cli import main\n"
            "import controller.loop.live, sim.cli.run, controller.loop.runtime, sensors.mqtt_source, sensors.serial.source\n"
            "import firmware_bridge.pump_link, firmware_bridge.serial_transport\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('simglucose', 'pandas', 'matplotlib', 'gym'))\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


@pytest.mark.skipif(shutil.which("socat") is None or shutil.which("mosquitto") is None and
                    not os.path.exists("/usr/sbin/mosquitto"), reason=skip_reason("mosquitto", "socat"))
def test_the_running_loop_sends_ready_and_watchdog(tmp_path, monkeypatch):
    from sim.hil.broker import Mosquitto
    from sim.hil.rig import start_patient_processes
    from sim.trial.protocol import TrialProtocol

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server, Mosquitto() as broker:
        server.bind(path)
        server.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        hp = start_patient_processes("adult#003", tmp_path, broker.host, broker.port, TrialProtocol(days=0.1))
        try:
            first = server.recv(512).decode()
            assert first.startswith("READY=1")
            assert server.recv(512).decode().startswith("WATCHDOG=1")
        finally:
            hp.stop()
