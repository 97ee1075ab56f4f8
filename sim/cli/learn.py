"""``glucotwin learn``: fit the twin to a person's own history and write ``twin.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sensors import FORMATS
from sensors.files.units import UNITS
from sim.cli.args import CliError, add_units_argument, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "learn",
        help="fit the twin to a person's history (journal, trial trace, Nightscout export, CGM file)",
        description=(
            "Fit the twin's insulin sensitivity (with a time-of-day pattern), basal need, carb effect, "
            "carb absorption speed and insulin action speed to a person's history by MAP least squares on "
            "anchored 6-h forecasts, with their uncertainty; parameters the records cannot identify keep "
            "the profile's prior and are marked so. Prints the fit, the basal / ISF / CR it implies and the "
            "person's usual meals, and writes twin.json for glucotwin run ([twin] learned), trial (--twin) "
            "and replay (--twin). HISTORY: the loop's journal (SQLite), a trial trace CSV, a Nightscout "
            "export directory (entries.json, treatments.json), a CGM file, or a directory of trial traces "
            "(one twin per patient)."
        ),
    )
    p.add_argument("history", type=Path, metavar="HISTORY", help="the history (see above)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE|DIR",
                   help="twin.json to write (a directory for a directory of traces: DIR/<patient>.json)")
    p.add_argument("--profile", type=Path, default=None, metavar="PROFILE.json",
                   help="the person's clinical profile (PatientProfile JSON); default: the journal's, for a "
                        "simglucose trace the patient's clinical profile, otherwise a generic adult (an assumption: "
                        "70 kg, TDI 40 U, CR 12 g/U, CF 45 mg/dL/U, basal 0.8 U/h)")
    p.add_argument("--days", type=positive_float, default=14.0, metavar="N",
                   help="learn from the last N days of the history (default 14)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="parallel processes for a directory of traces (default 1)")
    p.add_argument("--quiet", action="store_true", help="print only a line per twin")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="a CGM file's format (default auto: detected, as glucotwin replay detects it)")
    p.add_argument("--input-units", dest="input_units", choices=("auto", *UNITS), default="auto",
                   help="a CGM file's glucose unit (default auto: the header's, else mg/dL unless clearly mmol/L)")
    p.add_argument("--tz", default="UTC", metavar="ZONE",
                   help="IANA time zone of a CGM file's timestamps written without an offset (default UTC)")
    add_units_argument(p)
    p.set_defaults(handler=_cmd_learn)


def _cmd_learn(args: argparse.Namespace) -> int:
    from sim.learn.run import learn_directory, learn_one

    try:
        if args.history.is_dir() and not (args.history / "entries.json").exists():
            args.out.mkdir(parents=True, exist_ok=True)
            for line in learn_directory(args.history, args.out, args.days, args.workers):
                print(line)
            return 0
        print(learn_one(args.history, args.out, args.profile, args.days, quiet=args.quiet, units=args.units,
                        cgm_format=args.format, tz=args.tz,
                        cgm_units=None if args.input_units == "auto" else args.input_units))
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return 0
