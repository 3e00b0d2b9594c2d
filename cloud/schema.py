"""How telemetry, events and diagnostic reports are laid out in InfluxDB (``docs/schema.md``).

Good samples: one point per record in measurement ``telemetry``, tags ``fleet``,
``vin`` and ``bus``, one field per VSS path (booleans, integers ``i`` and floats as
the VSS datatype says), timestamp = the CAN frame's time in nanoseconds.
Samples of another quality go to ``telemetry_flagged`` with the same tags plus
``quality``, so queries on ``telemetry`` only ever see good data. Re-writing a
batch overwrites the same points instead of duplicating them.

Events: one point per event in ``events`` (tags ``fleet``, ``vin``, ``type``; time =
the event's start), which the ``ended`` update overwrites with its final values; the
good samples of its snapshot go to ``event_snapshots`` (same tags, one field per VSS
path, the samples' own times) so an event can be examined after the telemetry around
it has expired. Overlapping snapshots of one vehicle hold the same samples, so they
merge without conflict.

Diagnostic reports: one point per report in ``diagnostics`` (tags ``fleet``, ``vin``,
``trigger``; fields: the lamp, completeness, counts), one per trouble code and ECU in
``dtcs`` (tags add ``ecu``, ``code``, ``source`` and ``failure_type`` when given) and one
per ECU in ``obd`` (tags add ``ecu``; one field per reading name), all at the report's
time: their tag sets differ, so the points of one report never overwrite each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from cloud.influx import Scalar, escape_key, format_line
from roadwave.contract import TelemetryBatch, Value
from roadwave.contract.diagnostics import (
    DTC_STATUS_BITS,
    DiagnosticsFormatError,
    DiagnosticsReport,
)
from roadwave.contract.events import ENDED, Event

TELEMETRY_MEASUREMENT = "telemetry"
FLAGGED_MEASUREMENT = "telemetry_flagged"
EVENTS_MEASUREMENT = "events"
SNAPSHOT_MEASUREMENT = "event_snapshots"
DIAGNOSTICS_MEASUREMENT = "diagnostics"
DTCS_MEASUREMENT = "dtcs"
OBD_MEASUREMENT = "obd"
#: Names a reading cannot have as an ``obd`` field: InfluxDB's time column and the tag keys.
RESERVED_READING_NAMES = frozenset({"time", "fleet", "vin", "ecu"})
#: Prefix of the ``diagnostics`` fields that count problems by kind (``problems_timeout``).
PROBLEMS_PREFIX = "problems_"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@functools.cache
def _field_key(path: str) -> str:
    return escape_key(path)


def _field_set(fields: dict[str, Value]) -> str:
    """Validated values (contract-typed, finite) as a line-protocol field set."""
    parts = []
    for path, value in fields.items():
        if value is True:
            text = "true"
        elif value is False:
            text = "false"
        elif type(value) is int:
            text = f"{value}i"
        else:
            text = repr(value)
        parts.append(f"{_field_key(path)}={text}")
    return ",".join(parts)


def telemetry_lines(batch: TelemetryBatch) -> list[str]:
    """Line protocol for every record of a validated batch.

    Equal to :func:`format_line` point by point, with the escaping of tags and keys
    done once per batch and per VSS path: this is the ingest's hot loop.
    """
    prefixes: dict[tuple[str, str | None], str] = {}

    def prefix(bus: str, quality: str | None = None) -> str:
        key = (bus, quality)
        if key not in prefixes:
            tags = {"fleet": batch.fleet, "vin": batch.vin, "bus": bus}
            measurement = TELEMETRY_MEASUREMENT if quality is None else FLAGGED_MEASUREMENT
            if quality is not None:
                tags["quality"] = quality
            prefixes[key] = format_line(measurement, tags, {}, 0).rsplit(" ", 2)[0] + " "
        return prefixes[key]

    lines = []
    for record in batch.records:
        t = f" {record.t_ns}"
        if not record.quality:
            lines.append(prefix(record.bus) + _field_set(record.signals) + t)
            continue
        by_quality: dict[str | None, dict[str, Value]] = {}
        for path, value in record.signals.items():
            by_quality.setdefault(record.quality.get(path), {})[path] = value
        lines.extend(
            prefix(record.bus, quality) + _field_set(fields) + t for quality, fields in by_quality.items()
        )
    return lines


def event_lines(fleet: str, vin: str, event: Event) -> list[str]:
    """Line protocol for one validated event update: its point and its snapshot's good samples."""
    tags = {"fleet": fleet, "vin": vin, "type": event.kind}
    fields: dict[str, Scalar] = {
        "id": event.id,
        "state": event.state,
        "severity": event.severity,
        "detected_ns": event.detected_ns,
    }
    if event.state == ENDED and event.end_ns is not None:
        fields["end_ns"] = event.end_ns
        fields["duration_s"] = (event.end_ns - event.start_ns) / 1e9
    if event.position is not None:
        fields["latitude"], fields["longitude"] = event.position
    fields.update((f"peak_{name}", float(value)) for name, value in event.peak.items())
    lines = [format_line(EVENTS_MEASUREMENT, tags, fields, event.start_ns)]
    by_time: dict[int, dict[str, Value]] = {}
    for path, columns in event.snapshot.items():
        qualities = columns.get("q") or [None] * len(columns["t"])
        for t_ns, value, quality in zip(columns["t"], columns["v"], qualities, strict=True):
            if quality is None:
                by_time.setdefault(t_ns, {})[path] = value
    prefix = format_line(SNAPSHOT_MEASUREMENT, tags, {}, 0).rsplit(" ", 2)[0] + " "
    lines.extend(f"{prefix}{_field_set(values)} {t_ns}" for t_ns, values in sorted(by_time.items()))
    return lines


def dtc_status_byte(status: Iterable[str]) -> int:
    """The ISO 14229-1 status byte of a DTC's status bits by name (bit 2 pending, bit 3 confirmed)."""
    return sum(1 << DTC_STATUS_BITS.index(bit) for bit in set(status))


PENDING_BIT = dtc_status_byte(["pending"])
CONFIRMED_BIT = dtc_status_byte(["confirmed"])


def _once_each(items: Iterable[tuple[K, V]], describe: Callable[[K], str]) -> dict[K, V]:
    """``items`` as a dict; a key given twice must come with the same value."""
    result: dict[K, V] = {}
    for key, value in items:
        if result.setdefault(key, value) != value:
            raise DiagnosticsFormatError(f"{describe(key)} twice with different values")
    return result


def _summary(report: DiagnosticsReport) -> dict[str, Scalar]:
    """The ``diagnostics`` fields: lamp (when known), completeness, counts of distinct codes and problems."""
    codes: dict[str, tuple[bool, bool]] = {}  # pending, confirmed on some ECU
    for dtc in report.dtcs:
        pending, confirmed = codes.get(dtc.code, (False, False))
        codes[dtc.code] = (pending or dtc.pending, confirmed or dtc.confirmed)
    fields: dict[str, Scalar] = {} if report.mil_on is None else {"mil_on": report.mil_on}
    fields.update(
        dtcs_complete=report.dtcs_complete,
        dtc_count=len(codes),
        confirmed_count=sum(1 for _, confirmed in codes.values() if confirmed),
        pending_count=sum(1 for pending, confirmed in codes.values() if pending and not confirmed),
        reading_count=len(report.readings),
        problem_count=sum(report.problems.values()),
    )
    fields.update((PROBLEMS_PREFIX + kind, count) for kind, count in report.problems.items())
    return fields


DtcKey = tuple[str, str, str, int | None]


def _dtc_key(key: DtcKey) -> str:
    ecu, code, source, failure_type = key
    return f"ECU {ecu} reports DTC {code}{'' if failure_type is None else f'-{failure_type:02X}'} by {source}"


def _dtc_lines(vehicle: dict[str, str], report: DiagnosticsReport) -> list[str]:
    """One ``dtcs`` point per code, ECU, source and failure type."""
    dtcs = _once_each(
        (
            (
                (dtc.ecu, dtc.code, dtc.source, dtc.failure_type),
                (dtc_status_byte(dtc.status), dtc.description),
            )
            for dtc in report.dtcs
        ),
        _dtc_key,
    )
    lines = []
    for (ecu, code, source, failure_type), (status, description) in dtcs.items():
        tags = {**vehicle, "ecu": ecu, "code": code, "source": source}
        if failure_type is not None:
            tags["failure_type"] = f"{failure_type:02X}"
        fields: dict[str, Scalar] = {
            "pending": bool(status & PENDING_BIT),
            "confirmed": bool(status & CONFIRMED_BIT),
            "status": status,
        }
        if description is not None:
            fields["description"] = description
        lines.append(format_line(DTCS_MEASUREMENT, tags, fields, report.t_ns))
    return lines


def _obd_lines(vehicle: dict[str, str], report: DiagnosticsReport) -> list[str]:
    """One ``obd`` point per ECU, one field per reading name."""
    reserved = [reading.name for reading in report.readings if reading.name in RESERVED_READING_NAMES]
    if reserved:
        raise DiagnosticsFormatError(
            f"reading name {reserved[0]!r} is reserved: readings cannot be named "
            f"{', '.join(sorted(RESERVED_READING_NAMES))}"
        )
    values = _once_each(
        (((reading.ecu, reading.name), reading.value) for reading in report.readings),
        lambda key: f"ECU {key[0]} reports reading {key[1]!r}",
    )
    by_ecu: dict[str, dict[str, Scalar]] = {}
    for (ecu, name), value in values.items():
        by_ecu.setdefault(ecu, {})[name] = value
    return [
        format_line(OBD_MEASUREMENT, {**vehicle, "ecu": ecu}, fields, report.t_ns)
        for ecu, fields in by_ecu.items()
    ]


def diagnostics_lines(fleet: str, vin: str, report: DiagnosticsReport) -> list[str]:
    """Line protocol for one validated diagnostic report: its summary, its codes, its readings per ECU.

    Raises:
        DiagnosticsFormatError: the report cannot be stored without losing part of it: an
            ECU gives one code (by one source, with one failure type) or one reading twice
            with different values, or a reading is named as in :data:`RESERVED_READING_NAMES`.
    """
    vehicle = {"fleet": fleet, "vin": vin}
    tags = {**vehicle, "trigger": report.trigger}
    summary = format_line(DIAGNOSTICS_MEASUREMENT, tags, _summary(report), report.t_ns)
    return [summary, *_dtc_lines(vehicle, report), *_obd_lines(vehicle, report)]
