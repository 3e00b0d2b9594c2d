"""The fleet registry: which vehicles, partners and services may use the broker.

A TOML file, checked as a whole when it is loaded::

    [[vehicle]]
    vin = "RWDEM0SM0SR000001"
    fleet = "demo"

    [[partner]]
    id = "acme-insurance"           # its certificate's Common Name
    fleets = ["demo"]               # every vehicle of these fleets...
    vins = ["RWDEM0SM0SR000002"]    # ...and these vehicles (registered above)

    [[service]]
    id = "ingest-1"
    role = "ingest"                 # ingest, relay or alerts

Identities are certificate Common Names (``roadwave.pki``): a vehicle's VIN, a partner's
or a service's id. :mod:`roadwave.acl` turns the registry into the broker's ACL file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from roadwave.configfile import ConfigError, Table
from roadwave.contract import ContractError, check_fleet, check_vin
from roadwave.pki import PARTNER, SERVICE, VEHICLE, PkiError, check_identity

INGEST: Final = "ingest"
RELAY: Final = "relay"
ALERTS: Final = "alerts"
#: What a service does decides its topics (see :mod:`roadwave.acl`).
SERVICE_ROLES: Final = (INGEST, RELAY, ALERTS)
#: Fleet names whose vehicle topics would fall into another subtree (``roadwave/v1/partners/...``).
RESERVED_FLEETS: Final = frozenset({"partners"})


class RegistryError(ConfigError):
    """The fleet registry is inconsistent or an entry is invalid; the message names it."""


def _checked(check: Any, value: Any) -> str:
    """Run a contract or PKI check, raising :class:`RegistryError` with its message."""
    try:
        result: str = check(value)
    except (ContractError, PkiError) as exc:
        raise RegistryError(str(exc)) from exc
    return result


@dataclass(frozen=True)
class Vehicle:
    """A vehicle: its VIN (its identity) and its fleet."""

    vin: str
    fleet: str

    def __post_init__(self) -> None:
        _checked(check_vin, self.vin)
        _checked(check_fleet, self.fleet)
        if self.fleet in RESERVED_FLEETS:
            raise RegistryError(f"fleet name {self.fleet!r} is reserved: its topics belong to partners")


@dataclass(frozen=True)
class Partner:
    """A partner receiving the alerts of the vehicles it serves: whole fleets and single VINs."""

    id: str
    fleets: tuple[str, ...] = ()
    vins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _checked(lambda value: check_identity(PARTNER, value), self.id)
        for fleet in self.fleets:
            _checked(check_fleet, fleet)
        for vin in self.vins:
            _checked(check_vin, vin)
        if not self.fleets and not self.vins:
            raise RegistryError(f"partner {self.id!r} serves nothing: give fleets, vins or both")


@dataclass(frozen=True)
class Service:
    """A cloud service process (or group of processes sharing one identity)."""

    id: str
    role: str

    def __post_init__(self) -> None:
        _checked(lambda value: check_identity(SERVICE, value), self.id)
        if self.role not in SERVICE_ROLES:
            raise RegistryError(
                f"service {self.id!r}: role {self.role!r} is not one of {', '.join(SERVICE_ROLES)}"
            )


def _duplicates(values: Iterable[str]) -> list[str]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


@dataclass(frozen=True)
class FleetRegistry:
    """Every party allowed on the broker; consistent by construction."""

    vehicles: tuple[Vehicle, ...] = ()
    partners: tuple[Partner, ...] = ()
    services: tuple[Service, ...] = ()

    def __post_init__(self) -> None:
        for kind, ids in (
            ("VIN", [vehicle.vin for vehicle in self.vehicles]),
            ("partner or service id", [p.id for p in self.partners] + [s.id for s in self.services]),
        ):
            repeated = _duplicates(ids)
            if repeated:
                raise RegistryError(f"{kind} registered more than once: {', '.join(repeated)}")
        fleets = {vehicle.fleet for vehicle in self.vehicles}
        vins = {vehicle.vin for vehicle in self.vehicles}
        for partner in self.partners:
            for fleet in partner.fleets:
                if fleet not in fleets:
                    raise RegistryError(f"partner {partner.id!r} serves fleet {fleet!r}, without vehicles")
            for vin in partner.vins:
                if vin not in vins:
                    raise RegistryError(f"partner {partner.id!r} serves VIN {vin}, which is not registered")

    def fleet_of(self, vin: str) -> str:
        """The fleet of a registered vehicle."""
        for vehicle in self.vehicles:
            if vehicle.vin == vin:
                return vehicle.fleet
        raise RegistryError(f"VIN {vin} is not registered")

    def roles(self) -> dict[str, str]:
        """Every identity and its certificate role (``roadwave.pki`` role names)."""
        return {
            **{vehicle.vin: VEHICLE for vehicle in self.vehicles},
            **{partner.id: PARTNER for partner in self.partners},
            **{service.id: SERVICE for service in self.services},
        }

    @classmethod
    def load(cls, path: Path) -> FleetRegistry:
        """Read and check a registry file.

        Raises:
            ConfigError: the file is missing, not TOML, or an entry is invalid or
                inconsistent (:class:`RegistryError`); the message names the file and entry.
        """
        return cls.read(Table.load(Path(path)))

    @classmethod
    def read(cls, table: Table) -> FleetRegistry:
        """Read a registry from a parsed TOML table."""
        vehicles = tuple(
            _entry(entry, lambda e: Vehicle(vin=e.text("vin"), fleet=e.text("fleet")))
            for entry in table.tables("vehicle")
        )
        partners = tuple(
            _entry(
                entry,
                lambda e: Partner(id=e.text("id"), fleets=_texts(e, "fleets"), vins=_texts(e, "vins")),
            )
            for entry in table.tables("partner")
        )
        services = tuple(
            _entry(entry, lambda e: Service(id=e.text("id"), role=e.text("role")))
            for entry in table.tables("service")
        )
        table.finish()
        try:
            return cls(vehicles, partners, services)
        except RegistryError as exc:
            raise _located(table, exc) from exc


def _entry(entry: Table, build: Any) -> Any:
    """Build one entry; its errors name the entry, and unknown keys are refused."""
    try:
        value = build(entry)
    except RegistryError as exc:
        raise _located(entry, exc) from exc
    entry.finish()
    return value


def _located(table: Table, exc: RegistryError) -> RegistryError:
    return RegistryError(str(table.error(str(exc))))


def _texts(table: Table, key: str) -> tuple[str, ...]:
    """An optional list of strings."""
    values = table._get(key, list, [])  # Table has no getter for lists of strings yet
    if not all(isinstance(value, str) for value in values):
        raise RegistryError(f"{key} must be a list of strings, got {values!r}")
    return tuple(values)
