"""The files of a population run: ``summary.json``, ``patients.csv`` and (optionally) ``traces.npz``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.population.chunk import ChunkResult
from sim.population.spec import PLANT
from sim.population.virtual_patients import VARIATIONS

_CSV_METRICS = ("in_range_70_180", "below_70", "below_54", "above_180", "above_250", "mean", "CV", "LBGI", "HBGI")


def write_outputs(out_dir: Path, summary: dict[str, Any], chunks: Sequence[ChunkResult], traces: bool) -> None:
    """Write ``summary.json`` and ``patients.csv`` to ``out_dir``; with ``traces``, also ``traces.npz``."""
    with open(out_dir / "summary.json", "w") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    factor_names = [v.name for v in VARIATIONS]
    profile_names = ["weight_kg", "basal_u_per_h", "total_daily_insulin_u", "carb_ratio_g_per_u",
                     "correction_factor_mg_dl_per_u", "age_years"]
    header = (["plant", "patient", "base", "group", "seed"] + factor_names + profile_names
              + [f"bg_{m}" for m in _CSV_METRICS] + [f"cgm_{m}" for m in _CSV_METRICS]
              + ["insulin_u_per_day", "carbs_g_per_day"])
    with open(out_dir / "patients.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for name, p in summary["patients"].items():
            writer.writerow(
                [PLANT, name, p["base"], p["group"], p["seed"]]
                + [p["factors"][f] for f in factor_names]
                + [p["profile"][k] for k in profile_names]
                + [p["bg"][m] for m in _CSV_METRICS] + [p["cgm"][m] for m in _CSV_METRICS]
                + [p["insulin_u_per_day"], p["carbs_g_per_day"]]
            )
    if traces:
        ordered = sorted(chunks, key=lambda c: c.indices[0])
        arrays = {key: np.concatenate([c.traces[key] for c in ordered]) for key in ordered[0].traces}
        names = np.array([n for c in ordered for n in c.patients])
        np.savez_compressed(out_dir / "traces.npz", plant=np.array(PLANT), patients=names,
                            sample_min=np.array(summary["protocol"]["cycle_min"]), **arrays)
