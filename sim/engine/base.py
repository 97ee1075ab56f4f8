"""What every execution engine shares: the ``Engine`` protocol, job progress, worker count.

A job is ``fn(*args, progress=report)`` for one item (a patient of a trial,
a chunk of a virtual population); ``report(key, minutes)`` tells how many
simulated patient-minutes the job has just advanced. Jobs depend only on
their arguments, so every engine returns the same results, in the order of
the jobs, whatever the number of workers.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol, Sequence, TypeVar

R = TypeVar("R")
JobProgress = Callable[[str, float], None]  # (key, simulated patient-minutes since the last report)

ENGINES = ("local", "dask")
DASK_INSTALL_HINT = "pip install 'glucotwin[dask]'"


class Engine(Protocol):
    """Runs independent jobs and returns their results in order."""

    name: str

    def map(self, fn: Callable[..., R], jobs: Sequence[tuple], progress: JobProgress | None = None) -> list[R]:
        """``[fn(*job, progress=...) for job in jobs]``, possibly in parallel."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran the last :meth:`map` (for the ``run`` section of a summary)."""
        ...


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (non-Linux)
        return os.cpu_count() or 1
