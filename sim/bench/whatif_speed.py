"""``glucotwin bench``'s what-if figures: how long one question takes, and what it costs the control cycle.

A policy for a cohort patient's clinical profile runs 3 hours of cycles on a
rising CGM (so the twin holds insulin and a disturbance), then is asked a
meal, a bolus and a suspension question, 6 hours each, closed loop:
``whatif_ms_p50`` / ``_p99`` over the repeats, with the MPC re-planned every
15 minutes (the default) and, for comparison, every cycle
(``whatif_ms_p50_every_cycle``). Then the control cycle is timed with and
without the what-if service answering questions back to back in its thread
(``whatif_cycle_ratio``, ``_p99``: cycle p50 and p99 while questions run / without). The
service never blocks a cycle, but both share the CPU and Python's
interpreter lock; the service computes at most one question a second.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

T0 = datetime(2025, 1, 1, 6, 0, tzinfo=timezone.utc)


def _policy(patient: str):
    from controller.policy import ControlInput
    from controller.twin_policy import TwinMPCPolicy
    from sim.trial.cohort import clinical_profile
    from sim.trial.priors import population_prior
    from twin.personalize import personalize

    profile = clinical_profile(patient)
    policy = TwinMPCPolicy(personalize(profile, population_prior(exclude=patient)))
    for k in range(36):
        policy.decide(ControlInput(time=T0 + timedelta(minutes=5 * k), cgm_mg_dl=120.0 + 1.2 * k,
                                   announced_carbs_g=0.0, cycle_min=5.0))
    return policy


def whatif_figures(repeats: int = 10, patient: str = "adult#001") -> dict[str, Any]:
    from controller.policy import ControlInput
    from controller.whatif import closed_loop
    from controller.loop.whatif_service import WhatIfService, sign
    from twin.whatif import Bolus, Meal, TempBasal

    policy = _policy(patient)
    questions = ([Meal(60)], [Bolus(2.0)], [TempBasal(0.0, 60)])
    out: dict[str, Any] = {}
    for resolve, suffix in ((15.0, ""), (5.0, "_every_cycle")):
        ms = []
        for _ in range(repeats):
            for q in questions:
                tic = time.perf_counter()
                closed_loop(policy, q, horizon_min=360.0, resolve_min=resolve)
                ms.append((time.perf_counter() - tic) * 1000.0)
        out[f"whatif_ms_p50{suffix}"] = float(np.percentile(ms, 50))
        out[f"whatif_ms_p99{suffix}"] = float(np.percentile(ms, 99))

    def cycles(n: int) -> np.ndarray:
        live = _policy(patient)
        t = live.estimator.time
        ms = []
        for k in range(1, n + 1):
            live.decide(ControlInput(time=t + timedelta(minutes=5 * k), cgm_mg_dl=160.0, announced_carbs_g=0.0,
                                     cycle_min=5.0))
            ms.append(live.last_cycle_ms)
        return np.array(ms)

    quiet = cycles(400)
    key = bytes(16)
    answered = []
    service = WhatIfService(key, "bench", lambda topic, payload, corr: answered.append(1), lambda: T0)
    service.update(policy)
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            body = {"time": T0.isoformat(), "nonce": uuid.uuid4().hex, "horizon_min": 360,
                    "actions": [{"kind": "meal", "carbs_g": 60}]}
            body["signature"] = sign(key, dict(body))
            service.on_message(json.dumps(body).encode(), "bench/whatif/response/x", b"c")
            time.sleep(0.02)

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    busy = cycles(400)  # a few seconds: several questions computed meanwhile
    stop.set()
    asker.join(2.0)
    service.close()
    out.update({"whatif_cycle_ms_p50_quiet": float(np.median(quiet)), "whatif_cycle_ms_p50_busy": float(np.median(busy)),
                "whatif_cycle_ms_p99_quiet": float(np.percentile(quiet, 99)),
                "whatif_cycle_ms_p99_busy": float(np.percentile(busy, 99)),
                "whatif_cycle_ratio": float(np.median(busy) / np.median(quiet)),
                "whatif_cycle_ratio_p99": float(np.percentile(busy, 99) / np.percentile(quiet, 99)),
                "whatif_answered_during_cycles": service.answered})
    return out
