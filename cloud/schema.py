"""How telemetry is laid out in InfluxDB (documented in ``docs/schema.md``).

Good samples: one point per record in measurement ``telemetry``, tags ``fleet``,
``vin`` and ``bus``, one field per VSS path (booleans, integers ``i`` and floats as
the VSS datatype says), timestamp = the CAN frame's time in nanoseconds.
Samples of another quality go to ``telemetry_flagged`` with the same tags plus
``quality``, so queries on ``telemetry`` only ever see good data. Re-writing a
batch overwrites the same points instead of duplicating them.
"""

from __future__ import annotations

import functools

from cloud.influx import escape_key, format_line
from roadwave.contract import TelemetryBatch, Value

TELEMETRY_MEASUREMENT = "telemetry"
FLAGGED_MEASUREMENT = "telemetry_flagged"


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
