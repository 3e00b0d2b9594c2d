"""Physical values to the whole-number steps that ETSI messages and headers carry.

Every conversion checks its range and raises ``V2xEncodeError`` naming the field and the
allowed range; nothing is clamped or wrapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.v2x.errors import V2xEncodeError


def check_number(value: object, field: str) -> float:
    """``value`` as a float; raises when it is not a number or is NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise V2xEncodeError(f"{field} must be a number, got {value!r}")
    if math.isnan(value):
        raise V2xEncodeError(f"{field} is NaN")
    return float(value)


def check_integer(value: object, field: str, low: int, high: int) -> int:
    """``value`` when it is an integer in ``low .. high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise V2xEncodeError(f"{field} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise V2xEncodeError(f"{field} = {value} is outside {low} .. {high}")
    return int(value)


@dataclass(frozen=True)
class Scaled:
    """A quantity sent as whole steps of ``1 / per_unit`` in ``low .. high``.

    ``unavailable`` is sent for None; ``out_of_range`` (where the type has one) for values
    above the range and ``math.inf``. Confidences round up: "within 0.13 m" is sent as the
    next step the type can express, and anything below the first step as the first step.
    """

    per_unit: int
    low: int
    high: int
    unit: str
    unavailable: int | None = None
    out_of_range: int | None = None
    confidence: bool = False

    def encode(self, value: float | None, field: str) -> int:
        if value is None:
            if self.unavailable is None:
                raise V2xEncodeError(f"{field} is required (the standard has no 'unavailable' value)")
            return self.unavailable
        number = check_number(value, field)
        if self.confidence and number < 0:
            raise V2xEncodeError(
                f"{field} = {value!r} is negative; a confidence is a distance from the value"
            )
        if number == math.inf and self.out_of_range is not None:
            return self.out_of_range
        if math.isinf(number):
            raise V2xEncodeError(f"{field} = {value!r} is outside {self.range_text()}")
        if self.confidence:  # rounded to 6 decimals first so that 0.3 m is 30 steps, not 31
            count = max(self.low, math.ceil(round(number * self.per_unit, 6)))
        else:
            count = round(number * self.per_unit)
        if self.low <= count <= self.high:
            return count
        if count > self.high and self.out_of_range is not None:
            return self.out_of_range
        raise V2xEncodeError(f"{field} = {value!r} is outside {self.range_text()}")

    def decode(self, count: int) -> float | None:
        if count == self.unavailable:
            return None
        if count == self.out_of_range:
            return math.inf
        return count / self.per_unit

    def range_text(self) -> str:
        return f"{self.low / self.per_unit:g} .. {self.high / self.per_unit:g} {self.unit}"
