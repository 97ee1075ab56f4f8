"""Operator mistakes for the fault campaign (issue 15): what people do to a running loop.

- ``second_loop``: a second ``glucotwin run`` on the same config and journal (a manual start
  beside the service). It must refuse at once, exit 2 and name the journal's holder.
- ``journal_loss``: the loop dies and its journal is gone (an SD card replaced, a wrong path):
  the loop is restarted on an empty journal and must learn the insulin on board from the pump.
  The lost file is kept aside (``<journal>.lost-<sample>``) for the analysis only.
- ``disk_full``: the running loop's file size limit drops to 4 kB for a few samples (``prlimit``:
  the same failed writes as a full file system, without root), then is restored.
- ``far_future_reading``: a reading dated a year ahead, published just before the sample's own.

Pure helpers over the HIL processes; the campaign (``sim.hil.faults.campaign``) decides when.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path
from typing import Any

OPERATOR_FAULTS = ("second_loop", "journal_loss", "disk_full", "far_future_reading")
FULL_DISK_BYTES = 4096
FAR_FUTURE_DAYS = 365


def second_loop_attempt(hp: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """Start a second loop with the running loop's command; how it ended."""
    command = [c for c in hp.loop_command]
    if "--ready-file" in command:  # never the first loop's ready file
        i = command.index("--ready-file")
        command[i + 1] = str(Path(command[i + 1]).with_suffix(".second.ready"))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=hp.env)
    except subprocess.TimeoutExpired:  # it ran: the refusal failed (the process is killed by run())
        return {"refused": False, "returncode": None, "stderr": "still running after the timeout"}
    line = done.stderr.strip()
    refused = done.returncode == 2 and "in use by another loop" in line and "\n" not in line
    return {"refused": refused, "returncode": done.returncode, "stderr": line[-300:]}


def lose_journal(journal: Path, sample: int) -> Path:
    """Move the journal (and its WAL, shared memory and lock files) aside; the copy's path."""
    aside = journal.with_name(f"{journal.name}.lost-{sample}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{journal}{suffix}")
        if src.exists():
            os.replace(src, Path(f"{aside}{suffix}"))
    Path(f"{journal}.lock").unlink(missing_ok=True)
    return aside


def lost_journals(journal: Path) -> list[Path]:
    """The journals lost during a campaign, oldest first."""
    found = journal.parent.glob(f"{journal.name}.lost-*")
    copies = [p for p in found if p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(copies, key=lambda p: int(p.name.rsplit("-", 1)[-1]))


class DiskFull:
    """The loop process's file size limit lowered (``fill``) and restored (``clear``)."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.saved: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        return self.pid is not None

    def fill(self, pid: int) -> None:
        self.saved = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (FULL_DISK_BYTES, self.saved[1]))
        self.pid = pid

    def clear(self) -> None:
        if self.pid is not None and self.saved is not None:
            try:
                resource.prlimit(self.pid, resource.RLIMIT_FSIZE, self.saved)
            except ProcessLookupError:  # the loop was restarted meanwhile: its new process has no limit
                pass
        self.pid = self.saved = None


def merged_journal(journal: Path) -> tuple[list[Any], list[Any], list[dict[str, Any]]]:
    """Events of the lost journals and the final one as one journal, for the analysis.

    Ids and cycle numbers of each later file continue after the earlier ones (a new
    journal numbers from 1 again). Returns (events, commands without a reply, segments:
    each file's first id, startup time and the seqs it booked from the pump's history).
    """
    from dataclasses import replace

    from controller.loop.journal import Journal

    events: list[Any] = []
    unanswered: list[Any] = []
    segments: list[dict[str, Any]] = []
    id_offset = cycle_offset = 0
    for path in lost_journals(journal) + [journal]:
        with Journal(path, read_only=True) as j:
            own = list(j.events())
            open_cmds = j.unanswered_commands()
        shift = lambda e: replace(e, id=e.id + id_offset,  # noqa: E731
                                  cycle=None if e.cycle is None else e.cycle + cycle_offset)
        startup = next((e for e in own if e.kind == "startup"), None)
        segments.append({"file": str(path), "first_id": id_offset + 1, "lost": path != journal,
                         "startup_time": None if startup is None else startup.time,
                         "booked_from_pump": {e.seq for e in own if e.kind == "delivery" and e.payload.get("from_pump")},
                         "commands": {e.seq for e in own if e.kind == "command"}})
        events += [shift(e) for e in own]
        unanswered += [shift(e) for e in open_cmds]
        id_offset += max((e.id for e in own), default=0)
        cycle_offset += max((e.cycle or 0 for e in own if e.kind == "decision"), default=0)
    return events, unanswered, segments
