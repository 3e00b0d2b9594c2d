"""The wire contract between vehicle and cloud: topics, payload schema, VSS catalog.

Both the edge agent and the cloud services import this module and nothing else
defines what travels over MQTT. It is documented for humans in
``docs/wire-protocol.md``; a change here is a change to that document.

Topics::

    roadwave/v1/{fleet}/{vin}/telemetry     batches of decoded samples (QoS 1)
    roadwave/v1/{fleet}/{vin}/health        agent counters (QoS 1, retained)
    roadwave/v1/{fleet}/{vin}/status        online / offline: birth and last will (QoS 1, retained)

Telemetry payload, schema version 2 (UTF-8 JSON, no NaN/Infinity)::

    {"v": 2, "vin": "...", "fleet": "...", "seq": 7,
     "records": [{"t": 1763700000120000000, "bus": "can0",
                  "s": {"Vehicle.Speed": 52.31, "Vehicle.ADAS.ABS.IsEngaged": false},
                  "q": {"Vehicle.Speed": "range"}}]}

``t`` is the CAN frame's timestamp in integer nanoseconds since the Unix epoch;
``s`` maps VSS paths from :data:`VSS_CATALOG` to values of the declared type;
``q`` (optional) gives the quality of the samples that are not good, one of
:data:`QUALITIES`. Version 1 is the same without ``q`` and is still accepted.

Any vehicle payload may be sent deflated (a zlib stream, RFC 1950, of the
JSON document); receivers tell the two apart by the first byte (``{`` or
0x78) and refuse streams that would inflate beyond the payload size limit.
Keys a receiver does not know are ignored, so additions that a receiver may
safely ignore stay compatible; anything else gets a new ``v``.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Final

#: The telemetry payload schema this side writes; :data:`ACCEPTED_VERSIONS` it reads.
SCHEMA_VERSION: Final = 2
ACCEPTED_VERSIONS: Final = frozenset({1, 2})
TOPIC_ROOT: Final = "roadwave"
#: Version of the topic layout, independent of the payload schema.
TOPIC_VERSION: Final = "v1"
TELEMETRY: Final = "telemetry"
HEALTH: Final = "health"
STATUS: Final = "status"
#: What the cloud ingest subscribes to: every fleet's and vehicle's telemetry.
TELEMETRY_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}/+/+/{TELEMETRY}"
#: Every agent's health reports.
HEALTH_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}/+/+/{HEALTH}"
HEALTH_VERSION: Final = 1
MAX_HEALTH_BYTES: Final = 64 * 1024
#: Every agent's online/offline status (birth message and last will).
STATUS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}/+/+/{STATUS}"
STATUS_VERSION: Final = 1
MAX_STATUS_BYTES: Final = 1024
#: First byte of a zlib stream with the default 32 KiB window (RFC 1950 CMF).
ZLIB_MAGIC: Final = 0x78

#: Largest telemetry payload accepted, in bytes.
MAX_PAYLOAD_BYTES: Final = 4 * 1024 * 1024
#: Most records one telemetry batch may carry.
MAX_RECORDS: Final = 50_000
#: Frame timestamps outside [2000-01-01, 2100-01-01) are rejected as absurd.
MIN_TIMESTAMP_NS: Final = 946_684_800 * 10**9
MAX_TIMESTAMP_NS: Final = 4_102_444_800 * 10**9

VIN_PATTERN: Final = re.compile(r"[A-HJ-NPR-Z0-9]{17}")
FLEET_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
BUS_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")

Value = bool | int | float

#: Sample qualities other than good: the message timed out (the value is the last
#: one received), the frame failed its checksum or counter check, or the decoded
#: value lies outside the range the DBC declares.
STALE: Final = "stale"
INTEGRITY: Final = "integrity"
RANGE: Final = "range"
QUALITIES: Final = (STALE, INTEGRITY, RANGE)


class ContractError(ValueError):
    """Something does not follow the wire contract; the message says what."""


class TopicError(ContractError):
    """A topic name that is not part of the contract."""


class PayloadError(ContractError):
    """A payload that cannot be accepted; the message names the offending part."""


# --- VSS catalog ----------------------------------------------------------------

INTEGER_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}
FLOAT_TYPES: Final = frozenset({"float", "double"})
DATATYPES: Final = frozenset({"boolean", *INTEGER_RANGES, *FLOAT_TYPES})


@dataclass(frozen=True, slots=True)
class VssSignal:
    """One VSS leaf the contract carries: its datatype and VSS unit id.

    ``overlay`` marks leaves roadwave adds on top of the VSS 6.0 standard tree.
    """

    datatype: str
    unit: str | None = None
    overlay: bool = False


def _leaf(datatype: str, unit: str | None = None, overlay: bool = False) -> VssSignal:
    return VssSignal(datatype, unit, overlay)


#: Every VSS path a telemetry record may carry, with its datatype and unit.
VSS_CATALOG: Final[dict[str, VssSignal]] = {
    "Vehicle.Speed": _leaf("float", "km/h"),
    "Vehicle.TraveledDistance": _leaf("uint32", "m"),
    "Vehicle.Acceleration.Longitudinal": _leaf("float", "m/s^2"),
    "Vehicle.Acceleration.Lateral": _leaf("float", "m/s^2"),
    "Vehicle.AngularVelocity.Yaw": _leaf("float", "degrees/s"),
    "Vehicle.Chassis.SteeringWheel.Angle": _leaf("int16", "degrees"),
    "Vehicle.Chassis.Brake.PedalPosition": _leaf("uint8", "percent"),
    "Vehicle.Chassis.Brake.Pressure": _leaf("float", "kPa", overlay=True),
    "Vehicle.Chassis.Accelerator.PedalPosition": _leaf("uint8", "percent"),
    "Vehicle.ADAS.ABS.IsEngaged": _leaf("boolean"),
    "Vehicle.ADAS.LeadVehicle.IsDetected": _leaf("boolean", overlay=True),
    "Vehicle.ADAS.LeadVehicle.Distance": _leaf("float", "m", overlay=True),
    "Vehicle.ADAS.LeadVehicle.RelativeSpeed": _leaf("float", "m/s", overlay=True),
    "Vehicle.ADAS.LeadVehicle.Azimuth": _leaf("float", "degrees", overlay=True),
    "Vehicle.ADAS.LaneCamera.LateralOffset": _leaf("float", "m", overlay=True),
    "Vehicle.ADAS.LaneCamera.LaneWidth": _leaf("float", "m", overlay=True),
    "Vehicle.Powertrain.CombustionEngine.Speed": _leaf("uint16", "rpm"),
    "Vehicle.Powertrain.CombustionEngine.ECT": _leaf("int16", "celsius"),
    "Vehicle.Powertrain.Transmission.SelectedGear": _leaf("int8"),
    "Vehicle.Powertrain.Transmission.CurrentGear": _leaf("int8"),
    "Vehicle.Powertrain.FuelSystem.RelativeLevel": _leaf("uint8", "percent"),
    "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": _leaf("float", "percent"),
    "Vehicle.LowVoltageBattery.CurrentVoltage": _leaf("float", "V"),
    "Vehicle.Exterior.AirTemperature": _leaf("float", "celsius"),
    "Vehicle.Body.Lights.Hazard.IsSignaling": _leaf("boolean"),
    "Vehicle.Body.Lights.DirectionIndicator.Left.IsSignaling": _leaf("boolean"),
    "Vehicle.Body.Lights.DirectionIndicator.Right.IsSignaling": _leaf("boolean"),
    "Vehicle.CurrentLocation.Latitude": _leaf("double", "degrees"),
    "Vehicle.CurrentLocation.Longitude": _leaf("double", "degrees"),
    "Vehicle.CurrentLocation.Heading": _leaf("double", "degrees"),
    "Vehicle.CurrentLocation.Altitude": _leaf("double", "m"),
}


def check_value(path: str, value: Any) -> Value:
    """Return ``value`` if it is a valid value for VSS leaf ``path``, else raise.

    Raises:
        ContractError: unknown path, wrong type, out of the datatype's range,
            or a non-finite number.
    """
    signal = VSS_CATALOG.get(path)
    if signal is None:
        raise ContractError(f"unknown VSS path {path!r}: not in the roadwave VSS catalog")
    datatype = signal.datatype
    if datatype == "boolean":
        if isinstance(value, bool):
            return value
        raise ContractError(f"{path} is boolean, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError(f"{path} is {datatype}, got {value!r}")
    if datatype in FLOAT_TYPES:
        try:
            number = float(value)  # JSON may carry 12 for 12.0; storage types must not depend on it
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise ContractError(f"{path} must be finite, got {value!r}")
        return number
    if not isinstance(value, int):
        raise ContractError(f"{path} is {datatype}, got non-integer {value!r}")
    low, high = INTEGER_RANGES[datatype]
    if not low <= value <= high:
        raise ContractError(f"{path} is {datatype}, {value} is outside [{low}, {high}]")
    return value


# --- topics -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicAddress:
    """The parts of a vehicle topic."""

    fleet: str
    vin: str
    kind: str


def check_vin(vin: str) -> str:
    """Return ``vin`` if it is 17 characters of the ISO 3779 alphabet, else raise."""
    if not isinstance(vin, str) or not VIN_PATTERN.fullmatch(vin):
        raise ContractError(f"invalid VIN {vin!r}: need 17 characters from 0-9 and A-Z without I, O, Q")
    return vin


def check_fleet(fleet: str) -> str:
    """Return ``fleet`` if it is a valid fleet name, else raise."""
    if not isinstance(fleet, str) or not FLEET_PATTERN.fullmatch(fleet):
        raise ContractError(f"invalid fleet name {fleet!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return fleet


def vehicle_topic(fleet: str, vin: str, kind: str) -> str:
    """Return the topic of one kind of a vehicle's messages (``telemetry``, ``health``)."""
    return f"{TOPIC_ROOT}/{TOPIC_VERSION}/{check_fleet(fleet)}/{check_vin(vin)}/{kind}"


def telemetry_topic(fleet: str, vin: str) -> str:
    """Return the topic a vehicle publishes its telemetry batches to."""
    return vehicle_topic(fleet, vin, TELEMETRY)


def parse_topic(topic: str) -> TopicAddress:
    """Split a vehicle topic into fleet, VIN and kind.

    Raises:
        TopicError: the topic is not ``roadwave/v1/{fleet}/{vin}/{kind}``.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != TOPIC_ROOT or parts[1] != TOPIC_VERSION:
        raise TopicError(f"topic {topic!r} is not {TOPIC_ROOT}/{TOPIC_VERSION}/FLEET/VIN/KIND")
    try:
        return TopicAddress(check_fleet(parts[2]), check_vin(parts[3]), parts[4])
    except ContractError as exc:
        raise TopicError(f"topic {topic!r}: {exc}") from exc


# --- telemetry payload ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """The samples decoded from one CAN frame: frame time, source bus, VSS values.

    ``quality`` names the samples that are not good and why (see :data:`QUALITIES`);
    samples not in it are good.
    """

    t_ns: int
    bus: str
    signals: dict[str, Value]
    quality: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """One telemetry message: a vehicle's records, numbered by ``seq`` per agent run."""

    vin: str
    fleet: str
    seq: int
    records: list[Record]

    @property
    def sample_count(self) -> int:
        """Number of VSS values in the batch."""
        return sum(len(record.signals) for record in self.records)


def encode_telemetry(batch: TelemetryBatch, compress: bool = False) -> bytes:
    """Serialise a batch to its JSON payload (schema :data:`SCHEMA_VERSION`), deflated if asked."""
    document = {
        "v": SCHEMA_VERSION,
        "vin": batch.vin,
        "fleet": batch.fleet,
        "seq": batch.seq,
        "records": [
            {"t": r.t_ns, "bus": r.bus, "s": r.signals, "q": r.quality}
            if r.quality
            else {"t": r.t_ns, "bus": r.bus, "s": r.signals}
            for r in batch.records
        ],
    }
    return dump_payload(document, compress)


def dump_payload(document: dict[str, Any], compress: bool = False) -> bytes:
    """A vehicle payload: compact JSON without NaN/Infinity, deflated (zlib level 6) if asked."""
    text = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    return zlib.compress(text, 6) if compress else text


def shared_subscription(group: str, topic_filter: str) -> str:
    """An MQTT shared subscription: the broker hands each message to one member of ``group``."""
    if not FLEET_PATTERN.fullmatch(group):
        raise ContractError(f"invalid subscription group {group!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return f"$share/{group}/{topic_filter}"


def _inflate(payload: bytes, max_bytes: int) -> bytes:
    """The JSON text of a payload: as is, or inflated from zlib within ``max_bytes``."""
    if not payload or payload[0] != ZLIB_MAGIC:
        return payload
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, max_bytes)
    except zlib.error as exc:
        raise PayloadError(f"payload is not valid zlib data: {exc}") from exc
    if inflater.unconsumed_tail:
        raise PayloadError(f"payload inflates beyond {max_bytes} bytes")
    if not inflater.eof:
        raise PayloadError("payload is a truncated zlib stream")
    if inflater.unused_data:
        raise PayloadError("payload has bytes after its zlib stream")
    return text


def _reject_constant(name: str) -> None:
    raise PayloadError(f"{name} is not allowed in a roadwave payload")


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def is_timestamp(value: Any) -> bool:
    """True for integer nanoseconds since the epoch within the contract's years 2000-2099."""
    return type(value) is int and MIN_TIMESTAMP_NS <= value < MAX_TIMESTAMP_NS


def read_field(
    document: dict[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    *,
    where: str = "",
    error: type[PayloadError] = PayloadError,
    nullable: bool = False,
) -> Any:
    """``document[key]`` if present and of ``kind`` (a bool is no number), else raise ``error``.

    The message names ``where`` (if given) and the key, so a sender can find its mistake.
    """
    prefix = f"{where}: " if where else ""
    if key not in document:
        raise error(f"{prefix}missing {key!r}")
    value = document[key]
    if value is None and nullable:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds) + (" or null" if nullable else "")
        raise error(f"{prefix}{key!r} must be {expected}, got {type(value).__name__}")
    return value


def read_timestamp(
    document: dict[str, Any], key: str, *, where: str = "", error: type[PayloadError] = PayloadError
) -> int:
    """``document[key]`` as integer nanoseconds within years 2000-2099, else raise ``error``."""
    t_ns: int = read_field(document, key, int, where=where, error=error)
    if not is_timestamp(t_ns):
        prefix = f"{where}: " if where else ""
        raise error(f"{prefix}{key!r}: {t_ns} ns is outside years 2000-2099")
    return t_ns


@functools.cache
def _valid_bus(bus: str) -> bool:
    return BUS_PATTERN.fullmatch(bus) is not None


def _plainly_valid(path: str, value: Any) -> bool:
    """True if ``value`` is valid for ``path`` as the edge sends it; False means: check in detail."""
    signal = VSS_CATALOG.get(path)
    if signal is None:
        return False
    kind = type(value)
    if signal.datatype in FLOAT_TYPES:
        return kind is float and math.isfinite(value)
    if signal.datatype == "boolean":
        return kind is bool
    low, high = INTEGER_RANGES[signal.datatype]
    return kind is int and low <= value <= high


def _plain_record(item: Any, version: int) -> Record | None:
    """The record if every part of it is plainly valid (the common case, fast), else None."""
    if type(item) is not dict:
        return None
    t_ns, bus, signals = item.get("t"), item.get("bus"), item.get("s")
    if not (
        type(t_ns) is int
        and MIN_TIMESTAMP_NS <= t_ns < MAX_TIMESTAMP_NS
        and type(bus) is str
        and _valid_bus(bus)
        and type(signals) is dict
        and signals
        and all(_plainly_valid(path, value) for path, value in signals.items())
    ):
        return None
    quality = item.get("q") if version >= 2 else None
    if quality is None:
        return Record(t_ns, bus, signals)
    if type(quality) is dict and all(path in signals and code in QUALITIES for path, code in quality.items()):
        return Record(t_ns, bus, signals, quality)
    return None


def _decode_record(item: Any, index: int, version: int) -> Record:
    """A validated record; anything not plainly valid is checked in detail and explained."""
    plain = _plain_record(item, version)
    if plain is not None:
        return plain
    where = f"record {index}"
    if not isinstance(item, dict):
        raise PayloadError(f"{where} is not an object")
    t_ns = read_timestamp(item, "t", where=where)
    bus = read_field(item, "bus", str, where=where)
    if not BUS_PATTERN.fullmatch(bus):
        raise PayloadError(f"{where}: invalid bus name {bus!r}")
    signals = read_field(item, "s", dict, where=where)
    if not signals:
        raise PayloadError(f"{where}: no samples")
    try:
        checked = {path: check_value(path, value) for path, value in signals.items()}
    except ContractError as exc:
        raise PayloadError(f"{where}: {exc}") from exc
    quality = item.get("q", {}) if version >= 2 else {}
    if not isinstance(quality, dict):
        raise PayloadError(f"{where}: 'q' must be dict, got {type(quality).__name__}")
    for path, code in quality.items():
        if path not in checked:
            raise PayloadError(f"{where}: quality given for {path!r}, which has no sample")
        if code not in QUALITIES:
            raise PayloadError(f"{where}: quality {code!r} of {path} is not one of {', '.join(QUALITIES)}")
    return Record(t_ns, bus, checked, quality)


def open_vehicle_payload(
    topic: str, payload: bytes, kind: str, max_bytes: int, versions: frozenset[int]
) -> tuple[dict[str, Any], int]:
    """Check a vehicle message's topic, size, JSON, version and sender; return it and its version."""
    try:
        address = parse_topic(topic)
    except TopicError as exc:
        raise PayloadError(str(exc)) from exc
    if address.kind != kind:
        raise PayloadError(f"topic {topic!r} is not a {kind} topic")
    if len(payload) > max_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        document = json.loads(_inflate(payload, max_bytes), parse_constant=_reject_constant)
    except PayloadError:
        raise
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        raise PayloadError(f"payload is not UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("payload nests too deeply") from exc
    if not isinstance(document, dict):
        raise PayloadError("payload is not a JSON object")
    version = read_field(document, "v", int, where="payload")
    if version not in versions:
        known = ", ".join(map(str, sorted(versions)))
        raise PayloadError(f"unsupported {kind} schema version {version}; this side understands {known}")
    vin = read_field(document, "vin", str, where="payload")
    fleet = read_field(document, "fleet", str, where="payload")
    if (fleet, vin) != (address.fleet, address.vin):
        raise PayloadError(f"payload names fleet {fleet!r} VIN {vin!r} but was published on {topic!r}")
    return document, version


def decode_telemetry(topic: str, payload: bytes) -> TelemetryBatch:
    """Parse and validate a telemetry payload received on ``topic``.

    Raises:
        PayloadError: the topic or payload breaks the contract; the message says
            which part and why.
    """
    document, version = open_vehicle_payload(topic, payload, TELEMETRY, MAX_PAYLOAD_BYTES, ACCEPTED_VERSIONS)
    vin, fleet = document["vin"], document["fleet"]
    seq = read_field(document, "seq", int, where="payload")
    if seq < 0:
        raise PayloadError(f"payload: negative seq {seq}")
    items = read_field(document, "records", list, where="payload")
    if len(items) > MAX_RECORDS:
        raise PayloadError(f"payload has {len(items)} records, more than {MAX_RECORDS}")
    records = [_decode_record(item, index, version) for index, item in enumerate(items)]
    return TelemetryBatch(vin, fleet, seq, records)


# --- agent health -----------------------------------------------------------------

COUNTER_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Largest agent uptime accepted in a health report (2**32 s: 136 years).
MAX_UPTIME_S: Final = 2**32


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """An edge agent's counters, published retained on ``.../{vin}/health`` (QoS 1).

    ``buses`` maps each bus name to its decoding counters, ``uplink`` holds the
    MQTT counters, ``diagnostics`` the diagnostic poller's (None when it is off);
    ``t_ns`` is the agent's wall-clock time of the report.
    """

    vin: str
    fleet: str
    t_ns: int
    uptime_s: float
    buses: dict[str, dict[str, int]]
    uplink: dict[str, int]
    diagnostics: dict[str, int] | None = None


def encode_health(health: AgentHealth) -> bytes:
    """Serialise an agent health report."""
    document = {
        "v": HEALTH_VERSION,
        "vin": health.vin,
        "fleet": health.fleet,
        "t": health.t_ns,
        "uptime_s": health.uptime_s,
        "buses": health.buses,
        "uplink": health.uplink,
    }
    if health.diagnostics is not None:
        document["diagnostics"] = health.diagnostics
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


#: Counters are stored as InfluxDB int64 fields.
MAX_COUNT: Final = 2**63 - 1


def read_counters(value: Any, where: str, error: type[PayloadError] = PayloadError) -> dict[str, int]:
    """``value`` if it is an object of at most 64 named counts (0 to :data:`MAX_COUNT`), else raise."""
    if not isinstance(value, dict) or len(value) > 64:
        raise error(f"{where}: expected an object of at most 64 counters")
    for name, count in value.items():
        if not COUNTER_NAME.fullmatch(name):
            raise error(f"{where}: invalid counter name {name!r}")
        if type(count) is not int or not 0 <= count <= MAX_COUNT:
            raise error(f"{where}: counter {name} must be an integer from 0 to 2^63-1")
    return value


def decode_health(topic: str, payload: bytes) -> AgentHealth:
    """Parse and validate an agent health report received on ``topic``.

    Raises:
        PayloadError: naming what is wrong.
    """
    document, _ = open_vehicle_payload(topic, payload, HEALTH, MAX_HEALTH_BYTES, frozenset({HEALTH_VERSION}))
    vin, fleet = document["vin"], document["fleet"]
    buses = read_field(document, "buses", dict, where="health")
    if len(buses) > 32 or not all(isinstance(b, str) and BUS_PATTERN.fullmatch(b) for b in buses):
        raise PayloadError("health: at most 32 buses with valid names")
    uptime_s = read_field(document, "uptime_s", (int, float), where="health")
    if not 0 <= uptime_s < MAX_UPTIME_S:  # also refuses infinity and integers too large for a float
        raise PayloadError(f"health: uptime_s {uptime_s!r} is outside [0, {MAX_UPTIME_S})")
    return AgentHealth(
        vin=vin,
        fleet=fleet,
        t_ns=read_timestamp(document, "t", where="health"),
        uptime_s=float(uptime_s),
        buses={name: read_counters(counters, f"health bus {name}") for name, counters in buses.items()},
        uplink=read_counters(read_field(document, "uplink", dict, where="health"), "health uplink"),
        diagnostics=None
        if document.get("diagnostics") is None
        else read_counters(document["diagnostics"], "health diagnostics"),
    )


# --- agent status (birth message and last will) ------------------------------------


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """Whether an agent is connected, published retained on ``.../{vin}/status`` (QoS 1).

    The agent publishes ``online`` after every connection and registers
    ``offline`` as its last will, which the broker publishes when the agent
    vanishes; a clean exit publishes ``offline`` itself. ``since_ns`` is the
    agent's wall-clock time of the connection (online) or the exit (offline);
    a last will carries the time of the connection it was registered on.
    """

    vin: str
    fleet: str
    online: bool
    since_ns: int


def encode_status(status: AgentStatus) -> bytes:
    """Serialise an agent status."""
    document = {
        "v": STATUS_VERSION,
        "vin": status.vin,
        "fleet": status.fleet,
        "online": status.online,
        "since": status.since_ns,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def decode_status(topic: str, payload: bytes) -> AgentStatus:
    """Parse and validate an agent status received on ``topic``.

    Raises:
        PayloadError: naming what is wrong.
    """
    document, _ = open_vehicle_payload(topic, payload, STATUS, MAX_STATUS_BYTES, frozenset({STATUS_VERSION}))
    return AgentStatus(
        vin=document["vin"],
        fleet=document["fleet"],
        online=read_field(document, "online", bool, where="status"),
        since_ns=read_timestamp(document, "since", where="status"),
    )
