"""The fault plan: which faults a campaign injects, how often, and the seeded schedule of them.

:data:`FAULT_TYPES` names every kind of fault, :data:`PER_DAY` how many of each
a simulated day gets; :func:`make_plan` draws a :class:`FaultPlan` from a seed
(in simulated samples), which the campaign's patient
(:mod:`sim.hil.faults.faulty_patient`) consults sample by sample.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sim.hil.faults.operator import OPERATOR_FAULTS

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
