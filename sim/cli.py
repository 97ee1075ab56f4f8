"""The ``glucotwin`` command line.

Subcommands import their implementation lazily, so that commands for the
live loop never import simglucose, pandas or matplotlib.
Errors print one line, ``glucotwin: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

EXIT_USAGE = 2


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


# --- entry point ----------------------------------------------------------------

# Each command module has ``register(subparsers)``; its handler imports the
# heavy parts lazily. Order here is the order in ``glucotwin --help``.
_COMMAND_MODULES = ("sim.cli_trial", "sim.cli_replay", "sim.cli_bench", "sim.cli_run", "sim.cli_journal", "sim.cli_hil", "sim.cli_report", "sim.cli_faults", "sim.cli_population")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="glucotwin",
        description=(
            "glucotwin: closed-loop insulin delivery built as an operational digital twin "
            "(research software, not a medical device)."
        ),
    )
    from importlib import metadata

    try:
        version = metadata.version("glucotwin")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"glucotwin {version}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The model's matrices are tiny: BLAS threads only add overhead (1.7x the CPU per control
    # cycle measured with OpenBLAS's default) and fight the trial's worker processes. Set before
    # numpy is imported; an explicit setting in the environment wins.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return EXIT_USAGE
        return handler(args)
    except CliError as exc:
        print(f"glucotwin: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # an operator's mistake with the journal is one line, not a traceback
        from controller.journal import JournalCorrupt, JournalLocked

        if isinstance(exc, (JournalLocked, JournalCorrupt)):
            print(f"glucotwin: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("glucotwin: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    # through the module's canonical name: `python -m sim.cli` runs this file as __main__, and the
    # subcommands raise sim.cli.CliError, a different class from __main__.CliError
    from sim.cli import main as _main

    sys.exit(_main())
