"""``glucotwin run --config FILE``: the live loop (MQTT or serial CGM in, pump out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.cli.args import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the live closed loop from a TOML config (research use only, not a medical device)",
        description=(
            "Run the closed loop: CGM readings from MQTT or a serial line, the twin estimator, the MPC "
            "and the safety supervisor, commands to the pump over serial or MQTT, everything journaled "
            "to SQLite before it is acted on. Prints one status line per cycle: time, glucose, trend, "
            "30/60-minute forecasts, the delivered basal and bolus, insulin on board, the pump's answer "
            "and the reason for the dose. See deploy/glucotwin.example.toml."
        ),
    )
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="TOML configuration")
    p.add_argument("--ready-file", type=Path, default=None, metavar="FILE",
                   help="write this file once the loop listens (used by the HIL harness and service managers)")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    """Load and check the config (values, then secrets, files and devices), then run the loop.

    Every configuration problem is one line, ``glucotwin: error: [section] key = value: ...``, and
    exit status 2, found before anything connects (no broker, pump or Nightscout sees the loop).
    """
    from controller.loop.config.preflight import preflight
    from controller.loop.config.live_config import ConfigError, load_config

    try:
        config = load_config(args.config)
        preflight(config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    from controller.loop.live import run_live

    try:
        return run_live(config, ready_file=args.ready_file)
    except ConfigError as exc:  # a file changed after the preflight: still one line
        raise CliError(str(exc)) from None
