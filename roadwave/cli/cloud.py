"""``roadwave cloud ...``: the cloud services, ``ingest`` and ``alerts``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cloud.alerting import AlertingConfig, AlertingService
from cloud.influx import InfluxError
from cloud.ingest import INFLUX_APIS, IngestConfig, IngestService, parse_partition
from roadwave.configfile import ConfigError, with_overrides
from roadwave.contract.alerts import AlertFormatError
from roadwave.mqtt import MqttConnectError


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave cloud`` and its services."""
    parser = subparsers.add_parser("cloud", help="cloud services (ingest, alerts)")
    services = parser.add_subparsers(title="services", metavar="SERVICE", required=True)
    ingest = services.add_parser(
        "ingest",
        help="MQTT telemetry -> InfluxDB",
        description="Subscribe to the fleet's telemetry, validate it and write it to InfluxDB. "
        "Prints a JSON line when ready and one with its counters when stopped (SIGINT/SIGTERM). "
        "Options override the configuration file.",
    )
    ingest.add_argument("--config", type=Path, help="ingest TOML file")
    ingest.add_argument("--mqtt-host", help="broker host")
    ingest.add_argument("--mqtt-port", type=int, help="broker port")
    ingest.add_argument("--influx-url", help="InfluxDB URL, e.g. http://127.0.0.1:8086")
    ingest.add_argument("--influx-api", choices=INFLUX_APIS, help="v1 (1.x) or v2 (1.8+, 2.x, 3.x)")
    ingest.add_argument("--database", help="v1 database or v2/3 bucket")
    ingest.add_argument("--token", help="InfluxDB token (v2 API)")
    ingest.add_argument("--org", help="InfluxDB organisation (v2 API)")
    ingest.add_argument("--dead-letter-dir", type=Path, help="where rejected messages are kept")
    ingest.add_argument(
        "--worker",
        metavar="NAME",
        help="worker name for running several ingests: MQTT client id roadwave-ingest-NAME, "
        "which also names its buffer and dead-letter files",
    )
    ingest.add_argument(
        "--partition",
        metavar="K/N",
        help="take only the vehicles of partition K of N (plain subscriptions instead of a shared one)",
    )
    ingest.add_argument("--buffer-dir", type=Path, help="where messages wait while InfluxDB is unreachable")
    ingest.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /ready and /live on this port (0: any free port)"
    )
    ingest.set_defaults(func=run_ingest)
    alerts = services.add_parser(
        "alerts",
        help="maintenance alerts -> partners over MQTT",
        description="Run the maintenance rules over the fleet's telemetry, store alert transitions in "
        "InfluxDB and deliver them to the partners serving each vehicle; apply their acknowledgements "
        "(docs/alerts.md). Prints a JSON line when ready and one with its counters when stopped "
        "(SIGINT/SIGTERM).",
    )
    alerts.add_argument("--config", type=Path, required=True, help="alerting TOML file")
    alerts.set_defaults(func=run_alerts)


def ingest_config(args: argparse.Namespace) -> IngestConfig:
    """The configuration file (or defaults) with command-line overrides applied."""
    config = IngestConfig.load(args.config) if args.config else IngestConfig()
    client_id = f"roadwave-ingest-{args.worker}" if args.worker else None
    config = IngestConfig(
        mqtt=with_overrides(config.mqtt, host=args.mqtt_host, port=args.mqtt_port, client_id=client_id),
        influx=with_overrides(
            config.influx,
            url=args.influx_url,
            api=args.influx_api,
            database=args.database,
            token=args.token,
            org=args.org,
        ),
        ingest=with_overrides(
            config.ingest,
            dead_letter_dir=args.dead_letter_dir,
            buffer_dir=args.buffer_dir,
            metrics_port=args.metrics_port,
            partition=parse_partition(args.partition, "--partition"),
        ),
    )
    if config.influx.api == "v2" and not config.influx.token:
        raise ConfigError("the v2 InfluxDB API needs a token (--token or [influx] token)")
    return config


class _Service(Protocol):
    ready: threading.Event

    def run(self, stop: threading.Event) -> Any: ...


def _serve(
    name: str, service: _Service, ready: Callable[[], dict[str, Any]], failures: tuple[type[Exception], ...]
) -> int:
    """Run a service until SIGINT/SIGTERM: a JSON line when ready, one with its counters when stopped."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    outcome: list[Any] = []

    def serve() -> None:
        try:
            outcome.append(service.run(stop))
        except failures as exc:
            outcome.append(exc)

    worker = threading.Thread(target=serve, name=name)
    worker.start()
    while worker.is_alive() and not service.ready.wait(0.1):
        pass
    if service.ready.is_set():
        print(json.dumps({"event": "ready", **ready()}), flush=True)
    while worker.is_alive():
        worker.join(0.2)  # short joins keep the main thread responsive to signals
    result = outcome[0] if outcome else RuntimeError(f"{name} ended unexpectedly")
    if isinstance(result, Exception):
        print(f"roadwave cloud {name}: {result}", file=sys.stderr)
        return 3
    print(json.dumps({"event": "stopped", "stats": dataclasses.asdict(result)}), flush=True)
    return 0


def run_ingest(args: argparse.Namespace) -> int:
    """Run the ingest until SIGINT/SIGTERM."""
    try:
        service = IngestService(ingest_config(args))
    except ConfigError as exc:
        print(f"roadwave cloud ingest: {exc}", file=sys.stderr)
        return 2
    return _serve(
        "ingest",
        service,
        lambda: {
            "client_id": service.config.client_id,
            "dead_letters": str(service.dead_letters.path),
            "metrics_port": service.metrics.port,
        },
        (InfluxError, MqttConnectError),
    )


def run_alerts(args: argparse.Namespace) -> int:
    """Run the alerting service until SIGINT/SIGTERM."""
    try:
        service = AlertingService(AlertingConfig.load(args.config))
    except ConfigError as exc:
        print(f"roadwave cloud alerts: {exc}", file=sys.stderr)
        return 2
    return _serve(
        "alerts",
        service,
        lambda: {"client_id": service.config.client_id, "alerts_restored": service.stats.alerts_restored},
        (InfluxError, MqttConnectError, AlertFormatError),
    )
