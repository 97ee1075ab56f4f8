"""glucotwin report's front door: a trial/HIL output directory, or a replay JSON (or a directory holding one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sim.report.errors import ReportError
from sim.report.replay_page import write_replay_report
from sim.report.trial_page import write_trial_report


def _replay_json_in(directory: Path) -> Path | None:
    for p in sorted(directory.glob("*.json")):
        try:
            with open(p, encoding="utf-8") as handle:
                head = handle.read(200)
        except OSError:
            continue
        if '"glucotwin.replay-report/' in head:
            return p
    return None


def write_report(source: str | Path, out: str | Path | None = None, compare: Sequence[str | Path] = (),
                 units: str | None = "mg") -> Path:
    """``glucotwin report``: a trial/HIL directory, or a replay JSON (or a directory holding one);
    glucose shown in ``units`` ("mg" for mg/dL, "mmol" for mmol/L)."""
    source = Path(source)
    if source.is_dir() and (source / "summary.json").exists():
        return write_trial_report(source, out, compare, units)
    replay_json = source if source.is_file() else _replay_json_in(source) if source.is_dir() else None
    if replay_json is None:
        if not source.exists():
            raise ReportError(f"{source}: no such file or directory")
        raise ReportError(f"{source}: neither a trial/HIL output directory (summary.json) nor a replay report JSON")
    if compare:
        raise ReportError("--compare works with trial and HIL output directories, not with replays")
    return write_replay_report(replay_json, out, units)
