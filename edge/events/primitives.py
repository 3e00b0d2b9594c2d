"""Building blocks of the event detectors.

Detectors read VSS values from a :class:`SignalTable`, in which a sample flagged
stale, integrity-failed or out of range reads as ``None`` ("unknown"). Conditions
use three-valued logic (True, False, None); an unknown condition never holds, so a
flagged signal can neither start an event nor keep one going.

* measures (``(t_ns, signals) -> float | None``): :class:`Signal`, :class:`Derivative`
  (e.g. jerk), :class:`WindowMean`, :class:`WindowMax`;
* conditions (``(t_ns, signals) -> bool | None``): :class:`SpeedGate`, :class:`IsTrue`,
  :class:`Equals`, :class:`Not`, :class:`AllOf`, :class:`AnyOf`, :class:`Lasting` (held for a time) and
  :class:`Recently` (true within a time);
* :class:`Threshold` (a level with hysteresis) and :class:`Sustained` (minimum duration),
  which :class:`edge.events.detectors.Detector` combines;
* :class:`History`, the time-bounded ring buffer of records that event snapshots start from.

Every time is integer nanoseconds of frame time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from roadwave.contract import Record, Value

SECOND_NS = 1_000_000_000
SPEED = "Vehicle.Speed"


def seconds_ns(seconds: float) -> int:
    """A duration in seconds as integer nanoseconds."""
    return round(seconds * SECOND_NS)


class SignalTable:
    """The latest sample of every VSS path; a flagged sample reads as None until a good one."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[str, Value | None] = {}

    def update(self, record: Record) -> None:
        """Take the samples of ``record``."""
        if record.quality:
            quality = record.quality
            for path, value in record.signals.items():
                self._values[path] = None if path in quality else value
        else:
            self._values.update(record.signals)

    def get(self, path: str) -> Value | None:
        """The latest good value of ``path``; None if unknown or flagged."""
        return self._values.get(path)

    def number(self, path: str) -> float | None:
        """The latest good value of ``path`` as a float; None if unknown or flagged."""
        value = self._values.get(path)
        return None if value is None else float(value)


class Measure(Protocol):
    """A number computed from the signals at a time; None when it cannot be known."""

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None: ...


class Condition(Protocol):
    """A fact about the signals at a time: True, False, or None when unknown."""

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None: ...


# --- measures ------------------------------------------------------------------------


class Signal:
    """One VSS signal as a number, optionally scaled (-1 turns acceleration into deceleration)."""

    __slots__ = ("path", "scale", "absolute")

    def __init__(self, path: str, scale: float = 1.0, absolute: bool = False) -> None:
        self.path, self.scale, self.absolute = path, scale, absolute

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        value = signals.number(self.path)
        if value is None:
            return None
        return abs(value) * self.scale if self.absolute else value * self.scale


class Derivative:
    """Rate of change per second of a measure, between samples at least ``span_s`` apart."""

    __slots__ = ("measure", "span_ns", "_t_ns", "_value", "_rate")

    def __init__(self, measure: Measure, span_s: float = 0.1) -> None:
        self.measure, self.span_ns = measure, seconds_ns(span_s)
        self._t_ns: int | None = None
        self._value = 0.0
        self._rate: float | None = None

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        value = self.measure(t_ns, signals)
        if value is None:
            self._t_ns = self._rate = None
            return None
        if self._t_ns is None:
            self._t_ns, self._value = t_ns, value
        elif t_ns - self._t_ns >= self.span_ns:
            self._rate = (value - self._value) * SECOND_NS / (t_ns - self._t_ns)
            self._t_ns, self._value = t_ns, value
        return self._rate


class WindowMean:
    """Mean of a measure's samples over the last ``span_s``.

    None until good samples cover a whole window; a gap of more than ``max_gap_s``
    without a good sample (a stale or failing signal) empties the window.
    """

    __slots__ = ("measure", "span_ns", "max_gap_ns", "_samples", "_sum", "_since_ns")

    def __init__(self, measure: Measure, span_s: float, max_gap_s: float = 1.0) -> None:
        self.measure, self.span_ns, self.max_gap_ns = measure, seconds_ns(span_s), seconds_ns(max_gap_s)
        self._samples: deque[tuple[int, float]] = deque()
        self._sum = 0.0
        self._since_ns: int | None = None  # first sample of the current unbroken run

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        samples = self._samples
        if samples and t_ns - samples[-1][0] > self.max_gap_ns:
            samples.clear()
            self._sum, self._since_ns = 0.0, None
        value = self.measure(t_ns, signals)
        if value is not None:
            samples.append((t_ns, value))
            self._sum += value
            if self._since_ns is None:
                self._since_ns = t_ns
        while samples and samples[0][0] <= t_ns - self.span_ns:
            self._sum -= samples.popleft()[1]
        if not samples or self._since_ns is None or t_ns - self._since_ns < self.span_ns:
            return None
        return self._sum / len(samples)


class WindowMax:
    """Largest sample of a measure over the last ``span_s`` (None if it had no good sample)."""

    __slots__ = ("measure", "span_ns", "_candidates")

    def __init__(self, measure: Measure, span_s: float) -> None:
        self.measure, self.span_ns = measure, seconds_ns(span_s)
        self._candidates: deque[tuple[int, float]] = deque()  # decreasing values, increasing times

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        candidates = self._candidates
        value = self.measure(t_ns, signals)
        if value is not None:
            while candidates and candidates[-1][1] <= value:
                candidates.pop()
            candidates.append((t_ns, value))
        while candidates and candidates[0][0] <= t_ns - self.span_ns:
            candidates.popleft()
        return candidates[0][1] if candidates else None


# --- conditions ----------------------------------------------------------------------


class SpeedGate:
    """Vehicle.Speed (km/h) within [minimum, maximum]."""

    __slots__ = ("minimum", "maximum")

    def __init__(self, minimum: float = 0.0, maximum: float = math.inf) -> None:
        self.minimum, self.maximum = minimum, maximum

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        speed = signals.number(SPEED)
        return None if speed is None else self.minimum <= speed <= self.maximum


class IsTrue:
    """A boolean signal is true (or a number is non-zero)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        value = signals.get(self.path)
        return None if value is None else bool(value)


class Equals:
    """A signal has a given value (e.g. the selected gear is park)."""

    __slots__ = ("path", "value")

    def __init__(self, path: str, value: Value) -> None:
        self.path, self.value = path, value

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        value = signals.get(self.path)
        return None if value is None else value == self.value


class Not:
    """The negation of a condition; unknown stays unknown."""

    __slots__ = ("condition",)

    def __init__(self, condition: Condition) -> None:
        self.condition = condition

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        value = self.condition(t_ns, signals)
        return None if value is None else not value


class AllOf:
    """Every condition holds: False if one is False, else unknown if one is unknown.

    Every condition is evaluated, so stateful ones (:class:`Lasting`, :class:`Recently`)
    see every sample.
    """

    __slots__ = ("conditions",)

    def __init__(self, *conditions: Condition) -> None:
        self.conditions = conditions

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        values = [condition(t_ns, signals) for condition in self.conditions]
        if False in values:
            return False
        return None if None in values else True


class AnyOf:
    """Some condition holds: True if one is True, else unknown if one is unknown."""

    __slots__ = ("conditions",)

    def __init__(self, *conditions: Condition) -> None:
        self.conditions = conditions

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        values = [condition(t_ns, signals) for condition in self.conditions]
        if True in values:
            return True
        return None if None in values else False


class Sustained:
    """Minimum duration: true once a condition has held without a break for ``min_s``."""

    __slots__ = ("min_ns", "since_ns")

    def __init__(self, min_s: float) -> None:
        self.min_ns = seconds_ns(min_s)
        self.since_ns: int | None = None  # when the current unbroken run began

    def update(self, t_ns: int, holds: bool) -> bool:
        """Take the condition's value at ``t_ns``; whether it has now held long enough."""
        if not holds:
            self.since_ns = None
            return False
        if self.since_ns is None:
            self.since_ns = t_ns
        return t_ns - self.since_ns >= self.min_ns


class Lasting:
    """A condition that has held, known and true, for at least ``min_s``."""

    __slots__ = ("condition", "_sustained")

    def __init__(self, condition: Condition, min_s: float) -> None:
        self.condition = condition
        self._sustained = Sustained(min_s)

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        return self._sustained.update(t_ns, self.condition(t_ns, signals) is True)


class Recently:
    """A condition was true at some sample within the last ``within_s`` (hold-off/after-run).

    Unknown when it was not true within that time and is unknown now.
    """

    __slots__ = ("condition", "within_ns", "_last_true_ns")

    def __init__(self, condition: Condition, within_s: float) -> None:
        self.condition, self.within_ns = condition, seconds_ns(within_s)
        self._last_true_ns: int | None = None

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        value = self.condition(t_ns, signals)
        if value:
            self._last_true_ns = t_ns
        last = self._last_true_ns
        if last is not None and t_ns - last <= self.within_ns:
            return True
        return None if value is None else False


class Threshold:
    """A trigger level with hysteresis.

    Rising (larger is worse): reached at ``value >= level``, released below
    ``level * (1 - hysteresis)``. Falling (smaller is worse, e.g. time to collision):
    reached at ``value <= level``, released above ``level * (1 + hysteresis)``.
    """

    __slots__ = ("level", "release_level", "rising")

    def __init__(self, level: float, hysteresis: float, rising: bool = True) -> None:
        if not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis!r}")
        self.level, self.rising = level, rising
        self.release_level = level * (1.0 - hysteresis) if rising else level * (1.0 + hysteresis)

    def reached(self, value: float) -> bool:
        """Whether ``value`` is at or beyond the trigger level."""
        return value >= self.level if self.rising else value <= self.level

    def released(self, value: float) -> bool:
        """Whether ``value`` is back past the release level."""
        return value < self.release_level if self.rising else value > self.release_level

    def worse(self, a: float, b: float) -> float:
        """The worse of two values (the peak of an event)."""
        return max(a, b) if self.rising else min(a, b)


# --- history ---------------------------------------------------------------------------


class History:
    """The records of the last ``span_s`` of frame time, oldest first."""

    __slots__ = ("span_ns", "_records")

    def __init__(self, span_s: float) -> None:
        self.span_ns = seconds_ns(span_s)
        self._records: deque[Record] = deque()

    def append(self, record: Record) -> None:
        """Add the newest record and forget those older than the span."""
        records = self._records
        records.append(record)
        horizon = record.t_ns - self.span_ns
        while records[0].t_ns < horizon:
            records.popleft()

    def since(self, t_ns: int) -> list[Record]:
        """The kept records at or after ``t_ns``."""
        return [record for record in self._records if record.t_ns >= t_ns]


def traces(records: Iterable[Record], paths: Iterable[str]) -> dict[str, dict[str, list[object]]]:
    """Per VSS path, the columns ``t`` (ns), ``v`` and, when some sample is flagged, ``q``."""
    wanted = set(paths)
    columns: dict[str, dict[str, list[object]]] = {}
    for record in records:
        for path, value in record.signals.items():
            if path not in wanted:
                continue
            column = columns.setdefault(path, {"t": [], "v": [], "q": []})
            column["t"].append(record.t_ns)
            column["v"].append(value)
            column["q"].append(record.quality.get(path))
    for column in columns.values():
        if not any(column["q"]):
            del column["q"]
    return columns
