"""The broker's topic ACL, generated from the fleet registry: each identity gets exactly its topics.

The broker takes a client's username from its certificate's Common Name
(``use_identity_as_username``), so every identity of the registry gets one ``user`` block
of ``topic`` lines. There are no ``pattern`` lines: Mosquitto applies patterns to every
user, partners included, and ``%c`` (the client id) is chosen by the client.

How Mosquitto 2.0.11's ACL file is enforced (checked by tests/test_security_tls.py):

- SUBSCRIBE is never refused by the ACL file, whatever the filter: ``#`` and shared
  subscriptions (``$share/GROUP/filter``) get a SUBACK granting the QoS asked for.
  What reaches the client is checked message by message, against its ``read`` lines,
  by the topic the message was published to. A shared subscription therefore needs no
  ``$share`` line: a read line for the topic is what counts. Retained messages are
  filtered the same way.
- A PUBLISH without a matching ``write`` line is dropped. The publisher is not told over
  MQTT 3.1.1 (the PUBACK looks like any other); MQTT 5 returns reason 0x87 (not
  authorised).
- The ACL file is read again on SIGHUP and applies to connected clients from then on;
  an identity without a ``user`` block can neither publish nor receive anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from roadwave.contract import HEALTH, STATUS, TELEMETRY, TOPIC_ROOT, TOPIC_VERSION
from roadwave.contract.alerts import ACK_SUBSCRIPTION, ALL_ALERTS_FILTER, ack_topic, partner_alerts_filter
from roadwave.contract.diagnostics import DIAGNOSTICS
from roadwave.contract.events import EVENTS
from roadwave.contract.v2x import TILE, UPLOAD, V2X_ROOT, WARNING
from roadwave.pki import write_file_atomically
from roadwave.registry import ALERTS, INGEST, RELAY, FleetRegistry, Partner, Service, Vehicle

# Topic parts the contract does not define yet (issue 6 decided them).
COMMAND: Final = "command"

READ: Final = "read"
WRITE: Final = "write"
_V1: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}"
#: What a vehicle publishes under its own ``roadwave/v1/{fleet}/{vin}/``.
VEHICLE_KINDS: Final = (TELEMETRY, HEALTH, STATUS, EVENTS, DIAGNOSTICS, WARNING)
#: What the ingest stores, from every vehicle.
INGESTED_KINDS: Final = (TELEMETRY, HEALTH, STATUS, EVENTS, DIAGNOSTICS)
#: What the alerting service watches, from every vehicle.
WATCHED_KINDS: Final = (TELEMETRY, EVENTS, DIAGNOSTICS)


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``topic`` line: ``read`` or ``write`` access to a topic filter."""

    access: str
    topic: str

    def line(self) -> str:
        """The ACL file line."""
        return f"topic {self.access} {self.topic}"


def vehicle_grants(vehicle: Vehicle) -> list[Grant]:
    """Its own topics, its V2X uploads (its VIN as the sender), its commands and the V2X tiles."""
    own = f"{_V1}/{vehicle.fleet}/{vehicle.vin}"
    return [
        *(Grant(WRITE, f"{own}/{kind}") for kind in VEHICLE_KINDS),
        Grant(WRITE, f"{V2X_ROOT}/{UPLOAD}/{vehicle.vin}/#"),
        Grant(READ, f"{own}/{COMMAND}"),
        Grant(READ, f"{V2X_ROOT}/{TILE}/#"),
    ]


def partner_grants(partner: Partner, registry: FleetRegistry) -> list[Grant]:
    """The alerts about the vehicles it serves, and its acknowledgements."""
    grants = [Grant(READ, partner_alerts_filter(partner.id, fleet)) for fleet in partner.fleets]
    for vin in partner.vins:
        fleet = registry.fleet_of(vin)
        if fleet not in partner.fleets:
            grants.append(Grant(READ, partner_alerts_filter(partner.id, fleet, vin)))
    grants.append(Grant(WRITE, ack_topic(partner.id)))
    return grants


#: Per service role, what it needs for every vehicle and partner.
SERVICE_GRANTS: Final[dict[str, tuple[Grant, ...]]] = {
    # Shared subscriptions ($share/roadwave-ingest/...) are covered: delivery is checked by topic.
    INGEST: tuple(Grant(READ, f"{_V1}/+/+/{kind}") for kind in INGESTED_KINDS),
    RELAY: (Grant(READ, f"{V2X_ROOT}/{UPLOAD}/+/+/+"), Grant(WRITE, f"{V2X_ROOT}/{TILE}/#")),
    ALERTS: (
        *(Grant(READ, f"{_V1}/+/+/{kind}") for kind in WATCHED_KINDS),
        Grant(READ, ACK_SUBSCRIPTION),
        Grant(WRITE, ALL_ALERTS_FILTER),
        Grant(WRITE, f"{_V1}/+/+/{COMMAND}"),
    ),
}


def service_grants(service: Service) -> list[Grant]:
    """What the service's role needs."""
    return list(SERVICE_GRANTS[service.role])


def grants(registry: FleetRegistry) -> dict[str, list[Grant]]:
    """Every identity of the registry and its grants, in registry order."""
    result = {vehicle.vin: vehicle_grants(vehicle) for vehicle in registry.vehicles}
    result.update({partner.id: partner_grants(partner, registry) for partner in registry.partners})
    result.update({service.id: service_grants(service) for service in registry.services})
    return result


def render_acl(registry: FleetRegistry) -> str:
    """The text of a Mosquitto ACL file for the registry."""
    roles = registry.roles()
    lines = [
        "# Mosquitto ACL generated by roadwave from the fleet registry; regenerate it, do not edit.",
        "# Usernames are certificate Common Names (use_identity_as_username); see docs/security.md.",
    ]
    for identity, identity_grants in grants(registry).items():
        lines += ["", f"# {roles[identity]}", f"user {identity}"]
        lines += [grant.line() for grant in identity_grants]
    return "\n".join(lines) + "\n"


def write_acl(registry: FleetRegistry, path: Path) -> Path:
    """Write the ACL file (atomically, 0644) and return its path."""
    write_file_atomically(Path(path), render_acl(registry).encode(), 0o644)
    return Path(path)
