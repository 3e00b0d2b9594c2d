"""Event detection settings: defaults per vehicle class and the ``[events]`` TOML section.

Example (every key optional; docs/events.md lists each detector's keys and defaults)::

    [events]
    vehicle_class = "van"        # car (default), van or truck: picks the defaults
    pre_s = 5.0                  # snapshot from this long before an event's start...
    post_s = 5.0                 # ...to this long after its end

    [events.harsh_braking]       # one table per detector, overriding the class defaults
    enabled = true
    threshold = 2.5              # m/s^2: an event, severity 1 (info), from here
    warning = 3.2                # severity 2 from here
    critical = 4.0               # severity 3 from here
    hysteresis = 0.17            # ends once 17 % back below the threshold
    min_duration_s = 0.1         # the threshold must be held this long
    min_speed_kmh = 10

Detectors whose measure gets worse as it falls (time to collision, headway, speeds)
have ``warning``/``critical`` below ``threshold``. Detectors without grades have a
fixed ``severity`` instead. Where each default comes from: docs/events.md.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from roadwave.configfile import Table, read_overrides

#: Standard gravity (m/s^2), to turn the g figures of the sources into m/s^2.
GRAVITY = 9.80665
#: Graded harsh-braking scale: a speed drop of 5 / 7 / 9 mph within 1 s.
BRAKING_SCALE_G = (0.23, 0.32, 0.41)
#: Cornering vs braking/acceleration thresholds, as a common device default (5.5 vs 4.4 m/s^2).
CORNERING_FACTOR = 5.5 / 4.4
#: Common device default: released 17 % below the threshold.
HYSTERESIS = 0.17
#: Common device default: at least 100 ms over the threshold.
MIN_DURATION_S = 0.1
#: Vehicle classes and the factor on their harsh-driving thresholds (a roadwave choice:
#: heavier vehicles are flagged earlier; the sources only say vendors use 0.25-0.6 g).
VEHICLE_CLASSES = {"car": 1.0, "van": 0.85, "truck": 0.7}
#: Vehicle width per class (m) for lane departure; 2.55 m is the EU maximum (Directive 96/53/EC).
VEHICLE_WIDTH_M = {"car": 1.8, "van": 2.0, "truck": 2.55}
SEVERITIES = (1, 2, 3)
#: Longest snapshot window before an event's start or after its end (s).
MAX_WINDOW_S = 60.0


@dataclass(frozen=True, kw_only=True)
class DetectorSettings(ABC):
    """What every detector has: a trigger threshold with hysteresis and a minimum duration."""

    kind: ClassVar[str]
    #: True when larger values of the measure are worse.
    rising: ClassVar[bool] = True

    enabled: bool = True
    threshold: float
    hysteresis: float = HYSTERESIS
    min_duration_s: float = MIN_DURATION_S

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{self.kind}: {item.name} must be a finite number >= 0, got {value!r}")
        if self.hysteresis >= 1.0:
            raise ValueError(f"{self.kind}: hysteresis is a fraction below 1, got {self.hysteresis!r}")

    @abstractmethod
    def severity_of(self, peak: float) -> int:
        """Severity 1 (info) .. 3 (critical) of an event whose measure peaked at ``peak``."""


@dataclass(frozen=True, kw_only=True)
class GradedSettings(DetectorSettings):
    """A detector graded by its peak: severity 2 from ``warning``, 3 from ``critical``."""

    warning: float
    critical: float

    def __post_init__(self) -> None:
        super().__post_init__()
        levels = (self.threshold, self.warning, self.critical)
        ordered = list(levels) == sorted(levels, reverse=not self.rising)
        if not ordered:
            relation = "<=" if self.rising else ">="
            raise ValueError(
                f"{self.kind}: need threshold {relation} warning {relation} critical, got "
                f"{self.threshold:g}, {self.warning:g}, {self.critical:g}"
            )

    def severity_of(self, peak: float) -> int:
        if self.rising:
            return 3 if peak >= self.critical else 2 if peak >= self.warning else 1
        return 3 if peak <= self.critical else 2 if peak <= self.warning else 1


@dataclass(frozen=True, kw_only=True)
class FixedSettings(DetectorSettings):
    """A detector whose events always have the same severity."""

    severity: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.kind}: severity must be 1, 2 or 3, got {self.severity!r}")

    def severity_of(self, peak: float) -> int:
        return self.severity


@dataclass(frozen=True, kw_only=True)
class HarshBraking(GradedSettings):
    """Deceleration (m/s^2) from Vehicle.Acceleration.Longitudinal."""

    kind: ClassVar[str] = "harsh_braking"
    min_speed_kmh: float = 10.0


@dataclass(frozen=True, kw_only=True)
class HarshAcceleration(GradedSettings):
    """Acceleration (m/s^2) from Vehicle.Acceleration.Longitudinal."""

    kind: ClassVar[str] = "harsh_acceleration"
    min_speed_kmh: float = 0.0


@dataclass(frozen=True, kw_only=True)
class HarshCornering(GradedSettings):
    """Lateral acceleration magnitude (m/s^2)."""

    kind: ClassVar[str] = "harsh_cornering"
    min_speed_kmh: float = 20.0


@dataclass(frozen=True, kw_only=True)
class EmergencyBraking(FixedSettings):
    """Emergency electronic brake light (EEBL): deceleration (m/s^2) held for min_duration_s."""

    kind: ClassVar[str] = "emergency_braking"
    threshold: float = 7.0
    hysteresis: float = 0.0
    min_duration_s: float = 0.5
    severity: int = 3
    min_speed_kmh: float = 20.0


@dataclass(frozen=True, kw_only=True)
class ForwardCollision(GradedSettings):
    """Time to collision with the radar lead (s): range / closing speed."""

    kind: ClassVar[str] = "forward_collision"
    rising: ClassVar[bool] = False
    threshold: float = 2.4
    warning: float = round(2.4 * BRAKING_SCALE_G[0] / BRAKING_SCALE_G[1], 2)
    critical: float = round(2.4 * BRAKING_SCALE_G[0] / BRAKING_SCALE_G[2], 2)
    min_speed_kmh: float = 10.0
    min_closing_speed_mps: float = 0.5


@dataclass(frozen=True, kw_only=True)
class Tailgating(GradedSettings):
    """Time headway to the radar lead (s): gap / own speed."""

    kind: ClassVar[str] = "tailgating"
    rising: ClassVar[bool] = False
    threshold: float = 1.0
    warning: float = round(BRAKING_SCALE_G[0] / BRAKING_SCALE_G[1], 2)
    critical: float = round(BRAKING_SCALE_G[0] / BRAKING_SCALE_G[2], 2)
    min_duration_s: float = 30.0
    min_speed_kmh: float = 70.0


@dataclass(frozen=True, kw_only=True)
class LaneDeparture(GradedSettings):
    """How far (m) the vehicle's side is past the lane marking, without a turn signal."""

    kind: ClassVar[str] = "lane_departure"
    threshold: float = 0.1
    warning: float = 0.3
    critical: float = 0.6
    hysteresis: float = 0.5
    min_speed_kmh: float = 60.0
    vehicle_width_m: float = VEHICLE_WIDTH_M["car"]
    #: A turn signal switched off this recently still counts (drivers cancel it mid-manoeuvre).
    indicator_hold_s: float = 2.0


@dataclass(frozen=True, kw_only=True)
class StationaryVehicle(FixedSettings):
    """Stopped (speed at most ``threshold`` km/h) with hazard lights, or stopped in lane."""

    kind: ClassVar[str] = "stationary_vehicle"
    rising: ClassVar[bool] = False
    threshold: float = 1.0
    min_duration_s: float = 2.0
    severity: int = 2
    #: Without hazard lights: stopped this long, not in park, no lead vehicle this close.
    stopped_s: float = 90.0
    queue_gap_m: float = 20.0


@dataclass(frozen=True, kw_only=True)
class EndOfQueue(FixedSettings):
    """Speed fell from at least ``threshold`` km/h to ``to_speed_kmh`` within ``within_s``."""

    kind: ClassVar[str] = "end_of_queue"
    threshold: float = 80.0
    min_duration_s: float = 0.0
    severity: int = 2
    to_speed_kmh: float = 30.0
    within_s: float = 10.0


@dataclass(frozen=True, kw_only=True)
class TrafficJam(FixedSettings):
    """Mean speed (km/h) over ``window_s`` at most ``threshold``, queued behind a lead vehicle."""

    kind: ClassVar[str] = "traffic_jam"
    rising: ClassVar[bool] = False
    threshold: float = 30.0
    min_duration_s: float = 0.0
    severity: int = 1
    window_s: float = 60.0
    #: The vehicle came from free-flowing traffic: at least this speed within ``prior_window_s``.
    prior_speed_kmh: float = 60.0
    prior_window_s: float = 300.0


def check_vehicle_class(name: str) -> str:
    """Return ``name`` if it is a vehicle class, else raise ValueError listing them."""
    if name not in VEHICLE_CLASSES:
        raise ValueError(f"vehicle_class must be one of {', '.join(VEHICLE_CLASSES)}, got {name!r}")
    return name


def _harsh_levels(factor: float) -> dict[str, Any]:
    threshold, warning, critical = (round(g * GRAVITY * factor, 2) for g in BRAKING_SCALE_G)
    return {"threshold": threshold, "warning": warning, "critical": critical}


@dataclass(frozen=True, kw_only=True)
class EventsConfig:
    """Everything the event engine needs; build it with :meth:`for_class`."""

    vehicle_class: str = "car"
    pre_s: float = 5.0
    post_s: float = 5.0
    harsh_braking: HarshBraking
    harsh_acceleration: HarshAcceleration
    harsh_cornering: HarshCornering
    emergency_braking: EmergencyBraking = EmergencyBraking()
    forward_collision: ForwardCollision = ForwardCollision()
    tailgating: Tailgating = Tailgating()
    lane_departure: LaneDeparture
    stationary_vehicle: StationaryVehicle = StationaryVehicle()
    end_of_queue: EndOfQueue = EndOfQueue()
    traffic_jam: TrafficJam = TrafficJam()

    def __post_init__(self) -> None:
        check_vehicle_class(self.vehicle_class)
        for name in ("pre_s", "post_s"):
            value = getattr(self, name)
            if not 0.0 <= value <= MAX_WINDOW_S:
                raise ValueError(f"{name} must be within [0, {MAX_WINDOW_S:g}] s, got {value!r}")

    @classmethod
    def for_class(cls, vehicle_class: str = "car") -> EventsConfig:
        """The defaults of a vehicle class (``car``, ``van`` or ``truck``).

        Raises:
            ValueError: an unknown vehicle class.
        """
        factor = VEHICLE_CLASSES[check_vehicle_class(vehicle_class)]
        return cls(
            vehicle_class=vehicle_class,
            harsh_braking=HarshBraking(**_harsh_levels(factor)),
            harsh_acceleration=HarshAcceleration(**_harsh_levels(factor)),
            harsh_cornering=HarshCornering(**_harsh_levels(factor * CORNERING_FACTOR)),
            lane_departure=LaneDeparture(vehicle_width_m=VEHICLE_WIDTH_M[vehicle_class]),
        )

    @property
    def detectors(self) -> tuple[DetectorSettings, ...]:
        """The settings of every enabled detector."""
        found = (getattr(self, item.name) for item in fields(self))
        return tuple(s for s in found if isinstance(s, DetectorSettings) and s.enabled)


#: Every detector, by the name of its section and event type.
DETECTOR_KINDS = tuple(
    item.name for item in fields(EventsConfig) if item.name not in ("vehicle_class", "pre_s", "post_s")
)


def parse_events_config(table: Table) -> EventsConfig:
    """Read an ``[events]`` table (pass ``root.table("events")``; absent reads as defaults).

    Raises:
        ConfigError: naming the file, the table, the key and the problem.
    """
    base = EventsConfig.for_class(table.choice("vehicle_class", tuple(VEHICLE_CLASSES), "car"))
    pre_s = table.number("pre_s", base.pre_s, minimum=0.0)
    post_s = table.number("post_s", base.post_s, minimum=0.0)
    detectors: dict[str, Any] = {
        kind: read_overrides(table.table(kind), getattr(base, kind), (min(SEVERITIES), max(SEVERITIES)))
        for kind in DETECTOR_KINDS
    }
    table.finish()
    try:
        return replace(base, pre_s=pre_s, post_s=post_s, **detectors)
    except ValueError as exc:
        raise table.error(str(exc)) from None
