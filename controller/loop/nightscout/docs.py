"""Journal events to Nightscout documents: the pure mapping behind the uploader.

No I/O, no clock, standard library only: the same journal always maps to the
same documents (byte for byte), which is what makes re-uploads after a crash
harmless (Nightscout de-duplicates on the fields these documents fix).

What is uploaded, and when (one rule each):

``entries`` (``sgv``), one per journaled ``reading``
    Every CGM value the loop received, rejected or not: Nightscout is the
    person's CGM record, and the loop's ``devicestatus`` says what it did with
    it. Field names and rounding are those of
    :func:`sensors.nightscout.entry.reading_to_entry` (``type``, ``sgv``,
    ``date``, ``dateString``, ``device``, and ``direction``, ``noise`` when
    known; a clipped ``Low`` is 39). Nightscout de-duplicates entries on
    ``dateString``/``date`` + ``type``.

``treatments``, per completed cycle (its ``delivery`` is journaled), at the cycle's time
    - ``Temp Basal`` (``absolute`` = ``rate`` in U/h, ``duration`` in minutes)
      when the pump acknowledged the cycle's temp basal; the rate is the one the
      pump reports running. A refused or unanswered temp basal uploads none
      (``devicestatus`` then says "not enacted", with the reason).
    - A bolus the pump confirmed is a ``Meal Bolus`` (``insulin``, ``carbs``)
      when the same cycle consumed announced carbohydrates (the loop adds
      announcements to the next cycle's input, so "a bolus follows an
      announcement" means: that cycle's ``announced_carbs_g`` > 0), otherwise a
      ``Correction Bolus`` (``insulin``).
    - Announced carbohydrates with no confirmed bolus in their cycle are a
      ``Carb Correction`` (``carbs``).
    - In a fully closed loop the announcements are journaled as ignored; each
      is uploaded at its own time as a ``Carb Correction`` with a ``notes``
      saying the loop did not use it.

    - Advice to the person (:mod:`controller.advice`) that is new this cycle (its
      first cycle, then again every ``repeat_min`` while it stands, never every cycle) is an
      ``Announcement`` with the advice's message and reason in ``notes``.

    Every treatment has ``eventType``, ``created_at`` (ISO 8601 UTC with
    milliseconds, exactly as Nightscout normalizes it) and ``enteredBy``
    (``"glucotwin"``). Nightscout de-duplicates treatments on ``created_at`` +
    ``eventType``.

``devicestatus``, one per completed cycle, in the OpenAPS shape
    ``{"device": "openaps://glucotwin", "created_at", "openaps": {"iob",
    "suggested", "enacted"}, "pump": {"clock", "status"}}``, so that
    Nightscout's OpenAPS pill shows the loop's state and its forecast lines
    show the twin's forecast:

    - ``iob``: ``{"iob", "timestamp"}``, insulin on board above the scheduled
      basal (the safety supervisor's account, like OpenAPS' net IOB) at the
      cycle's time: its confirmed bolus counts, its temp basal (not yet
      delivered) does not.
    - ``suggested``: what the controller decided (``bg``, ``temp``
      ``"absolute"``, ``rate``, ``duration``, ``units`` when a bolus,
      ``reason``, ``IOB``, ``eventualBG``, ``sensitivityRatio``, ``predBGs``,
      ``deliverAt``, ``timestamp``).
    - ``enacted``: what the pump did with it: the same fields with the rate and
      bolus the pump confirmed and ``received`` (true when the temp basal was
      acknowledged; false with the pump's reason otherwise).
    - ``predBGs``: 5-minute arrays of whole mg/dL (39..401, OpenAPS'
      convention) starting at the cycle: ``IOB`` is the twin's forecast without
      announced carbohydrates (insulin on board and the estimated
      disturbance), ``COB`` the full forecast including them (only while the
      carbohydrates change the forecast by 1 mg/dL or more). ``eventualBG`` is
      the full forecast's last value. The arrays start at the twin's estimate
      of glucose now, which differs from ``bg`` (the CGM) by the estimated
      sensor error. They need the forecast, which the loop
      passes in when it collects; cycles collected later (after a restart)
      have no ``predBGs``.
    - ``carbsReq`` (whole grams) and ``carbsReqWithin`` (minutes), as oref0's determine-basal
      reports them, while a carbohydrate advice stands (every cycle it stands), and the
      advice in ``reason`` (oref0's "N add'l carbs req w/in Mm", then the advice's message);
      a high or site-check advice adds its message to ``reason``.
    - ``sensitivityRatio`` is OpenAPS' ratio (above 1: more insulin needed),
      the inverse of the twin's insulin-sensitivity factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DEVICE = "openaps://glucotwin"
ENTERED_BY = "glucotwin"
COLLECTIONS = ("entries", "treatments", "devicestatus")
PRED_STEP_MIN = 5.0
PRED_MIN_MG_DL, PRED_MAX_MG_DL = 39, 401
PRED_MAX_POINTS = 48
CARB_VISIBLE_MG_DL = 1.0
DEXCOM_LOW_CODE = 39
SENSOR_LOW_MG_DL = 40.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

Doc = tuple[str, str, dict[str, Any]]
"""(collection, key, document): ``key`` is the document's stable identity (its Nightscout dedup fields)."""


def parse_time(text: str) -> datetime:
    """An ISO 8601 time from the journal; a naive one is UTC."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso_z(t: datetime) -> str:
    """``2025-01-01T05:03:00.000Z``: what Nightscout's ``toISOString()`` makes of a time."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // _MS


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _units(value: float) -> float:
    """Insulin as Nightscout shows it: 3 decimals (the pump protocol's resolution)."""
    return round(float(value), 3)


# --- entries ------------------------------------------------------------------------------


def reading_entry(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The ``sgv`` entry for a journaled reading (``GlucoseReading.to_dict()``); None when unusable."""
    g = _finite(payload.get("glucose_mg_dl"))
    t = payload.get("time")
    if g is None or g <= 0 or not isinstance(t, str):
        return None
    try:
        time = parse_time(t)
    except ValueError:
        return None
    sgv = int(round(g))
    if payload.get("clipped") is True and g <= SENSOR_LOW_MG_DL:
        sgv = DEXCOM_LOW_CODE
    source = payload.get("source") if isinstance(payload.get("source"), str) else ""
    _, sep, device = source.partition(":")
    entry: dict[str, Any] = {"type": "sgv", "sgv": sgv, "date": epoch_ms(time), "dateString": iso_z(time),
                             "device": device if sep and device else (source or ENTERED_BY)}
    if isinstance(payload.get("trend"), str):
        entry["direction"] = payload["trend"]
    noise = payload.get("noise")
    if isinstance(noise, int) and not isinstance(noise, bool):
        entry["noise"] = noise
    return entry


def entry_key(entry: dict[str, Any]) -> str:
    return f"entries|{entry['dateString']}|{entry['type']}"


def treatment_key(treatment: dict[str, Any]) -> str:
    return f"treatments|{treatment['created_at']}|{treatment['eventType']}"


# --- treatments ---------------------------------------------------------------------------


def temp_basal_treatment(time: datetime, rate_u_per_h: float, duration_min: float) -> dict[str, Any]:
    rate = round(float(rate_u_per_h), 3)
    return {"eventType": "Temp Basal", "created_at": iso_z(time), "enteredBy": ENTERED_BY,
            "absolute": rate, "rate": rate, "duration": _minutes(duration_min)}


def bolus_treatment(time: datetime, insulin_u: float, carbs_g: float = 0.0) -> dict[str, Any]:
    """A ``Meal Bolus`` when ``carbs_g`` > 0, else a ``Correction Bolus``."""
    doc: dict[str, Any] = {"eventType": "Meal Bolus" if carbs_g > 0 else "Correction Bolus",
                           "created_at": iso_z(time), "enteredBy": ENTERED_BY, "insulin": _units(insulin_u)}
    if carbs_g > 0:
        doc["carbs"] = _carbs(carbs_g)
    return doc


def carb_treatment(time: datetime, carbs_g: float, notes: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {"eventType": "Carb Correction", "created_at": iso_z(time), "enteredBy": ENTERED_BY,
                           "carbs": _carbs(carbs_g)}
    if notes:
        doc["notes"] = notes
    return doc


def advice_of(dose: dict[str, Any]) -> dict[str, Any] | None:
    """The advice journaled with a decision's dose (``diagnostics.advice``), or None."""
    advice = (dose.get("diagnostics") or {}).get("advice")
    if not isinstance(advice, dict) or advice.get("kind") not in ("carbs", "high", "site_check"):
        return None
    return advice


def announcement_treatment(time: datetime, advice: dict[str, Any]) -> dict[str, Any]:
    """New advice as a Nightscout ``Announcement`` (message and reason in ``notes``)."""
    notes = str(advice.get("message") or advice.get("kind"))
    if advice.get("reason"):
        notes = f"{notes} ({advice['reason']})"
    return {"eventType": "Announcement", "created_at": iso_z(time), "enteredBy": ENTERED_BY, "notes": notes}


def _carbs(carbs_g: float) -> float | int:
    value = round(float(carbs_g), 1)
    return int(value) if value == int(value) else value


def _minutes(minutes: float) -> float | int:
    value = round(float(minutes), 3)
    return int(value) if value == int(value) else value


def ignored_announcement_treatment(payload: dict[str, Any]) -> dict[str, Any] | None:
    """An announcement the loop journaled as ignored (fully closed loop): a ``Carb Correction`` with notes."""
    carbs = _finite(payload.get("carbs_g"))
    t = payload.get("time")
    if carbs is None or carbs <= 0 or not isinstance(t, str):
        return None
    try:
        time = parse_time(t)
    except ValueError:
        return None
    why = payload.get("ignored")
    return carb_treatment(time, carbs, f"announced; not used by the loop ({why})")


# --- one cycle ----------------------------------------------------------------------------


@dataclass
class CycleEvents:
    """The journal events of one control cycle (payloads, with the times they were journaled)."""

    cycle: int
    decision: dict[str, Any]
    delivery: dict[str, Any]
    commands: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    """seq -> (journal time, reply payload)"""
    faults: list[dict[str, Any]] = field(default_factory=list)


def cycle_documents(c: CycleEvents, forecast: dict[str, Any] | None = None,
                    device: str = DEVICE) -> list[Doc]:
    """The treatments and the devicestatus of one completed cycle (see the module docstring)."""
    inp = c.decision.get("input") or {}
    dose = c.decision.get("dose") or {}
    time = parse_time(inp["time"])
    carbs = _finite(inp.get("announced_carbs_g")) or 0.0
    docs: list[Doc] = []

    temp = next((o for o in c.commands if o.get("kind") == "temp_basal"), None)
    temp_reply = c.replies.get(int(temp["seq"])) if temp is not None else None
    temp_ack = temp_reply is not None and temp_reply[1].get("status") == "ack"
    duration = float(temp["duration_min"]) if temp is not None else float(inp.get("cycle_min") or 5.0)
    confirmed_rate = None
    if temp is not None and temp_ack:
        reported = _finite(temp_reply[1].get("rate_u_per_h"))  # type: ignore[index]
        confirmed_rate = reported if reported is not None else float(temp["rate_u_per_h"])
        t = temp_basal_treatment(time, confirmed_rate, duration)
        docs.append(("treatments", treatment_key(t), t))

    bolus = 0.0
    for order in c.commands:
        if order.get("kind") != "bolus":
            continue
        reply = c.replies.get(int(order["seq"]))
        if reply is not None and reply[1].get("status") == "ack":
            bolus += _finite(reply[1].get("bolus_u")) or 0.0
    bolus = _units(bolus)
    if bolus > 0:
        t = bolus_treatment(time, bolus, carbs)
        docs.append(("treatments", treatment_key(t), t))
    elif carbs > 0:
        t = carb_treatment(time, carbs)
        docs.append(("treatments", treatment_key(t), t))

    advice = advice_of(dose)
    if advice is not None and advice.get("new") is True:
        t = announcement_treatment(time, advice)
        docs.append(("treatments", treatment_key(t), t))

    status = devicestatus(c, time, dose, temp, temp_reply, confirmed_rate, duration, bolus, forecast, device)
    docs.append(("devicestatus", f"devicestatus|{device}|{status['created_at']}", status))
    return docs


def devicestatus(c: CycleEvents, time: datetime, dose: dict[str, Any], temp: dict[str, Any] | None,
                 temp_reply: tuple[str, dict[str, Any]] | None, confirmed_rate: float | None, duration: float,
                 bolus_u: float, forecast: dict[str, Any] | None, device: str = DEVICE) -> dict[str, Any]:
    inp = c.decision.get("input") or {}
    diag = dose.get("diagnostics") or {}
    stamp = iso_z(time)
    iob_before = _finite(diag.get("iob_u"))
    iob = None if iob_before is None else _units(iob_before + bolus_u)

    suggested: dict[str, Any] = {"temp": "absolute", "rate": round(float(dose.get("basal_u_per_h", 0.0)), 3),
                                 "duration": _minutes(duration), "reason": str(dose.get("reason", "")),
                                 "deliverAt": stamp, "timestamp": stamp}
    cgm = _finite(inp.get("cgm_mg_dl"))
    if cgm is not None:
        suggested["bg"] = int(round(cgm))
    proposed_bolus = _finite(dose.get("bolus_u")) or 0.0
    if proposed_bolus > 0:
        suggested["units"] = _units(proposed_bolus)
    if iob is not None:
        suggested["IOB"] = iob
    sensitivity = _finite(diag.get("sensitivity_factor"))
    if sensitivity is not None and sensitivity > 0:
        suggested["sensitivityRatio"] = round(1.0 / sensitivity, 2)
    advice = advice_of(dose)
    if advice is not None:
        grams = _finite(advice.get("carbs_g"))
        if advice["kind"] == "carbs" and grams is not None and grams > 0:
            within = _finite(advice.get("by_min")) or 0.0
            suggested["carbsReq"] = int(round(grams))
            suggested["carbsReqWithin"] = int(round(within))
            suggested["reason"] += (f"; {suggested['carbsReq']} add'l carbs req w/in {suggested['carbsReqWithin']}m: "
                                    f"{advice.get('message', '')}")
        else:
            suggested["reason"] += f"; advice: {advice.get('message', '')}"
    preds = pred_bgs(forecast) if forecast is not None else None
    if preds:
        suggested["predBGs"] = preds
        suggested["eventualBG"] = (preds.get("COB") or preds["IOB"])[-1]

    enacted: dict[str, Any] = {k: v for k, v in suggested.items() if k != "units"}
    if temp_reply is not None:
        enacted["timestamp"] = iso_z(parse_time(temp_reply[0]))
    if confirmed_rate is not None:
        enacted["received"] = True
        enacted["rate"] = round(confirmed_rate, 3)
    else:
        enacted["received"] = False
        enacted["reason"] = f"{enacted['reason']}; not enacted: {_why_not(temp, temp_reply, c.faults)}"
    if bolus_u > 0:
        enacted["units"] = bolus_u

    openaps: dict[str, Any] = {"suggested": suggested, "enacted": enacted}
    if iob is not None:
        openaps["iob"] = {"iob": iob, "timestamp": stamp}
    return {"device": device, "created_at": stamp, "openaps": openaps,
            "pump": {"clock": stamp, "status": {"status": "normal", "bolusing": False, "suspended": False,
                                                "timestamp": stamp}}}


def _why_not(temp: dict[str, Any] | None, reply: tuple[str, dict[str, Any]] | None,
             faults: list[dict[str, Any]]) -> str:
    if temp is None:
        return "no temp basal was commanded"
    if reply is None:
        what = next((f.get("what") for f in faults if f.get("seq") == temp.get("seq")), None)
        return str(what or "no pump reply")
    payload = reply[1]
    detail = payload.get("reason") or ""
    return f"pump {payload.get('status')}" + (f" ({detail})" if detail else "")


def pred_bgs(forecast: dict[str, Any]) -> dict[str, list[int]] | None:
    """OpenAPS ``predBGs`` from a twin forecast (``Forecast.to_dict()``): 5-minute whole mg/dL arrays."""
    try:
        h = [float(x) for x in forecast["horizons_min"]]
        full = [float(x) for x in forecast["glucose_mg_dl"]]
        carb = [float(x) for x in forecast.get("carb_effect_mg_dl") or [0.0] * len(full)]
    except (KeyError, TypeError, ValueError):
        return None
    if not h or len(h) != len(full) or len(carb) != len(full) or not all(map(math.isfinite, full + carb + h)):
        return None
    no_carbs = [g - c for g, c in zip(full, carb)]
    out = {"IOB": _resample(h, no_carbs)}
    if max(abs(c) for c in carb) >= CARB_VISIBLE_MG_DL:
        out["COB"] = _resample(h, full)
    return out


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
