"""The event detectors: each one a measure, a threshold and a few gates.

A :class:`Detector` is evaluated on every sample of its clock signal. It starts an
event when its measure has been at or beyond the threshold, with every gate true, for
the minimum duration; the event starts at the first of those samples and lasts until
the measure falls back past the release level (hysteresis) or becomes unknown
(a flagged or missing signal). Gates only matter for the start. While an event is
pending or going on, the detector keeps the peak of its measure and of its extras.

A new detector is a few lines::

    def harsh_braking(s: HarshBraking) -> Detector:
        return Detector(s, LONGITUDINAL, ("deceleration_mps2", Signal(LONGITUDINAL, -1.0)),
                        gates=(SpeedGate(s.min_speed_kmh),))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import Enum

from edge.events.config import (
    DetectorSettings,
    EmergencyBraking,
    EndOfQueue,
    EventsConfig,
    ForwardCollision,
    HarshAcceleration,
    HarshBraking,
    HarshCornering,
    LaneDeparture,
    StationaryVehicle,
    Tailgating,
    TrafficJam,
)
from edge.events.primitives import (
    SPEED,
    AllOf,
    AnyOf,
    Condition,
    Derivative,
    Equals,
    IsTrue,
    Lasting,
    Measure,
    Not,
    Recently,
    Signal,
    SignalTable,
    SpeedGate,
    Sustained,
    Threshold,
    WindowMax,
    WindowMean,
)

LONGITUDINAL = "Vehicle.Acceleration.Longitudinal"
LATERAL = "Vehicle.Acceleration.Lateral"
YAW_RATE = "Vehicle.AngularVelocity.Yaw"
STEERING = "Vehicle.Chassis.SteeringWheel.Angle"
BRAKE_PEDAL = "Vehicle.Chassis.Brake.PedalPosition"
BRAKE_PRESSURE = "Vehicle.Chassis.Brake.Pressure"
ACCELERATOR = "Vehicle.Chassis.Accelerator.PedalPosition"
ABS = "Vehicle.ADAS.ABS.IsEngaged"
LEAD_DETECTED = "Vehicle.ADAS.LeadVehicle.IsDetected"
LEAD_DISTANCE = "Vehicle.ADAS.LeadVehicle.Distance"
LEAD_SPEED = "Vehicle.ADAS.LeadVehicle.RelativeSpeed"
LANE_OFFSET = "Vehicle.ADAS.LaneCamera.LateralOffset"
LANE_WIDTH = "Vehicle.ADAS.LaneCamera.LaneWidth"
HAZARD = "Vehicle.Body.Lights.Hazard.IsSignaling"
LEFT_INDICATOR = "Vehicle.Body.Lights.DirectionIndicator.Left.IsSignaling"
RIGHT_INDICATOR = "Vehicle.Body.Lights.DirectionIndicator.Right.IsSignaling"
GEAR = "Vehicle.Powertrain.Transmission.SelectedGear"
LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
#: VSS SelectedGear code of park.
PARK = 126
HIGHEST, LOWEST = True, False


class Step(Enum):
    """What one sample did to a detector."""

    IDLE = "idle"  # no event (possibly one pending)
    STARTED = "started"
    ONGOING = "ongoing"
    ENDED = "ended"


class Detector:
    """One kind of event (see the module docstring).

    ``measure`` is the peak's name and the measure; ``extras`` name further measures
    whose highest (``HIGHEST``) or lowest value is reported; ``snapshot`` lists the VSS
    paths an event's snapshot carries.
    """

    def __init__(
        self,
        settings: DetectorSettings,
        clock: str,
        measure: tuple[str, Measure],
        *,
        gates: Sequence[Condition] = (),
        extras: Mapping[str, tuple[Measure, bool]] | None = None,
        snapshot: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.kind = settings.kind
        self.clock = clock
        self.peak_name, self._measure = measure
        self.threshold = Threshold(settings.threshold, settings.hysteresis, settings.rising)
        self._sustained = Sustained(settings.min_duration_s)
        self._gates = tuple(gates)
        self._extras = dict(extras or {})
        self.snapshot_paths = tuple(dict.fromkeys((clock, *snapshot)))
        self.active = False
        #: Time of the first sample of the current (or pending, or last) event.
        self.onset_ns = 0
        #: Peak values of the current or last event (or of the pending one).
        self.peaks: dict[str, float] = {}

    @property
    def severity(self) -> int:
        """Severity of the current or last event, from its peak."""
        return self.settings.severity_of(self.peaks[self.peak_name])

    def update(self, t_ns: int, signals: SignalTable) -> Step:
        """Evaluate one sample of the clock signal."""
        value = self._measure(t_ns, signals)
        # Evaluate every gate and extra on every sample: some keep state over time.
        gates_hold = all([gate(t_ns, signals) is True for gate in self._gates])
        extras = {name: (measure(t_ns, signals), high) for name, (measure, high) in self._extras.items()}
        sustained = self._sustained
        if self.active:
            if value is None or self.threshold.released(value):
                self.active = False
                sustained.update(t_ns, False)
                return Step.ENDED
            self._track(value, extras)
            return Step.ONGOING
        if value is None or not gates_hold or not self.threshold.reached(value):
            sustained.update(t_ns, False)
            return Step.IDLE
        if sustained.since_ns is None:  # the first sample of a pending event
            self.peaks = {}
            self.onset_ns = t_ns
        held = sustained.update(t_ns, True)
        self._track(value, extras)
        if not held:
            return Step.IDLE
        self.active = True
        return Step.STARTED

    def _track(self, value: float, extras: dict[str, tuple[float | None, bool]]) -> None:
        peaks = self.peaks
        name = self.peak_name
        peaks[name] = self.threshold.worse(peaks[name], value) if name in peaks else value
        for extra, (reading, highest) in extras.items():
            if reading is None or not math.isfinite(reading):
                continue
            if extra not in peaks:
                peaks[extra] = reading
            else:
                peaks[extra] = max(peaks[extra], reading) if highest else min(peaks[extra], reading)


# --- domain measures and conditions ------------------------------------------------------


class TimeToCollision:
    """Range / closing speed to the radar lead (s); infinite without a lead or when not closing in."""

    __slots__ = ("min_closing_mps",)

    def __init__(self, min_closing_mps: float) -> None:
        self.min_closing_mps = min_closing_mps

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        detected = signals.get(LEAD_DETECTED)
        if not detected:
            return None if detected is None else math.inf
        distance, rate = signals.number(LEAD_DISTANCE), signals.number(LEAD_SPEED)
        if distance is None or rate is None:
            return None
        closing = -rate
        return distance / closing if closing > 0 and closing >= self.min_closing_mps else math.inf


class Headway:
    """Gap to the radar lead / own speed (s); infinite without a lead or at standstill."""

    __slots__ = ()

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        detected = signals.get(LEAD_DETECTED)
        if not detected:
            return None if detected is None else math.inf
        distance, speed = signals.number(LEAD_DISTANCE), signals.number(SPEED)
        if distance is None or speed is None:
            return None
        return distance / (speed / 3.6) if speed > 0 else math.inf


class LaneExcess:
    """How far (m) the vehicle's side is past the marking of its lane (negative: inside)."""

    __slots__ = ("half_width_m",)

    def __init__(self, vehicle_width_m: float) -> None:
        self.half_width_m = vehicle_width_m / 2

    def __call__(self, t_ns: int, signals: SignalTable) -> float | None:
        offset, lane = signals.number(LANE_OFFSET), signals.number(LANE_WIDTH)
        if offset is None or lane is None:
            return None
        return abs(offset) + self.half_width_m - lane / 2


class LeadWithin:
    """A lead vehicle is detected at most ``gap_m`` ahead."""

    __slots__ = ("gap_m",)

    def __init__(self, gap_m: float) -> None:
        self.gap_m = gap_m

    def __call__(self, t_ns: int, signals: SignalTable) -> bool | None:
        detected = signals.get(LEAD_DETECTED)
        if not detected:
            return None if detected is None else False
        distance = signals.number(LEAD_DISTANCE)
        return None if distance is None else distance <= self.gap_m


# --- the detectors -----------------------------------------------------------------------


def harsh_braking(s: HarshBraking) -> Detector:
    """Deceleration over the threshold, above a minimum speed."""
    return Detector(
        s,
        LONGITUDINAL,
        ("deceleration_mps2", Signal(LONGITUDINAL, -1.0)),
        gates=(SpeedGate(s.min_speed_kmh),),
        extras={
            "jerk_mps3": (Derivative(Signal(LONGITUDINAL)), LOWEST),
            "speed_kmh": (Signal(SPEED), HIGHEST),
        },
        snapshot=(SPEED, BRAKE_PEDAL, BRAKE_PRESSURE, ABS),
    )


def harsh_acceleration(s: HarshAcceleration) -> Detector:
    """Acceleration over the threshold."""
    return Detector(
        s,
        LONGITUDINAL,
        ("acceleration_mps2", Signal(LONGITUDINAL)),
        gates=(SpeedGate(s.min_speed_kmh),),
        extras={
            "jerk_mps3": (Derivative(Signal(LONGITUDINAL)), HIGHEST),
            "speed_kmh": (Signal(SPEED), HIGHEST),
        },
        snapshot=(SPEED, ACCELERATOR),
    )


def harsh_cornering(s: HarshCornering) -> Detector:
    """Lateral acceleration (either side) over the threshold, above a minimum speed."""
    return Detector(
        s,
        LATERAL,
        ("lateral_acceleration_mps2", Signal(LATERAL, absolute=True)),
        gates=(SpeedGate(s.min_speed_kmh),),
        extras={"speed_kmh": (Signal(SPEED), HIGHEST)},
        snapshot=(SPEED, YAW_RATE, STEERING),
    )


def emergency_braking(s: EmergencyBraking) -> Detector:
    """EEBL: every deceleration sample over the threshold for the minimum duration, above a speed."""
    return Detector(
        s,
        LONGITUDINAL,
        ("deceleration_mps2", Signal(LONGITUDINAL, -1.0)),
        gates=(SpeedGate(s.min_speed_kmh),),
        extras={"speed_kmh": (Signal(SPEED), HIGHEST)},
        snapshot=(SPEED, BRAKE_PRESSURE, ABS),
    )


def forward_collision(s: ForwardCollision) -> Detector:
    """Time to collision with the radar lead below the threshold."""
    return Detector(
        s,
        LEAD_DISTANCE,
        ("ttc_s", TimeToCollision(s.min_closing_speed_mps)),
        gates=(SpeedGate(s.min_speed_kmh),),
        extras={
            "distance_m": (Signal(LEAD_DISTANCE), LOWEST),
            "closing_speed_mps": (Signal(LEAD_SPEED, -1.0), HIGHEST),
        },
        snapshot=(SPEED, LEAD_DETECTED, LEAD_SPEED, BRAKE_PEDAL),
    )


def tailgating(s: Tailgating) -> Detector:
    """Time headway to the radar lead below the threshold, sustained, above a speed."""
    return Detector(
        s,
        LEAD_DISTANCE,
        ("headway_s", Headway()),
        gates=(SpeedGate(s.min_speed_kmh),),
        extras={"distance_m": (Signal(LEAD_DISTANCE), LOWEST), "speed_kmh": (Signal(SPEED), HIGHEST)},
        snapshot=(SPEED, LEAD_DETECTED, LEAD_SPEED),
    )


def lane_departure(s: LaneDeparture) -> Detector:
    """The vehicle's side past a lane marking, above a speed, with no turn signal lately."""
    indicator = AnyOf(IsTrue(LEFT_INDICATOR), IsTrue(RIGHT_INDICATOR))
    return Detector(
        s,
        LANE_OFFSET,
        ("excess_m", LaneExcess(s.vehicle_width_m)),
        gates=(SpeedGate(s.min_speed_kmh), Not(Recently(indicator, s.indicator_hold_s))),
        extras={"speed_kmh": (Signal(SPEED), HIGHEST)},
        snapshot=(SPEED, LANE_WIDTH, LEFT_INDICATOR, RIGHT_INDICATOR),
    )


def stationary_vehicle(s: StationaryVehicle) -> Detector:
    """Stopped with hazard lights on, or stopped long, not in park, with no queue ahead."""
    stopped_in_lane = AllOf(
        SpeedGate(maximum=s.threshold), Not(Equals(GEAR, PARK)), Not(LeadWithin(s.queue_gap_m))
    )
    return Detector(
        s,
        SPEED,
        ("speed_kmh", Signal(SPEED)),
        gates=(AnyOf(IsTrue(HAZARD), Lasting(stopped_in_lane, s.stopped_s)),),
        extras={"hazard_lights": (Signal(HAZARD), HIGHEST)},
        snapshot=(HAZARD, GEAR, LEAD_DETECTED, LEAD_DISTANCE),
    )


def end_of_queue(s: EndOfQueue) -> Detector:
    """Down to a low speed while the highest speed of the last seconds was motorway speed."""
    return Detector(
        s,
        SPEED,
        ("from_speed_kmh", WindowMax(Signal(SPEED), s.within_s)),
        gates=(SpeedGate(maximum=s.to_speed_kmh),),
        extras={"speed_kmh": (Signal(SPEED), LOWEST)},
        snapshot=(LONGITUDINAL, LEAD_DETECTED, LEAD_DISTANCE),
    )


def traffic_jam(s: TrafficJam) -> Detector:
    """Low mean speed behind a lead vehicle, after free-flowing traffic."""
    return Detector(
        s,
        SPEED,
        ("mean_speed_kmh", WindowMean(Signal(SPEED), s.window_s)),
        gates=(IsTrue(LEAD_DETECTED), Recently(SpeedGate(s.prior_speed_kmh), s.prior_window_s)),
        snapshot=(LEAD_DETECTED, LEAD_DISTANCE),
    )


def build_detectors(config: EventsConfig) -> list[Detector]:
    """A fresh detector for every enabled detector of ``config``."""
    detectors = (
        harsh_braking(config.harsh_braking),
        harsh_acceleration(config.harsh_acceleration),
        harsh_cornering(config.harsh_cornering),
        emergency_braking(config.emergency_braking),
        forward_collision(config.forward_collision),
        tailgating(config.tailgating),
        lane_departure(config.lane_departure),
        stationary_vehicle(config.stationary_vehicle),
        end_of_queue(config.end_of_queue),
        traffic_jam(config.traffic_jam),
    )
    return [detector for detector in detectors if detector.settings.enabled]
