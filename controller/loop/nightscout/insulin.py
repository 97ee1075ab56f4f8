"""Insulin on board split for Nightscout (``openaps.iob``): bolus part, basal part, activity.

Pure functions, standard library only. The supervisor keeps one net account of
insulin on board (boluses plus basal above the schedule, one number); OpenAPS
reports it in parts, which Nightscout's OpenAPS pill shows ("Basal IOB",
"Bolus IOB"). The parts are rebuilt here from the journal's ``delivery``
events (what the loop booked each cycle: ``basal_u_per_h`` for ``minutes``,
``bolus_u``), with the supervisor's own curve (Loop's exponential model,
:func:`controller.insulin_math.fraction_remaining`) and its rule that only
basal above the scheduled rate counts (a low temp or a suspension gives
negative basal insulin on board, as in OpenAPS).

``activity`` is OpenAPS' insulin activity: the insulin acting now, U/min, the
rate at which insulin on board falls, ``-d(IOB)/dt``. For Loop's exponential
model the fraction of a dose acting per minute ``t`` minutes after it is

    activity(t) = S / tau**2 * t * (1 - t / td) * exp(-t / tau)

(LoopKit ``ExponentialInsulinModel.percentActivity``; ``td`` the duration of
action, ``tau`` and ``S`` as in :func:`fraction_remaining`). The test compares
it with the numerical derivative of :func:`fraction_remaining`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

from controller.insulin_math import fraction_remaining


@dataclass(frozen=True)
class InsulinCurve:
    """The supervisor's insulin curve and the programmed basal it counts insulin above.

    action_duration_min, peak_min: ``SafetyLimits.iob_action_duration_min`` / ``iob_peak_min``.
    scheduled_basal_u_per_h: the programmed basal (U/h) at a time, as the supervisor reads it
        (``profile.basal_u_per_h_at(time)``: the local time of day in the profile's timezone).
    """

    action_duration_min: float
    peak_min: float
    scheduled_basal_u_per_h: Callable[[datetime], float]

    def __post_init__(self) -> None:
        td, tp = self.action_duration_min, self.peak_min
        if not (isinstance(td, (int, float)) and isinstance(tp, (int, float)) and math.isfinite(td)
                and math.isfinite(tp) and 0 < tp < td / 2):
            raise ValueError(f"InsulinCurve needs 0 < peak_min < action_duration_min / 2, got {tp!r}, {td!r}")


def activity_fraction_per_min(minutes_since: float, action_duration_min: float, peak_min: float) -> float:
    """Fraction of a dose acting per minute ``minutes_since`` after it was given (1/min)."""
    t, td, tp = minutes_since, action_duration_min, peak_min
    if t <= 0 or t >= td:
        return 0.0
    tau = tp * (1 - tp / td) / (1 - 2 * tp / td)
    a = 2 * tau / td
    s = 1 / (1 - a + (1 + a) * math.exp(-td / tau))
    return s / (tau * tau) * t * (1 - t / td) * math.exp(-t / tau)


@dataclass(frozen=True)
class BookedDelivery:
    """One journaled ``delivery``: the cycle's time, the basal booked for ``minutes``, the bolus."""

    time: datetime
    basal_u_per_h: float
    minutes: float
    bolus_u: float


@dataclass(frozen=True)
class IobParts:
    """Insulin on board at a time, in OpenAPS' parts (U, and U/min for ``activity``)."""

    bolus_iob_u: float
    basal_iob_u: float
    activity_u_per_min: float


def iob_parts(deliveries: Iterable[BookedDelivery], now: datetime, curve: InsulinCurve,
              include_basal_at_now: bool = False) -> IobParts:
    """The bolus and net-basal insulin on board at ``now``, and the insulin activity.

    Each delivery counts as the supervisor books it (:meth:`SafetySupervisor.delivered`):
    its bolus and its basal above the schedule, ``(basal - scheduled) * minutes / 60``, at
    the cycle's time. The basal of a cycle at ``now`` itself is left out unless
    ``include_basal_at_now`` (the devicestatus counts a cycle's bolus, not its temp basal,
    which is still to be delivered).
    """
    bolus = basal = activity = 0.0
    td, tp = curve.action_duration_min, curve.peak_min
    for d in deliveries:
        minutes = (now - d.time).total_seconds() / 60.0
        if minutes < 0 or minutes >= td:
            continue
        remaining = fraction_remaining(minutes, td, tp)
        acting = activity_fraction_per_min(minutes, td, tp)
        net_basal = (d.basal_u_per_h - curve.scheduled_basal_u_per_h(d.time)) * d.minutes / 60.0
        if minutes == 0 and not include_basal_at_now:
            net_basal = 0.0
        bolus += d.bolus_u * remaining
        basal += net_basal * remaining
        activity += (d.bolus_u + net_basal) * acting
    return IobParts(bolus, basal, activity)
