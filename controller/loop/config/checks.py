"""The checks of the live configuration against the table of :mod:`controller.loop.config.ranges`.

:func:`check_config` type- and range-checks a parsed TOML mapping key by key,
in the table's order, so that a bound relative to earlier keys sees their
checked values; every refusal is one :class:`ConfigError` line naming the key,
the value and the allowed range.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from controller.loop.config.ranges import (
    DAILY_BASAL_TDI_SHARE,
    REQUIRED,
    SECTIONS,
    Bound,
    ConfigError,
    Context,
    Setting,
    format_number,
    settings_of,
    toml_repr,
)


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:  # a key without its unit suffix: "rate" for "rate_u_per_h"
        close = [k for k in known if len(key) >= 3 and k.startswith(key)][:1]
    return f" (did you mean {close[0]}?)" if close else ""


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    return ConfigError(f"{where}: unknown key {key!r}{_suggest(key, known)}; known keys: {', '.join(known)}")


def _type_error(s: Setting, where: str, value: Any) -> str | None:
    """Why ``value`` has the wrong type for ``s`` (None if it is fine)."""
    if s.kind == "bool":
        if not isinstance(value, bool):
            return f"{where} = {toml_repr(value)}: must be a TOML boolean (true or false, without quotes)"
    elif s.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{where} = {toml_repr(value)}: must be an integer (without quotes or a decimal point)"
    elif s.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            unit = f" ({s.unit})" if s.unit else ""
            return f"{where} = {toml_repr(value)}: must be a number{unit}, without quotes"
        if not math.isfinite(value):
            return f"{where} = {toml_repr(value)}: must be a finite number"
    elif s.kind in ("str", "choice"):
        if not isinstance(value, str):
            return f"{where} = {toml_repr(value)}: must be a string (in double quotes)"
    return None


def _bound(b: float | Bound | None, ctx: Context) -> tuple[float | None, str]:
    if b is None or isinstance(b, (int, float)):
        return b, ""
    return b.compute(ctx)


def _range_text(s: Setting, lo: float | None, hi: float | None) -> str:
    unit = f" {s.unit}" if s.unit and s.unit != "x" else ""
    if lo is not None and hi is not None:
        return f"between {format_number(lo)} and {format_number(hi)}{unit}"
    if lo is not None:
        return f"at least {format_number(lo)}{unit}"
    return f"at most {format_number(hi)}{unit}"


def _check_value(s: Setting, where: str, value: Any, ctx: Context) -> None:
    problem = _type_error(s, where, value)
    if problem:
        raise ConfigError(problem)
    if s.choices:
        if value not in s.choices:
            allowed = ", ".join(toml_repr(c) for c in s.choices)
            why = f" ({s.reason})" if s.kind == "bool" else ""
            raise ConfigError(f"{where} = {toml_repr(value)}: must be {'one of ' if len(s.choices) > 1 else ''}"
                              f"{allowed}{why}")
        return
    if s.pattern is not None and not re.fullmatch(s.pattern, value):
        raise ConfigError(f"{where} = {toml_repr(value)}: must be {s.pattern_doc}")
    if s.kind in ("float", "int"):
        lo, lo_how = _bound(s.low, ctx)
        hi, hi_how = _bound(s.high, ctx)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            hows = []
            if lo_how:
                hows.append(f"lowest: {lo_how}")
            if hi_how:
                hows.append(f"highest: {hi_how}")
            default = s.default
            if isinstance(default, Bound) or (default is not REQUIRED and default is not None):
                d = default.compute(ctx)[0] if isinstance(default, Bound) else default
                hows.append(f"default {toml_repr(d) if not isinstance(d, float) else format_number(d)}"
                            + (f" = {default.doc}" if isinstance(default, Bound) else ""))
            detail = f" ({'; '.join(hows)})" if hows else ""
            raise ConfigError(f"{where} = {toml_repr(value)}: must be {_range_text(s, lo, hi)}{detail}")


SCHEDULE_VALUE_KEYS = {"basal": "rate_u_per_h", "carb_ratio_schedule": "g_per_u",
                       "correction_factor_schedule": "mg_dl_per_u", "target_schedule": "mg_dl"}
"""The value's key in each time-of-day schedule's segments (``{start = "HH:MM", <key> = ...}``)."""


def _segments(s: Setting, value: Any, ctx: Context) -> tuple[tuple[int, float], ...]:
    """A time-of-day schedule: ``[{start = "HH:MM", <value key> = ...}, ...]`` from 00:00, increasing, each value
    in the setting's range."""
    where, vkey = s.name, SCHEDULE_VALUE_KEYS[s.key]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where} = {toml_repr(value)}: must be a list of {{start = \"HH:MM\", {vkey} = ...}}")
    rate_setting = Setting("profile", vkey, "float", REQUIRED, s.reason, s.unit, s.low, s.high)
    segments: list[tuple[int, float]] = []
    for i, seg in enumerate(value):
        at = f"[profile] {s.key}[{i}]"
        if not isinstance(seg, dict):
            raise ConfigError(f"{at} = {toml_repr(seg)}: must be {{start = \"HH:MM\", {vkey} = ...}}")
        for key in seg:
            if key not in ("start", vkey):
                raise _unknown(at, key, ["start", vkey])
        for key in ("start", vkey):
            if key not in seg:
                raise ConfigError(f"{at} needs {key}")
        start = seg["start"]
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", start) if isinstance(start, str) else None
        if m is None:
            raise ConfigError(f"{at}.start = {toml_repr(start)}: must be \"HH:MM\" (00:00..23:59)")
        minute = int(m.group(1)) * 60 + int(m.group(2))
        if i == 0 and minute != 0:
            raise ConfigError(f"{at}.start = {toml_repr(start)}: the first segment must start at \"00:00\"")
        if segments and minute <= segments[-1][0]:
            raise ConfigError(f"{at}.start = {toml_repr(start)}: segments must be in increasing start order")
        _check_value(rate_setting, f"{at}.{vkey}", seg[vkey], ctx)
        segments.append((minute, float(seg[vkey])))
    return tuple(segments)


def _basal(s: Setting, value: Any, ctx: Context) -> tuple[tuple[int, float], ...]:
    segments = _segments(s, value, ctx)
    bounds = [m for m, _ in segments] + [1440]
    daily = sum(rate * (end - start) / 60.0 for (start, rate), end in zip(segments, bounds[1:]))
    lo, hi = (share * ctx.tdi for share in DAILY_BASAL_TDI_SHARE)
    if not lo * (1 - 1e-9) <= daily <= hi * (1 + 1e-9):  # rate x 24 h is not exact in binary
        raise ConfigError(f"[profile] basal: the schedule delivers {format_number(daily)} U/day; it must be between "
                          f"{format_number(lo)} and {format_number(hi)} U ({DAILY_BASAL_TDI_SHARE[0]:.0%}..{DAILY_BASAL_TDI_SHARE[1]:.0%}"
                          f" of total_daily_insulin_u = {format_number(ctx.tdi)} U)")
    return tuple(segments)


def check_config(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Type- and range-check a parsed TOML mapping; return every section's values with defaults filled in.

    Sections absent from ``data`` are returned too (all defaults), except ``nightscout``, which is
    returned only when present. ``[profile] basal`` becomes ``((start_min, rate_u_per_h), ...)``.
    Raises :class:`ConfigError` naming ``[section] key``, the value and the allowed range.
    """
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a TOML document")
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section [{section}]{_suggest(section, list(SECTIONS))}; "
                              f"known sections: {', '.join(SECTIONS)}")
        if not isinstance(data[section], dict):
            raise ConfigError(f"[{section}] must be a table (a [{section}] header), got {toml_repr(data[section])}")
    if "profile" not in data:
        raise ConfigError("config needs a [profile] section")
    ctx = Context()
    out: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        if section == "nightscout" and section not in data:
            continue
        given = data.get(section, {})
        known = [s.key for s in settings_of(section)]
        for key in given:
            if key not in known:
                raise _unknown(f"[{section}]", key, known)
        values: dict[str, Any] = {}
        for s in settings_of(section):
            if s.key in given:
                value = given[s.key]
                if s.kind == "basal":
                    value = _basal(s, value, ctx)
                elif s.kind == "schedule":
                    value = _segments(s, value, ctx)
                else:
                    _check_value(s, s.name, value, ctx)
            elif s.default is REQUIRED:
                raise ConfigError(f"{s.name} is required ({s.reason})")
            elif isinstance(s.default, Bound):
                value = s.default.compute(ctx)[0]
            else:
                value = s.default
            if s.kind == "float" and value is not None:
                value = float(value)
            values[s.key] = value
            ctx.values[(section, s.key)] = value
        out[section] = values
        if section == "profile" and values.get("target_schedule"):
            # every range that refers to the target (the limits' thresholds) holds for the lowest scheduled one
            ctx.values[("profile", "target_mg_dl")] = min([values["target_mg_dl"]]
                                                          + [v for _, v in values["target_schedule"]])
    return out
