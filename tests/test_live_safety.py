"""Issue 15 as a user meets it: `glucotwin run` processes on real mosquitto, a real socat pty
pair and the real pump firmware process.

Two loops on one journal, a damaged journal, a full disk (a file size limit set on the
running loop with prlimit: the same write errors as a full file system, no root needed),
a reading dated a year ahead under the lockstep clock, and a flood of readings.
"""

from __future__ import annotations

import resource
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
from test_live_run import CONFIG, wait_for

pytestmark = pytest.mark.skipif(find_mosquitto() is None or shutil.which("socat") is None,
                                reason=skip_reason("mosquitto", "socat"))


class Rig:
    """A broker, a pty pair, the pump firmware and a sensor publisher; loops started on demand."""

    def __init__(self, tmp: Path, broker: Mosquitto) -> None:
        self.tmp, self.broker = tmp, broker
        pump_tty, self.host_tty = tmp / "pump.tty", tmp / "host.tty"
        self.procs: list[subprocess.Popen] = []
        self.procs.append(subprocess.Popen(["socat", f"pty,raw,echo=0,link={pump_tty}",
                                            f"pty,raw,echo=0,link={self.host_tty}"]))
        self.key = tmp / "pump.key"
        self.key.write_text(secrets.token_hex(32))
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.pump_device", "--port", str(pump_tty), "--device-id", "pump-1",
             "--key-file", str(self.key), "--state-file", str(tmp / "pump.json"), "--scheduled-basal", "0.8",
             "--max-rate", "3.2", "--ready-file", str(tmp / "pump.ready")],
            stdout=open(tmp / "pump.log", "wb"), stderr=subprocess.STDOUT))
        wait_for(lambda: (tmp / "pump.ready").exists(), 30, "the pump")
        self.sensor = MqttCgmPublisher(MqttSettings(host=broker.host, port=broker.port, client_id="sensor-bench",
                                                    subject="bench"))
        self.sensor.start()

    def config(self, journal: Path, extra_loop: str = "", name: str = "loop.toml") -> Path:
        text = CONFIG.format(journal=journal, port=self.broker.port, host_tty=self.host_tty, key=self.key)
        if extra_loop:
            text = text.replace("[loop]\n", "[loop]\n" + extra_loop + "\n")
        path = self.tmp / name
        path.write_text(text)
        return path

    def start(self, config: Path, log: str = "loop.log") -> subprocess.Popen:
        ready = self.tmp / "loop.ready"
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--config", str(config), "--ready-file",
                                 str(ready)], stdout=open(self.tmp / log, "ab"), stderr=subprocess.STDOUT)
        wait_for(lambda: ready.exists() or proc.poll() is not None, 60, "the loop to start")
        assert proc.poll() is None, (self.tmp / log).read_text()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        self.sensor.close()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def rig(tmp_path):
    with Mosquitto() as broker:
        r = Rig(tmp_path, broker)
        try:
            yield r
        finally:
            r.close()


def decisions(path: Path) -> int:
    with Journal(path, read_only=True) as j:
        return j.counts().get("decision", 0)


def snapshots(path: Path) -> int:
    with Journal(path, read_only=True) as j:
        return j.counts().get("snapshot", 0)


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True,
                          timeout=timeout_s)


def test_a_second_loop_on_the_same_journal_refuses_to_start(rig, tmp_path):
    journal = tmp_path / "journal.sqlite"
    config = rig.config(journal)
    first = rig.start(config)
    second = run_cli("run", "--config", str(config))
    assert second.returncode == 2, second.stdout + second.stderr
    line = second.stderr.strip()
    assert "\n" not in line and line.startswith("glucotwin: error: journal ")
    assert str(journal) in line and f"pid {first.pid}" in line
    now = datetime.now(UTC)
    rig.sensor.publish_reading(GlucoseReading(now, 250.0, "test:cgm"))
    wait_for(lambda: decisions(journal) == 1, 30, "the first loop still dosing")
    first.send_signal(signal.SIGKILL)  # the kernel releases the lock: a restart is never blocked
    first.wait(10)
    rig.start(config)


def test_a_damaged_journal_stops_the_start_with_one_line_and_the_recovery_command(rig, tmp_path):
    journal = tmp_path / "journal.sqlite"
    journal.write_bytes(b"\x00garbage" * 2000)
    out = run_cli("run", "--config", str(rig.config(journal)))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert "\n" not in line and str(journal) in line and "glucotwin journal salvage" in line


def test_a_full_disk_degrades_the_running_loop_and_it_recovers(rig, tmp_path):
    journal = tmp_path / "journal.sqlite"
    config = rig.config(journal)
    config.write_text(config.read_text().replace("cycle_min = 5", "cycle_min = 2"))  # readings 2 min apart
    loop = rig.start(config)
    start = datetime.now(UTC) - timedelta(minutes=8)
    for k, g in enumerate((200.0, 206.0, 212.0)):
        rig.sensor.publish_reading(GlucoseReading(start + timedelta(minutes=2 * k), g, "test:cgm"))
    wait_for(lambda: decisions(journal) == 3, 30, "three cycles")
    # the third cycle's last write (its snapshot) must be on disk before the limit, or it degrades
    wait_for(lambda: snapshots(journal) == 3, 30, "three cycles' snapshots")
    limit = resource.prlimit(loop.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(loop.pid, resource.RLIMIT_FSIZE, (4096, limit[1]))  # no file may grow past 4 kB
    rig.sensor.publish_reading(GlucoseReading(start + timedelta(minutes=6), 218.0, "test:cgm"))
    log = tmp_path / "loop.log"
    wait_for(lambda: "DEGRADED" in log.read_text(), 30, "a degraded cycle")
    assert loop.poll() is None  # alive: eac2684 dies with sqlite3.OperationalError
    degraded = [l for l in log.read_text().splitlines() if "DEGRADED" in l]
    assert "bolus 0.00 U" in degraded[0] and "basal  0.80 U/h" in degraded[0]
    resource.prlimit(loop.pid, resource.RLIMIT_FSIZE, limit)  # room again
    time.sleep(0.2)
    rig.sensor.publish_reading(GlucoseReading(datetime.now(UTC), 224.0, "test:cgm"))
    wait_for(lambda: decisions(journal) == 5, 30, "the buffered and the new cycle journaled")
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(20) == 0
    with Journal(journal, read_only=True) as j:
        assert any(e.payload.get("what") == "journal writable again" for e in j.events("fault"))
        assert [e.cycle for e in j.events("decision")] == [1, 2, 3, 4, 5]
    rig.start(config)  # and a restart is clean


def test_a_reading_a_year_ahead_neither_hangs_the_lockstep_loop_nor_blocks_sigterm(rig, tmp_path):
    journal = tmp_path / "journal.sqlite"
    loop = rig.start(rig.config(journal, 'clock = "readings"'))
    now = datetime.now(UTC)
    for k, g in enumerate((150.0, 152.0)):
        rig.sensor.publish_reading(GlucoseReading(now - timedelta(minutes=5 - 5 * k), g, "test:cgm"))
    wait_for(lambda: decisions(journal) == 2, 30, "two cycles")
    rig.sensor.publish_reading(GlucoseReading(now + timedelta(days=365), 155.0, "test:cgm"))
    rig.sensor.publish_reading(GlucoseReading(now + timedelta(minutes=5), 154.0, "test:cgm"))
    wait_for(lambda: decisions(journal) == 3, 30, "the next correct reading still acted on")
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(10) == 0  # eac2684: the loop integrates a year at full CPU and ignores SIGTERM
    with Journal(journal, read_only=True) as j:
        reasons = [e.payload["reason"] for e in j.events("rejection")]
    assert any("future" in r for r in reasons)


def test_a_reading_flood_over_mqtt_gets_one_decision_per_sample_interval(rig, tmp_path):
    journal = tmp_path / "journal.sqlite"
    loop = rig.start(rig.config(journal))
    base = datetime.now(UTC) - timedelta(seconds=30)
    for s in range(300):  # 300 readings stamped one 100 ms apart, as fast as the broker takes them
        rig.sensor.publish_reading(GlucoseReading(base + timedelta(milliseconds=100 * s), 150.0 + s % 5, "flood"))
    with Journal(journal, read_only=True) as j:
        wait_for(lambda: j.counts().get("reading", 0) >= 300, 60, "the flood journaled")
        assert j.counts().get("decision", 0) == 1  # eac2684: one per distinct time stamp
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(20) == 0


def test_a_new_journal_learns_the_pumps_recent_boluses_from_the_pump(rig, tmp_path):
    old = tmp_path / "old.sqlite"
    loop = rig.start(rig.config(old))
    start = datetime.now(UTC) - timedelta(minutes=14)
    for k, g in enumerate((240.0, 262.0, 281.0)):
        rig.sensor.publish_reading(GlucoseReading(start + timedelta(minutes=5 * k), g, "test:cgm"))
    wait_for(lambda: decisions(old) == 3, 30, "three cycles")
    loop.send_signal(signal.SIGTERM)
    assert loop.wait(20) == 0
    with Journal(old, read_only=True) as j:
        given = sum(e.payload["bolus_u"] for e in j.events("delivery"))
    assert given > 0.3
    new = tmp_path / "new.sqlite"
    rig.start(rig.config(new, name="new.toml"), log="new.log")
    log = (tmp_path / "new.log").read_text()
    iob = float(log.split("IOB ")[1].split(" U")[0])
    assert iob > 0.8 * given, log  # eac2684: IOB 0.00 U
    assert "pump history:" in log and "booked" in log and "CONSERVATIVE" not in log
