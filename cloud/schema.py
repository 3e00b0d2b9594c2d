"""How telemetry is laid out in InfluxDB (documented in ``docs/schema.md``).

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
"""

from __future__ import annotations

import functools

from cloud.influx import Scalar, escape_key, format_line
from roadwave.contract import TelemetryBatch, Value
from roadwave.contract.events import ENDED, Event

TELEMETRY_MEASUREMENT = "telemetry"
FLAGGED_MEASUREMENT = "telemetry_flagged"
EVENTS_MEASUREMENT = "events"
SNAPSHOT_MEASUREMENT = "event_snapshots"


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
