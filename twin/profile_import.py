"""Import a person's therapy profile from a Nightscout profile document or an oref0 ``profile.json``.

Both hold what the clinic programmed by time of day: basal rates, carb ratios, correction factors
(ISF) and targets. :func:`from_nightscout_profile` and :func:`from_oref0_profile` read them into a
:class:`twin.profile.PatientProfile` and return, beside it, the notes a person must read: every
conversion, assumption and setting not carried over. Nothing is guessed silently; a document that
is incomplete or that :class:`PatientProfile` would refuse raises one :class:`ProfileImportError`
naming the field. (The live configuration's stricter ranges, which know the total daily insulin,
are checked by the caller: ``glucotwin profile import`` runs the result through ``parse_config``.)

Formats, as their software reads them:

- Nightscout (cgm-remote-monitor ``lib/profilefunctions.js``, ``GET /api/v1/profile``: records
  newest first): ``{defaultProfile, startDate, units, store: {name: {dia, timezone, units,
  basal, carbratio, sens, target_low, target_high}}}``, each schedule ``[{time: "HH:MM",
  timeAsSeconds, value}]`` (the value from the last entry whose time has passed; a record without
  ``store`` is one legacy profile, "Default"). Units ``mmol`` are converted with Nightscout's
  ``MMOL_TO_MGDL`` (``lib/constants.json``: 18.01559 since 15.0.4; 18 until 14.2.x).
- oref0 (``lib/profile/*.js``, written by ``oref0-get-profile``): ``basalprofile [{i, start
  "HH:MM:SS", minutes, rate}]``, ``isfProfile {units, sensitivities [{offset, sensitivity}]}``,
  ``bg_targets {units, targets [{offset, low, high}]}``, ``carb_ratios {units "grams" |
  "exchanges", schedule [{offset, ratio}]}``, offsets in minutes after midnight; ``dia``,
  ``max_iob``, ``max_basal``, ``max_daily_safety_multiplier``, ``current_basal_safety_multiplier``.
  mmol/L is converted with oref0's factor 18 (``bin/oref0-get-profile.js``).

The single reference values of the profile (``carb_ratio_g_per_u``, ``correction_factor_mg_dl_per_u``,
``target_mg_dl``; the twin is personalized from them) are the time-weighted means of the schedules.
Neither format holds the total daily insulin: without one, it is estimated as daily basal / 0.5
(the common 50 % basal rule) and the notes say so. The schedules' clock becomes the profile's
``timezone`` (glucotwin reads every schedule at the local time of day there,
:meth:`PatientProfile.minute_of_day`); a document without one leaves it empty, and glucotwin then
reads the schedules at the UTC time of day, which the notes say too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twin.profile import BasalSegment, PatientProfile
from twin.schedule import MINUTES_PER_DAY, ScheduleSegment, format_clock, parse_clock, time_weighted_mean

NIGHTSCOUT_MG_DL_PER_MMOL_L = 18.01559  # cgm-remote-monitor lib/constants.json MMOL_TO_MGDL (since 15.0.4)
OREF0_MG_DL_PER_MMOL_L = 18.0  # oref0 bin/oref0-get-profile.js: ISF and targets in mmol/L "* 18"
OREF0_GRAMS_PER_EXCHANGE = 12.0  # oref0 lib/profile/carbs.js: ratio = 12 / ratio for "exchanges"
BASAL_SHARE_OF_TDI = 0.5  # the common rule of thumb: basal is about half of the total daily insulin
# oref0 lib/basal-set-temp.js getMaxSafeBasal: the defaults when the profile has none
OREF0_DEFAULT_MAX_DAILY_SAFETY_MULTIPLIER = 3.0
OREF0_DEFAULT_CURRENT_BASAL_SAFETY_MULTIPLIER = 4.0

Pairs = list[tuple[int, float]]
"""A schedule while it is read: (minute after midnight, value), from 00:00, increasing."""


class ProfileImportError(ValueError):
    """The document cannot be imported (one line naming the field and what is wrong)."""


@dataclass(frozen=True)
class LimitSuggestion:
    """A ``[limits]`` value derived from the source's own safety settings; suggested, never applied."""

    key: str
    value: float
    how: str


def detect_format(doc: Any) -> str:
    """``"nightscout"`` or ``"oref0"``, from the document's keys; ProfileImportError when it is neither."""
    records = doc if isinstance(doc, list) else [doc]
    if records and all(isinstance(r, dict) for r in records):
        if all("store" in r or ("basal" in r and "sens" in r) for r in records):
            return "nightscout"
        if isinstance(doc, dict) and ("basalprofile" in doc or "isfProfile" in doc or "bg_targets" in doc):
            return "oref0"
    raise ProfileImportError("neither a Nightscout profile (records with a store) nor an oref0 profile.json "
                             "(basalprofile, isfProfile, bg_targets)")


# --- Nightscout -----------------------------------------------------------------------------------


def from_nightscout_profile(doc: Any, *, weight_kg: float, age_years: float,
                            total_daily_insulin_u: float | None = None, profile_name: str | None = None,
                            name: str | None = None, timezone: str | None = None) -> tuple[PatientProfile, tuple[str, ...]]:
    """A profile from a Nightscout profile document (one record, or the list ``/api/v1/profile`` returns).

    The newest record (by ``startDate``) is read; in it ``store[profile_name]``, or
    ``store[defaultProfile]``. ``name`` is the profile's name (default: the store entry's name);
    ``timezone`` the IANA zone of the schedules' clock (default: the entry's ``timezone``; "" for UTC).
    Returns the profile and the notes (conversions, assumptions, settings not carried over).
    """
    notes: list[str] = []
    record = _newest_record(doc, notes)
    store = record.get("store")
    if not isinstance(store, dict) or not store:
        raise ProfileImportError("Nightscout profile: the record's store holds no profile")
    chosen = profile_name if profile_name is not None else record.get("defaultProfile")
    if not isinstance(chosen, str) or not chosen:
        raise ProfileImportError(f"Nightscout profile: no defaultProfile in the record; choose one of "
                                 f"{_names(store)}")
    if chosen not in store:
        raise ProfileImportError(f"Nightscout profile: no profile {chosen!r} in the store; it holds {_names(store)}")
    entry = store[chosen]
    if not isinstance(entry, dict):
        raise ProfileImportError(f"Nightscout profile {chosen!r}: must be an object, got {type(entry).__name__}")
    where = f"Nightscout profile {chosen!r}"
    how = "profile_name" if profile_name is not None else "the record's defaultProfile"
    others = [n for n in store if n != chosen]
    notes.insert(0, f"source: {where} ({how}), record startDate {record.get('startDate', 'not given')}"
                 + (f"; not imported from the same record: {', '.join(repr(n) for n in others)}" if others else ""))

    per_mmol = _nightscout_units(entry.get("units") or record.get("units"), where, notes)  # as oref0 get_profile.py
    basal = _ns_schedule(entry.get("basal"), f"{where}: basal")
    carb_ratio = _ns_schedule(entry.get("carbratio"), f"{where}: carbratio")
    sens = _convert(_ns_schedule(entry.get("sens"), f"{where}: sens"), per_mmol)
    low = _convert(_ns_schedule(entry.get("target_low"), f"{where}: target_low"), per_mmol)
    high = _convert(_ns_schedule(entry.get("target_high"), f"{where}: target_high"), per_mmol)
    target = _midpoint(low, high, where)
    notes.append("target: the middle of target_low..target_high at each time (at the times of both); glucotwin "
                 "aims at one value, not a range")
    if "dia" in entry:
        notes.append(f"dia {_number(entry['dia'], f'{where}: dia'):g} h: not imported; glucotwin's insulin action "
                     "is its twin model's own, and the safety supervisor's insulin on board uses "
                     "[limits] iob_action_duration_min (default 600 min)")
    zone = _timezone(entry.get("timezone"), timezone, where, notes,
                     "not given (Nightscout then uses its server's zone)")
    ignored = sorted(k for k in entry if k not in _NIGHTSCOUT_KEYS)
    if ignored:
        notes.append(f"not imported: {', '.join(ignored)}")
    profile = _build(name if name is not None else chosen, weight_kg, age_years, total_daily_insulin_u,
                     basal, carb_ratio, sens, target, zone, where, notes)
    return profile, tuple(notes)


_NIGHTSCOUT_KEYS = {"basal", "carbratio", "sens", "target_low", "target_high", "units", "dia", "timezone"}


def _newest_record(doc: Any, notes: list[str]) -> dict[str, Any]:
    records = doc if isinstance(doc, list) else [doc]
    if not records:
        raise ProfileImportError("Nightscout profile: the document is an empty list (no profile records)")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ProfileImportError(f"Nightscout profile: record {i} must be an object, got {type(record).__name__}")
    records = [_with_store(r) for r in records]
    newest = max(range(len(records)), key=lambda i: (_start_date(records[i].get("startDate")), -i))
    if len(records) > 1:
        notes.append(f"{len(records) - 1} older profile record(s) in the document not imported (the newest "
                     "startDate is in force)")
    return records[newest]


def _with_store(record: dict[str, Any]) -> dict[str, Any]:
    """A legacy record (the profile itself, no store) as Nightscout converts it: store {"Default": record}."""
    if "store" in record or "basal" not in record:
        return record
    return {"defaultProfile": "Default", "store": {"Default": record},
            "startDate": record.get("startDate", "1980-01-01"), "units": record.get("units")}


def _start_date(text: Any) -> datetime:
    """A record's startDate for choosing the newest; unreadable counts as Nightscout's legacy 1980-01-01."""
    if isinstance(text, str):
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return t if t.tzinfo else t.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime(1980, 1, 1, tzinfo=UTC)


def _nightscout_units(units: Any, where: str, notes: list[str]) -> float:
    """mg/dL per unit of the profile's glucose values (1 for mg/dL)."""
    if units is None:
        notes.append("units: not given; read as mg/dL, as Nightscout does")
        return 1.0
    text = str(units).strip().lower()
    if "mmol" in text:
        notes.append(f"units: mmol/L; sens and targets converted to mg/dL x {NIGHTSCOUT_MG_DL_PER_MMOL_L} "
                     "(Nightscout lib/constants.json MMOL_TO_MGDL), rounded to 0.1")
        return NIGHTSCOUT_MG_DL_PER_MMOL_L
    if text in ("mg/dl", "mgdl", "mg"):
        return 1.0
    raise ProfileImportError(f"{where}: units {units!r} is neither mg/dl nor mmol")


def _ns_schedule(entries: Any, where: str) -> Pairs:
    """``[{time: "HH:MM", timeAsSeconds, value}, ...]`` (or one number: all day) as (minute, value) pairs."""
    if isinstance(entries, (int, float, str)) and not isinstance(entries, bool):
        return [(0, _number(entries, where))]
    if not isinstance(entries, list) or not entries:
        raise ProfileImportError(f"{where}: missing or empty (needs [{{time: \"HH:MM\", value}}, ...])")
    pairs: Pairs = []
    for i, item in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or "value" not in item:
            raise ProfileImportError(f"{at}: must be {{time: \"HH:MM\", value}}, got {item!r}")
        minute = _ns_minute(item, at)
        pairs.append((minute, _number(item["value"], f"{at} ({format_clock(minute)})")))
    _check_order(pairs, where)
    return pairs


def _ns_minute(item: dict[str, Any], at: str) -> int:
    seconds = item.get("timeAsSeconds")
    from_seconds = None
    if seconds is not None:
        s = _number(seconds, f"{at}.timeAsSeconds")
        if not (s == int(s) and 0 <= s < 86400 and int(s) % 60 == 0):
            raise ProfileImportError(f"{at}.timeAsSeconds = {seconds!r}: must be whole minutes of a day (0..86340)")
        from_seconds = int(s) // 60
    if "time" in item:
        try:
            minute = parse_clock(item["time"])
        except ValueError as exc:
            raise ProfileImportError(f"{at}.time: {exc}") from None
        if from_seconds is not None and from_seconds != minute:
            raise ProfileImportError(f"{at}: time {item['time']!r} and timeAsSeconds {seconds!r} "
                                     f"({format_clock(from_seconds)}) disagree")
        return minute
    if from_seconds is None:
        raise ProfileImportError(f"{at}: needs time (\"HH:MM\") or timeAsSeconds")
    return from_seconds


def _midpoint(low: Pairs, high: Pairs, where: str) -> Pairs:
    out: Pairs = []
    for minute in sorted({m for m, _ in low} | {m for m, _ in high}):
        lo, hi = _value_at(low, minute), _value_at(high, minute)
        if hi < lo:
            raise ProfileImportError(f"{where}: target_high {hi:g} is below target_low {lo:g} at {format_clock(minute)}")
        value = (lo + hi) / 2.0
        if not out or out[-1][1] != value:
            out.append((minute, value))
    return out


# --- oref0 ----------------------------------------------------------------------------------------


def from_oref0_profile(doc: Any, *, weight_kg: float, age_years: float, total_daily_insulin_u: float | None = None,
                       name: str | None = None, timezone: str | None = None) -> tuple[PatientProfile, tuple[str, ...]]:
    """A profile from an oref0 ``profile.json`` (``name`` default: "oref0"; ``timezone`` default: the profile's
    ``timezone`` if it has one, which oref0's own files rarely do: they run on the rig's local clock).

    Returns the profile and the notes; the source's safety settings become suggested ``[limits]``
    values in the notes (:func:`oref0_limit_suggestions`), never applied.
    """
    if not isinstance(doc, dict):
        raise ProfileImportError(f"oref0 profile: must be an object, got {type(doc).__name__}")
    where = "oref0 profile"
    notes = [f"source: {where}"]
    basal = _oref0_basal(doc.get("basalprofile"), where)
    sens = _oref0_isf(doc, where, notes)
    target = _oref0_targets(doc, where, notes)
    carb_ratio = _oref0_carb_ratios(doc, where, notes)
    if "dia" in doc:
        notes.append(f"dia {_number(doc['dia'], f'{where}: dia'):g} h"
                     + (f", curve {doc['curve']!r}" if isinstance(doc.get("curve"), str) else "")
                     + ": not imported; glucotwin's insulin action is its twin model's own, and the safety "
                       "supervisor's insulin on board uses [limits] iob_action_duration_min (default 600 min)")
    zone = _timezone(doc.get("timezone"), timezone, where, notes,
                     "not in the profile (oref0 reads its schedules on the rig's local clock)")
    profile = _build(name if name is not None else "oref0", weight_kg, age_years, total_daily_insulin_u,
                     basal, carb_ratio, sens, target, zone, where, notes)
    suggestions = oref0_limit_suggestions(doc)
    if suggestions:
        notes.append("oref0's own caps are not applied; [limits] values matching them are suggested: "
                     + ", ".join(f"{s.key} = {s.value:g}" for s in suggestions))
    if "max_iob" not in doc:
        notes.append("max_iob: not in the profile (oref0 would use 0: no insulin above the basal)")
    return profile, tuple(notes)


def oref0_limit_suggestions(doc: dict[str, Any]) -> tuple[LimitSuggestion, ...]:
    """``[limits]`` values matching oref0's caps: max_iob, getMaxSafeBasal (without its current-rate term), and
    current_basal_safety_multiplier. Glucotwin's own ranges may refuse them; the caller checks."""
    out: list[LimitSuggestion] = []
    where = "oref0 profile"
    if "max_iob" in doc:
        out.append(LimitSuggestion("max_iob_u", _number(doc["max_iob"], f"{where}: max_iob"),
                                   "oref0 max_iob: the most net insulin on board it adds with temps and SMBs; "
                                   "glucotwin's is on board above the scheduled basal"))
    if "max_basal" in doc:
        max_basal = _number(doc["max_basal"], f"{where}: max_basal")
        mdsm = _optional_number(doc.get("max_daily_safety_multiplier"), OREF0_DEFAULT_MAX_DAILY_SAFETY_MULTIPLIER)
        largest = max(rate for _, rate in _oref0_basal(doc.get("basalprofile"), where))
        cap = min(max_basal, mdsm * largest)
        out.append(LimitSuggestion("max_basal_u_per_h", round(cap, 3),
                                   f"oref0 min(max_basal {max_basal:g}, max_daily_safety_multiplier {mdsm:g} x "
                                   f"largest basal {largest:g})"))
    cbsm = _optional_number(doc.get("current_basal_safety_multiplier"), None)
    if cbsm is not None:
        out.append(LimitSuggestion("max_basal_multiple", cbsm, "oref0 current_basal_safety_multiplier"))
    return tuple(out)


def _oref0_basal(entries: Any, where: str) -> Pairs:
    if not isinstance(entries, list) or not entries:
        raise ProfileImportError(f"{where}: basalprofile missing or empty (needs [{{minutes, rate}}, ...])")
    if all(isinstance(e, dict) and isinstance(e.get("i"), int) for e in entries):
        entries = sorted(entries, key=lambda e: e["i"])  # lib/profile/basal.js sorts by i
    return _oref0_schedule(entries, f"{where}: basalprofile", "minutes", "rate")


def _oref0_isf(doc: dict[str, Any], where: str, notes: list[str]) -> Pairs:
    isf = doc.get("isfProfile")
    if isf is None and "sens" in doc:
        notes.append("isfProfile: not in the profile; its current sens applied all day")
        return [(0, _number(doc["sens"], f"{where}: sens"))]
    if not isinstance(isf, dict) or not isinstance(isf.get("sensitivities"), list) or not isf["sensitivities"]:
        raise ProfileImportError(f"{where}: isfProfile.sensitivities missing or empty")
    per_mmol = _oref0_units(isf.get("units"), f"{where}: isfProfile.units", "sensitivities", notes)
    if not all(isinstance(e, dict) for e in isf["sensitivities"]):
        raise ProfileImportError(f"{where}: isfProfile.sensitivities entries must be objects")
    entries = sorted(isf["sensitivities"], key=lambda e: _number(e.get("offset", 0), f"{where}: isfProfile offset"))
    return _convert(_oref0_schedule(entries, f"{where}: isfProfile.sensitivities", "offset", "sensitivity"), per_mmol)


def _oref0_targets(doc: dict[str, Any], where: str, notes: list[str]) -> Pairs:
    override = doc.get("target_bg")
    if isinstance(override, (int, float)) and not isinstance(override, bool) and override:
        notes.append(f"target: target_bg {override:g} mg/dL all day (oref0's override of the pump's targets)")
        return [(0, _number(override, f"{where}: target_bg"))]
    targets = doc.get("bg_targets")
    if targets is None and "min_bg" in doc and "max_bg" in doc:
        value = (_number(doc["min_bg"], f"{where}: min_bg") + _number(doc["max_bg"], f"{where}: max_bg")) / 2.0
        notes.append("bg_targets: not in the profile; the middle of its current min_bg..max_bg applied all day")
        return [(0, round(value, 1))]
    if not isinstance(targets, dict) or not isinstance(targets.get("targets"), list) or not targets["targets"]:
        raise ProfileImportError(f"{where}: bg_targets.targets missing or empty")
    per_mmol = _oref0_units(targets.get("units"), f"{where}: bg_targets.units", "targets", notes)
    notes.append("target: each segment's low (oref0 lib/profile/targets.js sets high = low and aims at it)")
    return _convert(_oref0_schedule(targets["targets"], f"{where}: bg_targets.targets", "offset", "low"), per_mmol)


def _oref0_carb_ratios(doc: dict[str, Any], where: str, notes: list[str]) -> Pairs:
    ratios = doc.get("carb_ratios")
    if ratios is None and "carb_ratio" in doc:
        notes.append("carb_ratios: not in the profile; its current carb_ratio applied all day")
        return [(0, _number(doc["carb_ratio"], f"{where}: carb_ratio"))]
    if not isinstance(ratios, dict) or not isinstance(ratios.get("schedule"), list) or not ratios["schedule"]:
        raise ProfileImportError(f"{where}: carb_ratios.schedule missing or empty (and no carb_ratio)")
    pairs = _oref0_schedule(ratios["schedule"], f"{where}: carb_ratios.schedule", "offset", "ratio")
    units = ratios.get("units")
    if units == "grams":
        return pairs
    if units == "exchanges":
        if any(v <= 0 for _, v in pairs):
            raise ProfileImportError(f"{where}: carb_ratios in exchanges must be positive")
        notes.append(f"carb_ratios: in exchanges (U per exchange); g/U = {OREF0_GRAMS_PER_EXCHANGE:g} / ratio "
                     "(oref0 lib/profile/carbs.js)")
        return [(m, round(OREF0_GRAMS_PER_EXCHANGE / v, 2)) for m, v in pairs]
    raise ProfileImportError(f"{where}: carb_ratios.units {units!r} must be \"grams\" or \"exchanges\"")


def _oref0_units(units: Any, where: str, what: str, notes: list[str]) -> float:
    if units in ("mg/dL", "mg/dl"):
        return 1.0
    if units in ("mmol/L", "mmol"):
        notes.append(f"{what}: mmol/L converted to mg/dL x {OREF0_MG_DL_PER_MMOL_L:g} (oref0 bin/oref0-get-profile.js), "
                     "rounded to 0.1")
        return OREF0_MG_DL_PER_MMOL_L
    raise ProfileImportError(f"{where} = {units!r}: must be \"mg/dL\" or \"mmol/L\" (as oref0-get-profile requires)")


def _oref0_schedule(entries: Sequence[Any], where: str, minute_key: str, value_key: str) -> Pairs:
    """oref0 entries: the minute from ``minute_key`` (minutes after midnight), else ``start`` ("HH:MM:SS")."""
    pairs: Pairs = []
    for i, item in enumerate(entries):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or value_key not in item:
            raise ProfileImportError(f"{at}: must be {{{minute_key}, {value_key}}}, got {item!r}")
        minute = None
        if minute_key in item:
            m = _number(item[minute_key], f"{at}.{minute_key}")
            if not (m == int(m) and 0 <= m < MINUTES_PER_DAY):
                raise ProfileImportError(f"{at}.{minute_key} = {item[minute_key]!r}: must be a whole minute of the day "
                                         "(0..1439; oref0 offsets are minutes after midnight)")
            minute = int(m)
        if "start" in item:
            try:
                start = parse_clock(item["start"])
            except ValueError as exc:
                raise ProfileImportError(f"{at}.start: {exc}") from None
            if minute is not None and minute != start:
                raise ProfileImportError(f"{at}: {minute_key} {minute} ({format_clock(minute)}) and start "
                                         f"{item['start']!r} disagree")
            minute = start
        if minute is None:
            raise ProfileImportError(f"{at}: needs {minute_key} (minutes after midnight) or start (\"HH:MM:SS\")")
        pairs.append((minute, _number(item[value_key], f"{at}.{value_key} ({format_clock(minute)})")))
    _check_order(pairs, where)
    return pairs


# --- shared ---------------------------------------------------------------------------------------


def _build(name: str, weight_kg: float, age_years: float, tdi_u: float | None, basal: Pairs, carb_ratio: Pairs,
           sens: Pairs, target: Pairs, timezone: str, where: str, notes: list[str]) -> PatientProfile:
    try:
        basal_schedule = tuple(BasalSegment(m, v) for m, v in basal)
        cr, cf, tgt = (tuple(ScheduleSegment(m, float(v)) for m, v in pairs) for pairs in (carb_ratio, sens, target))
    except ValueError as exc:
        raise ProfileImportError(f"{where}: {exc}") from None
    daily_basal_u = sum(v * (end - m) / 60.0 for (m, v), end in zip(basal, [m for m, _ in basal[1:]] + [MINUTES_PER_DAY]))
    if tdi_u is None:
        if daily_basal_u <= 0:
            raise ProfileImportError(f"{where}: the basal schedule delivers 0 U/day; give the total daily insulin (--tdi)")
        tdi_u = round(daily_basal_u / BASAL_SHARE_OF_TDI, 1)
        notes.append(f"ASSUMPTION: total_daily_insulin_u = {tdi_u:g} U, estimated as daily basal {daily_basal_u:.2f} U "
                     f"/ {BASAL_SHARE_OF_TDI:g} (the common 50 % basal rule); replace it with the real total "
                     "(--tdi): the twin is personalized from it and the limits' defaults are shares of it")
    means = [round(time_weighted_mean(s), d) for s, d in ((cr, 2), (cf, 2), (tgt, 1))]
    if any(len(s) > 1 for s in (cr, cf, tgt)):
        notes.append("carb_ratio_g_per_u, correction_factor_mg_dl_per_u, target_mg_dl: the time-weighted means of "
                     "their schedules (the twin is personalized from them; the loop doses with the value at each time)")
    try:
        return PatientProfile(
            name=name, weight_kg=float(weight_kg), total_daily_insulin_u=float(tdi_u),
            carb_ratio_g_per_u=means[0], correction_factor_mg_dl_per_u=means[1], age_years=float(age_years),
            basal_schedule=basal_schedule, target_mg_dl=means[2],
            carb_ratio_schedule=cr if len(cr) > 1 else (), correction_factor_schedule=cf if len(cf) > 1 else (),
            target_schedule=tgt if len(tgt) > 1 else (), timezone=timezone)
    except ValueError as exc:
        raise ProfileImportError(f"{where}: refused: {exc}{_units_hint(exc)}") from None


def _units_hint(exc: ValueError) -> str:
    text = str(exc)
    if ("target" in text or "correction_factor" in text) and "got" in text:
        try:
            value = float(text.rsplit("got", 1)[1].strip().rstrip(")"))
        except ValueError:
            return ""
        if value < 30:
            return " (a glucose value this small looks like mmol/L: check the profile's units)"
    return ""


def _check_order(pairs: Pairs, where: str) -> None:
    if pairs[0][0] != 0:
        raise ProfileImportError(f"{where}: the first entry must start at 00:00, got {format_clock(pairs[0][0])}")
    for (a, _), (b, _) in zip(pairs, pairs[1:]):
        if b <= a:
            raise ProfileImportError(f"{where}: entries must be in increasing time order ({format_clock(b)} after "
                                     f"{format_clock(a)})")


def _convert(pairs: Pairs, mg_dl_per_unit: float) -> Pairs:
    if mg_dl_per_unit == 1.0:
        return pairs
    return [(m, round(v * mg_dl_per_unit, 1)) for m, v in pairs]


def _value_at(pairs: Pairs, minute: int) -> float:
    value = pairs[0][1]
    for m, v in pairs:
        if m <= minute:
            value = v
    return value


def _number(value: Any, where: str) -> float:
    """A finite number; a numeric string too (Nightscout's editor stores some values as strings)."""
    if isinstance(value, bool):
        raise ProfileImportError(f"{where}: must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProfileImportError(f"{where}: must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ProfileImportError(f"{where}: must be a finite number, got {value!r}")
    return number


def _optional_number(value: Any, default: float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _names(store: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in store) or "nothing"


def _timezone(given: Any, override: str | None, where: str, notes: list[str], unknown_zone: str) -> str:
    """The profile's ``timezone``: ``override`` when set, else the document's (Loop's ``ETC/`` spelled ``Etc/``, as
    Nightscout's getTimezone works around it). glucotwin reads every schedule at the local time of day in it
    (:meth:`PatientProfile.minute_of_day`); empty: at the UTC time of day, the live loop's clock."""
    if override is not None:
        zone = override.strip()
        said = f"the document says {given!r}" if given else "the document has none"
        notes.append(f"timezone {zone!r} (given; {said}): every schedule is read at the local time of day there"
                     if zone else f"timezone: none (given; {said}): every schedule is read at the UTC time of day")
        return zone
    if not isinstance(given, str) or not given.strip():
        notes.append(f"timezone: {unknown_zone}; glucotwin then reads every schedule at the UTC time of day (its "
                     "loop's clock): where the person's clock is not UTC, give the zone (--timezone), or every "
                     "segment starts at the wrong local time")
        return ""
    zone = given.strip()
    if zone.upper().startswith("ETC/"):
        zone = "Etc/" + zone[4:]
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ProfileImportError(f"{where}: timezone {given!r} is not an IANA time zone this system knows; give the "
                                 "zone of the schedules' clock with --timezone (e.g. \"Europe/Paris\")") from None
    notes.append(f"timezone {zone!r}" + (f" (written {given!r})" if zone != given else "")
                 + ": every schedule is read at the local time of day there (across daylight-saving changes, where "
                   "the zone has them), as the profile's clock reads it")
    return zone
