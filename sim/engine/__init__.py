"""Execution engines: where the independent jobs of a trial or population run.

``base`` holds what every engine shares, ``local`` the default engine (worker
processes on this machine) and :func:`make_engine` / :func:`resolve_engine`,
``dask_engine`` the Dask engine (imported only when asked for).
"""

from sim.engine.base import DASK_INSTALL_HINT, ENGINES, Engine, JobProgress, default_workers
from sim.engine.local import LocalEngine, make_engine, resolve_engine

__all__ = ["DASK_INSTALL_HINT", "ENGINES", "Engine", "JobProgress", "LocalEngine", "default_workers",
           "make_engine", "resolve_engine"]
