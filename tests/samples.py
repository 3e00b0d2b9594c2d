"""Samples as sets to compare: what InfluxDB holds, and what an uninterrupted agent publishes."""

from __future__ import annotations

from pathlib import Path

from cloud.influx import InfluxClient
from cloud.schema import FLAGGED_MEASUREMENT, TELEMETRY_MEASUREMENT
from edge.agent import open_log
from edge.decoder import FrameDecoder

Key = tuple[str, str, int, str]  # vin, bus, t_ns, VSS path
Samples = dict[Key, tuple[object, str | None]]  # value, quality (None = good)

_TAGS = {"time", "vin", "bus", "fleet", "quality"}


def stored_samples(influx: InfluxClient, fleet: str) -> Samples:
    """Everything InfluxDB holds for the fleet: good samples and flagged ones with their quality."""
    stored: Samples = {}
    for measurement in (TELEMETRY_MEASUREMENT, FLAGGED_MEASUREMENT):
        for row in influx.query(f"SELECT * FROM {measurement} WHERE fleet = '{fleet}'"):
            for path, value in row.items():
                if path not in _TAGS and value is not None:
                    key = (row["vin"], row["bus"], row["time"], path)
                    assert key not in stored, f"{key} stored twice"
                    stored[key] = (value, row.get("quality"))
    return stored


def replayed_samples(vin: str, log: Path, dbc: Path, bus: str = "can0") -> Samples:
    """What one agent replaying ``log`` from start to end publishes, without any interruption.

    The decoder is deterministic, so this is the reference a run with faults must match.
    """
    decoder = FrameDecoder.from_files(bus, [dbc], None)
    samples: Samples = {}

    def keep(record) -> None:
        for path, value in record.signals.items():
            samples[(vin, record.bus, record.t_ns, path)] = (value, record.quality.get(path))

    for frame in open_log(log):
        decoder.decode(frame, keep)
    return samples
