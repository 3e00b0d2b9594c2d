"""Diagnostic reports on the wire: OBD-II readings and trouble codes (schema v1).

After each diagnostic read cycle (periodic, at start, or when the malfunction lamp
comes on) an edge agent publishes one report, QoS 1, spooled like telemetry, on::

    roadwave/v1/{fleet}/{vin}/diagnostics

Payload (UTF-8 JSON, optionally deflated like telemetry)::

    {"v": 1, "vin": "...", "fleet": "...", "t": 1763700000000000000,
     "trigger": "periodic", "mil_on": true, "dtcs_complete": true,
     "readings": [{"ecu": "7E8", "pid": 5, "name": "coolant_temperature",
                   "value": 92.0, "unit": "degC"}],
     "dtcs": [{"ecu": "7E8", "code": "P0301", "failure_type": null,
               "status": ["pending", "confirmed"], "source": "obd_mode_03",
               "description": "Cylinder 1 misfire detected"}],
     "problems": {"timeout": 1}}

``ecu`` is the responding ECU's CAN identifier in hex (``7E8``, or ``18DAF110`` for
29-bit ids). ``status`` lists ISO 14229-1 status bits by name (:data:`DTC_STATUS_BITS`);
OBD mode 03 codes carry ``confirmed``, mode 07 codes ``pending``. ``mil_on`` is null
when no ECU reported PID 0x01. ``dtcs_complete`` is false when a trouble-code read
went unanswered or arrived broken: the list may then miss codes, and the cloud must
not take a missing code as cleared. ``problems`` counts what went wrong by kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from roadwave.contract import (
    TOPIC_ROOT,
    TOPIC_VERSION,
    PayloadError,
    dump_payload,
    is_finite_number,
    open_vehicle_payload,
    read_counters,
    read_field,
    read_timestamp,
    vehicle_topic,
)

DIAGNOSTICS: Final = "diagnostics"
#: Every vehicle's diagnostic reports.
DIAGNOSTICS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}/+/+/{DIAGNOSTICS}"
DIAGNOSTICS_SCHEMA_VERSION: Final = 1
#: Largest report accepted: 8 ECUs x 255 DTCs x ~200 bytes fits with room to spare.
MAX_DIAGNOSTICS_BYTES: Final = 512 * 1024
MAX_DTCS: Final = 2048
MAX_READINGS: Final = 2048
TRIGGERS: Final = ("start", "periodic", "mil", "manual")
SOURCES: Final = ("obd_mode_03", "obd_mode_07", "uds_0x19_02")
#: ISO 14229-1 DTC status bits, lowest first, as named in ``status``.
DTC_STATUS_BITS: Final = (
    "test_failed",
    "test_failed_this_operation_cycle",
    "pending",
    "confirmed",
    "test_not_completed_since_last_clear",
    "test_failed_since_last_clear",
    "test_not_completed_this_operation_cycle",
    "warning_indicator_requested",
)
DTC_CODE: Final = re.compile(r"[PCBU][0-3][0-9A-F]{3}")
ECU_ID: Final = re.compile(r"[0-9A-F]{3}|[0-9A-F]{8}")
NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_TEXT: Final = 200


class DiagnosticsFormatError(PayloadError):
    """A diagnostic report that does not follow its schema; the message says where."""


@dataclass(frozen=True, slots=True)
class PidReading:
    """One OBD-II mode 01 value from one ECU."""

    ecu: str
    pid: int
    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class ReportedDtc:
    """One trouble code one ECU reported, with its status bits by name."""

    ecu: str
    code: str
    status: tuple[str, ...]
    source: str
    failure_type: int | None = None
    description: str | None = None

    @property
    def pending(self) -> bool:
        return "pending" in self.status

    @property
    def confirmed(self) -> bool:
        return "confirmed" in self.status


@dataclass(frozen=True, slots=True)
class DiagnosticsReport:
    """One read cycle's results; ``t_ns`` is when the cycle started (ns since the epoch)."""

    t_ns: int
    trigger: str
    mil_on: bool | None
    dtcs_complete: bool
    readings: tuple[PidReading, ...] = ()
    dtcs: tuple[ReportedDtc, ...] = ()
    problems: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document without ``vin`` and ``fleet``."""
        return {
            "v": DIAGNOSTICS_SCHEMA_VERSION,
            "t": self.t_ns,
            "trigger": self.trigger,
            "mil_on": self.mil_on,
            "dtcs_complete": self.dtcs_complete,
            "readings": [
                {"ecu": r.ecu, "pid": r.pid, "name": r.name, "value": r.value, "unit": r.unit}
                for r in self.readings
            ],
            "dtcs": [
                {
                    "ecu": d.ecu,
                    "code": d.code,
                    "failure_type": d.failure_type,
                    "status": list(d.status),
                    "source": d.source,
                    "description": d.description,
                }
                for d in self.dtcs
            ],
            "problems": dict(self.problems),
        }

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> DiagnosticsReport:
        """Read and validate a report document.

        Raises:
            DiagnosticsFormatError: naming the item and the problem.
        """
        trigger = _get(document, "trigger", str)
        if trigger not in TRIGGERS:
            raise DiagnosticsFormatError(f"'trigger' must be one of {', '.join(TRIGGERS)}, got {trigger!r}")
        readings = _get(document, "readings", list)
        dtcs = _get(document, "dtcs", list)
        if len(readings) > MAX_READINGS or len(dtcs) > MAX_DTCS:
            raise DiagnosticsFormatError(f"at most {MAX_READINGS} readings and {MAX_DTCS} DTCs per report")
        problems = read_counters(_get(document, "problems", dict), "problems", DiagnosticsFormatError)
        return cls(
            t_ns=read_timestamp(document, "t", error=DiagnosticsFormatError),
            trigger=trigger,
            mil_on=_get(document, "mil_on", bool, nullable=True),
            dtcs_complete=_get(document, "dtcs_complete", bool),
            readings=tuple(_reading(item, index) for index, item in enumerate(readings)),
            dtcs=tuple(_dtc(item, index) for index, item in enumerate(dtcs)),
            problems=dict(problems),
        )


def _get(
    document: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "", nullable: bool = False
) -> Any:
    return read_field(document, key, kind, where=where, error=DiagnosticsFormatError, nullable=nullable)


def _object(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DiagnosticsFormatError(f"{where} is not an object")
    return item


def _ecu(item: dict[str, Any], where: str) -> str:
    ecu: str = _get(item, "ecu", str, where)
    if not ECU_ID.fullmatch(ecu):
        raise DiagnosticsFormatError(f"{where}: ecu {ecu!r} is not a CAN id in hex (3 or 8 digits)")
    return ecu


def _text(item: dict[str, Any], key: str, where: str, nullable: bool = False) -> Any:
    text = _get(item, key, str, where, nullable)
    if text is not None and (len(text) > MAX_TEXT or not text.isprintable()):
        raise DiagnosticsFormatError(f"{where}: {key!r} must be at most {MAX_TEXT} printable characters")
    return text


def _reading(item: Any, index: int) -> PidReading:
    where = f"reading {index}"
    item = _object(item, where)
    pid = _get(item, "pid", int, where)
    if not 0 <= pid <= 0xFF:
        raise DiagnosticsFormatError(f"{where}: pid {pid} is not 0-255")
    name = _get(item, "name", str, where)
    if not NAME.fullmatch(name):
        raise DiagnosticsFormatError(f"{where}: name {name!r} is not a-z, 0-9, _")
    value = _get(item, "value", (int, float), where)
    if not is_finite_number(value):
        raise DiagnosticsFormatError(f"{where}: value {value!r} is not a finite number")
    return PidReading(_ecu(item, where), pid, name, float(value), _text(item, "unit", where))


def _dtc(item: Any, index: int) -> ReportedDtc:
    where = f"dtc {index}"
    item = _object(item, where)
    code = _get(item, "code", str, where)
    if not DTC_CODE.fullmatch(code):
        raise DiagnosticsFormatError(f"{where}: {code!r} is not a DTC (P/C/B/U, 0-3, three hex digits)")
    status = _get(item, "status", list, where)
    if not all(bit in DTC_STATUS_BITS for bit in status) or len(set(status)) != len(status):
        raise DiagnosticsFormatError(
            f"{where}: status must list distinct bit names ({', '.join(DTC_STATUS_BITS)})"
        )
    source = _get(item, "source", str, where)
    if source not in SOURCES:
        raise DiagnosticsFormatError(f"{where}: source must be one of {', '.join(SOURCES)}, got {source!r}")
    failure_type = _get(item, "failure_type", int, where, nullable=True)
    if failure_type is not None and not 0 <= failure_type <= 0xFF:
        raise DiagnosticsFormatError(f"{where}: failure_type {failure_type} is not a byte")
    return ReportedDtc(
        ecu=_ecu(item, where),
        code=code,
        status=tuple(status),
        source=source,
        failure_type=failure_type,
        description=_text(item, "description", where, nullable=True),
    )


def diagnostics_topic(fleet: str, vin: str) -> str:
    """The topic a vehicle publishes its diagnostic reports to."""
    return vehicle_topic(fleet, vin, DIAGNOSTICS)


def encode_diagnostics(fleet: str, vin: str, report: DiagnosticsReport, compress: bool = False) -> bytes:
    """The payload of one diagnostic report, deflated when ``compress``."""
    return dump_payload({**report.to_dict(), "vin": vin, "fleet": fleet}, compress)


def decode_diagnostics(topic: str, payload: bytes) -> tuple[str, str, DiagnosticsReport]:
    """Fleet, VIN and report of a payload received on ``topic``.

    Raises:
        PayloadError: the topic or payload breaks the contract (a
            :class:`DiagnosticsFormatError` when the report itself is wrong).
    """
    document, _ = open_vehicle_payload(
        topic, payload, DIAGNOSTICS, MAX_DIAGNOSTICS_BYTES, frozenset({DIAGNOSTICS_SCHEMA_VERSION})
    )
    return document["fleet"], document["vin"], DiagnosticsReport.from_dict(document)
