"""``roadwave record``: write a live bus to a log file (candump -L, ASC or BLF by suffix)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import can

LOG_SUFFIXES = (".log", ".asc", ".blf")


class _Counter(can.Listener):
    def __init__(self, limit: int | None, done: threading.Event) -> None:
        self.frames = 0
        self._limit = limit
        self._done = done

    def on_message_received(self, msg: can.Message) -> None:
        self.frames += 1
        if self._limit is not None and self.frames >= self._limit:
            self._done.set()


def record(bus: can.BusABC, output: Path, stop: threading.Event, max_frames: int | None = None) -> int:
    """Write every frame received on ``bus`` to ``output`` until ``stop``; return the count.

    With ``max_frames`` the recording also ends after that many frames.
    """
    counter = _Counter(max_frames, stop)
    with can.Logger(output) as writer:
        notifier = can.Notifier(bus, [writer, counter])
        try:
            stop.wait()
        finally:
            notifier.stop()
    return counter.frames


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave record``."""
    parser = subparsers.add_parser(
        "record",
        help="record a live CAN bus to a log file",
        description="Record frames from a python-can interface until Ctrl-C, --duration or "
        "--count; the format follows the output's suffix: .log (candump -L), .asc, .blf.",
    )
    parser.add_argument(
        "--interface", required=True, help="python-can interface (socketcan, slcan, roadwave, ...)"
    )
    parser.add_argument("--channel", required=True, help="channel, e.g. can0 or /dev/ttyACM0")
    parser.add_argument(
        "--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
        help="extra can.Bus argument, value parsed as JSON when possible (repeatable), e.g. bitrate=500000",
    )  # fmt: skip
    parser.add_argument("--output", "-o", type=Path, required=True, help="log file to write")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--count", type=int, help="stop after this many frames")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Record until stopped; print the frame count as JSON."""
    if args.output.suffix.lower() not in LOG_SUFFIXES:
        print(f"roadwave record: {args.output}: use one of {', '.join(LOG_SUFFIXES)}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        bus = can.Bus(interface=args.interface, channel=args.channel, **dict(args.option))
    except (can.CanError, OSError, ValueError, TypeError, ImportError) as exc:
        print(
            f"roadwave record: cannot open {args.interface} channel {args.channel!r}: {exc}", file=sys.stderr
        )
        stop.set()
        return 3
    try:
        frames = record(bus, args.output, stop, args.count)
    finally:
        bus.shutdown()
        stop.set()
    print(json.dumps({"output": str(args.output), "frames": frames}))
    return 0
