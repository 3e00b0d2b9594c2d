"""``roadwave sim``: simulate a fleet on a ring road and write or stream its CAN frames.

With ``--ecus`` each vehicle's bus also carries its simulated engine and brake ECUs,
answering OBD-II and UDS requests; ``--fault`` injects faults into them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can

from roadwave.sim.ecu import DRIVE_CYCLE_S, FAULT_USAGE, DiagnosticState, EcuDriver, Fault
from roadwave.sim.fleet import (
    DEFAULT_DBC,
    BusSink,
    CandumpLogSink,
    FleetSimulator,
    FrameSink,
    SimConfig,
    TruthJsonlSink,
    run,
)

CHANNEL_PLACEHOLDER = "{i}"


def _number(kind: type[int] | type[float], minimum: float, inclusive: bool) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` above (or at, if ``inclusive``) ``minimum``."""
    relation = ">=" if inclusive else ">"
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value) or (value < minimum if inclusive else value <= minimum):
            raise argparse.ArgumentTypeError(f"must be {noun} {relation} {minimum:g}, got {text!r}")
        return value

    return parse


def add_subparser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``roadwave sim``."""
    parser = subparsers.add_parser(
        "sim",
        help="simulate connected cars on a ring road and emit their CAN frames",
        description=(
            "Simulate IDM traffic on a Sugiyama ring (22 cars on 230 m, scaled up for larger "
            "fleets) and emit one CAN stream per connected vehicle, encoded with the DBC: "
            "candump logs, python-can buses and/or a JSON-lines ground truth."
        ),
    )
    parser.add_argument("--dbc", type=Path, default=DEFAULT_DBC, help="DBC file (default: %(default)s)")
    parser.add_argument(
        "--vehicles", type=_number(int, 1, True), default=3, help="connected vehicles (default: 3)"
    )
    parser.add_argument(
        "--duration",
        type=_number(float, 0, False),
        default=60.0,
        metavar="SECONDS",
        help="simulated seconds of frames (default: 60)",
    )
    parser.add_argument("--seed", type=_number(int, 0, True), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--start-time",
        type=_number(float, 0, True),
        metavar="EPOCH",
        help="epoch seconds of the first frame time (default: now, rounded down to the second)",
    )
    parser.add_argument("--fleet", default="demo", help="fleet name (default: demo)")
    parser.add_argument("--bus", default="can0", help="CAN bus name in the frames (default: can0)")
    parser.add_argument(
        "--warmup",
        type=_number(float, 0, True),
        default=0.0,
        metavar="SECONDS",
        help="traffic time simulated before the first frame; about 300 s lets the "
        "stop-and-go wave form first (default: 0)",
    )
    outputs = parser.add_argument_group("outputs (any combination)")
    outputs.add_argument("--log-dir", type=Path, metavar="DIR", help="write DIR/<VIN>.log (candump -L)")
    outputs.add_argument("--interface", help="python-can interface to send on, e.g. virtual, socketcan")
    outputs.add_argument(
        "--channel",
        action="append",
        metavar="CHANNEL",
        help=f"one per vehicle (repeat the option), or once with {CHANNEL_PLACEHOLDER} for the "
        "vehicle index, e.g. vcan{i}",
    )
    outputs.add_argument(
        "--realtime",
        type=_number(float, 0, False),
        metavar="FACTOR",
        help="pace bus output at FACTOR x real time (default: as fast as possible)",
    )
    outputs.add_argument("--truth", type=Path, metavar="FILE", help="write one JSON line per frame")
    diagnostics = parser.add_argument_group("diagnostics (with --interface)")
    diagnostics.add_argument(
        "--ecus",
        action="store_true",
        help="each vehicle's bus also carries its engine (0x7E0/0x7E8) and brake (0x7E1/0x7E9) ECUs, "
        "answering OBD-II and UDS requests with values that follow the vehicle",
    )
    diagnostics.add_argument(
        "--fault",
        action="append",
        type=_fault,
        metavar="VEHICLE:KIND[=VALUE][@SECONDS]",
        help=f"inject a fault into vehicle VEHICLE's ECUs (index from 0), from the start or SECONDS "
        f"of simulated time after it; kinds: {FAULT_USAGE}; e.g. 0:misfire=2, 1:brakes@30 (repeatable)",
    )
    diagnostics.add_argument(
        "--drive-cycle",
        type=_number(float, 0, False),
        metavar="SECONDS",
        help=f"simulated seconds per drive cycle: a fault lasting into the next cycle is confirmed "
        f"and lights the MIL (default: {DRIVE_CYCLE_S:g})",
    )
    parser.set_defaults(func=main)


def _fault(text: str) -> tuple[int, Fault]:
    """An argparse type: ``VEHICLE:KIND[=VALUE][@SECONDS]``."""
    vehicle, colon, spec = text.partition(":")
    if not colon or not vehicle.strip().isdigit():
        raise argparse.ArgumentTypeError(
            f"expected VEHICLE:KIND[=VALUE][@SECONDS] with a vehicle index, e.g. 0:misfire=2; got {text!r}"
        )
    try:
        return int(vehicle), Fault.parse(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _ecu_drivers(args: argparse.Namespace) -> list[EcuDriver]:
    """One ECU driver per vehicle with its faults (none without --ecus), or raise ValueError."""
    faults: list[tuple[int, Fault]] = args.fault or []
    if not args.ecus:
        if faults or args.drive_cycle is not None:
            raise ValueError("--fault and --drive-cycle need --ecus")
        return []
    if args.interface is None:
        raise ValueError("--ecus needs --interface: the ECUs answer on the vehicles' buses")
    for vehicle, _ in faults:
        if vehicle >= args.vehicles:
            raise ValueError(
                f"--fault for vehicle {vehicle}: the vehicles are numbered 0 to {args.vehicles - 1}"
            )
    drive_cycle_s = DRIVE_CYCLE_S if args.drive_cycle is None else args.drive_cycle
    return [
        EcuDriver(DiagnosticState(), [fault for index, fault in faults if index == vehicle], drive_cycle_s)
        for vehicle in range(args.vehicles)
    ]


def _channels(args: argparse.Namespace) -> list[str]:
    """One channel per vehicle from --channel, or raise ValueError saying what is wrong."""
    given: list[str] = args.channel or []
    if args.interface is None:
        if given or args.realtime is not None:
            raise ValueError("--channel and --realtime need --interface")
        return []
    if not given:
        raise ValueError("--interface needs --channel (one per vehicle or a pattern with {i})")
    if len(given) == 1 and CHANNEL_PLACEHOLDER in given[0]:
        return [given[0].replace(CHANNEL_PLACEHOLDER, str(i)) for i in range(args.vehicles)]
    if len(given) != args.vehicles:
        raise ValueError(
            f"--channel given {len(given)} time(s) for {args.vehicles} vehicle(s); give one per "
            f"vehicle or a single pattern with {CHANNEL_PLACEHOLDER}"
        )
    return given


def main(args: argparse.Namespace) -> int:
    """Run the simulation with the outputs chosen in ``args``."""
    try:
        channels = _channels(args)
        ecus = _ecu_drivers(args)
        if not args.dbc.is_file():
            raise ValueError(f"DBC file not found: {args.dbc}")
        options: dict[str, Any] = {}
        if args.start_time is not None:
            options["start_time"] = args.start_time
        config = SimConfig(
            dbc=args.dbc,
            vehicles=args.vehicles,
            duration_s=args.duration,
            seed=args.seed,
            fleet=args.fleet,
            bus=args.bus,
            warmup_s=args.warmup,
            **options,
        )
        sim = FleetSimulator(config)
    except ValueError as error:
        print(f"roadwave sim: error: {error}", file=sys.stderr)
        return 2

    with contextlib.ExitStack() as stack:
        sinks: list[FrameSink] = []
        try:
            if args.log_dir is not None:
                sinks.append(stack.enter_context(CandumpLogSink(args.log_dir, sim.vins)))
            if args.truth is not None:
                sinks.append(stack.enter_context(TruthJsonlSink(args.truth)))
            if channels:
                # SocketCAN only passes CAN FD frames on sockets opened for FD.
                bus_options = {"fd": True} if args.interface == "socketcan" else {}
                sink = BusSink(sim, args.interface, channels, args.realtime, ecus, **bus_options)
                sinks.append(stack.enter_context(sink))
            stats = run(sim, sinks)
        except (OSError, can.CanError, ValueError) as error:
            print(f"roadwave sim: error: {error}", file=sys.stderr)
            return 1
    print(
        f"roadwave sim: fleet {config.fleet}: {config.vehicles} vehicle(s), {stats.frames} frames, "
        f"{stats.simulated_s:g} simulated s, {stats.wall_s:.2f} s wall "
        f"({stats.frames_per_s:,.0f} frames/s)",
        file=sys.stderr,
    )
    return 0
