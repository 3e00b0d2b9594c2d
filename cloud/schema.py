"""How telemetry is laid out in InfluxDB (documented in ``docs/schema.md``).

One point per record: measurement ``telemetry``, tags ``fleet``, ``vin`` and
``bus``, one field per VSS path (booleans, integers ``i`` and floats as the VSS
datatype says), timestamp = the CAN frame's time in nanoseconds. Re-writing a
batch therefore overwrites the same points instead of duplicating them.
"""

from __future__ import annotations

from cloud.influx import format_line
from roadwave.contract import TelemetryBatch

TELEMETRY_MEASUREMENT = "telemetry"


def telemetry_lines(batch: TelemetryBatch) -> list[str]:
    """Line protocol for every record of a validated batch."""
    return [
        format_line(
            TELEMETRY_MEASUREMENT,
            {"fleet": batch.fleet, "vin": batch.vin, "bus": record.bus},
            record.signals,
            record.t_ns,
        )
        for record in batch.records
    ]
