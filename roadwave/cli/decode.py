"""``roadwave decode``: a recorded log as JSON lines of decoded, checked frames."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from edge.agent import open_log
from edge.dbcload import DbcLoadError, load_dbc_files
from edge.decoder import DEFAULT_TIMEOUT_FACTOR, BusDecoder, DecodedFrame, frame_time_ns


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave decode``."""
    parser = subparsers.add_parser(
        "decode",
        help="decode a CAN log into JSON lines, with integrity and timeout checks",
        description="Decode every frame of a log (candump -L .log, .asc, .blf) with DBC files "
        "and print one JSON object per line: t (s), bus, id, message, signals (physical values; "
        "choice signals as numbers), labels (their value-table labels) and, when a check "
        'fails, problem / out_of_range. Message timeouts appear as {"event": "timeout"} '
        "lines. Counters go to stderr at the end.",
    )
    parser.add_argument("log", type=Path, help="the log file")
    parser.add_argument("--dbc", type=Path, action="append", required=True, help="DBC file (repeatable)")
    parser.add_argument("--bus", default="can0", help="bus name to print (default can0)")
    parser.add_argument("--strict", action="store_true", help="refuse DBC files with quirks")
    parser.add_argument(
        "--timeout-factor",
        type=float,
        default=DEFAULT_TIMEOUT_FACTOR,
        help=f"a message is stale after this many cycle times (default {DEFAULT_TIMEOUT_FACTOR:g})",
    )
    parser.set_defaults(func=run)


def frame_json(frame: DecodedFrame, arbitration_id: int) -> dict[str, Any]:
    """The JSON object printed for one decoded frame."""
    line: dict[str, Any] = {
        "t": frame.t_ns / 1e9,
        "bus": frame.bus,
        "id": arbitration_id,
        "message": frame.message.name,
        "signals": dict(frame.values),
    }
    labels = frame.labels
    if labels:
        line["labels"] = labels
    if frame.problem:
        line["problem"] = frame.problem
    out_of_range = frame.out_of_range
    if out_of_range:
        line["out_of_range"] = out_of_range
    return line


def decode_log(log: Path, decoder: BusDecoder, out: IO[str]) -> None:
    """Write the JSON lines of every decoded frame and timeout of ``log`` to ``out``."""
    for frame in open_log(log):
        decoded = decoder.decode(frame)
        if decoded is not None:
            out.write(json.dumps(frame_json(decoded, frame.arbitration_id)) + "\n")
        for message, deadline_ns in decoder.expire(frame_time_ns(frame)):
            event = {"t": deadline_ns / 1e9, "bus": decoder.bus, "message": message.name, "event": "timeout"}
            out.write(json.dumps(event) + "\n")


def run(args: argparse.Namespace) -> int:
    """Decode the log; exit 2 on unusable inputs."""
    if not args.log.is_file():
        print(f"roadwave decode: {args.log}: no such log file", file=sys.stderr)
        return 2
    try:
        loaded = load_dbc_files(args.dbc, strict=args.strict)
        decoder = BusDecoder(args.bus, loaded.database, timeout_factor=args.timeout_factor)
    except (DbcLoadError, ValueError) as exc:
        print(f"roadwave decode: {exc}", file=sys.stderr)
        return 2
    try:
        decode_log(args.log, decoder, sys.stdout)
    except (OSError, ValueError) as exc:
        print(f"roadwave decode: {args.log}: cannot read: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
    print(json.dumps({"counters": decoder.stats.as_dict()}), file=sys.stderr)
    return 0
