"""The ``glucotwin`` command line: one thin module per subcommand.

``main`` (the console script ``glucotwin = sim.cli:main``) builds the parser
from each subcommand module's ``register``; a subcommand only parses its
arguments and calls the layer that does the work, importing it lazily, so
``glucotwin run`` never imports simglucose, pandas or matplotlib.
``python -m sim.cli`` is the same command.
"""

from sim.cli.args import CliError
from sim.cli.main import build_parser, main

__all__ = ["CliError", "build_parser", "main"]
