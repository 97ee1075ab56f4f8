"""Aggregation over a population: distributions, consensus targets, the deterministic summary, throughput."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from sim.population.chunk import ChunkResult
from sim.population.simglucose_models import PUMP
from sim.population.spec import CONTROLLER_DESCRIPTIONS, PLANT, SUMMARY_FORMAT, PopulationSpec
from sim.population.virtual_patients import VARIATIONS, plant_substeps
from sim.trial.protocol import BENCHMARK_START

_QUANTILES = (("p5", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95))
DISTRIBUTION_METRICS = ("in_range_70_180", "below_70", "below_54", "above_180", "above_250", "mean", "CV",
                        "LBGI", "HBGI")
TARGETS = {  # consensus targets for people (BENCHMARK.md)
    "in_range_70_180 > 70": ("in_range_70_180", ">", 70.0),
    "below_70 < 4": ("below_70", "<", 4.0),
    "below_54 < 1": ("below_54", "<", 1.0),
}


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Mean, SD, min, 5/25/50/75/95th percentiles and max."""
    v = np.asarray(values, dtype=float)
    out = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if v.size > 1 else 0.0, "min": float(v.min())}
    out.update({label: float(np.percentile(v, q)) for label, q in _QUANTILES})
    out["max"] = float(v.max())
    return out


def _meets(metrics: dict[str, float], rule: tuple[str, str, float]) -> bool:
    key, op, bound = rule
    return metrics[key] > bound if op == ">" else metrics[key] < bound


def population_description() -> dict[str, Any]:
    return {
        "base_patients": "simglucose 0.2.11 patient of group j mod 3 (adolescent, adult, child), "
                         "number (j div 3) mod 10 + 1",
        "factors": "exp(clip(sigma * z, -2 sigma, 2 sigma)), z ~ N(0, 1) from numpy default_rng([seed, j]) "
                   "in the order below",
        "variations": [
            {"name": v.name, "parameters": list(v.parameters), "sigma": v.sigma,
             "bounds": [round(b, 6) for b in v.bounds], "meaning": v.meaning}
            for v in VARIATIONS
        ],
        "steady_state": "Ib and u2ss divided by kp3's factor (same basal glucose Gb and production EGPb); "
                        "initial state = steady state under u2ss, empty gut",
        "clinical_profile": "weight BW; basal u2ss*BW/6000 U/min; TDI = base TDI x basal/base basal; "
                            "CR = base CR x insulin_sensitivity; CF = base CF x insulin_sensitivity / body_weight; "
                            "age of the base",
    }


def protocol_description(spec: PopulationSpec) -> dict[str, Any]:
    return {
        "arm": spec.arm,
        "days": spec.days,
        "start": BENCHMARK_START.isoformat(),
        "scenario": "simglucose RandomScenario(start_time=start, seed=seed * 1000000 + j + 1)",
        "sensor": f"simglucose {spec.sensor} noise model (CGMNoise, seed as the scenario), "
                  f"{spec.sample_min:g}-minute samples, clipped to the sensor range",
        "sensor_seed": "seed * 1000000 + j + 1",
        "pump": f"simglucose {PUMP} rounding and limits; bolus spread over one cycle",
        "cycle_min": spec.sample_min,
        "integrator": f"RK4, 1-minute steps, {plant_substeps()} substep(s)",
        "glucose_for_metrics": "true glucose of the plant (Gsub), CGM metrics beside it",
    }


def build_population_summary(spec: PopulationSpec, chunks: Sequence[ChunkResult]) -> dict[str, Any]:
    """The deterministic part of ``summary.json`` (everything but ``run``)."""
    from sim.trial.cohort import GROUPS
    from sim.trial.metrics import mean_metrics, safety_rank_key
    from sim.trial.summary import versions

    patients: dict[str, dict[str, Any]] = {}
    for chunk in sorted(chunks, key=lambda c: c.indices[0]):
        patients.update(chunk.patients)
    names = list(patients)

    def block(members: list[str]) -> dict[str, Any]:
        return {
            "n": len(members),
            "bg": {m: distribution([patients[n]["bg"][m] for n in members]) for m in DISTRIBUTION_METRICS},
            "cgm": {m: distribution([patients[n]["cgm"][m] for n in members]) for m in DISTRIBUTION_METRICS},
            "mean_bg": mean_metrics([patients[n]["bg"] for n in members]),
            "meeting_targets_pct": {
                **{label: 100.0 * np.mean([_meets(patients[n]["bg"], rule) for n in members])
                   for label, rule in TARGETS.items()},
                "all three": 100.0 * np.mean([all(_meets(patients[n]["bg"], r) for r in TARGETS.values())
                                              for n in members]),
            },
        }

    worst = max(names, key=lambda n: safety_rank_key(patients[n]["bg"]))
    return {
        "format": SUMMARY_FORMAT,
        "plant": PLANT,
        "controller": spec.controller,
        "controller_description": CONTROLLER_DESCRIPTIONS[spec.controller],
        "spec": spec.to_dict(),
        "population": population_description(),
        "protocol": protocol_description(spec),
        "versions": versions(),
        "population_results": block(names),
        "groups": {g: block([n for n in names if patients[n]["group"] == g])
                   for g in GROUPS if any(patients[n]["group"] == g for n in names)},
        "worst_patient": {"name": worst, "base": patients[worst]["base"], "bg": patients[worst]["bg"],
                          "rule": "most time below 54 mg/dL, then below 70, then lowest TIR (true glucose)"},
        "patients": patients,
    }


def throughput(spec: PopulationSpec, chunks: Sequence[ChunkResult], wall_s: float, workers: int) -> dict[str, Any]:
    """Patient-days per second (wall clock, per worker) and per CPU-second, and where the CPU went."""
    cpu = {key: float(sum(c.timing[key] for c in chunks))
           for key in ("cpu_s", "setup_cpu_s", "controller_cpu_s", "plant_cpu_s")}
    cycles = sum(c.timing["cycles"] for c in chunks)
    pd_ = spec.patient_days
    return {
        "wall_s": round(wall_s, 3),
        "workers": workers,
        "patient_days": pd_,
        "patient_days_per_s": pd_ / wall_s,
        "patient_days_per_s_per_worker": pd_ / wall_s / workers,
        "patient_days_per_cpu_s": pd_ / cpu["cpu_s"] if cpu["cpu_s"] > 0 else float("nan"),
        **{k: round(v, 3) for k, v in cpu.items()},
        "controller_ms_per_patient_cycle": 1000.0 * cpu["controller_cpu_s"] / cycles if cycles else float("nan"),
        "plant_us_per_patient_cycle": 1e6 * cpu["plant_cpu_s"] / cycles if cycles else float("nan"),
        "chunks": len(chunks),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
