"""The local engine (worker processes on this machine) and the choice of an engine by name.

- :class:`LocalEngine` (the default): worker processes on this machine
  (``spawn``), or in-process when one worker is enough.
- ``DaskEngine`` (:mod:`sim.engine.dask_engine`, imported only when asked for,
  since it imports ``distributed``): the jobs as tasks of a Dask
  ``distributed`` cluster, a given scheduler or a ``LocalCluster`` of
  one-thread worker processes. Needs the ``dask`` extra.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence, TypeVar

from sim.engine.base import DASK_INSTALL_HINT, ENGINES, Engine, JobProgress, default_workers

R = TypeVar("R")

# --- local worker processes -------------------------------------------------------

_worker_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _worker_queue
    _worker_queue = progress_queue


def _report_from_worker(key: str, minutes: float) -> None:
    if _worker_queue is not None:
        _worker_queue.put((key, minutes))


def _call_in_worker(fn: Callable[..., R], job: tuple) -> R:
    return fn(*job, progress=_report_from_worker)


class LocalEngine:
    """Jobs in ``workers`` processes of this machine (default: one per core), in order.

    With one worker (or one job) the jobs run in this process, unless
    ``in_process=False`` (a pool of one process: start-up costs as with more,
    for a fair scaling measurement).
    """

    name = "local"

    def __init__(self, workers: int | None = None, in_process: bool = True) -> None:
        if workers is not None and (int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
        self.workers = workers
        self.in_process = in_process
        self.workers_used: int | None = None

    def map(self, fn: Callable[..., R], jobs: Sequence[tuple], progress: JobProgress | None = None) -> list[R]:
        jobs = list(jobs)
        if not jobs:
            return []
        workers = min(self.workers or default_workers(), len(jobs))
        self.workers_used = workers
        if workers == 1 and self.in_process:
            return [fn(*job, progress=progress) for job in jobs]
        ctx = multiprocessing.get_context("spawn")
        progress_queue = ctx.Queue()
        results: dict[int, R] = {}
        with _one_blas_thread_per_worker(), ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue,)
        ) as pool:
            pending: dict[Future, int] = {pool.submit(_call_in_worker, fn, job): i for i, job in enumerate(jobs)}
            while pending:
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(progress_queue, progress)
                for future in done:
                    results[pending.pop(future)] = future.result()
            _drain(progress_queue, progress)
        return [results[i] for i in range(len(jobs))]

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.workers_used or self.workers or default_workers()}


# Thread pools of the numerical libraries; each worker process gets one thread
# (as Dask does for its workers), unless the user set these variables.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _one_blas_thread_per_worker() -> Iterator[None]:
    """Worker processes started inside inherit one BLAS/OpenMP thread each.

    Workers already run one per core; OpenBLAS threads on top of them only
    contend (measured: the MPC's control cycle costs about 3x more CPU with
    OpenBLAS's default threads on a 2-core machine).
    """
    added = [name for name in _THREAD_VARIABLES if name not in os.environ]
    for name in added:
        os.environ[name] = "1"
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _drain(progress_queue: Any, progress: JobProgress | None) -> None:
    while True:
        try:
            key, minutes = progress_queue.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(key, minutes)


def make_engine(name: str = "local", workers: int | None = None, scheduler: str | None = None) -> Engine:
    """The engine called ``name``: ``local`` or ``dask`` (``scheduler``: a Dask scheduler address).

    ``dask`` without a scheduler starts a ``LocalCluster`` of ``workers``
    single-threaded processes. Raises ``ValueError`` for an unknown name, a
    scheduler given to the local engine, or Dask not installed.
    """
    if name == "local":
        if scheduler is not None:
            raise ValueError("a scheduler address needs the dask engine (--engine dask)")
        return LocalEngine(workers)
    if name == "dask":
        try:
            from sim.engine.dask_engine import DaskEngine
        except ImportError as exc:
            raise ValueError(f"the dask engine needs Dask distributed: {DASK_INSTALL_HINT} ({exc})") from None
        return DaskEngine(scheduler=scheduler, workers=workers)
    raise ValueError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")


def resolve_engine(engine: "str | Engine | None", workers: int | None = None) -> Engine:
    """An engine from a name (``None``: local) or the engine itself."""
    if engine is None or isinstance(engine, str):
        return make_engine(engine or "local", workers)
    return engine
