"""The broker options shared by client commands: ``--config`` with an ``[mqtt]`` table, host and port."""

from __future__ import annotations

import argparse
from pathlib import Path

from roadwave import mqtt
from roadwave.configfile import ConfigError, Table, with_overrides


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config``, ``--mqtt-host`` and ``--mqtt-port``."""
    parser.add_argument(
        "--config", type=Path, help="TOML file with an [mqtt] table (host, port, client_id, TLS files)"
    )
    parser.add_argument("--mqtt-host", help="broker host (overrides the file; default 127.0.0.1)")
    parser.add_argument("--mqtt-port", type=int, help="broker port (overrides the file; default 1883)")


def broker_settings(args: argparse.Namespace, client_id: str) -> mqtt.MqttSettings:
    """The ``[mqtt]`` table of ``--config`` (or defaults) with the command-line overrides.

    ``client_id`` applies when the file names none.

    Raises:
        ConfigError: the file or an option is invalid.
    """
    settings = mqtt.MqttSettings()
    if args.config is not None:
        root = Table.load(args.config)
        settings = mqtt.MqttSettings.read(root.table("mqtt"))
        root.finish()
    settings = with_overrides(
        settings, host=args.mqtt_host, port=args.mqtt_port, client_id=settings.client_id or client_id
    )
    if not 1 <= settings.port <= 65535:
        raise ConfigError(f"--mqtt-port must be 1-65535, got {settings.port}")
    return settings
