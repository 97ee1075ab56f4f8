"""``glucotwin profile import FILE``: a loop configuration's ``[profile]`` section from a Nightscout profile
document or an oref0 ``profile.json`` (:mod:`twin.profile_import`).

The section is written by :func:`controller.loop.config.live_config.profile_to_toml`, the notes of the
import become TOML comments above it, and oref0's own caps become a commented ``[limits]`` block. Before
anything is printed, the section goes through the loop's own parser (``parse_config``, with a stand-in
``[pump]``): what ``glucotwin run --config`` would refuse is refused here, with its message.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from sim.cli.args import CliError, positive_float

# parse_config needs a [pump] section; the import checks only [profile] (and suggested [limits]).
_STAND_IN_PUMP = {"port": "/dev/ttyUSB0", "key_file": "pump.key"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="import a therapy profile (Nightscout, oref0) as a [profile] section",
                       description="Import the therapy settings a person already has (basal, carb ratio, correction "
                                   "factor and target by time of day) into the [profile] section of a loop "
                                   "configuration.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser(
        "import", help="print (or write) the [profile] section of a Nightscout profile or an oref0 profile.json",
        description="Read a Nightscout profile document (GET /api/v1/profile: one record or the list) or an oref0 "
                    "profile.json and print the [profile] section of a loop configuration, the notes of the import "
                    "(conversions, assumptions, settings not carried over) as TOML comments, and a summary table "
                    "of the schedules. The section is checked by glucotwin run's own parser first; a value it "
                    "would refuse is an error here.")
    a.add_argument("file", type=Path, metavar="FILE", help="the profile document (JSON)")
    fmt = a.add_mutually_exclusive_group()
    fmt.add_argument("--nightscout", dest="format", action="store_const", const="nightscout",
                     help="FILE is a Nightscout profile document (default: told from its keys)")
    fmt.add_argument("--oref0", dest="format", action="store_const", const="oref0",
                     help="FILE is an oref0 profile.json (default: told from its keys)")
    a.add_argument("--weight-kg", type=positive_float, required=True, metavar="KG", help="body weight")
    a.add_argument("--age-years", type=positive_float, required=True, metavar="YEARS", help="age")
    a.add_argument("--tdi", type=positive_float, metavar="U",
                   help="total daily insulin, U/day (default: estimated as daily basal / 0.5, and the notes say so)")
    a.add_argument("--profile", metavar="NAME", help="Nightscout: the store's profile to import (default: "
                                                     "defaultProfile)")
    a.add_argument("--name", metavar="NAME", help="[profile] name (default: the Nightscout profile's name, or oref0)")
    a.add_argument("--timezone", metavar="ZONE",
                   help="IANA zone of the schedules' clock (default: the document's; \"\" for UTC)")
    a.add_argument("--out", type=Path, metavar="FILE",
                   help="write the section to FILE (default: print it; the summary then goes to stderr)")
    a.set_defaults(handler=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    import json

    from twin.profile_import import (ProfileImportError, detect_format, from_nightscout_profile, from_oref0_profile,
                                     oref0_limit_suggestions)

    try:
        doc = json.loads(args.file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CliError(f"{args.file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.file}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{args.file}: not JSON ({exc})") from None
    try:
        kind = args.format or detect_format(doc)
        if kind == "oref0" and args.profile is not None:
            raise CliError("--profile names a Nightscout store entry; an oref0 profile.json has one profile")
        common = dict(weight_kg=args.weight_kg, age_years=args.age_years, total_daily_insulin_u=args.tdi,
                      name=args.name, timezone=args.timezone)
        if kind == "nightscout":
            profile, notes = from_nightscout_profile(doc, profile_name=args.profile, **common)
            suggestions: tuple = ()
        else:
            profile, notes = from_oref0_profile(doc, **common)
            suggestions = oref0_limit_suggestions(doc)
    except ProfileImportError as exc:
        raise CliError(f"{args.file}: {exc}") from None
    text = render(profile, notes, suggestions, f"{kind} profile {args.file.name}")
    table = "\n".join(summary_table(profile)) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        sys.stderr.write(table)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)
    sys.stdout.write(table + f"wrote {args.out} (add the other sections of the configuration, then "
                             f"glucotwin run --config)\n")
    return 0


def render(profile: Any, notes: tuple[str, ...], suggestions: tuple, source: str) -> str:
    """The ``[profile]`` section with the notes as comments and suggested ``[limits]`` commented out.

    Raises CliError with the loop parser's message when ``glucotwin run --config`` would refuse the section.
    """
    from controller.loop.config.live_config import profile_to_toml

    section = profile_to_toml(profile)
    _check(section, {}, "the imported profile is refused by the loop's configuration")
    lines = [f"# glucotwin profile import: {source}", "# Read these notes before you use this profile:"]
    for note in notes:
        lines += textwrap.wrap(note, width=100, initial_indent="# - ", subsequent_indent="#   ")
    lines.append(section.rstrip("\n"))
    if suggestions:
        lines += ["", "# Suggested [limits] from the source's own caps, not applied (glucotwin's defaults come from "
                      "the", "# profile); uncomment the ones you want:", "# [limits]"]
        for s in suggestions:
            refused = _refusal(section, {s.key: s.value})
            if refused:
                lines += textwrap.wrap(f"glucotwin refuses {s.key} = {s.value!r} ({s.how}): {refused}", width=100,
                                       initial_indent="# ", subsequent_indent="#   ")
            else:
                lines += textwrap.wrap(f"{s.key} = {s.value!r}  # {s.how}", width=100, initial_indent="# ",
                                       subsequent_indent="#     # ")
    return "\n".join(lines) + "\n"


def _refusal(section: str, limits: dict[str, float]) -> str:
    try:
        _check(section, limits, "")
    except CliError as exc:
        return str(exc)
    return ""


def _check(section: str, limits: dict[str, float], what: str) -> None:
    import tomllib

    from controller.loop.config.live_config import parse_config
    from controller.loop.config.ranges import ConfigError

    data: dict[str, Any] = {"profile": tomllib.loads(section)["profile"], "pump": dict(_STAND_IN_PUMP)}
    if limits:
        data["limits"] = dict(limits)
    try:
        parse_config(data)
    except ConfigError as exc:
        raise CliError(f"{what}: {exc}" if what else str(exc)) from None


def summary_table(profile: Any) -> list[str]:
    """One screen: the value in force from each time any schedule changes, and the day's reference values."""
    from twin.schedule import format_clock

    columns = [("basal U/h", [(s.start_min, s.rate_u_per_h) for s in profile.basal_schedule], None),
               ("carb ratio g/U", _pairs(profile.carb_ratio_schedule), profile.carb_ratio_g_per_u),
               ("correction mg/dL/U", _pairs(profile.correction_factor_schedule), profile.correction_factor_mg_dl_per_u),
               ("target mg/dL", _pairs(profile.target_schedule), profile.target_mg_dl)]
    minutes = sorted({m for _, pairs, _ in columns for m, _ in pairs} | {0})
    widths = [max(len(title), 8) for title, _, _ in columns]
    zone = profile.timezone or "UTC (no timezone)"
    out = [f"profile {profile.name!r}: {profile.weight_kg:g} kg, {profile.age_years:g} years, total daily insulin "
           f"{profile.total_daily_insulin_u:g} U, daily basal {profile.daily_basal_u:.2f} U; times in {zone}",
           "time   " + "  ".join(t.rjust(w) for (t, _, _), w in zip(columns, widths))]
    for minute in minutes:
        cells = []
        for (_, pairs, constant), w in zip(columns, widths):
            value = _in_force(pairs, minute) if pairs else constant
            cells.append(f"{value:.2f}".rjust(w) if value is not None else "".rjust(w))
        out.append(f"{format_clock(minute)}  " + "  ".join(cells))
    out.append("mean   " + "  ".join(("" if c is None else f"{c:.2f}").rjust(w)
                                     for (_, _, c), w in zip(columns, widths)))
    return out


def _pairs(schedule: Any) -> list[tuple[int, float]]:
    return [(s.start_min, s.value) for s in schedule]


def _in_force(pairs: list[tuple[int, float]], minute: int) -> float:
    value = pairs[0][1]
    for m, v in pairs:
        if m <= minute:
            value = v
    return value
