"""What every subcommand shares: the one-line error, the parser that raises it, argument types, glucose units."""

from __future__ import annotations

import argparse

from sensors.reading import MG_DL_PER_MMOL_L  # the project's one mg/dL-per-mmol/L constant

EXIT_USAGE = 2

GLUCOSE_UNIT_CHOICES = ("mg", "mmol")
"""The names of :data:`sim.trial.metrics.units.UNITS` (spelled here so the CLI starts without numpy)."""


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line instead of usage + message
        raise CliError(f"{self.prog}: {message}")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def add_units_argument(parser: argparse.ArgumentParser, flag: str = "--units", dest: str = "units") -> None:
    """``--units mg|mmol``: the glucose unit of the tables, reports and figures a subcommand shows.

    Only presentation converts (``sim.trial.metrics.units.glucose_units(args.units)``);
    everything is computed and written (summary.json, traces, journals) in mg/dL.
    ``flag``/``dest`` for a subcommand whose ``--units`` already names something
    else (``glucotwin replay --units``: the unit of the input file).
    """
    parser.add_argument(
        flag, dest=dest, choices=GLUCOSE_UNIT_CHOICES, default="mg",
        help=f"glucose unit of tables, reports and figures: mg (mg/dL, the default) or mmol (mmol/L = "
             f"mg/dL / {MG_DL_PER_MMOL_L:g}); files and summary.json stay in mg/dL",
    )
