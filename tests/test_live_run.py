"""`glucotwin run` as deployed: wall clock, MQTT CGM in, serial pump out, SIGKILL and restart.

Real mosquitto, a real socat pty pair, the real pump firmware process and the
real loop process; readings carry the current time, as a live sensor's do.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.loop.journal import Journal
from sensors.mqtt_source import MqttCgmPublisher, MqttSettings
from sensors.reading import GlucoseReading
from sim.hil.broker import Mosquitto, find_mosquitto
from skip_reasons import skip_reason

pytestmark = pytest.mark.skipif(find_mosquitto() is None or shutil.which("socat") is None,
                                reason=skip_reason("mosquitto", "socat"))

CONFIG = """
[profile]
name = "bench"
weight_kg = 70
total_daily_insulin_u = 40
carb_ratio_g_per_u = 12
correction_factor_mg_dl_per_u = 45
age_years = 35
basal = [{{start = "00:00", rate_u_per_h = 0.8}}]

[loop]
cycle_min = 5
journal = "{journal}"

[mqtt]
host = "127.0.0.1"
port = {port}
subject = "bench"
client_id = "loop-bench"

[sensor]
transport = "mqtt"

[pump]
transport = "serial"
port = "{host_tty}"
device_id = "pump-1"
key_file = "{key}"
"""


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_loop(tmp_path: Path, config: Path) -> subprocess.Popen:
    ready = tmp_path / "loop.ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--config", str(config), "--ready-file",
                             str(ready)], stdout=open(tmp_path / "loop.log", "ab"), stderr=subprocess.STDOUT)
    wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the loop to start")
    assert proc.poll() is None, (tmp_path / "loop.log").read_text()
    return proc


def test_live_loop_doses_journals_and_survives_sigkill(tmp_path):
    with Mosquitto() as broker:
        pump_tty, host_tty = tmp_path / "pump.tty", tmp_path / "host.tty"
        socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={pump_tty}", f"pty,raw,echo=0,link={host_tty}"])
        key = tmp_path / "pump.key"
        key.write_text(secrets.token_hex(32))
        pump = subprocess.Popen([sys.executable, "-m", "firmware_bridge.pump_device", "--port", str(pump_tty),
                                 "--device-id", "pump-1", "--key-file", str(key), "--state-file",
                                 str(tmp_path / "pump.json"), "--scheduled-basal", "0.8", "--max-rate", "3.2",
                                 "--ready-file", str(tmp_path / "pump.ready")],
                                stdout=open(tmp_path / "pump.log", "wb"), stderr=subprocess.STDOUT)
        wait_for(lambda: (tmp_path / "pump.ready").exists(), 30, "the pump")
        config = tmp_path / "loop.toml"
        journal_path = tmp_path / "journal.sqlite"
        config.write_text(CONFIG.format(journal=journal_path, port=broker.port, host_tty=host_tty, key=key))
        sensor = MqttCgmPublisher(MqttSettings(host=broker.host, port=broker.port, client_id="sensor-bench",
                                               subject="bench"))
        sensor.start()
        loop = start_loop(tmp_path, config)
        try:
            now = datetime.now(UTC)
            for k, g in enumerate((150.0, 165.0, 182.0)):  # rising, recent (within the stale limit)
                sensor.publish_reading(GlucoseReading(now - timedelta(minutes=12 - 4 * k), g, "test:cgm"))

            def decisions() -> int:
                with Journal(journal_path, read_only=True) as j:
                    return j.counts().get("decision", 0)

            def printed() -> int:
                return sum(" BG " in line for line in (tmp_path / "loop.log").read_text().splitlines())

            wait_for(lambda: decisions() == 3 and printed() == 3, 30, "three cycles, printed")
            loop.send_signal(signal.SIGKILL)
            loop.wait(10)
            loop = start_loop(tmp_path, config)
            log = (tmp_path / "loop.log").read_text()
            assert "3 cycles replayed" in log
            sensor.publish_reading(GlucoseReading(now + timedelta(seconds=1), 190.0, "test:cgm"))
            wait_for(lambda: decisions() == 4, 30, "a cycle after the restart")
            loop.send_signal(signal.SIGTERM)
            assert loop.wait(20) == 0
        finally:
            if loop.poll() is None:
                loop.kill()
            sensor.close()
            pump.send_signal(signal.SIGTERM)
            pump.wait(10)
            socat.terminate()
            socat.wait(10)

    log = (tmp_path / "loop.log").read_text()
    lines = [l for l in log.splitlines() if " BG " in l]
    assert len(lines) == 4 and all("mg/dL" in l and "U/h" in l and "pump ack" in l for l in lines)
    with Journal(journal_path, read_only=True) as j:
        assert j.unanswered_commands() == []
        seqs = [e.seq for e in j.events("command")]
        assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs)
        assert {e.payload["status"] for e in j.events("reply")} == {"ack"}
        assert j.counts()["startup"] == 2
