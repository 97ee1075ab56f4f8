"""Peak memory of ``glucotwin replay`` streaming a large CGM file, for ``glucotwin bench``.

- ``replay_rss_mb``: peak resident memory of one ``glucotwin replay FILE
  --methods persistence --no-report --quiet`` process, FILE a seeded synthetic
  iglu CSV of 100,000 readings (10,000 with ``--quick``) written to a temporary
  directory. The readers and the replay stream (``sensors.files.source``,
  ``sim.forecast.replay.replay_stream``), so this stays near the interpreter's
  own footprint whatever the file's size (issue 20: a 1.4 M-reading file took
  2.1 GB before).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _write_cgm(path: Path, readings: int, seed: int = 20) -> None:
    rng = random.Random(seed)
    t, g = datetime(2020, 1, 1, tzinfo=UTC), 140.0
    with open(path, "w", encoding="utf-8") as out:
        out.write("id,time,gl\n")
        for _ in range(readings):
            t += timedelta(seconds=300 + rng.uniform(-3, 3))
            g = min(400.0, max(40.0, g + rng.gauss(0.0, 4.0) + 0.05 * (140.0 - g)))
            out.write(f"S01,{t:%Y-%m-%d %H:%M:%S},{round(g)}\n")


def _glucotwin_command() -> list[str]:
    script = Path(sys.executable).parent / "glucotwin"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sim.cli"]


def replay_memory(quick: bool = False) -> dict[str, Any]:
    readings = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="glucotwin-bench-") as tmp:
        path = Path(tmp) / "cgm.csv"
        _write_cgm(path, readings)
        with open(Path(tmp) / "stderr.txt", "w+b") as err:
            proc = subprocess.Popen(_glucotwin_command() + ["replay", str(path), "--methods", "persistence",
                                                            "--no-report", "--quiet"],
                                    stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the bench's other children's
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"glucotwin replay failed ({proc.returncode}): "
                                   f"{err.read().decode(errors='replace').strip()[:200]}")
    return {"replay_rss_mb": usage.ru_maxrss / 1024.0}
