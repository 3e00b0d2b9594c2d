"""The ``roadwave`` command line: one entry point, one module per subcommand.

Each module in this package named in :data:`SUBCOMMANDS` exposes
``add_subparser(subparsers)``, which registers its parser and sets ``func`` to a
callable ``(argparse.Namespace) -> int`` returning the process exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from roadwave import __version__

SUBCOMMANDS = (
    "sim", "edge", "decode", "record", "cloud", "demo", "eval_events",
    "v2x_relay", "v2x_pki", "pki", "partner",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="roadwave",
        description="Connected-car telematics: CAN -> VSS -> MQTT -> InfluxDB.",
    )
    parser.add_argument("--version", action="version", version=f"roadwave {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``roadwave`` command line and return its exit status."""
    args = build_parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
