"""In-silico validation against simglucose: cohort, trial runner, metrics, CLI.

Attributes are loaded lazily (PEP 562) so that ``import sim`` (and the
``glucotwin`` command line, which lives here) does not import simglucose or
pandas until a simulator feature is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "run_trial": "sim.trial",
    "TrialProtocol": "sim.protocol",
    "PolicyController": "sim.adapter",
    "SimglucoseController": "sim.controllers",
    "glucose_metrics": "sim.metrics",
    "clinical_profile": "sim.cohort",
    "PATIENTS": "sim.cohort",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
