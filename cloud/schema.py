"""How telemetry is laid out in InfluxDB (documented in ``docs/schema.md``).

Good samples: one point per record in measurement ``telemetry``, tags ``fleet``,
``vin`` and ``bus``, one field per VSS path (booleans, integers ``i`` and floats as
the VSS datatype says), timestamp = the CAN frame's time in nanoseconds.
Samples of another quality go to ``telemetry_flagged`` with the same tags plus
``quality``, so queries on ``telemetry`` only ever see good data. Re-writing a
batch overwrites the same points instead of duplicating them.
"""

from __future__ import annotations

from cloud.influx import format_line
from roadwave.contract import Record, TelemetryBatch, Value

TELEMETRY_MEASUREMENT = "telemetry"
FLAGGED_MEASUREMENT = "telemetry_flagged"


def _record_lines(batch: TelemetryBatch, record: Record) -> list[str]:
    tags = {"fleet": batch.fleet, "vin": batch.vin, "bus": record.bus}
    if not record.quality:
        return [format_line(TELEMETRY_MEASUREMENT, tags, record.signals, record.t_ns)]
    by_quality: dict[str, dict[str, Value]] = {}
    good: dict[str, Value] = {}
    for path, value in record.signals.items():
        quality = record.quality.get(path)
        if quality is None:
            good[path] = value
        else:
            by_quality.setdefault(quality, {})[path] = value
    lines = [format_line(TELEMETRY_MEASUREMENT, tags, good, record.t_ns)] if good else []
    lines.extend(
        format_line(FLAGGED_MEASUREMENT, {**tags, "quality": quality}, fields, record.t_ns)
        for quality, fields in by_quality.items()
    )
    return lines


def telemetry_lines(batch: TelemetryBatch) -> list[str]:
    """Line protocol for every record of a validated batch."""
    return [line for record in batch.records for line in _record_lines(batch, record)]
