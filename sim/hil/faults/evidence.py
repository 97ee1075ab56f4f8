"""What the campaign's analysis reads, and where it notes what it finds.

:class:`Evidence` is the loop's journal (all its segments merged, when the
campaign lost one: :func:`sim.hil.faults.operator.merged_journal`), the pump's
audit trail and the loop's config, indexed once for every check.
:class:`Findings` holds the three counters the checks fill (duplicate doses,
journal records lost, safety invariant violations) with up to five examples per
key. The checks are in :mod:`sim.hil.faults.executions`,
:mod:`sim.hil.faults.lost_records` and :mod:`sim.hil.faults.safety_checks`.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sim.hil.faults.operator import merged_journal

EPS = 1e-6


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none if it does not exist), skipping lines that do not parse."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def minute_of_day(t: datetime) -> int:
    return t.hour * 60 + t.minute


def pump_programmed_basal(profile: Any) -> float:
    """The HIL pump's programmed basal (U/h): the profile's midnight rate, rounded down to 0.001 U/h."""
    return math.floor(profile.basal_u_per_h_at(0) * 1000 + 1e-6) / 1000.0


@dataclass
class Evidence:
    """The journal, the audit trail and the config, indexed for the checks."""

    profile: Any
    limits: Any
    audit: list[dict[str, Any]]
    events: list[Any]
    unanswered: list[Any]                # commands without a reply after the final restore
    segments: list[dict[str, Any]]       # one per journal (more than one when journals were lost)
    final_startup_id: int | None         # the final restore's startup, as an id of the merged journal
    by_kind: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    commands: dict[int, Any] = field(default_factory=dict)
    replies: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    deliveries: dict[int, Any] = field(default_factory=dict)
    commands_of_cycle: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    executed: list[dict[str, Any]] = field(default_factory=list)
    booked_from_pump: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for e in self.events:
            self.by_kind[e.kind].append(e)
        self.commands = {e.seq: e for e in self.by_kind["command"]}
        for e in self.by_kind["reply"]:
            self.replies[e.seq].append(e)
        for e in self.by_kind["delivery"]:
            self.deliveries.setdefault(e.cycle, e)
        for e in self.by_kind["command"]:
            self.commands_of_cycle[e.cycle].append(e)
        self.executed = [r for r in self.audit if r.get("outcome") == "executed"]
        self.booked_from_pump = set().union(*(seg["booked_from_pump"] for seg in self.segments))

    @property
    def decisions(self) -> list[Any]:
        return self.by_kind["decision"]


def load_evidence(journal_path: Path, audit_path: Path, config_path: Path, final_startup_id: int | None = None,
                  audit_limit: int | None = None) -> Evidence:
    """The evidence of one campaign; ``audit_limit``: only the first so many audit records are the loop's."""
    from controller.loop.config.live_config import load_config

    config = load_config(config_path)
    audit = read_jsonl(audit_path)[:audit_limit]
    events, unanswered, segments = merged_journal(journal_path)
    if final_startup_id is not None:  # an id of the final journal, which the merge shifted
        final_startup_id += segments[-1]["first_id"] - 1
    return Evidence(config.profile, config.limits, audit, events, unanswered, segments, final_startup_id)


@dataclass
class Findings:
    """Duplicate doses, journal records lost and safety invariant violations, by key, with examples."""

    duplicates: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))

    def _note(self, counter: Counter[str], key: str, example: Any) -> None:
        counter[key] += 1
        if len(self.examples[key]) < 5:
            self.examples[key].append(example)

    def duplicate(self, key: str, example: Any) -> None:
        self._note(self.duplicates, key, example)

    def lose(self, key: str, example: Any) -> None:
        self._note(self.lost, key, example)

    def violate(self, key: str, example: Any) -> None:
        self._note(self.violations, key, example)

    def report(self) -> dict[str, Any]:
        """The report's ``duplicates``, ``lost``, ``violations`` (each with its total) and ``examples``."""
        return {
            "duplicates": {"total": sum(self.duplicates.values()), **dict(self.duplicates)},
            "lost": {"total": sum(self.lost.values()), **dict(self.lost)},
            "violations": {"total": sum(self.violations.values()), **dict(self.violations)},
            "examples": dict(self.examples),
        }
