"""The ``[v2x]`` section of the edge configuration, and the stack it builds.

Example (docs/v2x.md, "Running it in the agent")::

    [v2x]
    station_id = 1001              # default: a new random pseudonym at every start
    station_type = "passenger_car" # any StationType name, lower case
    length_m = 4.6
    width_m = 1.8
    pcap = "v2x.pcap"              # record every packet sent or received (also --v2x-pcap)

    [v2x.udp]                      # local broadcast, standing in for the radio
    group = "239.255.0.47"
    port = 47001
    interface = "127.0.0.1"
    ttl = 1

    [v2x.relay]                    # the cloud relay, through the [mqtt] broker
    via_relay = true               # upload for `roadwave v2x-relay` to check; false: tile topics
    publish_zoom = 18
    subscribe_zoom = 14
    radius = 1

    [v2x.security]                 # TS 103 097 signing and verification
    key = "keys/station.key.pem"   # the station's P-256 private key (PEM)
    ticket = "keys/station.oer"    # its authorization ticket (C-OER)
    trusted = ["keys/root.oer"]    # V2X roots whose tickets are accepted
    require_signed = true
    replay_window_s = 10.0
    max_clock_skew_s = 1.0
    certificate_interval_s = 1.0

At least one of ``[v2x.udp]`` and ``[v2x.relay]`` is required. Without
``[v2x.security]`` messages go out unsigned and only unsigned ones are accepted.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge.v2x.cam_service import VehicleDescription
from edge.v2x.errors import V2xConfigError, V2xError
from edge.v2x.model import StationType
from edge.v2x.pcap import PcapWriter
from edge.v2x.security import SecurityConfig, Signer, Verifier
from edge.v2x.stack import V2xConfig, V2xStack
from edge.v2x.transport import DEFAULT_GROUP, DEFAULT_PORT, MqttRelayTransport, UdpMulticastTransport
from roadwave.configfile import Table
from roadwave.contract import v2x as topics
from roadwave.mqtt import MqttSettings

STATION_TYPES = {member.name.lower(): member for member in StationType}
T = TypeVar("T")


@dataclass(frozen=True)
class UdpSettings:
    """The UDP multicast transport."""

    group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    interface: str = "127.0.0.1"
    ttl: int = 1


@dataclass(frozen=True)
class RelaySettings:
    """The MQTT relay transport (it uses the agent's ``[mqtt]`` broker)."""

    via_relay: bool = True
    publish_zoom: int = topics.PUBLISH_ZOOM
    subscribe_zoom: int = topics.SUBSCRIBE_ZOOM
    radius: int = topics.SUBSCRIBE_RADIUS


@dataclass(frozen=True)
class SecuritySettings:
    """Where the station's signing material and the trusted roots are, and what is accepted."""

    key: Path
    ticket: Path
    trusted: tuple[Path, ...]
    require_signed: bool = True
    replay_window_s: float = 10.0
    max_clock_skew_s: float = 1.0
    certificate_interval_s: float = 1.0


@dataclass(frozen=True)
class V2xSettings:
    """Everything the agent needs to run V2X; ``station_id`` None draws a pseudonym at start."""

    station_id: int | None = None
    vehicle: VehicleDescription = VehicleDescription()
    pcap: Path | None = None
    udp: UdpSettings | None = None
    relay: RelaySettings | None = None
    security: SecuritySettings | None = None

    @classmethod
    def read(cls, table: Table) -> V2xSettings:
        """Read a ``[v2x]`` table.

        Raises:
            ConfigError: naming the file, the table, the key and the problem.
        """
        station_type = table.choice("station_type", tuple(STATION_TYPES), "passenger_car")
        length, width = (
            table.number("length_m", None, minimum=0.1),
            table.number("width_m", None, minimum=0.1),
        )
        settings = cls(
            station_id=table.integer("station_id", None, minimum=0, maximum=2**32 - 1),
            vehicle=VehicleDescription(
                station_type=STATION_TYPES[station_type], length_m=length, width_m=width
            ),
            pcap=table.path("pcap", None),
            udp=_optional(table, "udp", _read_udp),
            relay=_optional(table, "relay", _read_relay),
            security=_optional(table, "security", _read_security),
        )
        table.finish()
        if settings.udp is None and settings.relay is None:
            raise table.error("no transport: configure [v2x.udp] (local broadcast) and/or [v2x.relay]")
        if settings.pcap is not None and not settings.pcap.parent.is_dir():
            raise table.error(f"pcap {settings.pcap}: folder {settings.pcap.parent} does not exist")
        return settings


def _optional(table: Table, key: str, read: Callable[[Table], T]) -> T | None:
    sub = table.optional_table(key)
    return None if sub is None else read(sub)


def _read_udp(table: Table) -> UdpSettings:
    settings = UdpSettings(
        group=table.text("group", UdpSettings.group),
        port=table.integer("port", UdpSettings.port, minimum=1, maximum=65535),
        interface=table.text("interface", UdpSettings.interface),
        ttl=table.integer("ttl", UdpSettings.ttl, minimum=1, maximum=255),
    )
    table.finish()
    try:  # the transport checks addresses; build one now so a bad value fails at start-up
        UdpMulticastTransport(settings.group, settings.port, interface=settings.interface, ttl=settings.ttl)
    except V2xError as exc:
        raise table.error(str(exc)) from None
    return settings


def _read_relay(table: Table) -> RelaySettings:
    settings = RelaySettings(
        via_relay=table.flag("via_relay", RelaySettings.via_relay),
        publish_zoom=table.integer(
            "publish_zoom", RelaySettings.publish_zoom, minimum=1, maximum=topics.MAX_ZOOM
        ),
        subscribe_zoom=table.integer("subscribe_zoom", RelaySettings.subscribe_zoom, minimum=1),
        radius=table.integer("radius", RelaySettings.radius, minimum=0, maximum=3),
    )
    table.finish()
    if settings.subscribe_zoom > settings.publish_zoom:
        raise table.error(
            f"subscribe_zoom {settings.subscribe_zoom} must not exceed publish_zoom {settings.publish_zoom}"
        )
    return settings


def _read_security(table: Table) -> SecuritySettings:
    settings = SecuritySettings(
        key=table.path("key"),
        ticket=table.path("ticket"),
        trusted=tuple(table.paths("trusted")),
        require_signed=table.flag("require_signed", SecuritySettings.require_signed),
        replay_window_s=table.number("replay_window_s", SecuritySettings.replay_window_s, minimum=0.1),
        max_clock_skew_s=table.number("max_clock_skew_s", SecuritySettings.max_clock_skew_s, minimum=0.0),
        certificate_interval_s=table.number(
            "certificate_interval_s", SecuritySettings.certificate_interval_s, minimum=0.0
        ),
    )
    table.finish()
    if not settings.trusted:
        raise table.error("'trusted' lists no V2X root certificate: no signed message could be accepted")
    try:
        load_security(settings)
    except (OSError, ValueError, TypeError) as exc:
        raise table.error(str(exc)) from None
    return settings


def load_security(settings: SecuritySettings) -> tuple[Signer, Verifier]:
    """The signer and verifier of the configured files.

    Raises:
        ValueError: a file that is missing, unreadable or not what it should be, named.
    """
    try:
        key = load_pem_private_key(_read(settings.key, "key"), password=None)
    except ValueError as exc:
        raise ValueError(f"key {settings.key}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"key {settings.key}: not an elliptic-curve (P-256) key")
    try:
        signer = Signer(
            key, _read(settings.ticket, "ticket"), certificate_interval_s=settings.certificate_interval_s
        )
    except ValueError as exc:
        raise ValueError(f"ticket {settings.ticket}: {exc}") from None
    config = SecurityConfig(
        trusted_authorities=[_read(path, "trusted") for path in settings.trusted],
        require_signed=settings.require_signed,
        replay_window_s=settings.replay_window_s,
        max_clock_skew_s=settings.max_clock_skew_s,
    )
    return signer, Verifier(config)


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{key} {path}: cannot read ({exc.strerror})") from None


def build_stack(
    settings: V2xSettings,
    mqtt: MqttSettings,
    client_id: str,
    sender: str,
    pcap: PcapWriter | None,
) -> V2xStack:
    """The agent's V2X stack: transports opened, security loaded; set its ``on_warning``.

    The relay transport gets its own MQTT connection (``{client_id}-v2x``, clean, QoS 0),
    opened in the background so the agent starts without the broker, and uploads as
    ``sender`` (the VIN).

    Raises:
        V2xConfigError: security files that changed since the configuration was read.
        TransportError: a transport that cannot open (the multicast socket).
    """
    signer = verifier = None
    if settings.security is not None:
        try:
            signer, verifier = load_security(settings.security)
        except ValueError as exc:
            raise V2xConfigError(f"[v2x.security] {exc}") from exc
    transports: list[UdpMulticastTransport | MqttRelayTransport] = []
    if settings.udp is not None:
        udp = settings.udp
        transports.append(UdpMulticastTransport(udp.group, udp.port, interface=udp.interface, ttl=udp.ttl))
    if settings.relay is not None:
        relay = settings.relay
        transports.append(
            MqttRelayTransport(
                mqtt,
                f"{client_id}-v2x",
                sender=sender,
                via_relay=relay.via_relay,
                publish_zoom=relay.publish_zoom,
                subscribe_zoom=relay.subscribe_zoom,
                radius=relay.radius,
                connect_timeout_s=None,
            )
        )
    station_id = secrets.randbelow(2**32) if settings.station_id is None else settings.station_id
    return V2xStack(
        V2xConfig(station_id=station_id, vehicle=settings.vehicle),
        transports,
        signer=signer,
        verifier=verifier,
        pcap=pcap,
    )
