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

``devicestatus``, one per completed cycle
    What Nightscout's OpenAPS, Loop, pump and uploader-battery pills read:
    ``openaps.iob`` / ``suggested`` / ``enacted`` (with ``predBGs`` ``IOB``, ``ZT``,
    ``UAM``, ``COB``), ``pump`` from the pump's own status, ``uploader`` where the
    device has a battery, and Loop's ``loop`` object. Field by field in
    :mod:`controller.loop.nightscout.devicestatus` (and the lines in
    :mod:`~controller.loop.nightscout.predictions`); ``carbsReq`` (whole grams) and
    ``carbsReqWithin`` (minutes), as oref0's determine-basal reports them, while a
    carbohydrate advice stands.

``profile``, when it changes
    :mod:`controller.loop.nightscout.profile` (queued by the loop, not from the journal).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.loop.nightscout.devicestatus import (
    CycleEvents,
    CycleExtras,
    Enactment,
    advice_of,
    devicestatus,
    epoch_ms,
    iso_z,
    parse_time,
)
from controller.loop.nightscout.devicestatus import finite as _finite
from controller.loop.nightscout.devicestatus import grams as _carbs
from controller.loop.nightscout.devicestatus import minutes as _minutes
from controller.loop.nightscout.devicestatus import units as _units
from controller.loop.nightscout.insulin import IobParts
from controller.loop.nightscout.predictions import pred_bgs  # noqa: F401 - re-exported (tests, older callers)

DEVICE = "openaps://glucotwin"
ENTERED_BY = "glucotwin"
COLLECTIONS = ("entries", "treatments", "devicestatus", "profile")
DEXCOM_LOW_CODE = 39
SENSOR_LOW_MG_DL = 40.0

Doc = tuple[str, str, dict[str, Any]]
"""(collection, key, document): ``key`` is the document's stable identity (its Nightscout dedup fields)."""


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


def announcement_treatment(time: datetime, advice: dict[str, Any]) -> dict[str, Any]:
    """New advice as a Nightscout ``Announcement`` (message and reason in ``notes``)."""
    notes = str(advice.get("message") or advice.get("kind"))
    if advice.get("reason"):
        notes = f"{notes} ({advice['reason']})"
    return {"eventType": "Announcement", "created_at": iso_z(time), "enteredBy": ENTERED_BY, "notes": notes}


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


def cycle_documents(c: CycleEvents, extras: CycleExtras | dict[str, Any] | None = None, device: str = DEVICE,
                    iob_parts: IobParts | None = None, loop_status: bool = True) -> list[Doc]:
    """The treatments and the devicestatus of one completed cycle (see the module docstring).

    ``extras``: what the live loop adds (:class:`CycleExtras`); a plain dict is taken as the
    twin's forecast alone (``Forecast.to_dict()``). ``iob_parts``: the bolus part of insulin
    on board and the insulin activity, rebuilt from the journal's deliveries by the uploader.
    """
    if isinstance(extras, dict):
        extras = CycleExtras(forecast=extras)
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

    done = Enactment(temp, temp_reply, confirmed_rate, duration, bolus)
    status = devicestatus(c, time, done, extras, iob_parts, device, loop_status)
    docs.append(("devicestatus", f"devicestatus|{device}|{status['created_at']}", status))
    return docs
