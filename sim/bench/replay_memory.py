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


_CHILD = """
import atexit, sys
from pathlib import Path

def _peak():  # this process's own high-water mark (VmHWM is per address space: exec resets it)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                Path(sys.argv[1]).write_text(line.split()[1])
    except OSError:
        pass

atexit.register(_peak)
from sim.cli import main
out = sys.argv[1]
sys.argv = ["glucotwin"] + sys.argv[2:]
try:
    code = main()
finally:
    sys.argv.insert(1, out)
sys.exit(code)
"""


def replay_memory(quick: bool = False) -> dict[str, Any]:
    """The replay's peak RSS (MB), read in the replay process itself: ``ru_maxrss`` of a child keeps
    the high-water mark of the process it was forked from (a pytest or bench process of hundreds
    of MB) across ``exec``, so the child reports its own ``VmHWM`` (Linux); elsewhere ``ru_maxrss``."""
    readings = 10_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="glucotwin-bench-") as tmp:
        path = Path(tmp) / "cgm.csv"
        peak_file = Path(tmp) / "peak_kb.txt"
        _write_cgm(path, readings)
        with open(Path(tmp) / "stderr.txt", "w+b") as err:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(peak_file), "replay", str(path),
                                     "--methods", "persistence", "--no-report", "--quiet"],
                                    stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"glucotwin replay failed ({proc.returncode}): "
                                   f"{err.read().decode(errors='replace').strip()[:200]}")
        peak_kb = float(peak_file.read_text()) if peak_file.exists() else float(usage.ru_maxrss)
    return {"replay_rss_mb": peak_kb / 1024.0}
