"""``roadwave edge``: run one vehicle's edge agent from its configuration file."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge.agent import BusOpenError, EdgeAgent
from edge.config import EdgeConfig
from edge.v2x.errors import V2xError
from roadwave.mqtt import MqttConnectError
from roadwave.spool import SpoolError


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave edge``."""
    parser = subparsers.add_parser(
        "edge",
        help="run the edge agent: CAN -> VSS -> MQTT",
        description="Read CAN buses or replay logs, decode them with DBC files into VSS "
        "signals and publish telemetry batches to MQTT. Prints a JSON report at the end.",
    )
    parser.add_argument("--config", type=Path, required=True, help="edge agent TOML file")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to wait at exit for the broker to acknowledge every batch (default 30)",
    )
    parser.add_argument(
        "--v2x-pcap",
        type=Path,
        metavar="FILE",
        help="record every V2X packet sent or received to FILE (pcap, GeoNetworking over Ethernet; "
        "needs [v2x]; overrides [v2x] pcap)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the agent until its logs are replayed or it receives SIGINT/SIGTERM."""
    try:
        agent = EdgeAgent(EdgeConfig.load(args.config), v2x_pcap=args.v2x_pcap)
    except ValueError as exc:  # ConfigError, DbcLoadError, MappingError, integrity overrides, pcap
        print(f"roadwave edge: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        report = agent.run(stop, drain_timeout_s=args.drain_timeout)
    except (
        MqttConnectError,
        BusOpenError,
        V2xError,
        SpoolError,
        OSError,
    ) as exc:  # V2X: the multicast socket
        print(f"roadwave edge: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(report.as_dict()), flush=True)
    return 0 if report.delivered else 1
