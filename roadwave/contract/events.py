"""Detected events on the wire: the event document (schema v1) and the ``events`` topic.

An edge agent publishes each update of a detected event at once, QoS 1, on::

    roadwave/v1/{fleet}/{vin}/events

first when the event starts (state ``ongoing``) and again when it is complete (state
``ended``, same ``id``). The payload is the event document of :meth:`Event.to_dict`
plus ``vin`` and ``fleet``, JSON, optionally deflated like telemetry (docs/events.md,
docs/wire-protocol.md). The ingest stores both updates; the ``ended`` one overwrites
the ``ongoing`` one, since a point's identity is its event's start time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from roadwave.contract import (
    QUALITIES,
    TOPIC_ROOT,
    TOPIC_VERSION,
    VSS_CATALOG,
    ContractError,
    PayloadError,
    check_value,
    dump_payload,
    is_finite_number,
    is_timestamp,
    open_vehicle_payload,
    read_field,
    read_timestamp,
    vehicle_topic,
)

EVENTS: Final = "events"
#: Every vehicle's event updates.
EVENTS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}/+/+/{EVENTS}"
#: Largest event payload accepted (deflated or not), in bytes: a 60 s + 60 s snapshot of
#: a few signals at 100 Hz fits with room to spare.
MAX_EVENT_BYTES: Final = 1024 * 1024
#: The event JSON schema version :meth:`Event.to_dict` writes and :meth:`Event.from_dict` reads.
EVENT_SCHEMA_VERSION = 1
ONGOING, ENDED = "ongoing", "ended"
STATES = (ONGOING, ENDED)
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Most peaks an event may report (each becomes a field of its point).
MAX_PEAKS = 32

Snapshot = dict[str, dict[str, list[Any]]]


class EventFormatError(PayloadError):
    """An event document that does not follow the event schema; the message says where."""


@dataclass(frozen=True, slots=True)
class Event:
    """One update of a detected event (see :mod:`edge.events.engine`); times in ns since the epoch.

    ``start_ns`` is the first sample of the condition, ``detected_ns`` the sample at
    which it had held long enough to be reported; ``end_ns`` is None while ``ongoing``.
    ``severity``: 1 info, 2 warning, 3 critical. ``peak`` maps measure names (with their
    unit, e.g. ``deceleration_mps2``) to their worst value. ``position`` is the latest
    good (latitude, longitude) at detection. ``snapshot`` maps VSS paths to columns
    ``t`` (ns), ``v`` and, if a sample was flagged, ``q`` (its quality, else None).
    """

    kind: str
    state: str
    severity: int
    start_ns: int
    detected_ns: int
    end_ns: int | None
    peak: dict[str, float]
    position: tuple[float, float] | None
    snapshot: Snapshot

    @property
    def id(self) -> str:
        """Identifies the event across its updates: type and start time."""
        return f"{self.kind}-{self.start_ns}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document (schema :data:`EVENT_SCHEMA_VERSION`)."""
        return {
            "v": EVENT_SCHEMA_VERSION,
            "id": self.id,
            "type": self.kind,
            "state": self.state,
            "severity": self.severity,
            "start": self.start_ns,
            "detected": self.detected_ns,
            "end": self.end_ns,
            "peak": dict(self.peak),
            "position": None if self.position is None else {"lat": self.position[0], "lon": self.position[1]},
            "snapshot": {path: {k: list(v) for k, v in cols.items()} for path, cols in self.snapshot.items()},
        }

    @classmethod
    def from_dict(cls, document: Any) -> Event:
        """Read and validate an event document.

        Raises:
            EventFormatError: naming the key and the problem.
        """
        if not isinstance(document, dict):
            raise EventFormatError("an event must be a JSON object")
        version = _get(document, "v", int)
        if version != EVENT_SCHEMA_VERSION:
            raise EventFormatError(f"event schema version {version} is not {EVENT_SCHEMA_VERSION}")
        kind = _get(document, "type", str)
        if not KIND_PATTERN.fullmatch(kind):
            raise EventFormatError(f"'type' {kind!r} is not an event type name (a-z, 0-9, _)")
        state = _get(document, "state", str)
        if state not in STATES:
            raise EventFormatError(f"'state' must be one of {', '.join(STATES)}, got {state!r}")
        severity = _get(document, "severity", int)
        if severity not in (1, 2, 3):
            raise EventFormatError(f"'severity' must be 1, 2 or 3, got {severity}")
        start, detected = _timestamp(document, "start"), _timestamp(document, "detected")
        end = None if document.get("end") is None else _timestamp(document, "end")
        if (end is None) != (state == ONGOING):
            raise EventFormatError(f"an {state} event must {'not ' if state == ONGOING else ''}have an 'end'")
        if not start <= detected or (end is not None and end < start):
            raise EventFormatError("times must satisfy start <= detected and start <= end")
        expected_id = f"{kind}-{start}"
        if document.get("id", expected_id) != expected_id:
            raise EventFormatError(f"'id' {document['id']!r} does not match type and start ({expected_id!r})")
        peak = _get(document, "peak", dict)
        if len(peak) > MAX_PEAKS:
            raise EventFormatError(f"'peak' has {len(peak)} measures, more than {MAX_PEAKS}")
        for name, value in peak.items():
            if not KIND_PATTERN.fullmatch(name):
                raise EventFormatError(f"peak name {name!r} is not a measure name (a-z, 0-9, _)")
            if not is_finite_number(value):
                raise EventFormatError(f"peak {name!r} must be a finite number, got {value!r}")
        snapshot = _snapshot(_get(document, "snapshot", dict))
        return cls(kind, state, severity, start, detected, end, dict(peak), _position(document), snapshot)


def _get(document: dict[str, Any], key: str, kind: type) -> Any:
    return read_field(document, key, kind, error=EventFormatError)


def _timestamp(document: dict[str, Any], key: str) -> int:
    return read_timestamp(document, key, error=EventFormatError)


def _position(document: dict[str, Any]) -> tuple[float, float] | None:
    position = document.get("position")
    if position is None:
        return None
    if not isinstance(position, dict) or set(position) != {"lat", "lon"}:
        raise EventFormatError("'position' must be null or an object with exactly 'lat' and 'lon'")
    lat, lon = position["lat"], position["lon"]
    if not (is_finite_number(lat) and is_finite_number(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise EventFormatError(f"'position' {lat!r}, {lon!r} is not a latitude and longitude in degrees")
    return float(lat), float(lon)


def _snapshot(snapshot: dict[str, Any]) -> Snapshot:
    """The snapshot with every value checked against, and typed by, the VSS catalog."""
    checked: Snapshot = {}
    for path, columns in snapshot.items():
        where = f"snapshot {path!r}"
        if path not in VSS_CATALOG:
            raise EventFormatError(f"{where}: not a path of the roadwave VSS catalog")
        if not isinstance(columns, dict) or not {"t", "v"} <= set(columns) <= {"t", "v", "q"}:
            raise EventFormatError(f"{where}: needs columns 't' and 'v' (and optionally 'q')")
        if not all(isinstance(c, list) and len(c) == len(columns["t"]) for c in columns.values()):
            raise EventFormatError(f"{where}: columns must be lists of equal length")
        if not all(is_timestamp(t) for t in columns["t"]):
            raise EventFormatError(f"{where}: 't' must hold integer nanoseconds within years 2000-2099")
        try:
            values = [check_value(path, value) for value in columns["v"]]
        except ContractError as exc:
            raise EventFormatError(f"{where}: {exc}") from None
        if not all(q is None or q in QUALITIES for q in columns.get("q", ())):
            raise EventFormatError(f"{where}: 'q' must hold null or one of {', '.join(QUALITIES)}")
        checked[path] = {**columns, "v": values}
    return checked


def events_topic(fleet: str, vin: str) -> str:
    """The topic a vehicle publishes its event updates to."""
    return vehicle_topic(fleet, vin, EVENTS)


def encode_event(fleet: str, vin: str, event: Event, compress: bool = False) -> bytes:
    """The payload of one event update, deflated when ``compress``."""
    return dump_payload({**event.to_dict(), "vin": vin, "fleet": fleet}, compress)


def decode_event(topic: str, payload: bytes) -> tuple[str, str, Event]:
    """Fleet, VIN and event of a payload received on ``topic``.

    Raises:
        PayloadError: the topic or payload breaks the contract (an
            :class:`EventFormatError` when the event document itself is wrong).
    """
    document, _ = open_vehicle_payload(
        topic, payload, EVENTS, MAX_EVENT_BYTES, frozenset({EVENT_SCHEMA_VERSION})
    )
    return document["fleet"], document["vin"], Event.from_dict(document)
