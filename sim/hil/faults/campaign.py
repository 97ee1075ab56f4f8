"""Fault campaign: one HIL patient run while everything that can break, breaks.

``glucotwin faults [--patient adult#003] [--days D] [--seed N] [--out DIR] [--json FILE]``

runs the hardware-in-the-loop harness (:mod:`sim.hil.rig`: a real mosquitto, the
real loop process ``glucotwin run``, the reference pump firmware process) with
the serial cable replaced by :class:`sim.hil.faults.relay.FaultRelay`, and injects on
a seeded random schedule (:func:`sim.hil.faults.plan.make_plan`, in simulated samples):

- CGM: dropouts of 15 to 60 min (the patient publishes nothing and does not
  wait for the loop, only for the pump), single-sample spikes (+100..200 mg/dL),
  compression lows (a run of 40..45 mg/dL readings while true BG is normal),
  duplicated entries, out-of-order entries (an older entry published again),
  duplicated carb treatments, and malformed messages (random bytes, bad UTF-8,
  wrong JSON, oversize and deeply nested payloads) from a separate MQTT client;
- MQTT: the broker restarted mid-run (same port, persistence on);
- serial: command frames dropped, reply frames dropped (lost ACKs), a byte
  corrupted, frames duplicated, and the cable unplugged and plugged back in;
- the loop process killed with SIGKILL: idle, just after a reading was
  published, just after a command reached the pump, or just after the pump's
  reply left it (the last two mid-cycle), then restarted with the same config
  and journal after 0 to 4 samples (its restore resolves in-flight commands).

While the loop is down the pump keeps its last temp basal until it expires,
then its programmed basal, and the patient keeps living: it waits for
``loop/processed`` only briefly when the loop may be down, and always for the
pump's report (re-asking if the report is lost). At the end the loop is
restarted once more (the "final restore") with the relay clean, then stopped.
Then a rogue host with the pump's key sends 29 boluses of its max bolus, and
the pump is SIGKILLed and restarted before one more (:mod:`sim.hil.faults.pump_caps`):
the reference firmware must hold its own hourly limit, across the restart.

The pump writes an audit trail (``pump_device --audit-log``: one JSON line per
dose command it answered). :func:`sim.hil.faults.analysis.analyse` compares it with the loop's journal
and the patient's own log and counts:

- duplicate doses: a seq executed twice, two executed commands of the same kind
  for one decision, two decisions that dosed for the same reading, or one carb
  announcement used twice (must be 0);
- journal records lost: pump-executed seqs missing from the journal, commands
  without a reply or resolution after the final restore, cycles with commands
  but no delivery, readings published (and not in flight when the loop was
  killed) or confirmed by ``loop/processed`` but not journaled, and executed
  amounts that disagree with the journaled command (must be 0);
- safety invariant violations (DESIGN.md 1-4, numbers from the loop's
  ``SafetyLimits``): delivered basal above the effective max basal, bolus above
  max bolus, insulin added while net IOB would exceed the IOB limit (with the
  meal allowance of ``controller/safety.py``), insulin decided while the CGM
  used was at or below the low limit, insulin above the scheduled basal below
  the correction threshold, anything but the programmed basal on stale or
  implausible CGM, a pump executing above its limits or after a command's
  expiry, and, while CGM is stale, a pump running anything but its programmed
  basal once the last temp basal expired, and the rogue host getting more than
  the pump's hourly limit or any bolus after the pump's restart (must be 0);
- loop restarts and whether the loop resumed (cycles after the last restart);
- the patient's TIR / <70 / <54 on true BG.

It prints a table, writes the figures as JSON, and exits 1 when duplicates,
lost records or violations are not all zero, or the loop never resumed after
its last restart, or it exited by itself (a crash) during the campaign.

This module holds the campaign runner (:func:`run_fault_campaign`); the parts are
:mod:`sim.hil.faults.plan` (the schedule), :mod:`sim.hil.faults.faulty_patient`
(the patient that injects the faults), :mod:`sim.hil.faults.analysis` (the
checks, over :mod:`sim.hil.faults.evidence`) and :mod:`sim.hil.faults.report`
(the table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from sim.hil.faults.analysis import analyse
from sim.hil.faults.evidence import read_jsonl
from sim.hil.faults.faulty_patient import CampaignPatient, CampaignTiming
from sim.hil.faults.plan import FAULT_TYPES, FaultPlan, make_plan
from sim.hil.faults.pump_caps import hammer_pump
from sim.hil.patient import HilBus, subject_slug

SAMPLE_MIN = {"Dexcom": 3.0, "GuardianRT": 5.0, "Navigator": 1.0}
"""Minutes between CGM samples, by sensor (the campaign's samples count these)."""


@dataclass
class CampaignResult:
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        r = self.report
        return (r["duplicates"]["total"] == 0 and r["lost"]["total"] == 0 and r["violations"]["total"] == 0
                and r["restarts"]["resumed"] is not False and r.get("loop", {}).get("crashes", 0) == 0)


@dataclass
class _RigRun:
    """What a campaign's run on the rig leaves for the analysis and the report."""

    ctrl: CampaignPatient
    processed_log: list[dict[str, Any]]   # the loop/processed messages the patient received
    run: Any                              # the simulator's run (its trace)
    loop_dir: Path                        # the loop's run directory (its loop.toml)
    campaign_audit: list[dict[str, Any]]  # the pump's audit records before the rogue host's
    pump_caps: dict[str, Any]
    relay_counts: dict[str, int]
    final_startup_id: int | None


def run_fault_campaign(patient: str = "adult#003", days: float = 1.0, seed: int = 0,
                       out_dir: Path = Path("runs/faults"), *, arm: str = "hcl", sensor: str = "Dexcom",
                       start_hour: float = 0.0, per_day: dict[str, float] | None = None,
                       plan: FaultPlan | None = None, timing: CampaignTiming | None = None,
                       log: Callable[[str], None] | None = None) -> CampaignResult:
    """Run one fault campaign (see the module docstring); the outputs go to ``out_dir``.

    ``start_hour``: the simulation starts this many hours after the benchmark's
    midnight start (short campaigns use it to include a meal); ``plan``: a fault
    schedule to use instead of :func:`sim.hil.faults.plan.make_plan` (targeted scenarios in tests).
    """
    from sim.trial.protocol import BENCHMARK_START, TrialProtocol
    from sim.trial.trace import write_trace_csv

    say = log or (lambda text: None)
    timing = timing or CampaignTiming()
    protocol = TrialProtocol(arm=arm, days=days, sensor=sensor, start=BENCHMARK_START + timedelta(hours=start_hour))
    samples = int(round(days * 24 * 60 / SAMPLE_MIN[sensor]))
    plan = plan or make_plan(samples, days, seed, per_day)
    slug = subject_slug(patient)
    audit_path = _clear_out_dir(out_dir, slug)
    tic = time.monotonic()
    rig = _run_on_the_rig(patient, out_dir, slug, audit_path, protocol, plan, timing, seed, say)
    wall_s = time.monotonic() - tic

    ctrl = rig.ctrl
    patient_log = {"published": ctrl.published, "treatments": ctrl.treatments, "reports": ctrl.reports,
                   "processed": rig.processed_log}
    analysis = analyse(out_dir / f"{slug}.journal.sqlite", audit_path, rig.loop_dir / "loop.toml", patient_log,
                       rig.final_startup_id, audit_limit=len(rig.campaign_audit))
    write_trace_csv(rig.run.trace, out_dir / f"{patient}.csv")
    report = {
        "format": "glucotwin.fault-campaign/1",
        "patient": patient, "days": days, "seed": seed, "arm": arm, "sensor": sensor, "samples": samples,
        "start": protocol.start.isoformat(),
        "wall_s": round(wall_s, 1),
        **_figures(rig, analysis, plan),
        "files": {"journal": str(out_dir / f"{slug}.journal.sqlite"), "audit": str(audit_path),
                  "audit_records_of_the_loop": len(rig.campaign_audit),
                  "loop_log": str(out_dir / f"{slug}.loop.log"), "pump_log": str(out_dir / f"{slug}.pump.log"),
                  "trace": str(out_dir / f"{patient}.csv")},
    }
    _add_operator_faults_and_pump_caps(report, rig)
    result = CampaignResult(report)
    report["ok"] = result.ok
    return result


def _clear_out_dir(out_dir: Path, slug: str) -> Path:
    """``out_dir`` made, a previous campaign's audit trail and lost journals removed; returns the audit path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    audit_path = out_dir / f"{slug}.pump-audit.jsonl"
    audit_path.unlink(missing_ok=True)
    for old in out_dir.glob(f"{slug}.journal.sqlite.lost-*"):  # a previous campaign's lost journals
        old.unlink()
    return audit_path


def _run_on_the_rig(patient: str, out_dir: Path, slug: str, audit_path: Path, protocol: Any, plan: FaultPlan,
                    timing: CampaignTiming, seed: int, say: Callable[[str], None]) -> _RigRun:
    """The patient simulated on the HIL rig behind the fault relay, the final restore, then the rogue host."""
    from sensors.mqtt_source import MqttCgmPublisher, MqttSettings
    from sim.hil.broker import Mosquitto
    from sim.hil.faults.relay import FaultRelay
    from sim.hil.rig import TOPIC_PREFIX, start_patient_processes
    from sim.trial.runner import simulate_patient

    relays: list[Any] = []

    def serial_pair(run_dir: Path) -> Any:
        relay = FaultRelay(run_dir, seed=seed).start()
        relays.append(relay)
        return relay

    journal_path = out_dir / f"{slug}.journal.sqlite"
    with Mosquitto() as broker:
        hp = start_patient_processes(patient, out_dir, broker.host, broker.port, protocol, serial_pair=serial_pair,
                                     pump_args=["--audit-log", str(audit_path)])
        bus = injector = None
        try:
            relay = relays[0]
            bus = HilBus(broker.host, broker.port, TOPIC_PREFIX, slug, client_id=f"patient-{slug}")
            injector = MqttCgmPublisher(MqttSettings(host=broker.host, port=broker.port,
                                                     client_id=f"fault-injector-{slug}", topic_prefix=TOPIC_PREFIX,
                                                     subject=slug, session_expiry_s=0,
                                                     reconnect_min_delay_s=0.2, reconnect_max_delay_s=2.0))
            injector.start()
            ctrl = CampaignPatient(bus, hp, relay, broker, injector, plan, protocol.meal_announcement, timing, say,
                                   journal_path=journal_path)
            run = simulate_patient(patient, lambda name, arm_: ctrl, protocol)
            ctrl.finish()
            time.sleep(1.0)  # let the loop journal what was published last (duplicates, malformed)
            final_startup_id = _final_restore(hp, relay, journal_path, timing.restart_wait_s)
            campaign_audit = read_jsonl(audit_path)
            say("rogue host: hammering the pump with boluses; it must hold its own limits")
            pump_caps = hammer_pump(hp, campaign_audit)
            relay_counts = dict(relay.counts)
        finally:
            if bus is not None:
                bus.close()
            if injector is not None:
                injector.close()
            hp.stop()
    return _RigRun(ctrl, bus.processed_log, run, hp.directory, campaign_audit, pump_caps, relay_counts,
                   final_startup_id)


def _final_restore(hp: Any, relay: Any, journal_path: Path, restart_wait_s: float) -> int | None:
    """The final restore: a clean cable, the loop restarted once more with the same journal, then stopped;
    returns the id of the startup it journaled (None if it journaled none)."""
    from controller.loop.journal import Journal
    from sim.hil.faults.relay import FaultRates

    relay.disarm()
    relay.set_rates(FaultRates())
    relay.wait_plugged(10.0)
    hp.stop_process("loop")
    with Journal(journal_path, read_only=True) as journal:
        before = journal.last("startup")
    hp.start_loop(restart_wait_s)
    hp.stop_process("loop")
    with Journal(journal_path, read_only=True) as journal:
        final = journal.last("startup")
    if final is not None and (before is None or final.id != before.id):
        return final.id
    return None


def _figures(rig: _RigRun, analysis: dict[str, Any], plan: FaultPlan) -> dict[str, Any]:
    """The report's body: faults injected and scheduled, the relay's counts, the analysis, the loop's and
    the harness's figures, true BG, the patient's events and the plan."""
    from sim.trial.metrics import glucose_metrics

    ctrl = rig.ctrl
    bg = glucose_metrics(rig.run.trace.bg_mg_dl)
    return {
        "faults_injected": {kind: ctrl.injected.get(kind, 0) for kind in FAULT_TYPES},
        "faults_scheduled": plan.counts(),
        "relay": rig.relay_counts,
        **analysis,
        "loop": {"kills": ctrl.kills, "crashes": ctrl.crashes, "restarts_by_campaign": ctrl.restarts,
                 "stalls": ctrl.stalls,
                 "clock_republished": ctrl.clock_republished},
        "harness": {"bolus_received_by_patient_u": round(ctrl.bolus_applied_u, 3),
                    "bolus_executed_by_pump_u": analysis["doses"]["bolus_u_executed"],
                    "consistent": abs(ctrl.bolus_applied_u - analysis["doses"]["bolus_u_executed"]) < 1e-3},
        "true_bg": {"tir_70_180": round(bg["in_range_70_180"], 2), "below_70": round(bg["below_70"], 2),
                    "below_54": round(bg["below_54"], 2), "mean": round(bg["mean"], 1)},
        "events": ctrl.events,
        "plan": plan.to_dict(),
    }


def _add_operator_faults_and_pump_caps(report: dict[str, Any], rig: _RigRun) -> None:
    """The restarts the campaign caused, the operator faults (a second loop not refused is a duplicate-dose
    fault), and the rogue host's outcome (its violations are the campaign's)."""
    ctrl = rig.ctrl
    report["restarts"]["loop_restarts_expected"] = ctrl.restarts
    not_refused = [a for a in ctrl.second_loops if not a["refused"]]
    if not_refused:  # a second loop that started would dose on the same journal: a duplicate-dose fault
        report["duplicates"]["second_loop_not_refused"] = len(not_refused)
        report["duplicates"]["total"] += len(not_refused)
        report["examples"]["second_loop_not_refused"] = not_refused[:5]
    report["operator_faults"] = {"second_loops": ctrl.second_loops,
                                 "journals_lost": ctrl.injected.get("journal_loss", 0),
                                 "disk_full_episodes": ctrl.injected.get("disk_full", 0)}
    report["pump_caps"] = rig.pump_caps
    for key, n in rig.pump_caps["violations"].items():
        report["violations"][key] = n
        report["violations"]["total"] += n
