"""Old module paths of the restructuring (issue 16), kept importable for one release with a warning.

``import controller.runtime`` (or ``from sim.metrics import glucose_metrics``) still
works: :class:`MovedModules`, a meta-path finder installed by the ``controller``
and ``sim`` packages, loads the module at its new path, binds it under the old
name too (the same module object, so ``isinstance`` and monkeypatching agree)
and warns once with the new path. Old paths that are now packages
(``sim.trial``, ``sim.hil``, ``sim.bench``, ``sim.cli``, ``sensors.files``)
cannot be aliased; ``sim`` still exports the names people used from them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

REMOVED_IN = "0.2"

MOVED = {
    "controller.runtime": "controller.loop.runtime",
    "controller.cycle_result": "controller.loop.cycle_result",
    "controller.ports": "controller.loop.ports",
    "controller.pump_history": "controller.loop.pump_history",
    "controller.pump_history_sync": "controller.loop.pump_history_sync",
    "controller.journal": "controller.loop.journal",
    "controller.journal_buffer": "controller.loop.journal_buffer",
    "controller.journal_lock": "controller.loop.journal_lock",
    "controller.journal_salvage": "controller.loop.journal_salvage",
    "controller.live_config": "controller.loop.config.live_config",
    "controller.config_ranges": "controller.loop.config.ranges",
    "controller.config_preflight": "controller.loop.config.preflight",
    "controller.nightscout_uploader": "controller.loop.nightscout.uploader",
    "controller.nightscout_docs": "controller.loop.nightscout.docs",
    "sim.live": "controller.loop.live",
    "sim.systemd_notify": "controller.loop.systemd_notify",
    **{f"sim.{name}": f"sim.trial.{name}" for name in (
        "adapter", "baselines", "cohort", "controllers", "meal_info", "metrics", "oracle", "priors", "protocol",
        "runner", "simglucose_env", "summary", "trace")},
    "sim.engine_dask": "sim.engine.dask_engine",
    "sim.hil_patient": "sim.hil.patient",
    "sim.hil_nightscout": "sim.hil.nightscout",
    "sim.broker": "sim.hil.broker",
    "sim.fault_relay": "sim.hil.faults.relay",
    "sim.fault_operator": "sim.hil.faults.operator",
    "sim.fault_pump_caps": "sim.hil.faults.pump_caps",
    "sim.fault_campaign": "sim.hil.faults.campaign",
    "sim.replay": "sim.forecast.replay",
    "sim.forecast_eval": "sim.forecast.scoring",
    "sim.forecast_check": "sim.forecast.closed_loop",
    "sim.forecast_floor": "sim.forecast.floor",
    "sim.bench_live": "sim.bench.live_footprint",
    "sim.twin_fidelity": "sim.bench.twin_fidelity",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {self.new}; the old path goes in glucotwin {REMOVED_IN}",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed; the import system binds it under the old name."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the old path of a moved module and hands out the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (idempotent)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
