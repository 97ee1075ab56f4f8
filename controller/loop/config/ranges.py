"""Every key of the live configuration, with its type, default and hard range, in one table.

``glucotwin run --config FILE`` reads a TOML file a person edits by hand. A typo
there doses insulin, so every key of every section has a type (a boolean is a
TOML boolean, an integer is not a float, a string is a string), a default, and
a plausible range that cannot be configured away. Ranges follow how clinicians
and the open-source loops bound the same settings:

- AndroidAPS's hard limits (``HardLimits.kt``) per age group: the largest bolus
  (child 5, teenage 10, adult 17 U), the largest insulin on board (its SMB
  limits: 7, 13, 22 U), the largest basal rate (2, 5, 10 U/h), insulin peak
  35..120 min, insulin action at least 5 h, carb ratio 2..100 g/U, sensitivity
  2..1000 mg/dL/U, target 80..200 mg/dL. The age group comes from
  ``[profile] age_years`` (child < 13, teenage 13..17, adult >= 18); AndroidAPS's
  "resistant adult" and "pregnant" groups are not offered.
- oref0's profile safety caps: a temp basal never exceeds
  ``current_basal_safety_multiplier`` (4) x the scheduled rate.
- The person's own numbers: the largest bolus and insulin on board are shares of
  the total daily insulin (TDI); the maximum basal is a multiple of the largest
  scheduled rate; carb ratio and correction factor must lie within a factor of
  5 (CR) or 3..6 (CF) of the 500 and 1800 rules, which catches a slipped decimal point.

This table is the single source of both the checks
(:func:`controller.loop.config.checks.check_config`) and the reference table
(``deploy/CONFIG.md``, written by :mod:`controller.loop.config.reference`;
``python -m controller.loop.config.ranges``, which the file names, still writes
it; a test checks the two agree). None of them does I/O: files, devices and
secrets are checked by :mod:`controller.loop.config.preflight`.

Trials do not go through here: they build :class:`~controller.safety.SafetyLimits`
in code (``SafetyLimits.for_profile``) and may use values a live loop may not.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

# AndroidAPS HardLimits.kt (MAX_BOLUS, MAX_IOB_SMB, MAX_BASAL), groups CHILD, TEENAGE, ADULT.
AGE_GROUPS = ("child", "teenage", "adult")
MAX_BOLUS_U = {"child": 5.0, "teenage": 10.0, "adult": 17.0}
MAX_IOB_U = {"child": 7.0, "teenage": 13.0, "adult": 22.0}
MAX_BASAL_U_PER_H = {"child": 2.0, "teenage": 5.0, "adult": 10.0}
TEENAGE_FROM_YEARS = 13.0
ADULT_FROM_YEARS = 18.0

# Shares of the total daily insulin (TDI): default and hard maximum.
MAX_BOLUS_DEFAULT_TDI_SHARE = 0.25
MAX_BOLUS_HARD_TDI_SHARE = 0.35
MAX_IOB_DEFAULT_TDI_SHARE = 0.10
MAX_IOB_HARD_TDI_SHARE = 0.20
BASAL_SAFETY_MULTIPLIER = 4.0  # oref0 current_basal_safety_multiplier
DAILY_BASAL_TDI_SHARE = (0.10, 0.90)

NIGHTSCOUT_MIN_SECRET_CHARS = 12  # Nightscout refuses a shorter API_SECRET
PUMP_MIN_KEY_BYTES = 16
PUMP_MAX_VALIDITY_S = 300.0  # the reference pump firmware's longest command validity
SERIAL_BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
SECTIONS = ("profile", "loop", "limits", "twin", "mqtt", "sensor", "pump", "nightscout", "advice")


class ConfigError(ValueError):
    """The configuration file is missing something or holds a bad value (one line, for the CLI)."""


def age_group(age_years: float) -> str:
    """AndroidAPS's age group for an age: child (< 13), teenage (13..17) or adult (>= 18)."""
    if age_years < TEENAGE_FROM_YEARS:
        return "child"
    return "teenage" if age_years < ADULT_FROM_YEARS else "adult"


def format_number(x: float) -> str:
    """A number for messages and docs: integers without a decimal point, others to 4 significant digits."""
    if math.isfinite(x) and x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


class Context:
    """The values checked so far (earlier keys of the table), for bounds relative to them."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], Any] = {}

    def __getitem__(self, name: str) -> Any:
        section, key = name.split(".")
        return self.values[(section, key)]

    @property
    def tdi(self) -> float:
        return float(self["profile.total_daily_insulin_u"])

    @property
    def group(self) -> str:
        return age_group(float(self["profile.age_years"]))

    @property
    def largest_basal(self) -> float:
        return max(rate for _, rate in self["profile.basal"])


@dataclass(frozen=True)
class Bound:
    """A bound relative to earlier values: ``compute(ctx)`` gives (value, how it was computed)."""

    doc: str
    compute: Callable[[Context], tuple[float, str]]


def _ref(name: str, unit: str = "", factor: float = 1.0, offset: float = 0.0, doc: str | None = None) -> Bound:
    """A bound equal to ``factor * <name> + offset``."""
    key = name.split(".")[1]

    def compute(ctx: Context) -> tuple[float, str]:
        value = float(ctx[name])
        result = factor * value + offset
        how = f"{key} = {format_number(value)}{(' ' + unit) if unit else ''}"
        if factor != 1.0 or offset:
            expr = (f"{format_number(factor)} x " if factor != 1.0 else "") + key
            if offset:
                expr += f" {'+' if offset > 0 else '-'} {format_number(abs(offset))}"
            how = f"{expr} = {format_number(result)} ({how})"
        return result, how

    text = doc or ((f"{format_number(factor)} x " if factor != 1.0 else "") + name
                   + (f" {'+' if offset > 0 else '-'} {format_number(abs(offset))}" if offset else ""))
    return Bound(text, compute)


def _min_of(*parts: float | Bound, doc: str) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        found = [(p, format_number(p)) if isinstance(p, (int, float)) else p.compute(ctx) for p in parts]
        return min(v for v, _ in found), "the smaller of " + " and ".join(h for _, h in found)

    return Bound(doc, compute)


def _max_of(*parts: float | Bound, doc: str) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        found = [(p, format_number(p)) if isinstance(p, (int, float)) else p.compute(ctx) for p in parts]
        return max(v for v, _ in found), "the larger of " + " and ".join(h for _, h in found)

    return Bound(doc, compute)


def _tdi_share(share: float) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        return share * ctx.tdi, f"{share:.0%} of total_daily_insulin_u ({format_number(ctx.tdi)} U) = {format_number(share * ctx.tdi)} U"

    return Bound(f"{share:.0%} of total_daily_insulin_u", compute)


def _per_group(table: dict[str, float], unit: str, what: str) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        group = ctx.group
        return table[group], f"the {group} maximum {format_number(table[group])} {unit} (AndroidAPS {what})"

    doc = f"AndroidAPS {what} (" + ", ".join(f"{g} {format_number(v)}" for g, v in table.items()) + f" {unit})"
    return Bound(doc, compute)


def _per_tdi(numerator: float, doc: str) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        value = numerator / ctx.tdi
        return value, f"{format_number(numerator)} / total_daily_insulin_u ({format_number(ctx.tdi)} U) = {format_number(value)}"

    return Bound(doc, compute)


def _per_weight(factor: float) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        w = float(ctx["profile.weight_kg"])
        return factor * w, f"{format_number(factor)} U/kg x weight_kg ({format_number(w)} kg) = {format_number(factor * w)} U"

    return Bound(f"{format_number(factor)} U/kg x weight_kg", compute)


def _largest_basal_times(factor: float) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        largest = ctx.largest_basal
        if factor == 1.0:
            return largest, f"the largest scheduled basal {format_number(largest)} U/h"
        return factor * largest, f"{format_number(factor)} x the largest scheduled basal ({format_number(largest)} U/h) = {format_number(factor * largest)} U/h"

    text = "the largest scheduled basal" if factor == 1.0 else f"{format_number(factor)} x the largest scheduled basal"
    return Bound(text, compute)


@dataclass(frozen=True)
class Setting:
    """One key: its type, default, hard range (inclusive) and why.

    kind: "float" (a TOML integer or float), "int", "bool", "str", "choice" (one of
        ``choices``), "basal" (the profile's list of segments).
    default: the value when the key is absent: a constant, a :class:`Bound` (computed
        from earlier values), or ``REQUIRED``.
    low, high: inclusive bounds (numbers, or :class:`Bound`); None for no bound.
    pattern: for strings, the regular expression the whole value must match.
    """

    section: str
    key: str
    kind: str
    default: Any
    reason: str
    unit: str = ""
    low: float | Bound | None = None
    high: float | Bound | None = None
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    pattern_doc: str = ""

    @property
    def name(self) -> str:
        return f"[{self.section}] {self.key}"


REQUIRED = object()
_ID = r"[A-Za-z0-9._-]+"

_basal_cap = _per_group(MAX_BASAL_U_PER_H, "U/h", "MAX_BASAL")
_max_bolus_hard = _min_of(_tdi_share(MAX_BOLUS_HARD_TDI_SHARE), _per_group(MAX_BOLUS_U, "U", "MAX_BOLUS"),
                          doc=f"{MAX_BOLUS_HARD_TDI_SHARE:.0%} of total_daily_insulin_u, at most AndroidAPS MAX_BOLUS "
                              "(child 5, teenage 10, adult 17 U)")
_max_iob_hard = _min_of(_tdi_share(MAX_IOB_HARD_TDI_SHARE), _per_group(MAX_IOB_U, "U", "MAX_IOB_SMB"),
                        doc=f"{MAX_IOB_HARD_TDI_SHARE:.0%} of total_daily_insulin_u, at most AndroidAPS MAX_IOB_SMB "
                            "(child 7, teenage 13, adult 22 U)")
_max_basal_hard = _min_of(_largest_basal_times(BASAL_SAFETY_MULTIPLIER), _basal_cap,
                          doc="4 x the largest scheduled basal (oref0 current_basal_safety_multiplier), at most "
                              "AndroidAPS MAX_BASAL (child 2, teenage 5, adult 10 U/h)")

# the scalar settings and their time-of-day schedules share their ranges
_carb_ratio_low = _max_of(2.0, _per_tdi(100.0, "100 / TDI"), doc="100 / total_daily_insulin_u (at least 2)")
_carb_ratio_high = _min_of(100.0, _per_tdi(2500.0, "2500 / TDI"), doc="2500 / total_daily_insulin_u (at most 100)")
_correction_low = _max_of(2.0, _per_tdi(300.0, "300 / TDI"), doc="300 / total_daily_insulin_u (at least 2)")
_correction_high = _min_of(500.0, _per_tdi(5400.0, "5400 / TDI"), doc="5400 / total_daily_insulin_u (at most 500)")


def _capped_default(share: float, hard: Bound) -> Bound:
    def compute(ctx: Context) -> tuple[float, str]:
        cap, _ = hard.compute(ctx)
        return min(share * ctx.tdi, cap), ""

    return Bound(f"{share:.0%} of total_daily_insulin_u, at most the hard maximum", compute)


SETTINGS: tuple[Setting, ...] = (
    # --- [profile] -----------------------------------------------------------------------------------------
    Setting("profile", "name", "str", REQUIRED, "who this is (journal, status line, Nightscout)",
            pattern=r"\S.{0,63}", pattern_doc="1..64 characters, not starting with a space"),
    Setting("profile", "weight_kg", "float", REQUIRED, "body weight of a person old enough for a pump loop",
            "kg", 10.0, 250.0),
    Setting("profile", "age_years", "float", REQUIRED,
            "chooses the AndroidAPS age group: child < 13, teenage 13..17, adult >= 18", "years", 1.0, 120.0),
    Setting("profile", "total_daily_insulin_u", "float", REQUIRED,
            "T1D needs 0.2..1.5 U/kg/day (puberty, resistance up to ~2.5); outside 0.1..3 U/kg it is a typo "
            "(a child's TDI of 1000 U)", "U/day",
            _max_of(1.0, _per_weight(0.1), doc="0.1 U/kg x weight_kg (at least 1)"),
            _min_of(300.0, _per_weight(3.0), doc="3 U/kg x weight_kg (at most 300)")),
    Setting("profile", "carb_ratio_g_per_u", "float", REQUIRED,
            "AndroidAPS allows 2..100 g/U; within a factor of 5 of the 500 rule (500 / TDI): a slipped decimal "
            "point is refused, and a smaller ratio gives more insulin per gram", "g/U",
            _carb_ratio_low,
            _carb_ratio_high),
    Setting("profile", "correction_factor_mg_dl_per_u", "float", REQUIRED,
            "AndroidAPS allows 2..1000 mg/dL/U; within 1/6..3 x the 1800 rule (1800 / TDI): a slipped decimal "
            "point is refused, and a smaller factor gives more insulin per mg/dL", "mg/dL/U",
            _correction_low,
            _correction_high),
    Setting("profile", "target_mg_dl", "float", 120.0, "AndroidAPS LIMIT_TARGET_BG", "mg/dL", 80.0, 200.0),
    Setting("profile", "basal", "basal", REQUIRED,
            "each rate 0..AndroidAPS MAX_BASAL for the age group; the schedule's daily total within 10..90 % of "
            "total_daily_insulin_u (basal is part of the total)", "U/h", 0.0, _basal_cap),
    Setting("profile", "timezone", "str", "", "the IANA zone the schedules' times of day are in, as the pump's clock "
            "(\"Europe/Paris\"); empty: UTC, the loop's clock", pattern=r"|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*",
            pattern_doc="an IANA time zone name such as \"Europe/Paris\" or \"UTC\" (or empty)"),
    Setting("profile", "carb_ratio_schedule", "schedule", None,
            "carb ratio by time of day ({start = \"HH:MM\", g_per_u = ...}); each value in carb_ratio_g_per_u's "
            "range; absent: carb_ratio_g_per_u all day", "g/U",
            _carb_ratio_low,
            _carb_ratio_high),
    Setting("profile", "correction_factor_schedule", "schedule", None,
            "correction factor by time of day ({start = \"HH:MM\", mg_dl_per_u = ...}); each value in "
            "correction_factor_mg_dl_per_u's range; absent: correction_factor_mg_dl_per_u all day", "mg/dL/U",
            _correction_low,
            _correction_high),
    Setting("profile", "target_schedule", "schedule", None,
            "target by time of day ({start = \"HH:MM\", mg_dl = ...}); absent: target_mg_dl all day; the limits' "
            "thresholds must hold for the lowest", "mg/dL", 80.0, 200.0),
    # --- [loop] --------------------------------------------------------------------------------------------
    Setting("loop", "cycle_min", "float", 5.0, "the CGM's sample period (Dexcom 5, Libre 1..5)", "min", 1.0, 15.0),
    Setting("loop", "clock", "choice", "system", "\"readings\": lockstep on reading times (HIL only)",
            choices=("system", "readings")),
    Setting("loop", "arm", "choice", "hcl", "hybrid closed loop uses carb announcements; fully closed ignores them",
            choices=("hcl", "fcl")),
    Setting("loop", "journal", "str", "glucotwin-journal.sqlite",
            "the SQLite journal (relative to the config file's directory)", pattern=r".+", pattern_doc="not empty"),
    Setting("loop", "publish_cycles", "bool", True, "publish each cycle on MQTT for dashboards and the HIL harness"),
    Setting("loop", "temp_basal_duration_min", "float", 30.0,
            "the pump falls back to its programmed basal after this if the loop stops; oref0 and Loop use 30 min, "
            "glucotwin allows at most 60 (a high temp outlives a dead loop by at most an hour)", "min",
            _ref("loop.cycle_min", "min"), 60.0),
    Setting("loop", "command_validity_s", "float", 120.0,
            "a pump command expires this long after it is issued; the reference pump accepts at most 300 s", "s",
            10.0, PUMP_MAX_VALIDITY_S),
    Setting("loop", "max_wait_min", "float",
            _max_of(10.0, _ref("loop.cycle_min"), doc="10, at least cycle_min"),
            "run a cycle without a reading after this long (programmed basal when the CGM is silent)", "min",
            _ref("loop.cycle_min", "min"), 30.0),
    Setting("loop", "replay_hours", "float", 24.0,
            "a restart replays this much of the journal: at least the longest insulin action allowed "
            "([limits] iob_action_duration_min <= 12 h), or a restart forgets insulin on board", "h", 12.0, 72.0),
    Setting("loop", "forecast_horizon_min", "float", 60.0, "the twin forecast per cycle (status line shows 30/60)",
            "min", 60.0, 360.0),
    Setting("loop", "min_cycle_fraction", "float", 0.8,
            "a reading sooner than this fraction of cycle_min after the last cycle's is not acted on: at most one "
            "decision per CGM sample interval, whatever a flood of readings says", "", 0.5, 1.0),
    Setting("loop", "journal_retention_days", "float", 90.0,
            "older events are pruned daily; a day more than the replay; a day is 1.5-2.5 MB on the SD card", "days",
            _ref("loop.replay_hours", "h", factor=1.0 / 24.0, offset=1.0, doc="replay_hours / 24 + 1"), 365.0),
    # --- [limits] ------------------------------------------------------------------------------------------
    Setting("limits", "max_basal_u_per_h", "float", _max_basal_hard,
            "largest temp basal; at least the largest scheduled rate (the programmed basal must stay deliverable)",
            "U/h", _largest_basal_times(1.0), _max_basal_hard),
    Setting("limits", "max_basal_multiple", "float", BASAL_SAFETY_MULTIPLIER,
            "a temp basal never exceeds this x the current scheduled rate (oref0 current_basal_safety_multiplier 4)",
            "x", 1.0, BASAL_SAFETY_MULTIPLIER),
    Setting("limits", "max_bolus_u", "float", _capped_default(MAX_BOLUS_DEFAULT_TDI_SHARE, _max_bolus_hard),
            "largest bolus in one cycle; 0 = temp basals only", "U", 0.0, _max_bolus_hard),
    Setting("limits", "max_iob_u", "float", _capped_default(MAX_IOB_DEFAULT_TDI_SHARE, _max_iob_hard),
            "largest insulin on board above the scheduled basal for corrections", "U", 0.0, _max_iob_hard),
    Setting("limits", "carb_absorption_min", "float", 180.0,
            "announced carbs count as on board this long (AndroidAPS allows up to 10 h)", "min", 60.0, 600.0),
    Setting("limits", "meal_insulin_fraction_min", "float", 0.4, "lowest learned share of the bolus calculator",
            "", 0.0, 1.0),
    Setting("limits", "meal_insulin_fraction_max", "float", 1.0,
            "highest learned share: never more than the bolus calculator", "",
            _ref("limits.meal_insulin_fraction_min"), 1.0),
    Setting("limits", "meal_insulin_fraction", "float", 0.8, "first share of the bolus calculator for announced carbs",
            "", _ref("limits.meal_insulin_fraction_min"), _ref("limits.meal_insulin_fraction_max")),
    Setting("limits", "correction_share_min", "float", 0.5, "lowest learned correction share", "", 0.1, 1.0),
    Setting("limits", "correction_share_initial", "float", 1.0,
            "first correction share; at most 1, learning never loosens max_iob_u", "",
            _ref("limits.correction_share_min"), 1.0),
    Setting("limits", "correction_iob_to_target", "bool", True,
            "corrections never exceed what the latest reading calls for; an ablation switch for trials, "
            "a live loop keeps it on", choices=(True,)),
    Setting("limits", "iob_action_duration_min", "float", 600.0,
            "the supervisor's insulin action; AndroidAPS requires at least 5 h; shorter forgets insulin on board",
            "min", 300.0, 720.0),
    Setting("limits", "iob_peak_min", "float", 100.0, "AndroidAPS LIMIT_PEAK", "min", 35.0, 120.0),
    Setting("limits", "low_mg_dl", "float", 70.0,
            "at or below this, insulin is suspended; never below 60 (a suspend that comes too late), "
            "at least 10 below the target", "mg/dL",
            60.0, _min_of(90.0, _ref("profile.target_mg_dl", "mg/dL", offset=-10.0),
                          doc="target_mg_dl - 10, at most 90")),
    Setting("limits", "suspend_forecast_mg_dl", "float", 80.0,
            "suspend when the supervisor's 30-min forecast is below this; not below low_mg_dl, not above the "
            "target", "mg/dL", _max_of(60.0, _ref("limits.low_mg_dl", "mg/dL"), doc="low_mg_dl (at least 60)"),
            _ref("profile.target_mg_dl", "mg/dL")),
    Setting("limits", "correction_threshold_mg_dl", "float",
            _min_of(90.0, _ref("profile.target_mg_dl"), doc="90, at most target_mg_dl"),
            "below this, nothing above the scheduled basal; at least 10 above low_mg_dl, not above the target",
            "mg/dL", _ref("limits.low_mg_dl", "mg/dL", offset=10.0), _ref("profile.target_mg_dl", "mg/dL")),
    Setting("limits", "stale_after_min", "float", 15.0,
            "older CGM stops automatic dosing; at most 20 (AndroidAPS/oref0 stop at 12-15), at least one cycle",
            "min", _ref("loop.cycle_min", "min"), 20.0),
    Setting("limits", "sensor_min_mg_dl", "float", 39.0,
            "a reading at or below this is implausible; CGMs report down to 40 (39 = LO); higher would call real "
            "lows implausible and skip the suspend", "mg/dL", 20.0, 40.0),
    Setting("limits", "sensor_max_mg_dl", "float", 500.0,
            "a reading at or above this is implausible; CGMs report up to 400 (Dexcom) or 500 (Libre); higher "
            "trusts glitches with corrections", "mg/dL", 300.0, 501.0),
    Setting("limits", "max_rate_mg_dl_per_min", "float", 10.0,
            "a faster jump between readings is implausible; true rates reach 3-4 mg/dL/min (a lower limit rejects "
            "real fast falls and skips the suspend); beyond 10 is not physiological", "mg/dL/min", 4.0, 10.0),
    # --- [twin] --------------------------------------------------------------------------------------------
    Setting("twin", "prior", "str", None, "population prior JSON (default: the one shipped in twin/data)",
            pattern=r".+", pattern_doc="not empty"),
    Setting("twin", "learned", "str", None, "twin.json from glucotwin learn (the twin fitted to this person's "
            "history; its profile must be this [profile]); default: the twin personalized from the profile",
            pattern=r".+", pattern_doc="not empty"),
    # --- [mqtt] --------------------------------------------------------------------------------------------
    Setting("mqtt", "host", "str", "127.0.0.1", "the broker", pattern=r"[A-Za-z0-9.:_-]+",
            pattern_doc="a host name or address"),
    Setting("mqtt", "port", "int", 1883, "the broker's port (8883 with TLS)", "", 1, 65535),
    Setting("mqtt", "username", "str", "", "broker user (deploy/mosquitto/acl); empty = anonymous"),
    Setting("mqtt", "password_file", "str", "", "file holding the broker password (needs username)"),
    Setting("mqtt", "tls_ca_file", "str", "", "CA certificate; set to use TLS"),
    Setting("mqtt", "tls_cert_file", "str", "", "client certificate (with tls_key_file)"),
    Setting("mqtt", "tls_key_file", "str", "", "client key (with tls_cert_file)"),
    Setting("mqtt", "client_id", "str", "", "MQTT client id (default loop-<subject>)",
            pattern=r"[A-Za-z0-9._-]{0,64}", pattern_doc="0..64 characters of [A-Za-z0-9._-]"),
    Setting("mqtt", "subject", "str", "default", "topic level naming the person: glucotwin/<subject>/...",
            pattern=_ID, pattern_doc="[A-Za-z0-9._-]+ (no MQTT wildcards or levels)"),
    Setting("mqtt", "topic_prefix", "str", "glucotwin", "first topic level(s)",
            pattern=r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", pattern_doc="levels of [A-Za-z0-9._-] separated by /"),
    Setting("mqtt", "whatif_key_file", "str", "", "file holding the hex HMAC key (>= 16 bytes) that signs what-if "
            "questions on <prefix>/<subject>/whatif/request (controller/loop/whatif_service.py); empty = no what-if "
            "service"),
    # --- [sensor] ------------------------------------------------------------------------------------------
    Setting("sensor", "transport", "choice", "mqtt", "where CGM readings come from",
            choices=("mqtt", "serial", "nightscout")),
    Setting("sensor", "port", "str", "", "serial device (transport \"serial\")"),
    Setting("sensor", "baudrate", "int", 115200, "serial speed", "baud", choices=SERIAL_BAUDRATES),
    Setting("sensor", "mode", "choice", "frames", "serial framing", choices=("frames", "text")),
    # --- [pump] --------------------------------------------------------------------------------------------
    Setting("pump", "transport", "choice", "serial", "how commands reach the pump", choices=("serial", "mqtt")),
    Setting("pump", "port", "str", "", "serial device (transport \"serial\")"),
    Setting("pump", "baudrate", "int", 115200, "serial speed", "baud", choices=SERIAL_BAUDRATES),
    Setting("pump", "device_id", "str", "pump-1", "the pump's id in every frame (firmware_bridge protocol)",
            pattern=r"[A-Za-z0-9._-]{1,16}", pattern_doc="1..16 characters of [A-Za-z0-9._-]"),
    Setting("pump", "key_file", "str", REQUIRED,
            f"the per-device HMAC key in hex, at least {PUMP_MIN_KEY_BYTES} bytes (mode 0600)",
            pattern=r".+", pattern_doc="not empty"),
    Setting("pump", "retries", "int", 3, "resends of an unanswered command", "", 0, 10),
    Setting("pump", "reply_timeout_s", "float", 1.0,
            "wait for the pump's reply; all tries must fit in the command's validity", "s", 0.1,
            _min_of(30.0, Bound("command_validity_s / (retries + 1)",
                                lambda ctx: (float(ctx["loop.command_validity_s"]) / (int(ctx["pump.retries"]) + 1),
                                             f"command_validity_s / (retries + 1) = "
                                             f"{format_number(float(ctx['loop.command_validity_s']))} / "
                                             f"{int(ctx['pump.retries']) + 1}")),
                    doc="command_validity_s / (retries + 1), at most 30")),
    # --- [nightscout] --------------------------------------------------------------------------------------
    Setting("nightscout", "url", "str", "", "the Nightscout to upload to (https://host[:port])"),
    Setting("nightscout", "api_secret_file", "str", "",
            f"file holding the plain API_SECRET (>= {NIGHTSCOUT_MIN_SECRET_CHARS} characters, as Nightscout requires)"),
    Setting("nightscout", "upload", "bool", True, "upload entries, treatments, devicestatus"),
    Setting("nightscout", "upload_entries", "bool", True, "false when the CGM app uploads its readings itself"),
    Setting("nightscout", "receive", "bool", False, "run a Nightscout-API receiver as the CGM source"),
    Setting("nightscout", "listen_host", "str", "127.0.0.1", "the receiver's address", pattern=r"[A-Za-z0-9.:_-]+",
            pattern_doc="a host name or address"),
    Setting("nightscout", "listen_port", "int", 17580, "the receiver's port", "", 1, 65535),
    Setting("nightscout", "listen_api_secret_file", "str", "", "the receiver's secret (default: api_secret_file)"),
    Setting("nightscout", "device", "str", "openaps://glucotwin", "devicestatus device (the OpenAPS pill)",
            pattern=r".{1,64}", pattern_doc="1..64 characters"),
    Setting("nightscout", "timeout_s", "float", 10.0, "HTTP timeout", "s", 1.0, 120.0),
    Setting("nightscout", "batch_size", "int", 100, "documents per POST", "", 1, 1000),
    Setting("nightscout", "max_backoff_s", "float", 300.0, "longest wait between retries", "s", 1.0, 3600.0),
    Setting("nightscout", "backfill_hours", "float", 24.0, "on first use, how much of the journal to upload", "h",
            1.0, 720.0),
    # --- [advice] (controller.advice: words to the person; never a dose) -------------------------------------
    Setting("advice", "enabled", "bool", True, "say when to eat (a low suspension cannot prevent), an untreatable "
            "high, an unexplained rise"),
    Setting("advice", "low_mg_dl", "float", 70.0, "the line carbohydrate advice keeps the conservative forecast "
            "above (the consensus hypoglycaemia threshold)", "mg/dL", 60.0, 100.0),
    Setting("advice", "advise_within_min", "float", 45.0, "carbs are advised once the low is this near (oref0 "
            "reports carbsReq within 45 min); a farther forecast is re-checked every cycle", "min", 15.0, 120.0),
    Setting("advice", "max_carbs_g", "float", 60.0, "the most advised at once (the message says when even this "
            "is short)", "g", 5.0, 120.0),
    Setting("advice", "carbs_step_g", "float", 5.0, "advice is rounded up to a multiple of this", "g", 1.0, 20.0),
    Setting("advice", "high_mg_dl", "float", 250.0, "a forecast at or above this the loop's limits will not treat "
            "is said", "mg/dL", 180.0, 400.0),
    Setting("advice", "site_check", "bool", True, "suggest checking the infusion site after an unexplained rise"),
    Setting("advice", "repeat_min", "float", 30.0, "a standing advice is announced again after this long", "min",
            5.0, 240.0),
)

_BY_SECTION: dict[str, list[Setting]] = {}
for _s in SETTINGS:
    _BY_SECTION.setdefault(_s.section, []).append(_s)


def settings_of(section: str) -> list[Setting]:
    """The settings of one section, in the table's order."""
    return list(_BY_SECTION[section])


def toml_repr(value: Any) -> str:
    """A value as it would be written in TOML (for messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_repr(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    return str(value)

