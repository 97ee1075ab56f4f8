"""What the Nightscout and oref0 importers share: constants, the error, the schedule checks and the profile build."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twin.profile import BasalSegment, PatientProfile
from twin.schedule import MINUTES_PER_DAY, ScheduleSegment, format_clock, time_weighted_mean

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
