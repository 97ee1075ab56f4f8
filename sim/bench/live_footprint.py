"""Footprint of the live loop, for ``glucotwin bench``: start-up time and resident memory.

- ``startup_s``: median wall time of ``glucotwin run --help`` (a fresh
  interpreter each time), and which heavy modules that imports (must be none of
  simglucose, pandas, matplotlib).
- ``loop_rss_mb``: peak resident memory of the loop process (``glucotwin run``)
  while it runs with MQTT and serial attached, inside a short HIL run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HEAVY = ("simglucose", "pandas", "matplotlib", "dask", "distributed")


def _glucotwin_command() -> list[str]:
    script = Path(sys.executable).parent / "glucotwin"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sim.cli"]


def startup(repeats: int = 5) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        subprocess.run(_glucotwin_command() + ["run", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - tic)
    bare = []
    for _ in range(repeats):
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - tic)
    probe = ("import sys\nsys.argv = ['glucotwin', 'run', '--help']\nfrom sim.cli import build_parser\n"
             "build_parser()\nimport controller.loop.live, sim.cli.run\n"
             f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    heavy = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
    return {"startup_s": statistics.median(times), "python_startup_s": statistics.median(bare),
            "startup_heavy_imports": heavy.split(",") if heavy else []}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def _loop_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if " run --config " in cmd and marker in cmd:
            pids.append(int(proc.name))
    return pids


def loop_footprint(days: float = 0.1) -> dict[str, Any]:
    """Peak RSS of the loop process during a HIL run of adult#003 (HCL)."""
    from sim.hil.rig import run_hil
    from sim.trial.protocol import TrialProtocol

    with tempfile.TemporaryDirectory(prefix="glucotwin-bench-") as tmp:
        out = Path(tmp) / "hil"
        peak = {"rss": 0.0, "samples": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in _loop_pids(str(out)):
                    rss = _rss_mb(pid)
                    if rss is not None:
                        peak["rss"] = max(peak["rss"], rss)
                        peak["samples"] += 1
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tic = time.perf_counter()
        try:
            result = run_hil(["adult#003"], TrialProtocol(arm="hcl", days=days), out, progress=False)
        finally:
            done.set()
            sampler.join(timeout=5)
        wall = time.perf_counter() - tic
        cycles = result.runs[0].trace.bg_mg_dl.size - 1
    return {"loop_rss_mb": peak["rss"], "loop_rss_samples": peak["samples"], "hil_cycles": cycles,
            "hil_wall_s": round(wall, 1), "hil_cycles_per_s": round(cycles / wall, 1)}
