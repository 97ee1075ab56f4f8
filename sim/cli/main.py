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

from sim.cli.args import EXIT_USAGE, CliError, _Parser

# --- entry point ----------------------------------------------------------------

# Each command module has ``register(subparsers)``; its handler imports the
# heavy parts lazily. Order here is the order in ``glucotwin --help``.
_COMMAND_MODULES = ("sim.cli.trial", "sim.cli.replay", "sim.cli.bench", "sim.cli.run", "sim.cli.journal", "sim.cli.hil", "sim.cli.report", "sim.cli.faults", "sim.cli.population", "sim.cli.learn", "sim.cli.whatif", "sim.cli.profile")


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
        from controller.loop.journal import JournalCorrupt, JournalLocked

        if isinstance(exc, (JournalLocked, JournalCorrupt)):
            print(f"glucotwin: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("glucotwin: interrupted", file=sys.stderr)
        return 130
