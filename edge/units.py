"""Unit names and linear conversions between DBC units and VSS unit ids."""

from __future__ import annotations

import math

#: DBC files spell units many ways; each spelling maps to the VSS unit id.
UNIT_ALIASES: dict[str, str] = {
    "kph": "km/h",
    "kmh": "km/h",
    "km/hr": "km/h",
    "deg": "degrees",
    "°": "degrees",
    "deg/s": "degrees/s",
    "°/s": "degrees/s",
    "%": "percent",
    "degc": "celsius",
    "°c": "celsius",
    "c": "celsius",
    "degf": "fahrenheit",
    "°f": "fahrenheit",
    "volt": "V",
    "v": "V",
    "1/min": "rpm",
    "m/s2": "m/s^2",
    "m/s²": "m/s^2",
    "kpa": "kPa",
}

#: (from, to) -> (factor, offset): value_to = value_from * factor + offset.
CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("m/s", "km/h"): (3.6, 0.0),
    ("km/h", "m/s"): (1 / 3.6, 0.0),
    ("mph", "km/h"): (1.609344, 0.0),
    ("km", "m"): (1000.0, 0.0),
    ("m", "km"): (0.001, 0.0),
    ("mm", "m"): (0.001, 0.0),
    ("cm", "m"): (0.01, 0.0),
    ("mi", "km"): (1.609344, 0.0),
    ("bar", "kPa"): (100.0, 0.0),
    ("kPa", "bar"): (0.01, 0.0),
    ("rad", "degrees"): (180 / math.pi, 0.0),
    ("rad/s", "degrees/s"): (180 / math.pi, 0.0),
    ("g", "m/s^2"): (9.80665, 0.0),
    ("fahrenheit", "celsius"): (5 / 9, -32 * 5 / 9),
    ("mV", "V"): (0.001, 0.0),
}


def canonical_unit(unit: str | None) -> str | None:
    """Return the VSS unit id for a unit as written in a DBC (None when unitless)."""
    if unit is None or not unit.strip():
        return None
    stripped = unit.strip()
    return UNIT_ALIASES.get(stripped.lower(), stripped)


def conversion(source: str | None, target: str | None) -> tuple[float, float] | None:
    """Return ``(factor, offset)`` converting ``source`` to ``target`` units.

    ``(1.0, 0.0)`` when they are the same unit (or either side is unitless),
    ``None`` when no conversion is known.
    """
    source, target = canonical_unit(source), canonical_unit(target)
    if source is None or target is None or source == target:
        return (1.0, 0.0)
    return CONVERSIONS.get((source, target))
