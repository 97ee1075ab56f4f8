"""The loop of a trial as it was at any moment of its trace, for what-if questions about that moment.

A ``glucotwin trial`` of glucotwin's controller (``mpc``) is deterministic:
fed the same readings and announcements, a fresh policy built the same way
(the patient's clinical profile, the leave-one-out prior) decides the same
doses. :func:`policy_at` replays a trace's rows up to ``when`` through such a
policy and checks that its doses match the trace's, so the twin asked is the
one that ran. The announcement of each sample is what the runner told the
controller: the carbs eaten in the sample before, times the protocol's
announcement factor (HCL; the protocol's meal delay is not replayed: a trace
of a delayed protocol is refused).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np


def policy_at(trace_path: Path, when: datetime | None) -> tuple[Any, str]:
    """(the policy after the decision at or before ``when``, a description); ValueError when it cannot."""
    from controller.policy import ControlInput
    from controller.twin_policy import TwinMPCPolicy
    from sim.trial.cohort import PATIENTS, clinical_profile
    from sim.trial.priors import population_prior
    from sim.trial.trace import read_trace_csv
    from twin.personalize import personalize

    summary_path = trace_path.parent / "summary.json"
    if not summary_path.exists():
        raise ValueError(f"{summary_path}: the trial's summary.json is needed beside the trace")
    summary = json.loads(summary_path.read_text())
    if summary.get("controller") != "mpc":
        raise ValueError(f"{trace_path}: a trial of {summary.get('controller')!r}; only glucotwin's own controller "
                         "(mpc) can be rebuilt from its trace")
    protocol = summary["protocol"]
    if protocol.get("meal_delay_min"):
        raise ValueError(f"{trace_path}: a protocol with delayed announcements is not replayed")
    trace = read_trace_csv(trace_path)
    if trace.patient not in PATIENTS:
        raise ValueError(f"{trace_path}: {trace.patient} is not a simglucose patient")
    profile = clinical_profile(trace.patient)
    policy = TwinMPCPolicy(personalize(profile, population_prior(exclude=trace.patient)))
    hcl = protocol["arm"] == "hcl"
    factor = float(protocol.get("carb_announcement_factor", 1.0))
    basal = np.array([float(v) if v not in ("", None) else np.nan for v in trace.diagnostics.get("basal_u_per_h", [])])
    bolus = np.array([float(v) if v not in ("", None) else np.nan for v in trace.diagnostics.get("bolus_u", [])])
    cgm = trace.cgm_mg_dl.copy()
    # simglucose's reset observation is a second sensor sample, not the trace's first CGM; the estimator
    # starts its glucose exactly at that first reading, so row 0's twin glucose is it
    first = trace.diagnostics.get("twin_glucose_mg_dl", [""])[0]
    if first not in ("", None) and cgm.size:
        cgm[0] = float(first)
    last = None
    for i, t in enumerate(trace.time):
        if when is not None and t > when:
            break
        if not np.isfinite(cgm[i]) or i >= len(basal) or not np.isfinite(basal[i]):
            break
        announced = float(trace.carbs_g[i - 1]) * factor if hcl and i > 0 else 0.0
        dose = policy.decide(ControlInput(time=t, cgm_mg_dl=float(cgm[i]),
                                          announced_carbs_g=announced if np.isfinite(announced) else 0.0,
                                          cycle_min=trace.sample_min))
        if abs(dose.basal_u_per_h - basal[i]) > 1e-3 or abs(dose.bolus_u - bolus[i]) > 1e-3:
            raise ValueError(f"{trace_path}: at {t} the rebuilt loop decided {dose.basal_u_per_h:.3f} U/h + "
                             f"{dose.bolus_u:.3f} U, the trace says {basal[i]:.3f} + {bolus[i]:.3f}: the trace comes "
                             "from another version of glucotwin")
        last = t
    if last is None:
        raise ValueError(f"{trace_path}: no decision at or before {when}")
    return policy, f"{trace.patient} in {trace_path.parent.name} ({protocol['arm']}), twin at {last:%Y-%m-%d %H:%M}"
