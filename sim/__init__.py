"""In-silico validation against simglucose: cohort, trial runner, metrics, CLI.

Attributes are loaded lazily (PEP 562) so that ``import sim`` (and the
``glucotwin`` command line, which lives here) does not import simglucose or
pandas until a simulator feature is used.
"""

from __future__ import annotations

import importlib
from typing import Any

import controller  # noqa: F401 (installs the finder of moved module paths, controller.moved_modules)

_LAZY = {
    "run_trial": "sim.trial.run",
    "TrialProtocol": "sim.trial.protocol",
    "PolicyController": "sim.trial.adapter",
    "SimglucoseController": "sim.trial.controllers",
    "glucose_metrics": "sim.trial.metrics",
    "clinical_profile": "sim.trial.cohort",
    "PATIENTS": "sim.trial.cohort",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
