"""One completed cycle as a Nightscout ``devicestatus``: what the OpenAPS, Loop, pump and uploader pills read.

Pure, standard library only, no clock: the same journal events and the same
:class:`CycleExtras` give the same document. Field by field (the plugin that
reads each field, and where glucotwin's value comes from, is the table in
the README's Nightscout section; the plugins are cgm-remote-monitor's
``lib/plugins/openaps.js``, ``loop.js``, ``iob.js``, ``cob.js``, ``pump.js``
and ``upbat.js``)::

    device, created_at
    openaps.iob       {iob, basaliob, bolusiob, activity, time, timestamp}
    openaps.suggested {bg, temp, rate, duration, units, reason, IOB, COB, eventualBG,
                       sensitivityRatio, predBGs {IOB, ZT, UAM, COB}, carbsReq, carbsReqWithin,
                       deliverAt, timestamp}
    openaps.enacted   the same as the pump did it: rate and units the pump confirmed,
                      received (true only when the pump acknowledged the temp basal),
                      timestamp (the pump's reply, as journaled)
    pump              {clock, reservoir, status {status, suspended, timestamp}, extended}
                      from the pump's own STATUS reply (:mod:`.pump_status`); absent when
                      the pump was not asked this cycle (never made up from the loop's clock)
    uploader          {battery}, and isCharging, when the device has a battery (:mod:`.battery`)
    loop              Loop's shape (name, timestamp, iob, cob, predicted, enacted, failureReason)

What needs the live loop (the twin's forecasts, its carbohydrate on board, the
pump's status, the battery) comes in :class:`CycleExtras`, passed when the cycle
is collected right after it ran; a cycle collected later (a backlog after a
restart) has none of those fields. What the journal holds (the decision, the
pump's replies, the bolus part of insulin on board) is always there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.loop.nightscout.insulin import IobParts
from controller.loop.nightscout.predictions import pred_bgs, whole_forecast

LOOP_NAME = "glucotwin"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time from the journal; a naive one is UTC."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def iso_z(t: datetime) -> str:
    """``2025-01-01T05:03:00.000Z``: what Nightscout's ``toISOString()`` makes of a time."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def units(value: float) -> float:
    """Insulin as Nightscout shows it: 3 decimals (the pump protocol's resolution)."""
    return round(float(value), 3)


def minutes(value: float) -> float | int:
    rounded = round(float(value), 3)
    return int(rounded) if rounded == int(rounded) else rounded


def grams(value: float) -> float | int:
    rounded = round(float(value), 1)
    return int(rounded) if rounded == int(rounded) else rounded


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


@dataclass(frozen=True)
class CycleExtras:
    """What the running loop knows right after a cycle and the journal does not hold.

    forecast: the twin's forecast of the cycle (``Forecast.to_dict()``), on the insulin the
        pump now runs: ``predBGs`` ``IOB``, ``UAM``, ``COB``, ``eventualBG``, Loop's ``predicted``.
    zero_temp_forecast: the same with a zero temp from now on (``predBGs.ZT``).
    cob_g: carbohydrate on board in the twin (stomach, gut, and announced but not yet
        eaten), grams: ``COB``, Loop's ``cob``.
    pump: the pump's STATUS reply as :func:`~controller.loop.nightscout.pump_status.pump_facts`.
    uploader_battery: :func:`~controller.loop.nightscout.battery.read_battery`.
    """

    forecast: dict[str, Any] | None = None
    zero_temp_forecast: dict[str, Any] | None = None
    cob_g: float | None = None
    pump: dict[str, Any] | None = None
    uploader_battery: dict[str, Any] | None = None


@dataclass(frozen=True)
class Enactment:
    """What the pump did with the cycle's commands (from the journaled replies)."""

    temp: dict[str, Any] | None
    """the temp basal command, or None"""
    temp_reply: tuple[str, dict[str, Any]] | None
    """its reply (journal time, payload), or None"""
    confirmed_rate_u_per_h: float | None
    """the rate the pump acknowledged running, None when it did not acknowledge"""
    duration_min: float
    bolus_u: float
    """bolus the pump acknowledged this cycle"""


def devicestatus(c: CycleEvents, time: datetime, done: Enactment, extras: CycleExtras | None = None,
                 iob_parts: IobParts | None = None, device: str = "openaps://glucotwin",
                 loop_status: bool = True) -> dict[str, Any]:
    """The cycle's devicestatus (see the module docstring)."""
    extras = extras or CycleExtras()
    inp = c.decision.get("input") or {}
    dose = c.decision.get("dose") or {}
    diag = dose.get("diagnostics") or {}
    stamp = iso_z(time)
    iob_before = finite(diag.get("iob_u"))
    booked_bolus = finite(c.delivery.get("bolus_u"))
    cycle_bolus = done.bolus_u if booked_bolus is None else booked_bolus
    iob = None if iob_before is None else units(iob_before + cycle_bolus)

    suggested = _suggested(inp, dose, diag, stamp, done.duration_min, iob, extras)
    enacted = _enacted(suggested, done, c.faults)
    openaps: dict[str, Any] = {"suggested": suggested, "enacted": enacted}
    if iob is not None:
        openaps["iob"] = _iob(iob, iob_parts, stamp)
    status: dict[str, Any] = {"device": device, "created_at": stamp, "openaps": openaps}
    if extras.pump is not None:
        status["pump"] = pump_document(extras.pump)
    if extras.uploader_battery is not None:
        status["uploader"] = {"battery": int(extras.uploader_battery["percent"]), "name": LOOP_NAME,
                              "timestamp": stamp}
        status["isCharging"] = bool(extras.uploader_battery.get("charging"))
    if loop_status:
        status["loop"] = _loop(suggested, enacted, iob, stamp, extras)
    return status


def _suggested(inp: dict[str, Any], dose: dict[str, Any], diag: dict[str, Any], stamp: str, duration_min: float,
               iob: float | None, extras: CycleExtras) -> dict[str, Any]:
    suggested: dict[str, Any] = {"temp": "absolute", "rate": round(float(dose.get("basal_u_per_h", 0.0)), 3),
                                 "duration": minutes(duration_min), "reason": str(dose.get("reason", "")),
                                 "deliverAt": stamp, "timestamp": stamp}
    cgm = finite(inp.get("cgm_mg_dl"))
    if cgm is not None:
        suggested["bg"] = int(round(cgm))
    proposed_bolus = finite(dose.get("bolus_u")) or 0.0
    if proposed_bolus > 0:
        suggested["units"] = units(proposed_bolus)
    if iob is not None:
        suggested["IOB"] = iob
    cob = finite(extras.cob_g)
    if cob is not None:
        suggested["COB"] = grams(max(cob, 0.0))
    sensitivity = finite(diag.get("sensitivity_factor"))
    if sensitivity is not None and sensitivity > 0:
        suggested["sensitivityRatio"] = round(1.0 / sensitivity, 2)
    _add_advice(suggested, dose)
    if extras.forecast is not None:
        preds = pred_bgs(extras.forecast, extras.zero_temp_forecast)
        whole = whole_forecast(extras.forecast)
        if preds and whole:
            suggested["predBGs"] = preds
            suggested["eventualBG"] = whole[-1]
    return suggested


def _add_advice(suggested: dict[str, Any], dose: dict[str, Any]) -> None:
    """``carbsReq``/``carbsReqWithin`` and the advice in ``reason`` (oref0's wording first)."""
    advice = advice_of(dose)
    if advice is None:
        return
    carbs = finite(advice.get("carbs_g"))
    if advice["kind"] == "carbs" and carbs is not None and carbs > 0:
        within = finite(advice.get("by_min")) or 0.0
        suggested["carbsReq"] = int(round(carbs))
        suggested["carbsReqWithin"] = int(round(within))
        suggested["reason"] += (f"; {suggested['carbsReq']} add'l carbs req w/in {suggested['carbsReqWithin']}m: "
                                f"{advice.get('message', '')}")
    else:
        suggested["reason"] += f"; advice: {advice.get('message', '')}"


def advice_of(dose: dict[str, Any]) -> dict[str, Any] | None:
    """The advice journaled with a decision's dose (``diagnostics.advice``), or None."""
    advice = (dose.get("diagnostics") or {}).get("advice")
    if not isinstance(advice, dict) or advice.get("kind") not in ("carbs", "high", "site_check"):
        return None
    return advice


def _enacted(suggested: dict[str, Any], done: Enactment, faults: list[dict[str, Any]]) -> dict[str, Any]:
    enacted: dict[str, Any] = {k: v for k, v in suggested.items() if k != "units"}
    if done.temp_reply is not None:
        enacted["timestamp"] = iso_z(parse_time(done.temp_reply[0]))
    if done.confirmed_rate_u_per_h is not None:
        enacted["received"] = True
        enacted["rate"] = round(done.confirmed_rate_u_per_h, 3)
    else:
        enacted["received"] = False
        enacted["reason"] = f"{enacted['reason']}; not enacted: {why_not(done.temp, done.temp_reply, faults)}"
    if done.bolus_u > 0:
        enacted["units"] = done.bolus_u
    return enacted


def _iob(iob: float, parts: IobParts | None, stamp: str) -> dict[str, Any]:
    """OpenAPS' ``iob``: the supervisor's net insulin on board, split into its bolus part (from
    the journal) and the rest (basal above the schedule: negative after a low temp or a
    suspension, as OpenAPS' ``basaliob``), and the insulin activity (U/min)."""
    doc: dict[str, Any] = {"iob": iob}
    if parts is not None:
        bolus = units(max(parts.bolus_iob_u, 0.0))
        doc["bolusiob"] = bolus
        doc["basaliob"] = units(iob - bolus)
        doc["activity"] = round(parts.activity_u_per_min, 4)
    doc["time"] = stamp
    doc["timestamp"] = stamp
    return doc


def why_not(temp: dict[str, Any] | None, reply: tuple[str, dict[str, Any]] | None,
            faults: list[dict[str, Any]]) -> str:
    if temp is None:
        return "no temp basal was commanded"
    if reply is None:
        what = next((f.get("what") for f in faults if f.get("seq") == temp.get("seq")), None)
        return str(what or "no pump reply")
    payload = reply[1]
    detail = payload.get("reason") or ""
    return f"pump {payload.get('status')}" + (f" ({detail})" if detail else "")


def pump_document(facts: dict[str, Any]) -> dict[str, Any]:
    """Nightscout's ``pump`` object from the pump's STATUS reply (:func:`.pump_status.pump_facts`)."""
    clock = iso_z(parse_time(str(facts["time"])))
    if facts.get("suspended"):
        state = "suspended"
    elif facts.get("reservoir_empty"):
        state = "reservoir empty"
    elif facts.get("limit_hold"):
        state = "basal held by the pump's insulin limit"
    else:
        state = "normal"
    extended: dict[str, Any] = {"BaseBasalRate": round(float(facts["scheduled_basal_u_per_h"]), 3),
                                "RunningBasalRate": round(float(facts["running_basal_u_per_h"]), 3)}
    if facts.get("temp_basal_active"):
        extended["TempBasalAbsoluteRate"] = round(float(facts["running_basal_u_per_h"]), 3)
        extended["TempBasalRemaining"] = int(facts["temp_remaining_min"])
    return {"clock": clock, "reservoir": round(float(facts["reservoir_u"]), 3),
            "status": {"status": state, "suspended": bool(facts.get("suspended")), "timestamp": clock},
            "extended": extended}


def _loop(suggested: dict[str, Any], enacted: dict[str, Any], iob: float | None, stamp: str,
          extras: CycleExtras) -> dict[str, Any]:
    """Loop's ``loop`` object (``lib/plugins/loop.js``): the Loop pill and its forecast line."""
    loop: dict[str, Any] = {"name": LOOP_NAME, "timestamp": stamp}
    if iob is not None:
        loop["iob"] = {"iob": iob, "timestamp": stamp}
    if "COB" in suggested:
        loop["cob"] = {"cob": suggested["COB"], "timestamp": stamp}
    whole = whole_forecast(extras.forecast) if extras.forecast is not None else None
    if whole:
        loop["predicted"] = {"startDate": stamp, "values": whole}
    done: dict[str, Any] = {"rate": enacted["rate"], "duration": enacted["duration"],
                            "timestamp": enacted["timestamp"], "received": enacted["received"]}
    if enacted.get("units"):
        done["bolusVolume"] = enacted["units"]
    loop["enacted"] = done
    if not enacted["received"]:
        loop["failureReason"] = enacted["reason"].rpartition("; not enacted: ")[2]
    return loop


def epoch_ms(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(milliseconds=1)
