"""The Dask engine: the jobs of a trial or population as tasks of a Dask cluster.

``DaskEngine(scheduler="tcp://host:8786")`` submits to a running
``distributed`` scheduler (its workers must have glucotwin installed, with
the ``sim`` extra for simglucose trials); ``DaskEngine(workers=N)`` starts a
``LocalCluster`` of N single-threaded worker processes for the duration of a
:meth:`~DaskEngine.map` and stops it afterwards (``with DaskEngine(...) as
engine:`` keeps one client and cluster for several maps).

Each job runs the same function with the same arguments as under the local
engine, so the results are identical (``tests/test_engine_dask.py``).
Progress: workers publish ``(key, patient-minutes)`` events on a topic the
client subscribes to (``Worker.log_event`` / ``Client.subscribe_topic``).

This module imports ``distributed``; import it only through
:func:`sim.engine.make_engine` so that Dask stays optional.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Sequence, TypeVar

import distributed

from sim.engine.base import JobProgress, default_workers

R = TypeVar("R")

CONNECT_TIMEOUT_S = 30


def _run_job(fn: Callable[..., R], job: tuple, topic: str | None) -> R:
    """Runs on a Dask worker: ``fn(*job)`` with progress published on ``topic``."""
    report = None
    if topic is not None:
        worker = distributed.get_worker()

        def report(key: str, minutes: float) -> None:
            worker.log_event(topic, (str(key), float(minutes)))

    return fn(*job, progress=report)


class DaskEngine:
    """Jobs as Dask tasks (see the module docstring)."""

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None) -> None:
        if workers is not None and (int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
        self.scheduler = scheduler
        self.workers = workers
        self._used: dict[str, Any] = {}
        self._held: tuple[distributed.Client, Any] | None = None

    def _connect(self, n_jobs: int) -> tuple[distributed.Client, Any]:
        if self.scheduler is not None:
            try:
                client = distributed.Client(self.scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise OSError(f"cannot connect to the Dask scheduler at {self.scheduler}: {exc}") from None
            return client, None
        n = min(self.workers or default_workers(), max(n_jobs, 1))
        cluster = distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        return distributed.Client(cluster), cluster

    def __enter__(self) -> "DaskEngine":
        """Keep one client (and LocalCluster) for several :meth:`map` calls until ``__exit__``."""
        if self._held is None:
            self._held = self._connect(self.workers or default_workers())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._held is not None:
            client, cluster = self._held
            self._held = None
            client.close()
            if cluster is not None:
                cluster.close()

    def map(self, fn: Callable[..., R], jobs: Sequence[tuple], progress: JobProgress | None = None) -> list[R]:
        jobs = list(jobs)
        if not jobs:
            return []
        held = self._held is not None
        client, cluster = self._held if held else self._connect(len(jobs))
        topic = f"glucotwin-progress-{uuid.uuid4().hex}" if progress is not None else None
        try:
            if topic is not None:
                def on_event(event: tuple[float, Any]) -> None:
                    key, minutes = event[1]
                    progress(str(key), float(minutes))

                client.subscribe_topic(topic, on_event)
            run_id = uuid.uuid4().hex[:8]
            futures = [
                client.submit(_run_job, fn, job, topic, key=f"glucotwin-job-{i}-{run_id}", pure=False)
                for i, job in enumerate(jobs)
            ]
            results = client.gather(futures)
            nthreads = client.nthreads()  # worker address -> threads
            self._used = {
                "engine": self.name,
                "scheduler": self.scheduler or "LocalCluster (processes, 1 thread each)",
                "workers": len(nthreads),
                "threads": int(sum(nthreads.values())),
            }
            return list(results)
        finally:
            if topic is not None:
                try:
                    client.unsubscribe_topic(topic)
                except Exception:  # noqa: BLE001 - best effort while finishing
                    pass
            if not held:
                client.close()
                if cluster is not None:
                    cluster.close()

    def describe(self) -> dict[str, Any]:
        return self._used or {"engine": self.name, "scheduler": self.scheduler or "LocalCluster",
                              "workers": self.workers or default_workers()}
