"""OpenAPS ``predBGs`` from the twin's forecasts: the lines Nightscout draws after "now".

Nightscout's OpenAPS plugin (cgm-remote-monitor ``lib/plugins/openaps.js``,
``getForecastPoints``) draws each array of ``predBGs`` (``IOB``, ``ZT``,
``COB``, ``aCOB``, ``UAM``) as one coloured line, value ``i`` at the
suggestion's (or enactment's) time + 5*i minutes. oref0 fills them with
whole mg/dL clamped to 39..401 (``determine-basal.js``). glucotwin fills them
from the twin's forecast decomposition (:class:`twin.estimator.Forecast`:
``glucose = baseline + insulin_effect + carb_effect + disturbance_effect``),
computed on the insulin the pump now runs:

``IOB``
    insulin alone: ``baseline + insulin_effect``, no carbohydrate, no disturbance
    (oref0: insulin on board and the current deviation decaying; glucotwin's
    counterpart of that deviation is the disturbance, shown in ``UAM``).
``ZT``
    as ``IOB``, but with a zero temp from now on for the whole horizon (a second
    forecast of the twin, ``basal_u_per_h=0``), when the loop computed it.
``UAM``
    ``IOB`` plus the estimator's disturbance (glucose appearance the model does not
    explain: unannounced meals, model mismatch), no announced carbohydrate; with no
    carbohydrate announced it is the whole forecast.
``COB``
    the whole forecast the loop doses on (insulin, announced carbohydrate and the
    disturbance); only while the announced carbohydrate changes the forecast by
    :data:`CARB_VISIBLE_MG_DL` or more somewhere on the horizon.

``aCOB`` (oref0's accelerated carb absorption) has no counterpart and is never sent.
"""

from __future__ import annotations

import math
from typing import Any

PRED_STEP_MIN = 5.0
PRED_MIN_MG_DL, PRED_MAX_MG_DL = 39, 401
PRED_MAX_POINTS = 48
CARB_VISIBLE_MG_DL = 1.0


def _series(forecast: dict[str, Any], key: str, n: int) -> list[float] | None:
    values = forecast.get(key)
    if values is None:
        return None
    out = [float(x) for x in values]
    if len(out) != n or not all(map(math.isfinite, out)):
        raise ValueError(f"forecast {key} has {len(out)} values for {n} horizons, or a non-finite one")
    return out


def pred_bgs(forecast: dict[str, Any], zero_temp: dict[str, Any] | None = None) -> dict[str, list[int]] | None:
    """OpenAPS ``predBGs`` from a twin forecast (``Forecast.to_dict()``) and, for ``ZT``, the
    forecast with a zero temp; None when the forecast is unusable.

    A forecast without the decomposition (only ``glucose_mg_dl`` and ``carb_effect_mg_dl``)
    gives ``IOB`` as the forecast without carbohydrate, and ``COB``.
    """
    try:
        h = [float(x) for x in forecast["horizons_min"]]
        full = _series(forecast, "glucose_mg_dl", len(h))
        carb = _series(forecast, "carb_effect_mg_dl", len(h)) or [0.0] * len(h)
        baseline = _series(forecast, "baseline_mg_dl", len(h))
        insulin = _series(forecast, "insulin_effect_mg_dl", len(h))
    except (KeyError, TypeError, ValueError):
        return None
    if not h or full is None or not all(map(math.isfinite, h)):
        return None
    without_carbs = [g - c for g, c in zip(full, carb)]
    out: dict[str, list[int]] = {}
    if baseline is not None and insulin is not None:
        out["IOB"] = _resample(h, [b + i for b, i in zip(baseline, insulin)])
        out["UAM"] = _resample(h, without_carbs)
    else:
        out["IOB"] = _resample(h, without_carbs)
    zt = zero_temp_line(zero_temp) if zero_temp is not None else None
    if zt is not None:
        out["ZT"] = zt
    if max(abs(c) for c in carb) >= CARB_VISIBLE_MG_DL:
        out["COB"] = _resample(h, full)
    return out


def zero_temp_line(forecast: dict[str, Any]) -> list[int] | None:
    """``ZT``: ``baseline + insulin_effect`` of the twin's forecast with a zero temp."""
    try:
        h = [float(x) for x in forecast["horizons_min"]]
        baseline = _series(forecast, "baseline_mg_dl", len(h))
        insulin = _series(forecast, "insulin_effect_mg_dl", len(h))
    except (KeyError, TypeError, ValueError):
        return None
    if not h or baseline is None or insulin is None or not all(map(math.isfinite, h)):
        return None
    return _resample(h, [b + i for b, i in zip(baseline, insulin)])


def whole_forecast(forecast: dict[str, Any]) -> list[int] | None:
    """The forecast the loop doses on, 5-minute whole mg/dL (``eventualBG``, Loop's ``predicted``)."""
    try:
        h = [float(x) for x in forecast["horizons_min"]]
        full = _series(forecast, "glucose_mg_dl", len(h))
    except (KeyError, TypeError, ValueError):
        return None
    if not h or full is None or not all(map(math.isfinite, h)):
        return None
    return _resample(h, full)


def _resample(h: list[float], g: list[float]) -> list[int]:
    """Values at 0, 5, 10 ... minutes (linear between the forecast's horizons), clamped and rounded."""
    out: list[int] = []
    j = 0
    k = 0
    while len(out) < PRED_MAX_POINTS:
        t = k * PRED_STEP_MIN
        if t > h[-1] + 1e-9:
            break
        while j + 1 < len(h) and h[j + 1] < t:
            j += 1
        if j + 1 < len(h) and h[j + 1] > h[j]:
            w = min(max((t - h[j]) / (h[j + 1] - h[j]), 0.0), 1.0)
            value = g[j] + w * (g[j + 1] - g[j])
        else:
            value = g[j]
        out.append(int(min(max(round(value), PRED_MIN_MG_DL), PRED_MAX_MG_DL)))
        k += 1
    return out
