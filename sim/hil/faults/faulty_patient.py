"""The campaign's patient: the HIL patient device that is also the fault injector.

:class:`CampaignPatient` is a simglucose ``Controller`` (over the HIL patient's
MQTT client, :class:`sim.hil.patient.HilBus`). Each sample it consults the
:class:`sim.hil.faults.plan.FaultPlan`, injects that sample's faults (operator
mistakes, a broker restart, serial faults through the relay, SIGKILLs of the
loop, CGM dropouts / spikes / compression lows / repeats, malformed messages),
publishes the reading, waits for the loop (briefly when it may be down) and
always for the pump's report, and logs what it published and what the pump
gave: the patient's log the analysis (:mod:`sim.hil.faults.analysis`) reads.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from sim.hil.faults.malformed import malformed_payload
from sim.hil.faults.operator import DiskFull, lose_journal, second_loop_attempt
from sim.hil.faults.plan import Fault, FaultPlan
from sim.hil.patient import HilBus, RemoteLoopController

RELAY_KIND = {"serial_drop_command": "drop_command", "serial_drop_reply": "drop_reply",
              "serial_corrupt_command": "corrupt_command", "serial_corrupt_reply": "corrupt_reply",
              "serial_duplicate_command": "duplicate_command", "serial_duplicate_reply": "duplicate_reply"}
"""The plan's serial faults and the relay's names for them."""


@dataclass(frozen=True)
class CampaignTiming:
    """Wall-clock waits of the patient (seconds)."""

    loop_wait_s: float = 30.0       # for loop/processed while the loop is up
    kill_wait_s: float = 1.5        # for loop/processed when a kill is armed for this sample
    report_wait_s: float = 2.0      # for the pump report before asking again
    max_report_wait_s: float = 90.0
    restart_wait_s: float = 120.0   # for a restarted loop to be ready


class CampaignPatient(RemoteLoopController):
    """A simglucose ``Controller`` that is the HIL patient device and the fault injector."""

    def __init__(self, bus: HilBus, hp: Any, relay: Any, broker: Any, injector: Any, plan: FaultPlan,
                 meal_announcement: bool, timing: CampaignTiming, log: Callable[[str], None] | None = None,
                 journal_path: Path | None = None) -> None:
        super().__init__(bus, meal_announcement=meal_announcement)  # type: ignore[arg-type]
        self.journal_path = journal_path
        self.disk = DiskFull()
        self.disk_clear_at: int | None = None
        self.second_loops: list[dict[str, Any]] = []
        self.hp, self.relay, self.broker, self.injector, self.plan = hp, relay, broker, injector, plan
        self.timing = timing
        self.say = log or (lambda text: None)
        self.k = 0
        self.loop_down = False
        self.restart_at: int | None = None
        self.injected: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.published: list[dict[str, Any]] = []   # CGM entries, in publication order
        self.treatments: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.stalls = 0
        self.crashes = 0
        self.clock_republished = 0
        self.restarts = 0
        self.kills = 0
        self.dup_treatment_pending = 0
        self.bolus_applied_u = 0.0  # what the virtual patient received (checked against the pump's audit)
        self._hook_lock = threading.Lock()
        self._hook_direction: str | None = None
        self._hook_fired = threading.Event()
        self._loop_pid = hp.procs["loop"].pid
        relay.on_frame = self._on_frame

    # -- helpers -----------------------------------------------------------------
    def _event(self, kind: str, **info: Any) -> None:
        self.events.append({"sample": self.k, "kind": kind, **info})

    def _on_frame(self, direction: str, frame: bytes) -> None:  # relay thread
        with self._hook_lock:
            if self._hook_direction != direction:
                return
            self._hook_direction = None
        try:
            os.kill(self._loop_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._hook_fired.set()

    def _mark_in_flight(self) -> None:
        for item in self.published + self.treatments:
            if not item["confirmed"]:
                item["in_flight_at_kill"] = True

    def _confirm(self, t_ms: int) -> None:
        index = next((i for i, p in enumerate(self.published) if p["t_ms"] == t_ms and p["kind"] != "republished"),
                     None)
        if index is None:
            return
        for p in self.published[: index + 1]:
            p["confirmed"] = True
        for tr in self.treatments:
            if tr["index"] <= index:
                tr["confirmed"] = True

    def _killed(self, mode: str, down: int) -> None:
        self.hp.kill_loop()
        self._mark_in_flight()
        self.loop_down = True
        self.restart_at = self.k + 1 + down
        self.kills += 1
        self.injected["loop_sigkill"] += 1
        self._event("loop_sigkill", mode=mode, down_samples=down)
        self.say(f"sample {self.k}: loop SIGKILL ({mode}), down for {down} sample(s)")

    def _check_alive(self) -> None:
        """A loop that exited although nobody killed it crashed: count it and restart it next sample."""
        if self.loop_down:
            return
        code = self.hp.procs["loop"].poll()
        if code is not None:
            self.crashes += 1
            self._event("loop_crashed", returncode=code)
            self.say(f"sample {self.k}: the loop exited by itself with {code} (see the loop log)")
            self._mark_in_flight()
            self.loop_down, self.restart_at = True, self.k + 1

    def _restart_loop(self) -> None:
        tic = time.monotonic()
        self.hp.start_loop(self.timing.restart_wait_s)
        self._loop_pid = self.hp.procs["loop"].pid
        self.loop_down, self.restart_at = False, None
        self.restarts += 1
        self._event("loop_restart", wall_s=round(time.monotonic() - tic, 2))

    def _operator_faults(self, kinds: dict[str, Fault]) -> None:
        """A second loop on the journal, the journal lost, the disk filling (sim.hil.faults.operator)."""
        if self.loop_down:
            for kind in ("second_loop", "journal_loss", "disk_full"):
                if kind in kinds:
                    self._event(f"{kind}_skipped", why="loop down")
            return
        if "second_loop" in kinds:
            outcome = second_loop_attempt(self.hp)
            self.second_loops.append({"sample": self.k, **outcome})
            self.injected["second_loop"] += 1
            self._event("second_loop", **outcome)
            self.say(f"sample {self.k}: a second loop on the journal: "
                     + ("refused" if outcome["refused"] else f"NOT refused ({outcome['stderr']})"))
        if "journal_loss" in kinds and self.journal_path is not None:
            self.hp.kill_loop()
            self._mark_in_flight()
            aside = lose_journal(self.journal_path, self.k)
            self.loop_down, self.restart_at = True, self.k + 1 + kinds["journal_loss"].params["down_samples"]
            self.injected["journal_loss"] += 1
            self._event("journal_loss", kept_for_analysis=aside.name)
            self.say(f"sample {self.k}: loop killed and its journal lost (kept aside as {aside.name})")
        elif "disk_full" in kinds:
            self.disk.fill(self._loop_pid)
            self.disk_clear_at = self.k + kinds["disk_full"].params["samples"]
            self.injected["disk_full"] += 1
            self._event("disk_full", samples=kinds["disk_full"].params["samples"])
            self.say(f"sample {self.k}: the loop's disk is full for {kinds['disk_full'].params['samples']} sample(s)")

    def _restart_broker(self, down_s: float) -> None:
        tic = time.monotonic()
        self.broker.restart(down_s)
        if not self.bus.wait_ready(30.0):
            raise RuntimeError("the patient did not reconnect within 30 s of the broker restart")
        self.injected["broker_restart"] += 1
        self._event("broker_restart", down_s=down_s, wall_s=round(time.monotonic() - tic, 2))
        self.say(f"sample {self.k}: broker restarted (down {down_s:g} s)")

    def _pump_report(self, t_ms: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.timing.max_report_wait_s
        while True:
            self.bus.publish_clock(t_ms)
            report = self.bus.await_message(self.bus._reports, "t_ms", t_ms, self.timing.report_wait_s)
            if report is not None:
                return report
            self.clock_republished += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"no pump report for t={t_ms} within {self.timing.max_report_wait_s:g} s")

    def _entry(self, time_utc: datetime, value: float) -> dict[str, Any]:
        from sensors.nightscout.entry import reading_to_entry
        from sensors.reading import GlucoseReading

        entry = reading_to_entry(GlucoseReading(time_utc, value, "sim:hil"))
        entry["sgv"] = float(value)
        return entry

    def _publish_reading(self, t_ms: int, entry: dict[str, Any], value: float, kind: str) -> None:
        self.bus.publish_entry(entry)
        self.published.append({"t_ms": t_ms, "value": value, "kind": kind, "sample": self.k, "confirmed": False,
                               "in_flight_at_kill": False, "loop_down": self.loop_down, "entry": entry})

    # -- one sample ----------------------------------------------------------------
    def policy(self, observation: Any, reward: float, done: bool, **info: Any) -> Any:
        from controller.policy import Dose
        from sim.trial.adapter import dose_to_action, rate_per_min_to_amount
        from sim.hil.patient import epoch_ms

        sample_min = float(info.get("sample_time", 1.0))
        now = info["time"].replace(tzinfo=UTC)
        t_ms = epoch_ms(now)
        if not self._clock_set:
            self._pump_report(t_ms)
            self._clock_set = True
        kinds = {f.kind: f for f in self.plan.at(self.k)}
        self._before_reading(kinds)
        self._announce_carbs(now, t_ms, rate_per_min_to_amount(float(info.get("meal", 0.0) or 0.0), sample_min))
        kill, kill_mode = self._kill_mode(kinds)
        published, label = self._cgm(float(observation.CGM), now, t_ms, kinds, kill_mode, sample_min)
        self._malformed(kinds)
        if kill_mode == "after_reading":
            time.sleep(kill.params["delay_s"])  # type: ignore[union-attr]
            self._killed("after_reading", kill.params["down_samples"])  # type: ignore[union-attr]
        processed = self._await_loop(t_ms, published, kill, kill_mode)
        basal, bolus_u = self._record_pump_report(t_ms, kinds, published, label, processed)
        self.k += 1
        return dose_to_action(Dose(basal, bolus_u), sample_min)

    def _before_reading(self, kinds: dict[str, Fault]) -> None:
        """The loop's and the disk's state brought up to date, then the faults that strike before the
        sample's reading: operator mistakes, the broker restart, the serial cable's."""
        self._check_alive()
        if self.disk.active and (self.loop_down or self.k >= (self.disk_clear_at or 0)):
            self.disk.clear()
            self._event("disk_cleared")
        if self.loop_down and self.restart_at is not None and self.k >= self.restart_at:
            self._restart_loop()
        self._operator_faults(kinds)
        if "broker_restart" in kinds:
            self._restart_broker(kinds["broker_restart"].params["down_s"])
        for kind, relay_kind in RELAY_KIND.items():
            if kind in kinds:
                self.relay.arm(relay_kind)
                self.injected[kind] += 1
                self._event(kind)
        if "serial_unplug" in kinds:
            pause = kinds["serial_unplug"].params["pause_s"]
            self.relay.unplug(pause)
            self.injected["serial_unplug"] += 1
            self._event("serial_unplug", pause_s=pause)
        if "treatment_duplicate" in kinds:
            self.dup_treatment_pending += 1

    def _announce_carbs(self, now: datetime, t_ms: int, carbs_g: float) -> None:
        """Carbohydrates (HCL): announced whatever the CGM does, twice when a duplicated treatment is armed."""
        if not (self.meal_announcement and carbs_g > 0):
            return
        copies = 1
        if self.dup_treatment_pending:
            self.dup_treatment_pending -= 1
            copies = 2
            self.injected["treatment_duplicate"] += 1
            self._event("treatment_duplicate", carbs_g=carbs_g)
        for _ in range(copies):
            self.bus.publish_carbs(now, carbs_g)
        self.treatments.append({"t_ms": t_ms, "carbs_g": carbs_g, "copies": copies, "index": len(self.published),
                                "confirmed": False, "in_flight_at_kill": False})

    def _kill_mode(self, kinds: dict[str, Fault]) -> tuple[Fault | None, str | None]:
        """The sample's scheduled SIGKILL and its mode (None when the loop is down or its disk full);
        an idle kill happens here."""
        kill = kinds.get("loop_sigkill")
        kill_mode = None if kill is None or self.loop_down or self.disk.active else kill.params["mode"]
        if kill is not None and (self.loop_down or self.disk.active):
            self._event("loop_sigkill_skipped", why="loop already down" if self.loop_down else "disk full")
        if kill_mode == "idle":
            self._killed("idle", kill.params["down_samples"])  # type: ignore[union-attr]
        return kill, kill_mode

    def _cgm(self, cgm: float, now: datetime, t_ms: int, kinds: dict[str, Fault], kill_mode: str | None,
             sample_min: float) -> tuple[bool, str]:
        """The sample's CGM entry as the faults make it: (whether one was published, its label)."""
        k = self.k
        rng_fault = self.plan.range_fault(k)
        if rng_fault is not None and rng_fault.kind == "cgm_dropout":
            if k == rng_fault.sample:
                self.injected["cgm_dropout"] += 1
                self._event("cgm_dropout", minutes=rng_fault.length * sample_min)
            return False, "dropout"
        label, value = self._cgm_value(cgm, rng_fault, kinds, sample_min)
        if "far_future_reading" in kinds and not self.loop_down:  # a wrong clock, just before the sample's own
            future = now.replace(year=now.year + 1)
            self.bus.publish_entry(self._entry(future, value))
            self.injected["far_future_reading"] += 1
            self._event("far_future_reading", time=future.isoformat())
        entry = self._entry(now, value)
        self._publish_reading(t_ms, entry, value, label)
        if kill_mode in ("after_command", "after_reply"):
            self._hook_fired.clear()
            with self._hook_lock:
                self._hook_direction = "to_pump" if kill_mode == "after_command" else "to_host"
        self._repeat_entries(kinds, t_ms, entry, value)
        return True, label

    def _cgm_value(self, cgm: float, rng_fault: Fault | None, kinds: dict[str, Fault],
                   sample_min: float) -> tuple[str, float]:
        """(label, value) of the reading: a compression low, a spike, or the simulator's CGM."""
        k = self.k
        if rng_fault is not None and rng_fault.kind == "cgm_compression_low":
            value = random.Random(rng_fault.params["seed"] + k).uniform(40.0, 45.0)
            if k == rng_fault.sample:
                self.injected["cgm_compression_low"] += 1
                self._event("cgm_compression_low", minutes=rng_fault.length * sample_min)
            return "compression_low", value
        if "cgm_spike" in kinds:
            value = cgm + kinds["cgm_spike"].params["delta_mg_dl"]
            self.injected["cgm_spike"] += 1
            self._event("cgm_spike", value=value, true_cgm=cgm)
            return "spike", value
        return "normal", cgm

    def _repeat_entries(self, kinds: dict[str, Fault], t_ms: int, entry: dict[str, Any], value: float) -> None:
        """The sample's entry published again (duplicate), an older one published again (out of order)."""
        if "cgm_duplicate" in kinds:
            self._publish_reading(t_ms, entry, value, "republished")
            self.injected["cgm_duplicate"] += 1
            self._event("cgm_duplicate")
        if "cgm_out_of_order" in kinds:
            older = [p for p in self.published if p["kind"] != "republished" and p["t_ms"] < t_ms]
            if older:
                old = older[-min(len(older), kinds["cgm_out_of_order"].params["back"])]
                self._publish_reading(old["t_ms"], old["entry"], old["value"], "republished")
                self.injected["cgm_out_of_order"] += 1
                self._event("cgm_out_of_order", t_ms=old["t_ms"])

    def _malformed(self, kinds: dict[str, Fault]) -> None:
        """Malformed messages on the CGM topic, from the injector's own MQTT client."""
        if "mqtt_malformed" not in kinds:
            return
        prng = random.Random(kinds["mqtt_malformed"].params["seed"])
        for _ in range(kinds["mqtt_malformed"].params["messages"]):
            self.injector.publish_payload("cgm", malformed_payload(prng), timeout_s=30.0)
            self.injected["mqtt_malformed"] += 1
        self._event("mqtt_malformed", messages=kinds["mqtt_malformed"].params["messages"])

    def _await_loop(self, t_ms: int, published: bool, kill: Fault | None,
                    kill_mode: str | None) -> dict[str, Any] | None:
        """The loop's ``loop/processed`` for the reading (None if none came); a mid-cycle kill happens here."""
        armed = kill_mode in ("after_command", "after_reply")
        if not published or self.loop_down:
            if armed:  # no reading this sample: kill anyway
                self._killed(f"{kill_mode}, no reading: idle", kill.params["down_samples"])  # type: ignore[union-attr]
            return None
        wait_s = self.timing.kill_wait_s if armed else self.timing.loop_wait_s
        processed = self.bus.await_message(self.bus._processed, "reading_t_ms", t_ms, wait_s)
        if processed is not None:
            self._confirm(t_ms)
        if armed:
            with self._hook_lock:
                fired = self._hook_direction is None and self._hook_fired.is_set()
                self._hook_direction = None
            mode = kill_mode if fired else f"{kill_mode}, not reached: after the cycle"
            self._killed(mode, kill.params["down_samples"])  # type: ignore[arg-type, union-attr]
        elif processed is None:
            self.stalls += 1
            self._event("loop_stall", waited_s=wait_s)
            self._check_alive()
        return processed

    def _record_pump_report(self, t_ms: int, kinds: dict[str, Fault], published: bool, label: str,
                            processed: dict[str, Any] | None) -> tuple[float, float]:
        """The pump's report for the sample, logged; returns (basal U/h, bolus U) the patient receives."""
        report = self._pump_report(t_ms)
        bolus_u = float(report["bolus_u"])
        self.bolus_applied_u += bolus_u
        basal = float(report["basal_u_per_h"])
        self.reports.append({"sample": self.k, "t_ms": t_ms, "basal_u_per_h": basal, "bolus_u": bolus_u,
                             "last_seq": report.get("last_seq"), "cgm_published": published, "label": label,
                             "loop_up": not self.loop_down})
        cycle = (processed or {}).get("result") or {}
        dose = cycle.get("dose") or {}
        self.last = {"basal_u_per_h": basal, "bolus_u": bolus_u, "fault": label if label != "normal" else "",
                     "faults": ",".join(sorted(kinds)), "loop_up": int(not self.loop_down),
                     "reason": dose.get("reason", (processed or {}).get("rejected") or "")}
        return basal, bolus_u

    def finish(self) -> None:
        """After the last sample: room on the disk again, a killed loop brought back so it journals
        the backlog."""
        self.disk.clear()
        if self.loop_down:
            self._restart_loop()

