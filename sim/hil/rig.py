"""The hardware-in-the-loop harness: patient, loop and pump as separate processes.

For each patient, ``run_hil`` starts

- a mosquitto broker on a free loopback port (unless a broker URL is given),
- a serial pseudo-terminal pair (``socat``): one end for the pump, one for the loop,
- the reference virtual pump firmware (``python -m firmware_bridge.pump_device``)
  on its end of the pair, with a fresh per-device HMAC key, in HIL clock mode,
- the loop (``glucotwin run --config``) with a generated TOML config: the
  patient's clinical profile only, MQTT sensor input, serial pump, a journal
  in the output directory, and its clock taken from reading times (lockstep),

and runs the virtual patient (:mod:`sim.hil.patient`) in this process through
the ordinary trial runner, so traces and ``summary.json`` have the trial's
format. Everything the processes print goes to ``<slug>.loop.log`` and
``<slug>.pump.log`` beside the journal ``<slug>.journal.sqlite``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from controller.loop.config.live_config import profile_to_toml
from controller.safety import SafetyLimits
from sim.hil.broker import Mosquitto
from sim.hil.patient import HilBus, RemoteLoopController, subject_slug
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from sim.trial.protocol import TrialProtocol
from sim.trial.run import TrialResult, run_trial

TOPIC_PREFIX = "glucotwin"
PUMP_RESERVOIR_U = 300.0
"""The virtual pump's delivery resolution defaults to the protocol's (0.001 U) so that HIL and the
in-process trial can be compared; ``--pump-increment 0.05`` models a typical patch pump."""


@dataclass
class HilProcesses:
    """The loop and pump processes of one patient, and where their files are."""

    slug: str
    directory: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    loop_command: list[str] = field(default_factory=list)
    pump_command: list[str] = field(default_factory=list)
    pump_log: Path | None = None
    loop_log: Path | None = None
    env: dict[str, str] | None = None
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    """Called after the processes stopped (e.g. a fault relay used instead of socat)."""

    def stop(self) -> None:
        for name in ("loop", "pump", "socat"):
            self.stop_process(name)
        while self.on_stop:
            self.on_stop.pop()()

    def stop_process(self, name: str, timeout_s: float = 10.0) -> int | None:
        """SIGTERM one process, SIGKILL it if it does not exit in time; its exit code."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    @property
    def loop_ready_file(self) -> Path:
        return self.directory / "loop.ready"

    def start_loop(self, wait_s: float = 60.0) -> None:
        """(Re)start the loop process with its config and journal; return when it listens."""
        self.loop_ready_file.unlink(missing_ok=True)
        log = open(self.loop_log, "ab") if self.loop_log is not None else subprocess.DEVNULL
        try:
            self.procs["loop"] = subprocess.Popen(self.loop_command, stdout=log, stderr=subprocess.STDOUT,
                                                  env=self.env, start_new_session=True)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        _wait_for([self.loop_ready_file], self.procs["loop"], wait_s,
                  f"the loop process (see {self.loop_log.name if self.loop_log else 'its log'})")

    def start_pump(self, wait_s: float = 30.0) -> None:
        """(Re)start the pump process with its state file; return when it listens."""
        ready = self.directory / "pump.ready"
        ready.unlink(missing_ok=True)
        with open(self.pump_log, "ab") if self.pump_log is not None else open(os.devnull, "wb") as log:
            self.procs["pump"] = subprocess.Popen(self.pump_command, stdout=log, stderr=subprocess.STDOUT,
                                                  env=self.env, start_new_session=True)
        _wait_for([ready], self.procs["pump"], wait_s,
                  f"the pump process (see {self.pump_log.name if self.pump_log else 'its log'})")

    def kill_pump(self) -> None:
        """SIGKILL the pump process (power pulled: what it did not persist is gone) and reap it."""
        proc = self.procs.get("pump")
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def kill_loop(self) -> None:
        """SIGKILL the loop process (a crash: no cleanup of any kind) and reap it."""
        proc = self.procs.get("loop")
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def parse_broker(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"mqtt://{url}")
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return parsed.hostname, parsed.port or 1883


def _wait_for(paths: list[Path], proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(p.exists() for p in paths):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} not ready within {timeout_s:g} s")


def start_patient_processes(patient: str, out_dir: Path, host: str, port: int, protocol: TrialProtocol,
                            python: str = sys.executable, pump_increment_u: float = 0.001,
                            serial_pair: Callable[[Path], Any] | None = None,
                            pump_args: Sequence[str] = (), nightscout: Any = None) -> HilProcesses:
    """Start socat, the virtual pump and the loop for one patient; return when the loop listens.

    ``serial_pair(run_dir)``, when given, replaces socat: it must create the pty
    symlinks ``run_dir/pump.tty`` and ``run_dir/host.tty`` and return an object
    with ``stop()`` (e.g. :class:`sim.hil.faults.relay.FaultRelay`), called by
    :meth:`HilProcesses.stop`. ``pump_args`` are extra ``pump_device`` options.
    ``nightscout`` (a :class:`sim.hil.nightscout.NightscoutTarget`): the loop uploads there.
    """
    slug = subject_slug(patient)
    out_dir = Path(out_dir).resolve()  # the loop's config names its files by absolute path
    run_dir, journal = _fresh_run_dir(out_dir, slug)
    hp = HilProcesses(slug, run_dir)
    pump_tty, host_tty = run_dir / "pump.tty", run_dir / "host.tty"
    _start_serial_pair(hp, serial_pair, pump_tty, host_tty)

    key_file = run_dir / "pump.key"
    key_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(key_file, 0o600)
    profile = clinical_profile(patient)
    device_id = f"pump-{slug}"[:16]
    hp.pump_command = _pump_command(python, profile, slug, pump_tty, device_id, key_file, run_dir, host, port,
                                    pump_increment_u, pump_args)
    hp.pump_log, hp.env = out_dir / f"{slug}.pump.log", {**os.environ, "PYTHONUNBUFFERED": "1"}
    hp.pump_log.write_bytes(b"")
    with open(hp.pump_log, "ab") as pump_log:
        hp.procs["pump"] = subprocess.Popen(hp.pump_command, stdout=pump_log, stderr=subprocess.STDOUT, env=hp.env,
                                            start_new_session=True)

    config = _write_loop_config(patient, profile, run_dir, journal, host, port, slug, host_tty, device_id,
                                key_file, protocol, nightscout)
    hp.loop_command = [python, "-m", "sim.cli", "run", "--config", str(config), "--ready-file",
                       str(hp.loop_ready_file)]
    hp.loop_log = out_dir / f"{slug}.loop.log"
    hp.loop_log.write_bytes(b"")
    try:
        hp.start_loop(60.0)
        _wait_for([run_dir / "pump.ready"], hp.procs["pump"], 30.0, f"the pump process (see {slug}.pump.log)")
    except RuntimeError:
        hp.stop()
        raise
    return hp


def _fresh_run_dir(out_dir: Path, slug: str) -> tuple[Path, Path]:
    """An empty ``<slug>.hil`` folder and the path of a journal that does not exist yet."""
    run_dir = out_dir / f"{slug}.hil"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    journal = out_dir / f"{slug}.journal.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    return run_dir, journal


def _start_serial_pair(hp: HilProcesses, serial_pair: Callable[[Path], Any] | None, pump_tty: Path,
                       host_tty: Path) -> None:
    """The pty pair between loop and pump: socat, or the given stand-in (a fault relay)."""
    if serial_pair is not None:
        hp.on_stop.append(serial_pair(hp.directory).stop)
        return
    socat = shutil.which("socat")
    if socat is None:
        raise RuntimeError("socat is not installed (Debian: apt-get install socat)")
    hp.procs["socat"] = subprocess.Popen(
        [socat, "-d", "-d", f"pty,raw,echo=0,link={pump_tty}", f"pty,raw,echo=0,link={host_tty}"],
        stdout=subprocess.DEVNULL, stderr=open(hp.directory / "socat.log", "wb"), start_new_session=True)
    _wait_for([pump_tty, host_tty], hp.procs["socat"], 10.0, "socat")


def _pump_command(python: str, profile: Any, slug: str, pump_tty: Path, device_id: str, key_file: Path, run_dir: Path,
                  host: str, port: int, pump_increment_u: float, pump_args: Sequence[str]) -> list[str]:
    """The virtual pump firmware's command line, with its own limits derived from the profile."""
    limits = SafetyLimits.for_profile(profile)
    hil_prefix = f"{TOPIC_PREFIX}/{slug}/hil"
    return [
        python, "-m", "firmware_bridge.pump_device", "--port", str(pump_tty), "--device-id", device_id,
        "--key-file", str(key_file), "--state-file", str(run_dir / "pump-state.json"),
        "--scheduled-basal", repr(profile.basal_u_per_h_at(0)), "--max-rate", repr(limits.max_basal_u_per_h),
        "--max-bolus", repr(limits.max_bolus_u), "--reservoir", repr(PUMP_RESERVOIR_U),
        # the pump's own cumulative limits, independent of the loop: never reached by a loop within its limits
        "--max-per-hour", repr(round(2 * limits.max_bolus_u + limits.max_basal_u_per_h, 3)),
        "--max-per-day", repr(round(3 * profile.total_daily_insulin_u, 3)),
        "--hil-broker", f"mqtt://{host}:{port}", "--hil-prefix", hil_prefix,
        "--ready-file", str(run_dir / "pump.ready"),
        "--bolus-increment", repr(pump_increment_u), "--rate-increment", repr(pump_increment_u), *pump_args]


def _write_loop_config(patient: str, profile: Any, run_dir: Path, journal: Path, host: str, port: int, slug: str,
                       host_tty: Path, device_id: str, key_file: Path, protocol: TrialProtocol,
                       nightscout: Any) -> Path:
    """The loop's TOML config; honest in silico: its prior leaves this patient out, as in ``glucotwin trial``."""
    prior_file = run_dir / "prior.json"
    prior_file.write_text(json.dumps(population_prior(exclude=patient).to_dict()))
    config = run_dir / "loop.toml"
    config.write_text(loop_config_text(profile_to_toml(profile), journal, host, port, slug, host_tty, device_id,
                                       key_file, protocol, prior_file))
    if nightscout is not None:
        from sim.hil.nightscout import nightscout_section

        with open(config, "a") as f:
            f.write(nightscout_section(nightscout, run_dir))
    return config


def loop_config_text(profile_toml: str, journal: Path, host: str, port: int, slug: str, host_tty: Path,
                     device_id: str, key_file: Path, protocol: TrialProtocol, prior_file: Path) -> str:
    sample_min = 5.0 if protocol.sensor == "GuardianRT" else (1.0 if protocol.sensor == "Navigator" else 3.0)
    return (
        f"{profile_toml}\n"
        f"[twin]\nprior = \"{prior_file}\"\n\n"
        "[loop]\n"
        f"cycle_min = {sample_min!r}\n"
        "clock = \"readings\"\n"
        f"arm = \"{protocol.arm}\"\n"
        f"journal = \"{journal}\"\n\n"
        "[mqtt]\n"
        f"host = \"{host}\"\nport = {port}\nsubject = \"{slug}\"\ntopic_prefix = \"{TOPIC_PREFIX}\"\n"
        f"client_id = \"loop-{slug}\"\n\n"
        "[sensor]\ntransport = \"mqtt\"\n\n"
        "[pump]\ntransport = \"serial\"\n"
        f"port = \"{host_tty}\"\ndevice_id = \"{device_id}\"\nkey_file = \"{key_file}\"\n"
    )


def run_hil(patients: list[str], protocol: TrialProtocol, out_dir: Path, broker: str | None = None,
            progress: bool = True, reply_timeout_s: float = 120.0, pump_increment_u: float = 0.001,
            nightscout: Any = None) -> TrialResult:
    """Run the harness for ``patients`` one after another; write the trial outputs to ``out_dir``.

    ``nightscout`` (a :class:`sim.hil.nightscout.NightscoutTarget`): each loop uploads its journal there.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if broker is None:
            mosquitto = stack.enter_context(Mosquitto())
            host, port = mosquitto.host, mosquitto.port
        else:
            host, port = parse_broker(broker)
        running: list[HilProcesses] = []
        buses: list[HilBus] = []

        def close_all() -> None:
            for bus in buses:
                bus.close()
            for hp in running:
                hp.stop()

        stack.callback(close_all)

        def factory(patient: str, arm: str) -> RemoteLoopController:
            for hp in running:  # the previous patient's processes are done
                hp.stop()
            hp = start_patient_processes(patient, out_dir, host, port, protocol, pump_increment_u=pump_increment_u,
                                         nightscout=nightscout)
            running.append(hp)
            bus = HilBus(host, port, TOPIC_PREFIX, hp.slug, client_id=f"patient-{hp.slug}",
                         timeout_s=reply_timeout_s)
            buses.append(bus)
            # the runner already scales (--carb-error) or hides (FCL) simglucose's meal information
            return RemoteLoopController(bus, meal_announcement=protocol.meal_announcement)

        result = run_trial(factory, patients, protocol, out_dir=out_dir, workers=1, progress=progress,
                           controller_label="mpc (HIL: loop and pump processes over MQTT and serial)")
    return result


def hil_summary_extra(out_dir: Path, patients: list[str]) -> dict[str, Any]:
    """Journal record counts per patient (written into summary.json's ``hil`` section)."""
    from controller.loop.journal import Journal

    counts = {}
    for patient in patients:
        path = out_dir / f"{subject_slug(patient)}.journal.sqlite"
        if path.exists():
            with Journal(path, read_only=True) as journal:
                counts[patient] = journal.counts()
    return counts
