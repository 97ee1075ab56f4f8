"""A Nightscout profile document (``GET /api/v1/profile``) as a :class:`twin.profile.PatientProfile`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from twin.profile import PatientProfile
from twin.profile_import.common import (NIGHTSCOUT_MG_DL_PER_MMOL_L, Pairs, ProfileImportError, _build,
                                        _check_order, _convert, _names, _number, _timezone, _value_at)
from twin.schedule import format_clock, parse_clock


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
