"""What roadwave sends over V2X: CAM and DENM content in physical units.

Angles are degrees, distances metres, speeds m/s, accelerations m/s^2, yaw rates deg/s,
curvatures 1/m, times ``TimestampIts`` milliseconds (see ``edge.v2x.timebase``). ``None``
stands for the standard's "unavailable" value, or for an absent optional field where the
standard has no such value. The codec (``edge.v2x.codec``) converts to the ETSI integer
units and checks every range; these classes hold data and do not validate it.

Signs follow ETSI TS 102 894-2: yaw rate and curvature are positive when turning left
(counter-clockwise seen from above); headings are clockwise from WGS84 north.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from edge.v2x.timebase import TimestampIts


class StationType(IntEnum):
    """ITS station types (StationType, 0..255; the named values)."""

    UNKNOWN = 0
    PEDESTRIAN = 1
    CYCLIST = 2
    MOPED = 3
    MOTORCYCLE = 4
    PASSENGER_CAR = 5
    BUS = 6
    LIGHT_TRUCK = 7
    HEAVY_TRUCK = 8
    TRAILER = 9
    SPECIAL_VEHICLE = 10
    TRAM = 11
    ROAD_SIDE_UNIT = 15


class DriveDirection(IntEnum):
    FORWARD = 0
    BACKWARD = 1
    UNAVAILABLE = 2


class VehicleLengthConfidence(IntEnum):
    """How trustworthy the vehicle length is (VehicleLengthConfidenceIndication)."""

    NO_TRAILER_PRESENT = 0
    TRAILER_PRESENT_WITH_KNOWN_LENGTH = 1
    TRAILER_PRESENT_WITH_UNKNOWN_LENGTH = 2
    TRAILER_PRESENCE_IS_UNKNOWN = 3
    UNAVAILABLE = 4


class CurvatureCalculationMode(IntEnum):
    YAW_RATE_USED = 0
    YAW_RATE_NOT_USED = 1
    UNAVAILABLE = 2


class VehicleRole(IntEnum):
    DEFAULT = 0
    PUBLIC_TRANSPORT = 1
    SPECIAL_TRANSPORT = 2
    DANGEROUS_GOODS = 3
    ROAD_WORK = 4
    RESCUE = 5
    EMERGENCY = 6
    SAFETY_CAR = 7
    AGRICULTURE = 8
    COMMERCIAL = 9
    MILITARY = 10
    ROAD_OPERATOR = 11
    TAXI = 12
    RESERVED_1 = 13
    RESERVED_2 = 14
    RESERVED_3 = 15


class ExteriorLights(IntFlag):
    """Lights that are on; bit ``n`` of the flag is ASN.1 bit ``n`` of ExteriorLights."""

    NONE = 0
    LOW_BEAM_HEADLIGHTS = 1 << 0
    HIGH_BEAM_HEADLIGHTS = 1 << 1
    LEFT_TURN_SIGNAL = 1 << 2
    RIGHT_TURN_SIGNAL = 1 << 3
    DAYTIME_RUNNING_LIGHTS = 1 << 4
    REVERSE_LIGHT = 1 << 5
    FOG_LIGHT = 1 << 6
    PARKING_LIGHTS = 1 << 7


class Termination(IntEnum):
    """Why a DENM ends an event: cancelled by its originator, or negated by another station."""

    IS_CANCELLATION = 0
    IS_NEGATION = 1


class RelevanceDistance(IntEnum):
    LESS_THAN_50_M = 0
    LESS_THAN_100_M = 1
    LESS_THAN_200_M = 2
    LESS_THAN_500_M = 3
    LESS_THAN_1000_M = 4
    LESS_THAN_5_KM = 5
    LESS_THAN_10_KM = 6
    OVER_10_KM = 7


class RelevanceTrafficDirection(IntEnum):
    ALL_TRAFFIC_DIRECTIONS = 0
    UPSTREAM_TRAFFIC = 1
    DOWNSTREAM_TRAFFIC = 2
    OPPOSITE_TRAFFIC = 3


class CauseCode(IntEnum):
    """DENM cause codes roadwave uses (CauseCodeType, 0..255; any value may be sent)."""

    TRAFFIC_CONDITION = 1
    ACCIDENT = 2
    ROADWORKS = 3
    ADVERSE_WEATHER_ADHESION = 6
    ADVERSE_WEATHER_VISIBILITY = 18
    ADVERSE_WEATHER_PRECIPITATION = 19
    SLOW_VEHICLE = 26
    DANGEROUS_END_OF_QUEUE = 27
    VEHICLE_BREAKDOWN = 91
    POST_CRASH = 92
    STATIONARY_VEHICLE = 94
    COLLISION_RISK = 97
    DANGEROUS_SITUATION = 99


@dataclass(frozen=True, kw_only=True)
class ReferencePosition:
    """A WGS84 position with its confidence ellipse (95 % confidence) and altitude.

    ``math.inf`` in a confidence field means "larger than the standard can express".
    """

    latitude_deg: float | None
    longitude_deg: float | None
    altitude_m: float | None = None
    semi_major_confidence_m: float | None = None
    semi_minor_confidence_m: float | None = None
    semi_major_orientation_deg: float | None = None
    altitude_confidence_m: float | None = None


@dataclass(frozen=True, kw_only=True)
class PathPoint:
    """A past position as offsets from the previous point (the reference position for the first).

    ``delta_time_s`` is how long before the previous point this one was passed (None: absent).
    """

    delta_latitude_deg: float | None
    delta_longitude_deg: float | None
    delta_altitude_m: float | None = None
    delta_time_s: float | None = None


PathHistory = tuple[PathPoint, ...]


@dataclass(frozen=True, kw_only=True)
class CamLowFrequency:
    """The CAM basic vehicle low-frequency container."""

    vehicle_role: VehicleRole = VehicleRole.DEFAULT
    exterior_lights: ExteriorLights = ExteriorLights.NONE
    path_history: PathHistory = ()


@dataclass(frozen=True, kw_only=True)
class Cam:
    """A CAM from a vehicle: basic container and basic vehicle high-frequency container.

    Confidences are the 95 % bounds in the same unit as their value; ``math.inf`` means
    "larger than the standard can express". ``vehicle_length_m`` and ``vehicle_width_m``
    accept ``math.inf`` for "longer / wider than the largest expressible value".
    """

    station_id: int
    station_type: int
    generation_delta_time: int
    position: ReferencePosition
    heading_deg: float | None = None
    heading_confidence_deg: float | None = None
    speed_mps: float | None = None
    speed_confidence_mps: float | None = None
    drive_direction: DriveDirection = DriveDirection.UNAVAILABLE
    vehicle_length_m: float | None = None
    vehicle_length_confidence: VehicleLengthConfidence = VehicleLengthConfidence.UNAVAILABLE
    vehicle_width_m: float | None = None
    longitudinal_acceleration_mps2: float | None = None
    longitudinal_acceleration_confidence_mps2: float | None = None
    curvature_per_m: float | None = None
    curvature_confidence_per_m: float | None = None
    curvature_calculation_mode: CurvatureCalculationMode = CurvatureCalculationMode.UNAVAILABLE
    yaw_rate_dps: float | None = None
    yaw_rate_confidence_dps: float | None = None
    low_frequency: CamLowFrequency | None = None


@dataclass(frozen=True)
class ActionId:
    """Identifies a DENM event: the originating station and its sequence number."""

    originating_station_id: int
    sequence_number: int


@dataclass(frozen=True, kw_only=True)
class DenmManagement:
    """The DENM management container."""

    action_id: ActionId
    detection_time: TimestampIts
    reference_time: TimestampIts
    event_position: ReferencePosition
    station_type: int
    termination: Termination | None = None
    relevance_distance: RelevanceDistance | None = None
    relevance_traffic_direction: RelevanceTrafficDirection | None = None
    validity_duration_s: int = 600
    transmission_interval_ms: int | None = None


@dataclass(frozen=True, kw_only=True)
class DenmSituation:
    """The DENM situation container: what happened and how sure the detector is (0..7)."""

    information_quality: int
    cause_code: int
    sub_cause_code: int = 0


@dataclass(frozen=True, kw_only=True)
class DenmLocation:
    """The DENM location container: the approach paths (1 to 7) and the event's motion."""

    traces: tuple[PathHistory, ...]
    event_speed_mps: float | None = None
    event_speed_confidence_mps: float | None = None
    event_heading_deg: float | None = None
    event_heading_confidence_deg: float | None = None


@dataclass(frozen=True, kw_only=True)
class Denm:
    """A DENM; ``station_id`` is the sender, which differs from the originator when forwarding."""

    station_id: int
    management: DenmManagement
    situation: DenmSituation | None = None
    location: DenmLocation | None = None
