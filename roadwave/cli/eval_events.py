"""``roadwave eval-events``: precision, recall and latency of the event detectors on scripted drives."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge.events.config import VEHICLE_CLASSES, EventsConfig, parse_events_config
from edge.events.evaluate import GOAL, evaluate
from roadwave.configfile import ConfigError, Table
from roadwave.sim.scenarios import SCENARIOS


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave eval-events``."""
    parser = subparsers.add_parser(
        "eval-events",
        help="evaluate the event detectors on simulated drives with ground-truth labels",
        description="Simulate scripted single-vehicle drives (each event type, near misses, sensor "
        "noise, corrupt and stale signals, long uneventful drives), send their CAN frames through "
        "the edge decoder and event engine, and print precision, recall and detection latency per "
        f"event type. Exit status 1 when a goal is missed: precision or recall below {GOAL} for a "
        "type, or any event on the uneventful drives.",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario, each drawn anew (default 3)")
    parser.add_argument(
        "--vehicle-class",
        choices=tuple(VEHICLE_CLASSES),
        help="detector defaults (default car)",
    )
    parser.add_argument(
        "--config", type=Path, help="a TOML file whose [events] section configures the detectors (edge.toml)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=tuple(SCENARIOS),
        metavar="NAME",
        help="run only this scenario (repeatable); names: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> EventsConfig:
    if args.config is None:
        return EventsConfig.for_class(args.vehicle_class or "car")
    if args.vehicle_class is not None:
        raise ConfigError("give --vehicle-class or --config (whose [events] vehicle_class decides), not both")
    return parse_events_config(Table.load(args.config).table("events"))


def run(args: argparse.Namespace) -> int:
    """Evaluate; exit 0 when every goal is met, 1 when one is missed, 2 on bad usage."""
    if args.runs < 1 or args.seed < 0:
        print("roadwave eval-events: --runs must be >= 1 and --seed >= 0", file=sys.stderr)
        return 2
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"roadwave eval-events: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    report = evaluate(config, args.seed, args.runs, args.scenario)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        print(
            f"({config.vehicle_class} defaults{' + ' + str(args.config) if args.config else ''}; "
            f"{time.perf_counter() - started:.1f} s)"
        )
    return 1 if report.shortfalls() else 0
