"""A population run: the entry point of ``glucotwin population`` (:mod:`sim.cli.population`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.population.chunk import ChunkResult, plan_chunks, simulate_chunk
from sim.population.outputs import write_outputs
from sim.population.simglucose_models import MIN_PER_DAY
from sim.population.spec import PopulationSpec
from sim.population.summary import build_population_summary, throughput


@dataclass
class PopulationResult:
    summary: dict[str, Any]
    chunks: list[ChunkResult]
    out_dir: Path | None


def _run_once(spec, engine, chunks, traces, progress, desc) -> tuple[list[ChunkResult], float]:
    from sim.trial.runner import _Progress

    bar = _Progress(total_min=spec.patient_days * MIN_PER_DAY, enabled=progress, desc=desc)
    tic = time.perf_counter()
    try:
        results = engine.map(simulate_chunk, [(spec, chunk, traces) for chunk in chunks], progress=bar.advance)
    finally:
        bar.close()
    return results, time.perf_counter() - tic


def run_population(
    spec: PopulationSpec,
    workers: int | None = None,
    engine: Any = None,
    out_dir: Path | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    traces: bool = False,
    scaling: bool = False,
    scheduler: str | None = None,
) -> PopulationResult:
    """Run the population; with ``out_dir`` write ``summary.json``, ``patients.csv`` (and ``traces.npz``).

    ``engine``: ``"local"`` (default) or ``"dask"`` (with ``scheduler``, or a
    LocalCluster of ``workers`` processes). ``scaling``: first run the same
    population on one worker, then on ``workers``, check the results are
    identical and report the speedup in ``run.scaling``. The ``run`` section is
    the only part of the summary that changes between identical runs.
    """
    from sim.engine import LocalEngine, default_workers, make_engine
    from sim.trial.runner import check_writable

    if engine is None or isinstance(engine, str):
        kind = engine or "local"
        runner = make_engine(kind, workers, scheduler)
    elif scaling:
        raise ValueError("scaling needs an engine name (local or dask), not an engine object")
    else:
        kind, runner = None, engine
    if scaling and scheduler is not None:
        raise ValueError("scaling starts its own workers: not with a scheduler address")
    n_workers = workers or default_workers()
    chunks = plan_chunks(spec.size, n_workers, chunk_size)
    if out_dir is not None:
        check_writable(out_dir)

    single = None
    if scaling:
        if n_workers < 2:
            raise ValueError("scaling compares 1 worker with --workers >= 2")
        # one worker started like the others (a process, not this one), so start-up costs compare
        one = LocalEngine(1, in_process=False) if kind == "local" else make_engine(kind, 1)
        single_results, single_wall = _run_once(spec, one, chunks, False, progress, "population, 1 worker")
        single = (single_results, single_wall)
    results, wall = _run_once(spec, runner, chunks, traces, progress, "population")
    used = runner.describe()
    summary = build_population_summary(spec, results)
    run = throughput(spec, results, wall, int(used["workers"]))
    run["engine"] = used
    if single is not None:
        one_summary = build_population_summary(spec, single[0])
        base = throughput(spec, single[0], single[1], 1)
        run["scaling"] = {
            "workers_1": {k: base[k] for k in ("wall_s", "patient_days_per_s", "patient_days_per_cpu_s")},
            f"workers_{run['workers']}": {k: run[k] for k in ("wall_s", "patient_days_per_s",
                                                               "patient_days_per_cpu_s")},
            "speedup": single[1] / wall,
            "efficiency": single[1] / wall / run["workers"],
            "results_identical": one_summary["patients"] == summary["patients"],
        }
    summary["run"] = run
    if out_dir is not None:
        write_outputs(out_dir, summary, results, traces)
    return PopulationResult(summary=summary, chunks=list(results), out_dir=out_dir)
