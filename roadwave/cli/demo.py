"""``roadwave demo``: a simulated fleet's CAN traffic through the real path into InfluxDB."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cloud.influx import InfluxError
from roadwave.mqtt import MqttConnectError
from roadwave.pipeline import Endpoints, IsolationReport, Pipeline, PipelineError
from roadwave.services import InfluxDB1, ServiceError


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run a simulated fleet end to end (servers started for you)",
        description="Start Mosquitto and InfluxDB on free loopback ports (unless given), "
        "simulate a fleet on a ring road, run one edge agent per vehicle and the ingest, "
        "then print what reached InfluxDB. The demo's broker runs TLS only, with a client "
        "certificate for every vehicle and service from a fleet PKI in the working folder and "
        "the ACL of the fleet registry (docs/security.md).",
    )
    parser.add_argument("--vehicles", type=int, default=5, help="connected vehicles (default 5)")
    parser.add_argument(
        "--duration", type=float, default=60.0, metavar="S", help="simulated seconds (default 60)"
    )
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=300.0,
        metavar="S",
        help="traffic simulated before recording starts, so stop-and-go waves have formed (default 300)",
    )
    parser.add_argument("--workdir", type=Path, help="keep all files here (default: a temporary folder)")
    parser.add_argument(
        "--mqtt",
        default=os.environ.get("ROADWAVE_MQTT"),
        metavar="HOST:PORT",
        help="use this broker instead of starting one, in plain MQTT without credentials (env ROADWAVE_MQTT)",
    )
    parser.add_argument(
        "--plain-mqtt",
        action="store_true",
        help="start the broker without TLS (anonymous plain MQTT on loopback), e.g. to compare",
    )
    parser.add_argument(
        "--influx-url",
        default=os.environ.get("ROADWAVE_INFLUX_URL"),
        metavar="URL",
        help="use this InfluxDB 1.x instead of starting one (env ROADWAVE_INFLUX_URL)",
    )
    parser.add_argument("--database", default="roadwave", help="InfluxDB database (default roadwave)")
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Ctrl-C")
    parser.set_defaults(func=run)


class _Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


def _parse_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--mqtt {value!r}: expected HOST:PORT")
    return host, int(port)


def _check_args(args: argparse.Namespace) -> str | None:
    if not 1 <= args.vehicles <= 200:
        return "--vehicles must be between 1 and 200"
    if not 1 <= args.duration <= 3600:
        return "--duration must be between 1 and 3600 seconds"
    return None


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every published sample reached InfluxDB."""
    problem = _check_args(args)
    if problem:
        print(f"roadwave demo: {problem}", file=sys.stderr)
        return 2
    clock = _Clock()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir.resolve()
        else:
            workdir = Path(tempfile.mkdtemp(prefix="roadwave-demo-"))
            if not args.keep:
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            influx_url = _influx_url(args, workdir, stack, clock)
            pipeline = stack.enter_context(_pipeline(args, workdir, influx_url, clock))
            result = _drive(args, pipeline, clock)
        except (ServiceError, PipelineError, InfluxError, MqttConnectError, ValueError) as exc:
            print(f"roadwave demo: {exc}", file=sys.stderr)
            return 2
        if args.keep:
            print("\nServers keep running; press Ctrl-C to stop them.", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    return result


def _influx_url(args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack, clock: _Clock) -> str:
    if args.influx_url:
        clock.say(f"using InfluxDB at {args.influx_url}")
        return str(args.influx_url)
    influx = stack.enter_context(InfluxDB1(workdir / "influxdb").start())
    clock.say(f"InfluxDB {influx.version} started at {influx.url}")
    return influx.url


def _pipeline(args: argparse.Namespace, workdir: Path, influx_url: str, clock: _Clock) -> Pipeline:
    if args.mqtt:
        mqtt_host, mqtt_port = _parse_host_port(args.mqtt)
        clock.say(f"using the MQTT broker at {mqtt_host}:{mqtt_port} (plain MQTT)")
        return Pipeline(workdir, Endpoints(mqtt_host, mqtt_port, influx_url, args.database))
    pipeline = Pipeline.with_own_broker(workdir, influx_url, args.database, tls=not args.plain_mqtt)
    endpoints = pipeline.endpoints
    where = f"{endpoints.mqtt_host}:{endpoints.mqtt_port}"
    if endpoints.pki_dir is None:
        clock.say(f"Mosquitto started on {where}: plain MQTT, anonymous access")
    else:
        clock.say(
            f"Mosquitto started on {where}: TLS only, client certificates of the fleet CA required, "
            "ACL from the fleet registry"
        )
        clock.say(f"  fleet PKI (CA, certificates, CRL) in {endpoints.pki_dir}")
    return pipeline


def _drive(args: argparse.Namespace, pipeline: Pipeline, clock: _Clock) -> int:
    pipeline.influx.create_database()
    clock.say(f"simulating {args.vehicles} vehicles for {args.duration:.0f} s on a ring road ...")
    sim = pipeline.simulate(args.vehicles, args.duration, args.seed, warmup_s=args.warmup)
    clock.say(f"  {sim.frames} CAN frames written to {pipeline.workdir / 'logs'}")
    if pipeline.endpoints.tls:
        clock.say(f"  a certificate for each vehicle, and its topics in {pipeline.workdir / 'fleet.toml'}")
    pipeline.start_ingest()
    clock.say("ingest subscribed; starting one edge agent per vehicle ...")
    reports = pipeline.run_agents(sim.logs)
    decoded = sum(bus["frames_decoded"] for r in reports for bus in r["buses"].values())
    published = sum(r["uplink"]["samples_acked"] for r in reports)
    clock.say(f"  agents done: {decoded} frames decoded, {published} samples acknowledged by the broker")
    clock.say("waiting for the ingest to write everything ...")
    stored = pipeline.wait_stored(published)
    ingest = pipeline.stop_ingest()
    clock.say(f"  {ingest['points_written']} points ({stored} samples) in InfluxDB")
    isolation = _isolation(pipeline, list(sim.logs), clock)
    _print_summary(args, pipeline, sim.frames, decoded, published, stored, ingest, isolation, clock)
    isolated = isolation is None or isolation.isolated
    return 0 if stored == published and ingest["messages_rejected"] == 0 and isolated else 1


def _isolation(pipeline: Pipeline, vins: list[str], clock: _Clock) -> IsolationReport | None:
    """One vehicle's certificate tries to read and to write another vehicle's telemetry."""
    if not pipeline.endpoints.tls or len(vins) < 2:
        return None
    intruder, victim = vins[:2]
    clock.say(f"isolation: {intruder}'s certificate reads and writes {victim}'s telemetry ...")
    report = pipeline.check_isolation(intruder, victim)
    clock.say(f"  {_isolation_text(report)}")
    return report


def _isolation_text(report: IsolationReport | None) -> str:
    if report is None:
        return "not checked (plain MQTT, or a single vehicle)"
    outcome = "isolated" if report.isolated else "NOT ISOLATED"
    control = "" if report.control else "; the control message did not arrive either"
    return (
        f"{outcome}: {report.intruder} received {report.read} of {report.victim}'s messages; "
        f"{report.forged} it published as {report.victim} delivered{control}"
    )


def _mqtt_text(endpoints: Endpoints) -> str:
    if endpoints.pki_dir is None:
        return "plain, without credentials"
    return f"TLS only, client certificates (PKI in {endpoints.pki_dir})"


def _print_summary(
    args: argparse.Namespace,
    pipeline: Pipeline,
    frames: int,
    decoded: int,
    published: int,
    stored: int,
    ingest: dict[str, int],
    isolation: IsolationReport | None,
    clock: _Clock,
) -> None:
    query = pipeline.influx.query
    speeds = query(
        'SELECT MEAN("Vehicle.Speed") AS mean, MIN("Vehicle.Speed") AS min, '
        'MAX("Vehicle.Speed") AS max, MIN("Vehicle.Acceleration.Longitudinal") AS brake '
        "FROM telemetry GROUP BY vin"
    )
    where = query(
        'SELECT LAST("Vehicle.CurrentLocation.Latitude") AS lat, '
        'LAST("Vehicle.CurrentLocation.Longitude") AS lon, LAST("Vehicle.TraveledDistance") AS odo '
        "FROM telemetry GROUP BY vin"
    )
    position = {row["vin"]: row for row in where}
    endpoints = pipeline.endpoints
    print()
    print("roadwave demo summary")
    print(f"  vehicles            {args.vehicles} (ring road, {args.duration:.0f} s simulated)")
    print(f"  CAN frames          {frames} simulated, {decoded} decoded by the agents")
    print(f"  samples             {published} published, {stored} stored in InfluxDB")
    print(f"  points written      {ingest['points_written']} in {ingest['writes']} writes")
    print(f"  rejected payloads   {ingest['messages_rejected']}")
    print(f"  MQTT                {_mqtt_text(endpoints)}")
    print(f"  isolation           {_isolation_text(isolation)}")
    print(f"  wall time           {time.monotonic() - clock.started:.1f} s")
    print()
    print("  vin                speed km/h mean/min/max   hardest brake m/s2   last position, odometer")
    for row in speeds:
        pos = position.get(row["vin"], {})
        print(
            f"  {row['vin']}  {row['mean']:6.1f} {row['min']:6.1f} {row['max']:6.1f}"
            f"        {row['brake']:6.2f}          "
            f"{pos.get('lat', 0):.6f}, {pos.get('lon', 0):.6f}, {pos.get('odo', 0) / 1000:.1f} km"
        )
    print()
    print("Grafana: add an InfluxDB data source with query language InfluxQL,")
    print(f"  URL {endpoints.influx_url}, database {endpoints.database}; for example")
    print('  SELECT mean("Vehicle.Speed") FROM telemetry WHERE $timeFilter GROUP BY time($__interval), vin')
    print("  (or provision dashboards/provisioning/datasources/roadwave.yaml with those two values)")
    if args.workdir or args.keep:
        print(f"Files (configs, fleet PKI, registry, CAN logs, ground truth, logs): {pipeline.workdir}")
    else:
        print("Files are deleted at exit: --workdir DIR keeps them, --keep keeps the servers running.")
