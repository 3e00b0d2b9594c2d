"""The edge agent's configuration: a TOML file read into frozen, validated dataclasses.

Example::

    [vehicle]
    vin = "RWDEM000000000001"
    fleet = "demo"

    [mqtt]
    host = "127.0.0.1"
    port = 1883

    [batch]
    max_records = 1000     # publish when this many records are waiting...
    max_age_s = 1.0        # ...or when the oldest has waited this long

    [[bus]]
    name = "can0"
    dbc = ["../dbc/roadwave_car.dbc"]   # relative to this file
    interface = "socketcan"             # any python-can interface
    channel = "vcan0"
    # or, to replay a recorded log instead of a live bus:
    # log = "drive.log"
    # realtime = false
    timeout_factor = 3.0                # a message is stale after 3 cycle times

    [[bus.integrity]]                   # checksum/counter settings beyond the DBC's
    message = "ESP_Speed"
    algorithm = "crc8_sae_j1850"        # or xor8, sum8, none (switch off)
    counter = "ESP_Speed_Counter"
    checksum = "ESP_Speed_Checksum"

    [health]
    interval_s = 10.0                   # agent health published this often

    [uplink]
    spool = "spool/RWDEM000000000001.sqlite"   # default: next to this file, named by VIN
    spool_max_mb = 256.0                # when full, the oldest batches are dropped (counted)
    spool_max_age_h = 168.0             # batches older than this are dropped (counted)
    compression = "zlib"                # or "none"
    max_in_flight = 20                  # unacknowledged batches at a time
    max_messages_per_s = 20.0           # resend rate after an outage
    # spool_key_file = "spool.key"      # encrypt the spool at rest (docs/security.md)

    [events]                            # ADAS event detection (docs/events.md); on by default
    enabled = true
    vehicle_class = "car"

    [v2x]                               # CAM/DENM (docs/v2x.md); off unless configured
    [v2x.udp]

    [diagnostics]                       # OBD-II/UDS polling (docs/diagnostics.md); off unless configured
    bus = "can0"                        # a live bus
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.diagnostics.agent import DiagnosticsSettings
from edge.events.config import EventsConfig, parse_events_config
from edge.integrity import CHECKSUM_ALGORITHMS, IntegrityOverride
from edge.v2x.config import V2xSettings
from roadwave.configfile import ConfigError, Table
from roadwave.contract import BUS_PATTERN, ContractError, check_fleet, check_vin
from roadwave.mqtt import MqttSettings
from roadwave.spool import MAX_SIZE_MB, SpoolKeyError, load_spool_key


@dataclass(frozen=True)
class BatchSettings:
    """When a telemetry batch is published."""

    max_records: int = 1000
    max_age_s: float = 1.0


COMPRESSIONS = ("zlib", "none")
#: Upper bound of the spool's age (10 years): larger values are typos.
MAX_SPOOL_AGE_H = 10 * 8766.0


@dataclass(frozen=True)
class UplinkSettings:
    """Store-and-forward: where the spool lives, its bounds, and how fast it drains.

    ``spool_key`` (from ``spool_key_file``: 64 hex digits or 32 raw bytes, mode 0600)
    encrypts the spool's payloads at rest; None leaves them in clear.
    """

    spool: Path
    spool_max_bytes: int = 256 * 2**20
    spool_max_age_s: float = 7 * 24 * 3600.0
    compression: str = "zlib"
    max_in_flight: int = 20
    max_messages_per_s: float = 20.0
    spool_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def read(cls, table: Table, default_spool: Path) -> UplinkSettings:
        """Read an ``[uplink]`` table."""
        max_mb = table.number("spool_max_mb", cls.spool_max_bytes / 2**20, minimum=8.0, maximum=MAX_SIZE_MB)
        max_age_h = table.number(
            "spool_max_age_h", cls.spool_max_age_s / 3600, minimum=0.01, maximum=MAX_SPOOL_AGE_H
        )
        key_file = table.path("spool_key_file", None)
        settings = cls(
            spool=table.path("spool", None) or default_spool,
            spool_max_bytes=int(max_mb * 2**20),
            spool_max_age_s=max_age_h * 3600,
            compression=table.choice("compression", COMPRESSIONS, cls.compression),
            max_in_flight=table.integer("max_in_flight", cls.max_in_flight, minimum=1, maximum=1000),
            max_messages_per_s=table.number("max_messages_per_s", cls.max_messages_per_s, minimum=0.1),
            spool_key=None if key_file is None else _spool_key(table, key_file),
        )
        table.finish()
        return settings


def _spool_key(table: Table, path: Path) -> bytes:
    try:
        return load_spool_key(path)
    except SpoolKeyError as exc:
        raise table.error(f"spool_key_file: {exc}") from exc


@dataclass(frozen=True)
class BusSettings:
    """One CAN source: a live python-can bus or a log file to replay."""

    name: str
    dbc: tuple[Path, ...]
    mapping: Path | None = None
    interface: str | None = None
    channel: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None
    realtime: bool = False
    timeout_factor: float = 3.0
    integrity: tuple[IntegrityOverride, ...] = ()

    @classmethod
    def read(cls, table: Table) -> BusSettings:
        """Read one ``[[bus]]`` table; exactly one of interface+channel or log."""
        settings = cls(
            name=table.text("name"),
            dbc=tuple(table.paths("dbc")),
            mapping=table.path("mapping", None),
            interface=table.text("interface", None),
            channel=table.text("channel", None),
            options=table.mapping("options"),
            log=table.path("log", None),
            realtime=table.flag("realtime", False),
            timeout_factor=table.number("timeout_factor", cls.timeout_factor, minimum=1.0),
            integrity=tuple(_integrity_override(entry) for entry in table.tables("integrity")),
        )
        table.finish()
        if not BUS_PATTERN.fullmatch(settings.name):
            raise table.error(f"bus name {settings.name!r}: use 1-32 of A-Z a-z 0-9 _ . -")
        live = settings.interface is not None or settings.channel is not None
        if live == (settings.log is not None):
            raise table.error(
                f"bus {settings.name!r}: give either interface and channel (live) or log (replay)"
            )
        if live and (settings.interface is None or settings.channel is None):
            raise table.error(f"bus {settings.name!r}: a live bus needs both interface and channel")
        for path in (*settings.dbc, settings.log, settings.mapping):
            if path is not None and not path.is_file():
                raise table.error(f"bus {settings.name!r}: file not found: {path}")
        return settings


def _integrity_override(table: Table) -> IntegrityOverride:
    override = IntegrityOverride(
        message=table.text("message"),
        algorithm=table.choice("algorithm", ("none", *CHECKSUM_ALGORITHMS)),
        counter_signal=table.text("counter", None),
        checksum_signal=table.text("checksum", None),
    )
    table.finish()
    if override.algorithm != "none" and None in (override.counter_signal, override.checksum_signal):
        raise table.error(f"{override.message}: algorithm {override.algorithm} needs counter and checksum")
    return override


@dataclass(frozen=True)
class EdgeConfig:
    """Everything the edge agent needs to run."""

    vin: str
    fleet: str
    buses: tuple[BusSettings, ...]
    uplink: UplinkSettings
    mqtt: MqttSettings = MqttSettings()
    batch: BatchSettings = BatchSettings()
    health_interval_s: float = 10.0
    #: Event detection settings; None when ``[events] enabled = false`` (V2X then still
    #: detects the events its DENMs announce, with the class defaults).
    events: EventsConfig | None = field(default_factory=EventsConfig.for_class)
    #: V2X settings; None without a ``[v2x]`` section.
    v2x: V2xSettings | None = None
    #: Diagnostic polling; None without a ``[diagnostics]`` section or with ``enabled = false``.
    diagnostics: DiagnosticsSettings | None = None

    @property
    def client_id(self) -> str:
        """The MQTT client id: configured, or derived from the VIN."""
        return self.mqtt.client_id or f"roadwave-edge-{self.vin}"

    @classmethod
    def load(cls, path: Path) -> EdgeConfig:
        """Read and validate an edge configuration file.

        Raises:
            ConfigError: naming the file, the key and the problem.
        """
        table = Table.load(path)
        vehicle = table.table("vehicle", required=True)
        vin, fleet = vehicle.text("vin"), vehicle.text("fleet")
        vehicle.finish()
        try:
            check_vin(vin)
            check_fleet(fleet)
        except ContractError as exc:
            raise ConfigError(f"{path}: [vehicle] {exc}") from exc
        mqtt = MqttSettings.read(table.table("mqtt"))
        batch_table = table.table("batch")
        batch = BatchSettings(
            max_records=batch_table.integer("max_records", BatchSettings.max_records, minimum=1),
            max_age_s=batch_table.number("max_age_s", BatchSettings.max_age_s, minimum=0.01),
        )
        batch_table.finish()
        health = table.table("health")
        health_interval_s = health.number("interval_s", cls.health_interval_s, minimum=0.1)
        health.finish()
        uplink = UplinkSettings.read(table.table("uplink"), path.parent / "spool" / f"{vin}.sqlite")
        events_table = table.table("events")
        enabled = events_table.flag("enabled", True)
        events = parse_events_config(events_table)  # checked even when switched off
        v2x_table = table.optional_table("v2x")
        v2x = None if v2x_table is None else V2xSettings.read(v2x_table)
        buses = tuple(BusSettings.read(bus) for bus in table.tables("bus"))
        diagnostics_table = table.optional_table("diagnostics")
        table.finish()
        if not buses:
            raise ConfigError(f"{path}: no [[bus]] configured")
        names = [bus.name for bus in buses]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: bus names must be unique, got {names}")
        diagnostics = (
            None
            if diagnostics_table is None
            else DiagnosticsSettings.read(
                diagnostics_table,
                live=[bus.name for bus in buses if bus.log is None],
                replayed=[bus.name for bus in buses if bus.log is not None],
            )
        )
        return cls(
            vin=vin,
            fleet=fleet,
            buses=buses,
            uplink=uplink,
            mqtt=mqtt,
            batch=batch,
            health_interval_s=health_interval_s,
            events=events if enabled else None,
            v2x=v2x,
            diagnostics=diagnostics,
        )
