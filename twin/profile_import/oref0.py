"""An oref0 ``profile.json`` as a :class:`twin.profile.PatientProfile`, and oref0's caps as suggested limits."""

from __future__ import annotations

from typing import Any, Sequence

from twin.profile import PatientProfile
from twin.profile_import.common import (LimitSuggestion, OREF0_DEFAULT_MAX_DAILY_SAFETY_MULTIPLIER,
                                        OREF0_GRAMS_PER_EXCHANGE, OREF0_MG_DL_PER_MMOL_L, Pairs,
                                        ProfileImportError, _build, _check_order, _convert, _number,
                                        _optional_number, _timezone)
from twin.schedule import MINUTES_PER_DAY, format_clock, parse_clock


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
