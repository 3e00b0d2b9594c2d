"""CAM generation (ETSI EN 302 637-2 v1.4.1, 6.1.3) from decoded VSS records.

:class:`MotionTracker` keeps the latest good value of each signal a CAM needs and the
recent path. :class:`CamService` decides, each time it is polled, whether a CAM is due:

* at least ``T_GenCamMin`` (100 ms) after the last CAM, when the heading changed by more
  than 4°, the position by more than 4 m or the speed by more than 0.5 m/s since it;
* otherwise once ``T_GenCam`` has passed. ``T_GenCam`` is 1000 ms, or the interval of
  the last CAM triggered by a change, kept for 3 CAMs in a row that are not.

The low-frequency container (lights, vehicle role, path history) goes into the first
CAM and then into the next CAM once 500 ms have passed since it was last sent.
Poll at least every 100 ms. Nothing here reads a clock: records carry their time and
the caller passes ``now_ns`` (Unix nanoseconds), so a scripted drive gives the same
CAMs every time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from edge.v2x.errors import V2xConfigError
from edge.v2x.model import (
    Cam,
    CamLowFrequency,
    DriveDirection,
    ExteriorLights,
    PathHistory,
    PathPoint,
    ReferencePosition,
    StationType,
    VehicleLengthConfidence,
    VehicleRole,
)
from edge.v2x.quadkey import angle_between_deg, distance_m
from edge.v2x.timebase import generation_delta_time, timestamp_its_from_unix_ms
from roadwave.contract import Record

LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
HEADING = "Vehicle.CurrentLocation.Heading"
ALTITUDE = "Vehicle.CurrentLocation.Altitude"
SPEED = "Vehicle.Speed"
LONGITUDINAL = "Vehicle.Acceleration.Longitudinal"
YAW_RATE = "Vehicle.AngularVelocity.Yaw"
HAZARD = "Vehicle.Body.Lights.Hazard.IsSignaling"
LEFT_INDICATOR = "Vehicle.Body.Lights.DirectionIndicator.Left.IsSignaling"
RIGHT_INDICATOR = "Vehicle.Body.Lights.DirectionIndicator.Right.IsSignaling"
_NUMBERS = (LATITUDE, LONGITUDE, HEADING, ALTITUDE, SPEED, LONGITUDINAL, YAW_RATE)
#: ExteriorLights has no hazard bit: hazard lights are both turn signals at once.
_LIGHTS = {
    HAZARD: ExteriorLights.LEFT_TURN_SIGNAL | ExteriorLights.RIGHT_TURN_SIGNAL,
    LEFT_INDICATOR: ExteriorLights.LEFT_TURN_SIGNAL,
    RIGHT_INDICATOR: ExteriorLights.RIGHT_TURN_SIGNAL,
}

MS = 1_000_000
T_GEN_CAM_MIN_NS = 100 * MS
T_GEN_CAM_MAX_NS = 1000 * MS
T_LOW_FREQUENCY_NS = 500 * MS
N_GEN_CAM = 3
HEADING_DELTA_DEG = 4.0
POSITION_DELTA_M = 4.0
SPEED_DELTA_MPS = 0.5

#: Path history: a point every 10 m driven, at most 20 (200 m). A roadwave choice; the
#: standard allows 40 points.
PATH_SPACING_M = 10.0
PATH_POINTS = 20
_E7 = 10_000_000
_PATH_DELTA_E7 = 131_071
_PATH_DELTA_ALTITUDE_M = 127.0
_PATH_DELTA_TIME_MIN_NS = 10 * MS
_PATH_DELTA_TIME_MAX_NS = 655_350 * MS


@dataclass(frozen=True, slots=True)
class Motion:
    """The vehicle's latest good position and dynamics; ``t_ns`` is when the position was fixed.

    Speeds in m/s (negative when reversing), heading clockwise from north, yaw rate
    positive to the left. None: unknown (never received, or the last sample was flagged).
    """

    t_ns: int
    latitude_deg: float
    longitude_deg: float
    altitude_m: float | None
    heading_deg: float | None
    speed_mps: float | None
    acceleration_mps2: float | None
    yaw_rate_dps: float | None
    lights: ExteriorLights


@dataclass(frozen=True, slots=True)
class _PathSample:
    t_ns: int
    latitude_e7: int
    longitude_e7: int
    altitude_m: float | None


class MotionTracker:
    """Latest good values of the signals V2X needs, and the path driven, from decoded records."""

    def __init__(self) -> None:
        self._values: dict[str, float | None] = dict.fromkeys(_NUMBERS)
        self._lights: dict[str, bool] = {}
        self._position_ns: int | None = None
        self._path: deque[_PathSample] = deque(maxlen=PATH_POINTS + 1)

    def update(self, record: Record) -> None:
        """Take the samples of one record; a flagged sample makes its signal unknown."""
        signals, quality = record.signals, record.quality
        for path in _NUMBERS:
            if path in signals:
                value = signals[path]
                good = path not in quality and not isinstance(value, bool) and math.isfinite(value)
                self._values[path] = float(value) if good else None
        for path in _LIGHTS:
            if path in signals:
                if path in quality:
                    self._lights.pop(path, None)
                else:
                    self._lights[path] = bool(signals[path])
        if LATITUDE in signals or LONGITUDE in signals:
            self._position_ns = record.t_ns
            self._extend_path(record.t_ns)

    @property
    def current(self) -> Motion | None:
        """The latest motion, or None while the position is unknown."""
        values = self._values
        latitude, longitude = values[LATITUDE], values[LONGITUDE]
        if latitude is None or longitude is None or self._position_ns is None:
            return None
        speed_kmh, heading = values[SPEED], values[HEADING]
        lights = ExteriorLights.NONE
        for path, on in self._lights.items():
            if on:
                lights |= _LIGHTS[path]
        return Motion(
            t_ns=self._position_ns,
            latitude_deg=latitude,
            longitude_deg=longitude,
            altitude_m=values[ALTITUDE],
            heading_deg=None if heading is None else heading % 360.0,
            speed_mps=None if speed_kmh is None else speed_kmh / 3.6,
            acceleration_mps2=values[LONGITUDINAL],
            yaw_rate_dps=values[YAW_RATE],
            lights=lights,
        )

    def _extend_path(self, t_ns: int) -> None:
        latitude, longitude = self._values[LATITUDE], self._values[LONGITUDE]
        if latitude is None or longitude is None:
            return
        path = self._path
        if path:
            last = path[-1]
            if (
                distance_m(last.latitude_e7 / _E7, last.longitude_e7 / _E7, latitude, longitude)
                < PATH_SPACING_M
            ):
                return
        path.append(_PathSample(t_ns, round(latitude * _E7), round(longitude * _E7), self._values[ALTITUDE]))

    def path(
        self, latitude_deg: float, longitude_deg: float, altitude_m: float | None, t_ns: int
    ) -> PathHistory:
        """The path driven before a reference position and time, newest point first.

        Each point is an offset from the one before it (the first from the reference).
        The path ends early where an offset or a time step is too large for the message
        (a position jump, or a stop of more than 655 s).
        """
        points: list[PathPoint] = []
        previous_latitude, previous_longitude = round(latitude_deg * _E7), round(longitude_deg * _E7)
        previous_altitude, previous_ns = altitude_m, t_ns
        for sample in reversed(self._path):
            step_ns = previous_ns - sample.t_ns
            if step_ns < _PATH_DELTA_TIME_MIN_NS:
                continue  # at (or after) the previous point: nothing to add
            delta_latitude = sample.latitude_e7 - previous_latitude
            delta_longitude = sample.longitude_e7 - previous_longitude
            delta_altitude = None
            if sample.altitude_m is not None and previous_altitude is not None:
                delta_altitude = sample.altitude_m - previous_altitude
            too_far = max(abs(delta_latitude), abs(delta_longitude)) > _PATH_DELTA_E7 or (
                delta_altitude is not None and abs(delta_altitude) > _PATH_DELTA_ALTITUDE_M
            )
            if too_far or step_ns > _PATH_DELTA_TIME_MAX_NS or len(points) == PATH_POINTS:
                break
            points.append(
                PathPoint(
                    delta_latitude_deg=delta_latitude / _E7,
                    delta_longitude_deg=delta_longitude / _E7,
                    delta_altitude_m=delta_altitude,
                    delta_time_s=round(step_ns / (10 * MS)) / 100,
                )
            )
            previous_latitude, previous_longitude = sample.latitude_e7, sample.longitude_e7
            previous_altitude, previous_ns = sample.altitude_m, sample.t_ns
        return tuple(points)


@dataclass(frozen=True, kw_only=True)
class VehicleDescription:
    """What a CAM says about the vehicle itself; sizes in metres, None when unknown."""

    station_type: int = StationType.PASSENGER_CAR
    role: VehicleRole = VehicleRole.DEFAULT
    length_m: float | None = None
    width_m: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.station_type, bool) or not isinstance(self.station_type, int):
            raise V2xConfigError(f"station_type must be an integer, got {self.station_type!r}")
        if not 0 <= self.station_type <= 31:
            raise V2xConfigError(
                f"station_type {self.station_type} is outside 0 .. 31 (5 bits in GeoNetworking)"
            )
        for name in ("length_m", "width_m"):
            size = getattr(self, name)
            if size is not None and (
                isinstance(size, bool) or not isinstance(size, int | float) or not 0 < size < math.inf
            ):
                raise V2xConfigError(f"{name} must be a positive number of metres, got {size!r}")


class CamService:
    """Decides when to send a CAM and builds it from a :class:`MotionTracker`."""

    def __init__(self, station_id: int, vehicle: VehicleDescription, motion: MotionTracker) -> None:
        self.station_id = station_id
        self.vehicle = vehicle
        self.motion = motion
        self._last: tuple[Motion, int] | None = None  # the motion in the last CAM and when it was sent
        self._last_low_frequency_ns: int | None = None
        self._t_gen_cam_ns = T_GEN_CAM_MAX_NS
        self._timer_cams = 0

    def poll(self, now_ns: int) -> Cam | None:
        """The CAM to send at ``now_ns``, or None when none is due or the position is unknown."""
        motion = self.motion.current
        if motion is None:
            return None
        if self._last is None:
            return self._generate(motion, now_ns)
        last_motion, last_ns = self._last
        elapsed = now_ns - last_ns
        if elapsed < T_GEN_CAM_MIN_NS:
            return None
        if _dynamics_changed(last_motion, motion):
            self._t_gen_cam_ns, self._timer_cams = elapsed, 0
            return self._generate(motion, now_ns)
        if elapsed >= self._t_gen_cam_ns:
            self._timer_cams += 1
            if self._timer_cams >= N_GEN_CAM:
                self._t_gen_cam_ns = T_GEN_CAM_MAX_NS
            return self._generate(motion, now_ns)
        return None

    def _generate(self, motion: Motion, now_ns: int) -> Cam:
        low_frequency = None
        if self._last_low_frequency_ns is None or now_ns - self._last_low_frequency_ns >= T_LOW_FREQUENCY_NS:
            self._last_low_frequency_ns = now_ns
            low_frequency = CamLowFrequency(
                vehicle_role=self.vehicle.role,
                exterior_lights=motion.lights,
                path_history=self.motion.path(
                    motion.latitude_deg, motion.longitude_deg, motion.altitude_m, motion.t_ns
                ),
            )
        self._last = (motion, now_ns)
        return build_cam(self.station_id, self.vehicle, motion, now_ns, low_frequency)


def _dynamics_changed(last: Motion, now: Motion) -> bool:
    if (
        last.heading_deg is not None
        and now.heading_deg is not None
        and angle_between_deg(last.heading_deg, now.heading_deg) > HEADING_DELTA_DEG
    ):
        return True
    moved = distance_m(last.latitude_deg, last.longitude_deg, now.latitude_deg, now.longitude_deg)
    if moved > POSITION_DELTA_M:
        return True
    if last.speed_mps is not None and now.speed_mps is not None:
        return abs(now.speed_mps - last.speed_mps) > SPEED_DELTA_MPS
    return False


def build_cam(
    station_id: int,
    vehicle: VehicleDescription,
    motion: Motion,
    now_ns: int,
    low_frequency: CamLowFrequency | None = None,
) -> Cam:
    """A CAM with the motion's values; unknown values are sent as "unavailable"."""
    speed = motion.speed_mps
    if speed is None:
        direction = DriveDirection.UNAVAILABLE
    else:
        direction = DriveDirection.BACKWARD if speed < 0 else DriveDirection.FORWARD
    return Cam(
        station_id=station_id,
        station_type=vehicle.station_type,
        generation_delta_time=generation_delta_time(timestamp_its_from_unix_ms(now_ns // MS)),
        position=ReferencePosition(
            latitude_deg=motion.latitude_deg, longitude_deg=motion.longitude_deg, altitude_m=motion.altitude_m
        ),
        heading_deg=motion.heading_deg,
        speed_mps=None if speed is None else abs(speed),
        drive_direction=direction,
        vehicle_length_m=vehicle.length_m,
        vehicle_length_confidence=(
            VehicleLengthConfidence.UNAVAILABLE
            if vehicle.length_m is None
            else VehicleLengthConfidence.TRAILER_PRESENCE_IS_UNKNOWN
        ),
        vehicle_width_m=vehicle.width_m,
        longitudinal_acceleration_mps2=motion.acceleration_mps2,
        yaw_rate_dps=motion.yaw_rate_dps,
        low_frequency=low_frequency,
    )
