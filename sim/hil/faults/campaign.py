"""Fault campaign: one HIL patient run while everything that can break, breaks.

``glucotwin faults [--patient adult#003] [--days D] [--seed N] [--out DIR] [--json FILE]``

runs the hardware-in-the-loop harness (:mod:`sim.hil.rig`: a real mosquitto, the
real loop process ``glucotwin run``, the reference pump firmware process) with
the serial cable replaced by :class:`sim.hil.faults.relay.FaultRelay`, and injects on
a seeded random schedule (:func:`make_plan`, in simulated samples):

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
dose command it answered). :func:`analyse` compares it with the loop's journal
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
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from sim.hil.faults.operator import OPERATOR_FAULTS, DiskFull, lose_journal, merged_journal, second_loop_attempt
from sim.hil.faults.pump_caps import format_pump_caps, hammer_pump
from sim.hil.patient import HilBus, RemoteLoopController

FAULT_TYPES = ("cgm_dropout", "cgm_spike", "cgm_compression_low", "cgm_duplicate", "cgm_out_of_order",
               "treatment_duplicate", "mqtt_malformed", "broker_restart", "serial_drop_command",
               "serial_drop_reply", "serial_corrupt_command", "serial_corrupt_reply", "serial_duplicate_command",
               "serial_duplicate_reply", "serial_unplug", "loop_sigkill") + OPERATOR_FAULTS
"""Fault types of a campaign; each campaign injects every one at least once."""

PER_DAY: dict[str, float] = {
    "cgm_dropout": 3, "cgm_spike": 6, "cgm_compression_low": 2, "cgm_duplicate": 8, "cgm_out_of_order": 8,
    "treatment_duplicate": 2, "mqtt_malformed": 8, "broker_restart": 2, "serial_drop_command": 8,
    "serial_drop_reply": 8, "serial_corrupt_command": 4, "serial_corrupt_reply": 4, "serial_duplicate_command": 4,
    "serial_duplicate_reply": 4, "serial_unplug": 3, "loop_sigkill": 5,
    "second_loop": 2, "journal_loss": 1, "disk_full": 2, "far_future_reading": 2,
}
"""Scheduled faults per simulated day (at least one of each in any campaign)."""

RANGE_FAULTS = {"cgm_dropout": (5, 20), "cgm_compression_low": (4, 8)}  # samples (3 min each with Dexcom)
KILL_MODES = ("after_command", "after_reply", "after_reading", "idle")
RELAY_KIND = {"serial_drop_command": "drop_command", "serial_drop_reply": "drop_reply",
              "serial_corrupt_command": "corrupt_command", "serial_corrupt_reply": "corrupt_reply",
              "serial_duplicate_command": "duplicate_command", "serial_duplicate_reply": "duplicate_reply"}
SAMPLE_MIN = {"Dexcom": 3.0, "GuardianRT": 5.0, "Navigator": 1.0}
EPS = 1e-6
IOB_TOLERANCE_U = 0.001
"""The IOB check's tolerance: one delivery increment of the HIL pump. The loop books what the
pump reports (rates rounded down to 0.001 U/h, from its history after a journal loss), the
check replays the journal's deliveries: the two accounts differ below one increment."""


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: ``kind`` at sample ``sample`` (for ``length`` samples), with its parameters."""

    kind: str
    sample: int
    length: int = 1
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultPlan:
    samples: int
    faults: list[Fault]
    seed: int

    def __post_init__(self) -> None:
        self._by_sample: dict[int, list[Fault]] = defaultdict(list)
        self._range: dict[int, Fault] = {}
        for f in self.faults:
            self._by_sample[f.sample].append(f)
            if f.kind in RANGE_FAULTS:
                for k in range(f.sample, f.sample + f.length):
                    self._range[k] = f

    def at(self, k: int) -> list[Fault]:
        return self._by_sample.get(k, [])

    def range_fault(self, k: int) -> Fault | None:
        """The dropout or compression low covering sample ``k``."""
        return self._range.get(k)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.faults))

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed, "faults": [asdict(f) for f in self.faults]}


def make_plan(samples: int, days: float, seed: int, per_day: dict[str, float] | None = None,
              warmup: int = 10, tail: int = 4) -> FaultPlan:
    """A seeded schedule: ``per_day`` x ``days`` of each fault type (at least one each), placed at random.

    Dropouts and compression lows do not overlap each other; point faults fall
    outside them, and kills, broker restarts and unplugs at least 3 samples apart.
    """
    rate = {**PER_DAY, **(per_day or {})}
    rng = random.Random(seed)
    first, last = warmup, samples - tail  # faults start in [first, last)
    if last - first < 30:
        raise ValueError(f"a campaign needs at least {warmup + tail + 30} samples, got {samples}")
    faults: list[Fault] = []
    taken: set[int] = set()  # samples under a range fault (and a margin)
    for kind, (low, high) in RANGE_FAULTS.items():
        for _ in range(max(1, round(rate[kind] * days))):
            for _attempt in range(200):
                length = rng.randint(low, high)
                start = rng.randrange(first, max(first + 1, last - length))
                span = set(range(start - 3, start + length + 3))
                if not span & taken:
                    taken |= span
                    faults.append(Fault(kind, start, length))
                    break
    heavy: set[int] = set()
    kill_no = 0
    # the first duplicated treatment is armed early: it duplicates the first meal announcement
    faults.append(Fault("treatment_duplicate", first))
    for kind in FAULT_TYPES:
        if kind in RANGE_FAULTS:
            continue
        for _ in range(max(1, round(rate[kind] * days)) - (kind == "treatment_duplicate")):
            for _attempt in range(500):
                k = rng.randrange(first, last)
                if k in taken:
                    continue
                if kind in ("loop_sigkill", "broker_restart", "serial_unplug", "journal_loss", "disk_full"):
                    if any(abs(k - h) < 4 for h in heavy):
                        continue
                    heavy.add(k)
                break
            else:
                continue
            params: dict[str, Any] = {}
            if kind == "loop_sigkill":
                mode = KILL_MODES[kill_no] if kill_no < len(KILL_MODES) else rng.choice(KILL_MODES)
                kill_no += 1
                params = {"mode": mode, "down_samples": rng.randint(0, 4), "delay_s": round(rng.uniform(0, 0.08), 3)}
            elif kind == "broker_restart":
                params = {"down_s": round(rng.uniform(0.2, 1.5), 2)}
            elif kind == "serial_unplug":
                params = {"pause_s": round(rng.uniform(0.3, 2.0), 2)}
            elif kind == "cgm_spike":
                params = {"delta_mg_dl": round(rng.uniform(100, 200), 1)}
            elif kind == "cgm_out_of_order":
                params = {"back": rng.randint(2, 6)}
            elif kind == "mqtt_malformed":
                params = {"messages": rng.randint(1, 3), "seed": rng.randrange(2**31)}
            elif kind == "journal_loss":
                params = {"down_samples": rng.randint(0, 2)}
            elif kind == "disk_full":
                params = {"samples": rng.randint(1, 3)}
            faults.append(Fault(kind, k, 1, params))
    for f in faults:
        if f.kind == "cgm_compression_low":
            f.params["seed"] = rng.randrange(2**31)
    faults.sort(key=lambda f: (f.sample, f.kind))
    return FaultPlan(samples, faults, seed)


def malformed_payload(rng: random.Random) -> bytes:
    """A payload the loop's MQTT source must reject (never a reading with a usable time)."""
    choice = rng.randrange(12)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    if choice == 1:
        return b"\xff\xfe" + bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 40)))
    if choice == 2:
        return json.dumps({"type": "sgv", "sgv": 120, "date": 1735689600000}).encode()[: rng.randint(1, 40)]
    if choice == 3:
        return rng.choice([b"42", b"\"sgv\"", b"null", b"true", b"[]", b"{}", b"[1, 2, 3]"])
    if choice == 4:
        return json.dumps({"type": "sgv", "sgv": rng.randint(40, 400)}).encode()  # no time
    if choice == 5:
        return json.dumps({"type": "sgv", "sgv": "high", "date": "yesterday"}).encode()
    if choice == 6:
        return b'{"type": "sgv", "sgv": NaN, "date": 1735689600000}'
    if choice == 7:
        return b"[" * 5000 + b"]" * 5000
    if choice == 8:
        return b'{"sgv": "' + b"9" * (70 * 1024) + b'"}'
    if choice == 9:
        return json.dumps([{"type": "mbg"}, {"sgv": None}, 17]).encode()
    if choice == 10:
        return json.dumps({"type": "sgv", "sgv": 120, "dateString": "not a time"}).encode()
    return "{\"sgv\": \"\u00e9\u6f22\", \"date\": {}}".encode()


# --------------------------------------------------------------------------- the patient's MQTT client


# The campaign's patient uses the HIL patient's client, HilBus (robust to broker restarts).


# --------------------------------------------------------------------------- the faulty patient


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
        k = self.k
        faults = self.plan.at(k)
        kinds = {f.kind: f for f in faults}
        self._check_alive()
        if self.disk.active and (self.loop_down or k >= (self.disk_clear_at or 0)):
            self.disk.clear()
            self._event("disk_cleared")
        if self.loop_down and self.restart_at is not None and k >= self.restart_at:
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

        # carbohydrates (HCL): announced whatever the CGM does
        carbs_g = rate_per_min_to_amount(float(info.get("meal", 0.0) or 0.0), sample_min)
        if self.meal_announcement and carbs_g > 0:
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

        kill = kinds.get("loop_sigkill")
        kill_mode = None if kill is None or self.loop_down or self.disk.active else kill.params["mode"]
        if kill is not None and (self.loop_down or self.disk.active):
            self._event("loop_sigkill_skipped", why="loop already down" if self.loop_down else "disk full")
        rng_fault = self.plan.range_fault(k)
        if kill_mode == "idle":
            self._killed("idle", kill.params["down_samples"])  # type: ignore[union-attr]

        cgm = float(observation.CGM)
        published = False
        label = "normal"
        if rng_fault is not None and rng_fault.kind == "cgm_dropout":
            label = "dropout"
            if k == rng_fault.sample:
                self.injected["cgm_dropout"] += 1
                self._event("cgm_dropout", minutes=rng_fault.length * sample_min)
        else:
            value = cgm
            if rng_fault is not None and rng_fault.kind == "cgm_compression_low":
                label = "compression_low"
                value = random.Random(rng_fault.params["seed"] + k).uniform(40.0, 45.0)
                if k == rng_fault.sample:
                    self.injected["cgm_compression_low"] += 1
                    self._event("cgm_compression_low", minutes=rng_fault.length * sample_min)
            elif "cgm_spike" in kinds:
                label = "spike"
                value = cgm + kinds["cgm_spike"].params["delta_mg_dl"]
                self.injected["cgm_spike"] += 1
                self._event("cgm_spike", value=value, true_cgm=cgm)
            if "far_future_reading" in kinds and not self.loop_down:  # a wrong clock, just before the sample's own
                future = now.replace(year=now.year + 1)
                self.bus.publish_entry(self._entry(future, value))
                self.injected["far_future_reading"] += 1
                self._event("far_future_reading", time=future.isoformat())
            entry = self._entry(now, value)
            self._publish_reading(t_ms, entry, value, label)
            published = True
            if kill_mode in ("after_command", "after_reply"):
                self._hook_fired.clear()
                with self._hook_lock:
                    self._hook_direction = "to_pump" if kill_mode == "after_command" else "to_host"
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
        if "mqtt_malformed" in kinds:
            prng = random.Random(kinds["mqtt_malformed"].params["seed"])
            for _ in range(kinds["mqtt_malformed"].params["messages"]):
                self.injector.publish_payload("cgm", malformed_payload(prng), timeout_s=30.0)
                self.injected["mqtt_malformed"] += 1
            self._event("mqtt_malformed", messages=kinds["mqtt_malformed"].params["messages"])
        if kill_mode == "after_reading":
            time.sleep(kill.params["delay_s"])  # type: ignore[union-attr]
            self._killed("after_reading", kill.params["down_samples"])  # type: ignore[union-attr]

        processed = None
        if published and not self.loop_down:
            armed = kill_mode in ("after_command", "after_reply")
            wait_s = self.timing.kill_wait_s if armed else self.timing.loop_wait_s
            processed = self.bus.await_message(self.bus._processed, "reading_t_ms", t_ms, wait_s)
            if processed is not None:
                self._confirm(t_ms)
            if armed:
                with self._hook_lock:
                    fired = self._hook_direction is None and self._hook_fired.is_set()
                    self._hook_direction = None
                mode = kill_mode if fired else f"{kill_mode}, not reached: after the cycle"
                self._killed(mode, kill.params["down_samples"])  # type: ignore[union-attr]
            elif processed is None:
                self.stalls += 1
                self._event("loop_stall", waited_s=wait_s)
                self._check_alive()
        elif kill_mode in ("after_command", "after_reply"):  # no reading this sample: kill anyway
            self._killed(f"{kill_mode}, no reading: idle", kill.params["down_samples"])  # type: ignore[union-attr]

        report = self._pump_report(t_ms)
        bolus_u = float(report["bolus_u"])
        self.bolus_applied_u += bolus_u
        basal = float(report["basal_u_per_h"])
        self.reports.append({"sample": k, "t_ms": t_ms, "basal_u_per_h": basal, "bolus_u": bolus_u,
                             "last_seq": report.get("last_seq"), "cgm_published": published, "label": label,
                             "loop_up": not self.loop_down})
        cycle = (processed or {}).get("result") or {}
        dose = cycle.get("dose") or {}
        self.last = {"basal_u_per_h": basal, "bolus_u": bolus_u, "fault": label if label != "normal" else "",
                     "faults": ",".join(sorted(kinds)), "loop_up": int(not self.loop_down),
                     "reason": dose.get("reason", (processed or {}).get("rejected") or "")}
        self.k += 1
        return dose_to_action(Dose(basal, bolus_u), sample_min)

    def finish(self) -> None:
        """After the last sample: room on the disk again, a killed loop brought back so it journals
        the backlog."""
        self.disk.clear()
        if self.loop_down:
            self._restart_loop()


# --------------------------------------------------------------------------- the analysis


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _minute(t: datetime) -> int:
    return t.hour * 60 + t.minute


def analyse(journal_path: Path, audit_path: Path, config_path: Path, patient_log: dict[str, Any],
            final_startup_id: int | None = None, audit_limit: int | None = None) -> dict[str, Any]:
    """Compare the journal, the pump's audit trail and the patient's log (see the module docstring).

    ``audit_limit``: only the first so many audit records are the loop's (the rogue host's follow).
    """
    from controller.loop.config.live_config import load_config
    from controller.policy import ControlInput
    from controller.safety import SafetySupervisor

    config = load_config(config_path)
    profile, limits = config.profile, config.limits
    audit = _read_jsonl(audit_path)[:audit_limit]
    events, unanswered, segments = merged_journal(journal_path)
    if final_startup_id is not None:  # an id of the final journal, which the merge shifted
        final_startup_id += segments[-1]["first_id"] - 1
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        by_kind[e.kind].append(e)
    commands = {e.seq: e for e in by_kind["command"]}
    replies: dict[int, list[Any]] = defaultdict(list)
    for e in by_kind["reply"]:
        replies[e.seq].append(e)
    deliveries: dict[int, Any] = {}
    for e in by_kind["delivery"]:
        deliveries.setdefault(e.cycle, e)
    decisions = by_kind["decision"]
    commands_of_cycle: dict[int, list[Any]] = defaultdict(list)
    for e in by_kind["command"]:
        commands_of_cycle[e.cycle].append(e)

    duplicates: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    violations: Counter[str] = Counter()
    examples: dict[str, list[Any]] = defaultdict(list)

    def note(counter: Counter[str], key: str, example: Any) -> None:
        counter[key] += 1
        if len(examples[key]) < 5:
            examples[key].append(example)

    # --- the pump's executions against the journal ------------------------------------------------
    executed = [r for r in audit if r.get("outcome") == "executed"]
    seq_count = Counter(r["seq"] for r in executed)
    for seq, n in seq_count.items():
        if n > 1:
            note(duplicates, "seq_executed_twice", seq)
    per_decision: Counter[tuple[int, str]] = Counter()
    booked_from_pump = set().union(*(seg["booked_from_pump"] for seg in segments))
    recovered_from_pump = 0
    for r in executed:
        cmd = commands.get(r["seq"])
        if cmd is None:
            if r["seq"] in booked_from_pump:  # the command's record was lost, the pump's record booked it
                recovered_from_pump += 1
            else:
                note(lost, "executed_command_not_journaled", r)
            continue
        kind = cmd.payload["kind"]
        if r["type"] != kind:
            note(lost, "executed_type_differs_from_journal", {"seq": r["seq"], "pump": r["type"], "journal": kind})
        if kind == "bolus" and r["bolus_u"] > cmd.payload["bolus_u"] + EPS:
            note(violations, "pump_bolus_above_command", r)
        if kind == "temp_basal" and r["rate_u_per_h"] > cmd.payload["rate_u_per_h"] + EPS and r["duration_min"]:
            note(violations, "pump_rate_above_command", r)
        expires = datetime.fromisoformat(cmd.payload["expires_at"])
        if r.get("pump_time_ms") is not None and r["pump_time_ms"] > expires.timestamp() * 1000 + 0.5:
            note(violations, "pump_executed_after_expiry", r)
        per_decision[(cmd.cycle, kind)] += 1
        t = datetime.fromisoformat(cmd.payload["issued_at"])
        scheduled = profile.basal_u_per_h_at(_minute(t))
        if kind == "temp_basal" and r["rate_u_per_h"] > min(limits.max_basal_u_per_h,
                                                            limits.max_basal_multiple * scheduled) + EPS:
            note(violations, "pump_basal_above_max", r)
        if kind == "bolus" and r["bolus_u"] > limits.max_bolus_u + EPS:
            note(violations, "pump_bolus_above_max", r)
    for (cycle, kind), n in per_decision.items():
        if n > 1:
            note(duplicates, f"{kind}_executed_twice_for_one_decision", cycle)

    dosing_cycles = {commands[r["seq"]].cycle for r in executed if r["seq"] in commands
                     and (r["type"] == "temp_basal" or r["bolus_u"] > 0)}
    decisions_per_reading: dict[str, list[int]] = defaultdict(list)
    for d in decisions:
        if d.payload["input"].get("cgm_mg_dl") is not None:
            decisions_per_reading[d.payload["input"]["time"]].append(d.cycle)
    readings_decided_twice = 0
    for t_iso, cycles in decisions_per_reading.items():
        if len(cycles) > 1:
            readings_decided_twice += 1
            if sum(1 for c in cycles if c in dosing_cycles) > 1:
                note(duplicates, "two_decisions_dosed_for_one_reading", t_iso)
    used_announcements = Counter((e.payload.get("time"), e.payload.get("carbs_g")) for e in by_kind["announcement"]
                                 if "ignored" not in e.payload)
    for key, n in used_announcements.items():
        if n > 1:
            note(duplicates, "carb_announcement_used_twice", key)

    # --- records lost -------------------------------------------------------------------------------
    # a journal lost with commands in flight: the pump's history, booked by the next journal, settles them
    executed_seqs = {r["seq"] for r in executed}
    lost_ids = max((seg["first_id"] for seg in segments[1:]), default=None)

    def settled_by_pump(seq: int | None, event_id: int) -> bool:
        return lost_ids is not None and event_id < lost_ids and (seq in booked_from_pump or seq not in executed_seqs)

    for e in unanswered:
        if not settled_by_pump(e.seq, e.id):
            note(lost, "command_without_reply_after_final_restore", e.seq)
    for cycle, cmds in commands_of_cycle.items():
        if cycle is not None and cycle not in deliveries and not all(settled_by_pump(c.seq, c.id) for c in cmds):
            note(lost, "cycle_with_commands_without_delivery", cycle)
    window_ms = limits.iob_action_duration_min * 60_000
    for seg in segments[1:]:  # after each loss: every delivery of the insulin-action window booked
        start_ms = datetime.fromisoformat(seg["startup_time"]).timestamp() * 1000 if seg["startup_time"] else None
        for r in executed:
            if start_ms is None or r.get("pump_time_ms") is None or not (start_ms - window_ms <= r["pump_time_ms"]
                                                                        <= start_ms):
                continue
            if (r["type"] == "temp_basal" or r["bolus_u"] > 0) and r["seq"] not in seg["booked_from_pump"] \
                    and r["seq"] not in seg["commands"]:
                note(lost, "pump_delivery_not_booked_after_journal_loss", r["seq"])
    journaled_times = set()
    for e in by_kind["reading"]:
        try:
            journaled_times.add(int(round(datetime.fromisoformat(e.payload["time"]).timestamp() * 1000)))
        except (KeyError, ValueError, TypeError):
            continue
    in_flight_lost = 0
    for p in patient_log.get("published", []):
        if p["kind"] == "republished" or p["t_ms"] in journaled_times:
            continue
        if p.get("in_flight_at_kill"):
            in_flight_lost += 1
            continue
        note(lost, "published_reading_not_journaled", p["t_ms"])
    for msg in patient_log.get("processed", []):
        if msg.get("reading_t_ms") is not None and msg["reading_t_ms"] not in journaled_times:
            note(lost, "processed_reading_not_journaled", msg["reading_t_ms"])
    announcements_journaled = {int(round(datetime.fromisoformat(e.payload["time"]).timestamp() * 1000))
                               for e in by_kind["announcement"] + by_kind["rejection"]
                               if isinstance(e.payload.get("time"), str)}
    for e in by_kind["rejection"]:
        item = e.payload.get("item") or {}
        if isinstance(item, dict) and "carbs_g" in item and isinstance(item.get("time"), str):
            announcements_journaled.add(int(round(datetime.fromisoformat(item["time"]).timestamp() * 1000)))
    treatments_lost_in_flight = 0
    for tr in patient_log.get("treatments", []):
        if tr["t_ms"] not in announcements_journaled:
            if tr.get("in_flight_at_kill"):
                treatments_lost_in_flight += 1
            else:
                note(lost, "published_treatment_not_journaled", tr["t_ms"])

    # --- safety invariants from the journal ---------------------------------------------------------
    account = SafetySupervisor(profile, limits)
    stale_checked = low_checked = below_checked = 0
    iob_max_ratio = 0.0
    for d in sorted(decisions, key=lambda e: e.cycle):
        inp = ControlInput.from_dict(d.payload["input"])
        dose = d.payload["dose"]
        diag = dose.get("diagnostics") or {}
        safety_rules = str(diag.get("safety", ""))
        t = inp.time
        scheduled = profile.basal_u_per_h_at(_minute(t))
        if inp.announced_carbs_g > 0:
            account.announce_carbs(t, inp.announced_carbs_g)
        delivery = deliveries.get(d.cycle)
        fallback = "cgm_fallback" in safety_rules or inp.cgm_mg_dl is None
        if fallback:
            stale_checked += 1
            if abs(dose["basal_u_per_h"] - scheduled) > 0.001 + EPS or dose["bolus_u"] > 0:
                note(violations, "not_programmed_basal_on_stale_or_implausible_cgm", d.cycle)
        elif inp.cgm_mg_dl is not None and inp.cgm_mg_dl <= limits.low_mg_dl:
            low_checked += 1
            if dose["basal_u_per_h"] > 0 or dose["bolus_u"] > 0:
                note(violations, "insulin_while_cgm_low", d.cycle)
        elif inp.cgm_mg_dl is not None and inp.cgm_mg_dl < limits.correction_threshold_mg_dl:
            below_checked += 1
            if dose["basal_u_per_h"] > scheduled + EPS or dose["bolus_u"] > 0:
                note(violations, "above_scheduled_below_correction_threshold", d.cycle)
        if delivery is None:
            continue
        basal = float(delivery.payload["basal_u_per_h"])
        bolus = float(delivery.payload["bolus_u"])
        minutes = float(delivery.payload.get("minutes", inp.cycle_min))
        max_basal = min(limits.max_basal_u_per_h, limits.max_basal_multiple * scheduled)
        if basal > max_basal + EPS:
            note(violations, "delivered_basal_above_max", d.cycle)
        if bolus > limits.max_bolus_u + EPS:
            note(violations, "bolus_above_max_per_cycle", d.cycle)
        iob = account.iob_u(t)
        meal = limits.meal_insulin_fraction_max * account.carbs_on_board_g(t) / profile.carb_ratio_g_per_u
        correction = limits.max_iob_u
        if limits.correction_iob_to_target and inp.cgm_mg_dl is not None:
            needed = max(inp.cgm_mg_dl - profile.target_mg_dl, 0.0) / profile.correction_factor_mg_dl_per_u
            correction = min(correction, needed)
        limit = max(correction, meal)
        added = bolus + max(basal - scheduled, 0.0) * minutes / 60.0
        if added > EPS:
            if limit > 0:
                iob_max_ratio = max(iob_max_ratio, (max(iob, 0.0) + added) / limit)
            if max(iob, 0.0) + added > limit + IOB_TOLERANCE_U:
                note(violations, "net_iob_above_limit", {"cycle": d.cycle, "iob_u": round(iob, 4),
                                                         "added_u": round(added, 4), "limit_u": round(limit, 4)})
        account.delivered(t, basal, minutes, bolus)

    # --- the pump while CGM is stale ----------------------------------------------------------------
    accepted_times = sorted(datetime.fromisoformat(d.payload["input"]["time"]).timestamp() * 1000
                            for d in decisions if d.payload["input"].get("cgm_mg_dl") is not None)
    temp_windows = sorted((r["pump_time_ms"], r["pump_time_ms"] + r["duration_min"] * 60_000)
                          for r in executed if r["type"] == "temp_basal" and r.get("pump_time_ms") is not None)
    pump_scheduled = math.floor(profile.basal_u_per_h_at(0) * 1000 + 1e-6) / 1000.0
    stale_samples = stale_on_temp = 0
    import bisect

    for rep in patient_log.get("reports", []):
        t_ms = rep["t_ms"]
        i = bisect.bisect_right(accepted_times, t_ms)
        last_reading = accepted_times[i - 1] if i else None
        if last_reading is None or (t_ms - last_reading) / 60_000 <= limits.stale_after_min:
            continue
        stale_samples += 1
        j = bisect.bisect_right(temp_windows, (t_ms, float("inf")))
        temp_active = j > 0 and temp_windows[j - 1][1] > t_ms
        if temp_active:
            stale_on_temp += 1
        elif abs(rep["basal_u_per_h"] - pump_scheduled) > 0.001 + EPS:
            note(violations, "pump_not_on_programmed_basal_while_cgm_stale", t_ms)

    # --- restarts and resumption --------------------------------------------------------------------
    startups = [e.id for e in by_kind["startup"]]
    if final_startup_id is not None:
        run_startups = [i for i in startups if i < final_startup_id]
    else:
        run_startups = startups
    last_restart = run_startups[-1] if len(run_startups) > 1 else None
    end = final_startup_id or float("inf")
    cycles_after_last_restart = (sum(1 for d in decisions if last_restart < d.id < end)
                                 if last_restart is not None else None)
    replies_by_status: Counter[str] = Counter()
    nak_reasons: Counter[str] = Counter()
    resolved_by_status = 0
    for seq, rs in replies.items():
        r = rs[-1].payload
        replies_by_status[r.get("status", "?")] += 1
        reason = str(r.get("reason", ""))
        if r.get("status") == "nak":
            nak_reasons[reason.split(":")[0]] += 1
            if reason.startswith("replayed"):  # a first send refused: the loop reused a seq the pump had seen
                note(lost, "command_refused_as_replayed", seq)
        if r.get("resolved_by") == "status" or r.get("status") == "not_executed" or "status ring" in reason:
            resolved_by_status += 1
    rejection_reasons = Counter(str(e.payload.get("reason", "")).split(":")[0] for e in by_kind["rejection"])

    booked_u = sum(float(e.payload["basal_u_per_h"]) * float(e.payload.get("minutes", 0)) / 60.0
                   + float(e.payload["bolus_u"]) for e in deliveries.values())
    # insulin above the programmed basal (what insulin on board counts): booked by the loop vs given by the pump
    booked_net_u = 0.0
    for d in decisions:
        e = deliveries.get(d.cycle)
        if e is not None:
            t = datetime.fromisoformat(d.payload["input"]["time"])
            booked_net_u += ((float(e.payload["basal_u_per_h"]) - profile.basal_u_per_h_at(_minute(t)))
                             * float(e.payload.get("minutes", 0)) / 60.0 + float(e.payload["bolus_u"]))
    reports = patient_log.get("reports", [])
    given_net_u = 0.0
    for a, b in zip(reports, reports[1:]):
        minutes = (b["t_ms"] - a["t_ms"]) / 60_000
        given_net_u += (a["basal_u_per_h"] - pump_scheduled) * minutes / 60.0 + a["bolus_u"]
    doses = {
        "commands_executed": len(executed),
        "temp_basals_executed": sum(1 for r in executed if r["type"] == "temp_basal"),
        "boluses_executed": sum(1 for r in executed if r["type"] == "bolus" and r["bolus_u"] > 0),
        "bolus_u_executed": round(sum(r["bolus_u"] for r in executed if r["type"] == "bolus"), 3),
        "refused_consumed": sum(1 for r in audit if r.get("outcome") == "refused"),
        "nak_not_consumed": dict(Counter(r.get("reason", "") for r in audit if r.get("outcome") == "nak")),
        "exact_retries_answered_from_cache": sum(1 for r in audit if r.get("outcome") == "exact_retry"),
    }
    return {
        "duplicates": {"total": sum(duplicates.values()), **dict(duplicates)},
        "lost": {"total": sum(lost.values()), **dict(lost)},
        "violations": {"total": sum(violations.values()), **dict(violations)},
        "examples": dict(examples),
        "doses": doses,
        "checks": {
            "decisions": len(decisions), "decisions_with_delivery": sum(1 for d in decisions if d.cycle in deliveries),
            "stale_or_implausible_decisions_checked": stale_checked, "low_cgm_decisions_checked": low_checked,
            "below_correction_decisions_checked": below_checked, "max_iob_use_of_limit": round(iob_max_ratio, 4),
            "pump_samples_with_stale_cgm": stale_samples, "of_which_last_temp_basal_still_running": stale_on_temp,
            "readings_decided_twice_without_second_dose": readings_decided_twice,
            "readings_lost_in_flight_at_sigkill": in_flight_lost,
            "treatments_lost_in_flight_at_sigkill": treatments_lost_in_flight,
            "executed_commands_known_from_the_pump_history_only": recovered_from_pump,
            "journals_lost": len(segments) - 1,
        },
        "journal": {
            "counts": dict(Counter(e.kind for e in events)),
            "replies_by_status": dict(replies_by_status),
            "nak_reasons": dict(nak_reasons),
            "replies_resolved_by_status_query": resolved_by_status,
            "rejection_reasons": dict(rejection_reasons),
            "insulin_booked_u": round(booked_u, 3),
        },
        "insulin_accounting": {
            "net_above_programmed_booked_by_loop_u": round(booked_net_u, 3),
            "net_above_programmed_given_by_pump_u": round(given_net_u, 3),
            "note": "the loop books each cycle's temp basal for one cycle; while it is down or has no usable "
                    "reading the pump keeps the temp basal up to its 30 min duration (not booked), and a temp "
                    "basal refused or not executed is booked as the programmed basal whatever the pump runs",
        },
        "restarts": {
            "loop_startups": len(run_startups),
            "loop_restarts": max(0, len(run_startups) - 1),
            "cycles_after_last_restart": cycles_after_last_restart,
            "resumed": None if cycles_after_last_restart is None else cycles_after_last_restart > 0,
        },
    }


# --------------------------------------------------------------------------- the campaign


@dataclass
class CampaignResult:
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        r = self.report
        return (r["duplicates"]["total"] == 0 and r["lost"]["total"] == 0 and r["violations"]["total"] == 0
                and r["restarts"]["resumed"] is not False and r.get("loop", {}).get("crashes", 0) == 0)


def run_fault_campaign(patient: str = "adult#003", days: float = 1.0, seed: int = 0,
                       out_dir: Path = Path("runs/faults"), *, arm: str = "hcl", sensor: str = "Dexcom",
                       start_hour: float = 0.0, per_day: dict[str, float] | None = None,
                       plan: FaultPlan | None = None, timing: CampaignTiming | None = None,
                       log: Callable[[str], None] | None = None) -> CampaignResult:
    """Run one fault campaign (see the module docstring); the outputs go to ``out_dir``.

    ``start_hour``: the simulation starts this many hours after the benchmark's
    midnight start (short campaigns use it to include a meal); ``plan``: a fault
    schedule to use instead of :func:`make_plan` (targeted scenarios in tests).
    """
    from sensors.mqtt_source import MqttCgmPublisher, MqttSettings
    from sim.hil.broker import Mosquitto
    from sim.hil.faults.relay import FaultRates, FaultRelay
    from sim.hil.rig import TOPIC_PREFIX, start_patient_processes
    from sim.hil.patient import subject_slug
    from sim.trial.metrics import glucose_metrics
    from sim.trial.protocol import TrialProtocol
    from sim.trial.runner import simulate_patient
    from sim.trial.trace import write_trace_csv

    say = log or (lambda text: None)
    timing = timing or CampaignTiming()
    from datetime import timedelta

    from sim.trial.protocol import BENCHMARK_START

    protocol = TrialProtocol(arm=arm, days=days, sensor=sensor, start=BENCHMARK_START + timedelta(hours=start_hour))
    samples = int(round(days * 24 * 60 / SAMPLE_MIN[sensor]))
    plan = plan or make_plan(samples, days, seed, per_day)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = subject_slug(patient)
    audit_path = out_dir / f"{slug}.pump-audit.jsonl"
    audit_path.unlink(missing_ok=True)
    for old in out_dir.glob(f"{slug}.journal.sqlite.lost-*"):  # a previous campaign's lost journals
        old.unlink()
    relays: list[Any] = []

    def serial_pair(run_dir: Path) -> Any:
        relay = FaultRelay(run_dir, seed=seed).start()
        relays.append(relay)
        return relay

    tic = time.monotonic()
    final_startup_id = None
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
                                   journal_path=out_dir / f"{slug}.journal.sqlite")
            run = simulate_patient(patient, lambda name, arm_: ctrl, protocol)
            ctrl.finish()
            time.sleep(1.0)  # let the loop journal what was published last (duplicates, malformed)
            # the final restore: a clean cable, the loop restarted once more with the same journal
            relay.disarm()
            relay.set_rates(FaultRates())
            relay.wait_plugged(10.0)
            hp.stop_process("loop")
            from controller.loop.journal import Journal

            with Journal(out_dir / f"{slug}.journal.sqlite", read_only=True) as journal:
                before = journal.last("startup")
            hp.start_loop(timing.restart_wait_s)
            hp.stop_process("loop")
            with Journal(out_dir / f"{slug}.journal.sqlite", read_only=True) as journal:
                final = journal.last("startup")
            if final is not None and (before is None or final.id != before.id):
                final_startup_id = final.id
            campaign_audit = _read_jsonl(audit_path)
            say("rogue host: hammering the pump with boluses; it must hold its own limits")
            pump_caps = hammer_pump(hp, campaign_audit)
            relay_counts = dict(relay.counts)
        finally:
            if bus is not None:
                bus.close()
            if injector is not None:
                injector.close()
            hp.stop()
    wall_s = time.monotonic() - tic

    patient_log = {"published": ctrl.published, "treatments": ctrl.treatments, "reports": ctrl.reports,
                   "processed": bus.processed_log}
    report = analyse(out_dir / f"{slug}.journal.sqlite", audit_path, hp.directory / "loop.toml", patient_log,
                     final_startup_id, audit_limit=len(campaign_audit))
    write_trace_csv(run.trace, out_dir / f"{patient}.csv")
    bg = glucose_metrics(run.trace.bg_mg_dl)
    injected = {kind: ctrl.injected.get(kind, 0) for kind in FAULT_TYPES}
    report = {
        "format": "glucotwin.fault-campaign/1",
        "patient": patient, "days": days, "seed": seed, "arm": arm, "sensor": sensor, "samples": samples,
        "start": protocol.start.isoformat(),
        "wall_s": round(wall_s, 1),
        "faults_injected": injected,
        "faults_scheduled": plan.counts(),
        "relay": relay_counts,
        **report,
        "loop": {"kills": ctrl.kills, "crashes": ctrl.crashes, "restarts_by_campaign": ctrl.restarts,
                 "stalls": ctrl.stalls,
                 "clock_republished": ctrl.clock_republished},
        "harness": {"bolus_received_by_patient_u": round(ctrl.bolus_applied_u, 3),
                    "bolus_executed_by_pump_u": report["doses"]["bolus_u_executed"],
                    "consistent": abs(ctrl.bolus_applied_u - report["doses"]["bolus_u_executed"]) < 1e-3},
        "true_bg": {"tir_70_180": round(bg["in_range_70_180"], 2), "below_70": round(bg["below_70"], 2),
                    "below_54": round(bg["below_54"], 2), "mean": round(bg["mean"], 1)},
        "events": ctrl.events,
        "plan": plan.to_dict(),
        "files": {"journal": str(out_dir / f"{slug}.journal.sqlite"), "audit": str(audit_path),
                  "audit_records_of_the_loop": len(campaign_audit),
                  "loop_log": str(out_dir / f"{slug}.loop.log"), "pump_log": str(out_dir / f"{slug}.pump.log"),
                  "trace": str(out_dir / f"{patient}.csv")},
    }
    report["restarts"]["loop_restarts_expected"] = ctrl.restarts
    not_refused = [a for a in ctrl.second_loops if not a["refused"]]
    if not_refused:  # a second loop that started would dose on the same journal: a duplicate-dose fault
        report["duplicates"]["second_loop_not_refused"] = len(not_refused)
        report["duplicates"]["total"] += len(not_refused)
        report["examples"]["second_loop_not_refused"] = not_refused[:5]
    report["operator_faults"] = {"second_loops": ctrl.second_loops,
                                 "journals_lost": ctrl.injected.get("journal_loss", 0),
                                 "disk_full_episodes": ctrl.injected.get("disk_full", 0)}
    report["pump_caps"] = pump_caps
    for key, n in pump_caps["violations"].items():
        report["violations"][key] = n
        report["violations"]["total"] += n
    result = CampaignResult(report)
    report["ok"] = result.ok
    return result


def format_report(report: dict[str, Any]) -> str:
    """The table ``glucotwin faults`` prints."""
    lines = [f"fault campaign: {report['patient']}, {report['days']:g} day(s), seed {report['seed']}, "
             f"{report['samples']} samples, {report['wall_s']:.0f} s wall"]
    lines.append("")
    lines.append(f"{'fault injected':<28}{'count':>7}")
    for kind, n in report["faults_injected"].items():
        lines.append(f"  {kind:<26}{n:>7}")
    relay = report.get("relay", {})
    lines.append(f"  {'(relay frames to pump/host)':<26}{relay.get('frames_to_pump', 0):>7}/"
                 f"{relay.get('frames_to_host', 0)}")
    d = report["doses"]
    lines.append("")
    lines.append(f"{'pump':<28}")
    lines.append(f"  {'commands executed':<26}{d['commands_executed']:>7}")
    lines.append(f"  {'temp basals executed':<26}{d['temp_basals_executed']:>7}")
    lines.append(f"  {'boluses executed':<26}{d['boluses_executed']:>7}  ({d['bolus_u_executed']:.2f} U)")
    lines.append(f"  {'exact retries (cache)':<26}{d['exact_retries_answered_from_cache']:>7}")
    naks = ", ".join(f"{k} {v}" for k, v in sorted(d["nak_not_consumed"].items())) or "-"
    lines.append(f"  {'NAKs (seq not consumed)':<26}{sum(d['nak_not_consumed'].values()):>7}  ({naks})")
    lines.append("")
    lines.append(f"{'result':<28}{'count':>7}")
    for section, label in (("duplicates", "duplicate doses"), ("lost", "journal records lost"),
                           ("violations", "safety violations")):
        block = report[section]
        lines.append(f"  {label:<26}{block['total']:>7}   {'OK' if block['total'] == 0 else 'FAIL'}")
        for key, n in block.items():
            if key != "total":
                lines.append(f"    {key:<40}{n:>5}")
    r = report["restarts"]
    c = report["checks"]
    lines.append(f"  {'loop restarts':<26}{r['loop_restarts']:>7}   ({report['loop']['kills']} SIGKILLs, "
                 f"{report['loop']['crashes']} crashes, {report['loop']['stalls']} stalls)")
    resumed = {None: "n/a", True: "yes", False: "NO"}[r["resumed"]]
    lines.append(f"  {'loop resumed':<26}{resumed:>7}   ({r['cycles_after_last_restart']} cycles after the last restart)")
    lines.append(f"  {'decisions checked':<26}{c['decisions']:>7}   (stale/implausible {c['stale_or_implausible_decisions_checked']}, "
                 f"low {c['low_cgm_decisions_checked']}, below correction {c['below_correction_decisions_checked']}; "
                 f"max IOB use {100 * c['max_iob_use_of_limit']:.0f} % of limit)")
    lines.append(f"  {'readings lost at SIGKILL':<26}{c['readings_lost_in_flight_at_sigkill']:>7}   (in flight: "
                 "acknowledged by MQTT, never journaled, never acted on)")
    j = report["journal"]
    lines.append(f"  {'replies resolved by STATUS':<26}{j['replies_resolved_by_status_query']:>7}")
    acc = report.get("insulin_accounting")
    if acc:
        lines.append(f"  {'IOB-relevant insulin':<26}{'':>7}   (above programmed basal: loop booked "
                     f"{acc['net_above_programmed_booked_by_loop_u']:.2f} U, pump gave "
                     f"{acc['net_above_programmed_given_by_pump_u']:.2f} U)")
    harness = report.get("harness")
    if harness and not harness["consistent"]:
        lines.append(f"  harness: the patient received {harness['bolus_received_by_patient_u']:.3f} U of bolus, "
                     f"the pump executed {harness['bolus_executed_by_pump_u']:.3f} U")
    if report.get("pump_caps"):
        lines.append("")
        lines.extend(format_pump_caps(report["pump_caps"]))
    lines.append("")
    bg = report["true_bg"]
    lines.append(f"true BG: TIR {bg['tir_70_180']:.1f} %, <70 {bg['below_70']:.1f} %, <54 {bg['below_54']:.1f} %, "
                 f"mean {bg['mean']:.0f} mg/dL")
    lines.append("campaign: " + ("PASS" if report.get("ok") else "FAIL"))
    return "\n".join(lines)
