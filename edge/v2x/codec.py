"""CAM and DENM as UPER bytes (ETSI EN 302 637-2 v1.4.1, EN 302 637-3 v1.3.1, protocolVersion 2).

The ASN.1 runtime is pycrate's compiled ETSI modules ``ITS_CAM_2`` and ``ITS_DENM_3``
(CAM-PDU-Descriptions version 2, DENM-PDU-Descriptions version 2, ITS-Container version 2,
i.e. TS 102 894-2 v1.3.1). Every value is range-checked here, in the model's physical units,
before pycrate sees it, so an error names the model field and its allowed range; pycrate's
own constraint check stays on as a second guard. pycrate's type objects hold the value
being coded, so all pycrate calls are serialised by one lock.

Decoding keeps what the model holds: the CAM special-vehicle container and the DENM
linkedCause, eventHistory, roadType and à-la-carte containers are read but dropped.
"""

from __future__ import annotations

import bisect
import math
import threading
from enum import IntEnum
from typing import Any, TypeVar

from pycrate_asn1dir import ITS_CAM_2, ITS_DENM_3
from pycrate_core.charpy import Charpy
from pycrate_core.utils import PycrateErr

from edge.v2x.errors import V2xDecodeError, V2xEncodeError
from edge.v2x.model import (
    ActionId,
    Cam,
    CamLowFrequency,
    CurvatureCalculationMode,
    Denm,
    DenmLocation,
    DenmManagement,
    DenmSituation,
    DriveDirection,
    ExteriorLights,
    PathHistory,
    PathPoint,
    ReferencePosition,
    RelevanceDistance,
    RelevanceTrafficDirection,
    StationType,
    Termination,
    VehicleLengthConfidence,
    VehicleRole,
)
from edge.v2x.timebase import TIMESTAMP_ITS_MAX
from edge.v2x.units import Scaled, check_integer, check_number

PROTOCOL_VERSION = 2
MESSAGE_ID_DENM = 1
MESSAGE_ID_CAM = 2
ITS_PDU_HEADER_LENGTH = 6
"""ItsPduHeader in UPER: protocolVersion, messageID (one byte each) and a 4-byte stationID."""

_CAM_PDU = ITS_CAM_2.CAM_PDU_Descriptions.CAM
_DENM_PDU = ITS_DENM_3.DENM_PDU_Descriptions.DENM
_CDD = ITS_CAM_2.ITS_Container
_PYCRATE_LOCK = threading.Lock()

_E = TypeVar("_E", bound=IntEnum)


# --------------------------------------------------------------------------- conversions


class _Levels:
    """A confidence sent as an ENUMERATED level: the smallest level at least as large as the value."""

    def __init__(self, asn1_type: Any, levels: tuple[float, ...]) -> None:
        self._names = list(asn1_type._cont.keys())
        if self._names[len(levels) :] != ["outOfRange", "unavailable"]:
            raise AssertionError(f"{asn1_type._name} does not end with outOfRange, unavailable")
        self._levels = levels

    def encode(self, value: float | None, field: str) -> str:
        if value is None:
            return "unavailable"
        number = check_number(value, field)
        if number < 0:
            raise V2xEncodeError(
                f"{field} = {value!r} is negative; a confidence is a distance from the value"
            )
        index = bisect.bisect_left(self._levels, number * (1 - 1e-9))
        return self._names[index]  # past the last level: "outOfRange"

    def decode(self, name: str) -> float | None:
        index = self._names.index(name)
        if index < len(self._levels):
            return self._levels[index]
        return math.inf if name == "outOfRange" else None


class _Enumerated:
    """An ENUMERATED type mirrored by a Python IntEnum with the same numbers."""

    def __init__(self, asn1_type: Any) -> None:
        self._names = {number: name for name, number in asn1_type._cont.items()}
        self._numbers = dict(asn1_type._cont.items())

    def encode(self, member: IntEnum, field: str) -> str:
        if not isinstance(member, IntEnum) or int(member) not in self._names:
            raise V2xEncodeError(f"{field} = {member!r} is not one of {sorted(self._names)}")
        return self._names[int(member)]

    def decode(self, name: str, enum: type[_E]) -> _E:
        if name not in self._numbers:  # an extension value this release does not know
            raise V2xDecodeError(f"{enum.__name__} value {name!r} is not supported")
        return enum(self._numbers[name])


# Units and ranges from ETSI TS 102 894-2 v1.3.1 (ITS-Container).
_LATITUDE = Scaled(10_000_000, -900_000_000, 900_000_000, "deg", unavailable=900_000_001)
_LONGITUDE = Scaled(10_000_000, -1_800_000_000, 1_800_000_000, "deg", unavailable=1_800_000_001)
_ALTITUDE = Scaled(100, -100_000, 800_000, "m", unavailable=800_001)
_SEMI_AXIS = Scaled(100, 0, 4093, "m", unavailable=4095, out_of_range=4094, confidence=True)
_HEADING = Scaled(10, 0, 3600, "deg", unavailable=3601)
_HEADING_CONFIDENCE = Scaled(10, 1, 125, "deg", unavailable=127, out_of_range=126, confidence=True)
_SPEED = Scaled(100, 0, 16382, "m/s", unavailable=16383)
_SPEED_CONFIDENCE = Scaled(100, 1, 125, "m/s", unavailable=127, out_of_range=126, confidence=True)
_VEHICLE_LENGTH = Scaled(10, 1, 1021, "m", unavailable=1023, out_of_range=1022)
_VEHICLE_WIDTH = Scaled(10, 1, 60, "m", unavailable=62, out_of_range=61)
_ACCELERATION = Scaled(10, -160, 160, "m/s^2", unavailable=161)
_ACCELERATION_CONFIDENCE = Scaled(10, 0, 100, "m/s^2", unavailable=102, out_of_range=101, confidence=True)
_CURVATURE = Scaled(10_000, -1023, 1022, "1/m", unavailable=1023)
_YAW_RATE = Scaled(100, -32766, 32766, "deg/s", unavailable=32767)
_DELTA_LATITUDE = Scaled(10_000_000, -131_071, 131_071, "deg", unavailable=131_072)
_DELTA_LONGITUDE = Scaled(10_000_000, -131_071, 131_071, "deg", unavailable=131_072)
_DELTA_ALTITUDE = Scaled(100, -12_700, 12_799, "m", unavailable=12_800)
_PATH_DELTA_TIME = Scaled(100, 1, 65_535, "s")

_ALTITUDE_CONFIDENCE = _Levels(
    _CDD.AltitudeConfidence, (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
)
_CURVATURE_CONFIDENCE = _Levels(_CDD.CurvatureConfidence, (0.00002, 0.0001, 0.0005, 0.002, 0.01, 0.1))
_YAW_RATE_CONFIDENCE = _Levels(_CDD.YawRateConfidence, (0.01, 0.05, 0.1, 1.0, 5.0, 10.0, 100.0))

_DRIVE_DIRECTION = _Enumerated(_CDD.DriveDirection)
_LENGTH_CONFIDENCE = _Enumerated(_CDD.VehicleLengthConfidenceIndication)
_CURVATURE_MODE = _Enumerated(_CDD.CurvatureCalculationMode)
_VEHICLE_ROLE = _Enumerated(_CDD.VehicleRole)
_RELEVANCE_DISTANCE = _Enumerated(_CDD.RelevanceDistance)
_RELEVANCE_DIRECTION = _Enumerated(_CDD.RelevanceTrafficDirection)
_TERMINATION = _Enumerated(ITS_DENM_3.DENM_PDU_Descriptions.Termination)

_STATION_ID_MAX = 2**32 - 1
_PATH_HISTORY_MAX = 40
_TRACES_MAX = 7


def _station_type(value: int) -> int:
    """The StationType member for a named value, else the number."""
    try:
        return StationType(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------- shared containers


def _header(message_id: int, station_id: int, field: str) -> dict[str, int]:
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "messageID": message_id,
        "stationID": check_integer(station_id, field, 0, _STATION_ID_MAX),
    }


def _position_value(position: ReferencePosition, field: str) -> dict[str, Any]:
    return {
        "latitude": _LATITUDE.encode(position.latitude_deg, f"{field}.latitude_deg"),
        "longitude": _LONGITUDE.encode(position.longitude_deg, f"{field}.longitude_deg"),
        "positionConfidenceEllipse": {
            "semiMajorConfidence": _SEMI_AXIS.encode(
                position.semi_major_confidence_m, f"{field}.semi_major_confidence_m"
            ),
            "semiMinorConfidence": _SEMI_AXIS.encode(
                position.semi_minor_confidence_m, f"{field}.semi_minor_confidence_m"
            ),
            "semiMajorOrientation": _HEADING.encode(
                position.semi_major_orientation_deg, f"{field}.semi_major_orientation_deg"
            ),
        },
        "altitude": {
            "altitudeValue": _ALTITUDE.encode(position.altitude_m, f"{field}.altitude_m"),
            "altitudeConfidence": _ALTITUDE_CONFIDENCE.encode(
                position.altitude_confidence_m, f"{field}.altitude_confidence_m"
            ),
        },
    }


def _position(value: dict[str, Any]) -> ReferencePosition:
    ellipse = value["positionConfidenceEllipse"]
    altitude = value["altitude"]
    return ReferencePosition(
        latitude_deg=_LATITUDE.decode(value["latitude"]),
        longitude_deg=_LONGITUDE.decode(value["longitude"]),
        altitude_m=_ALTITUDE.decode(altitude["altitudeValue"]),
        semi_major_confidence_m=_SEMI_AXIS.decode(ellipse["semiMajorConfidence"]),
        semi_minor_confidence_m=_SEMI_AXIS.decode(ellipse["semiMinorConfidence"]),
        semi_major_orientation_deg=_HEADING.decode(ellipse["semiMajorOrientation"]),
        altitude_confidence_m=_ALTITUDE_CONFIDENCE.decode(altitude["altitudeConfidence"]),
    )


def _path_value(path: PathHistory, field: str) -> list[dict[str, Any]]:
    if len(path) > _PATH_HISTORY_MAX:
        raise V2xEncodeError(f"{field} has {len(path)} points; at most {_PATH_HISTORY_MAX} are allowed")
    points = []
    for index, point in enumerate(path):
        where = f"{field}[{index}]"
        encoded: dict[str, Any] = {
            "pathPosition": {
                "deltaLatitude": _DELTA_LATITUDE.encode(
                    point.delta_latitude_deg, f"{where}.delta_latitude_deg"
                ),
                "deltaLongitude": _DELTA_LONGITUDE.encode(
                    point.delta_longitude_deg, f"{where}.delta_longitude_deg"
                ),
                "deltaAltitude": _DELTA_ALTITUDE.encode(point.delta_altitude_m, f"{where}.delta_altitude_m"),
            }
        }
        if point.delta_time_s is not None:
            encoded["pathDeltaTime"] = _PATH_DELTA_TIME.encode(point.delta_time_s, f"{where}.delta_time_s")
        points.append(encoded)
    return points


def _path(value: list[dict[str, Any]]) -> PathHistory:
    points = []
    for point in value:
        position = point["pathPosition"]
        delta_time = point.get("pathDeltaTime")
        points.append(
            PathPoint(
                delta_latitude_deg=_DELTA_LATITUDE.decode(position["deltaLatitude"]),
                delta_longitude_deg=_DELTA_LONGITUDE.decode(position["deltaLongitude"]),
                delta_altitude_m=_DELTA_ALTITUDE.decode(position["deltaAltitude"]),
                delta_time_s=None if delta_time is None else _PATH_DELTA_TIME.decode(delta_time),
            )
        )
    return tuple(points)


def _heading_value(value: float | None, confidence: float | None, field: str) -> dict[str, int]:
    return {
        "headingValue": _HEADING.encode(value, f"{field}_deg"),
        "headingConfidence": _HEADING_CONFIDENCE.encode(confidence, f"{field}_confidence_deg"),
    }


def _speed_value(value: float | None, confidence: float | None, field: str) -> dict[str, int]:
    return {
        "speedValue": _SPEED.encode(value, f"{field}_mps"),
        "speedConfidence": _SPEED_CONFIDENCE.encode(confidence, f"{field}_confidence_mps"),
    }


def _exterior_lights_value(lights: ExteriorLights, field: str) -> tuple[int, int]:
    """ASN.1 bit 0 is the first (most significant) bit of the 8-bit BIT STRING."""
    check_integer(int(lights), field, 0, 0xFF)
    return sum(1 << (7 - bit) for bit in range(8) if lights & (1 << bit)), 8


def _exterior_lights(value: tuple[int, int]) -> ExteriorLights:
    bits, _length = value
    return ExteriorLights(sum(1 << bit for bit in range(8) if bits & (1 << (7 - bit))))


# --------------------------------------------------------------------------- pycrate boundary


def _encode_pdu(pdu: Any, value: dict[str, Any], what: str) -> bytes:
    with _PYCRATE_LOCK:
        try:
            pdu.set_val(value)
            return bytes(pdu.to_uper())
        except PycrateErr as exc:
            raise V2xEncodeError(f"{what} refused by the ASN.1 constraints: {exc}") from exc


def _decode_pdu(pdu: Any, data: bytes, what: str) -> dict[str, Any]:
    with _PYCRATE_LOCK:
        try:
            buffer = Charpy(data)
            pdu.from_uper(buffer)
            value: dict[str, Any] = pdu.get_val()
        except (PycrateErr, ValueError, KeyError, IndexError, TypeError) as exc:
            raise V2xDecodeError(f"not a valid UPER {what}: {exc}") from exc
        trailing = buffer.len_byte()
    if trailing:
        raise V2xDecodeError(f"{trailing} bytes follow the end of the {what}")
    return value


def read_its_pdu_header(data: bytes) -> tuple[int, int, int]:
    """``(protocolVersion, messageID, stationID)`` from the first six bytes of an ITS PDU."""
    if len(data) < ITS_PDU_HEADER_LENGTH:
        raise V2xDecodeError(
            f"{len(data)} bytes are too short for an ITS PDU header ({ITS_PDU_HEADER_LENGTH})"
        )
    return data[0], data[1], int.from_bytes(data[2:6], "big")


def _check_header(data: bytes, message_id: int, what: str) -> None:
    protocol, found, _station = read_its_pdu_header(data)
    if found != message_id:
        raise V2xDecodeError(f"messageID {found} is not a {what} ({message_id})")
    if protocol != PROTOCOL_VERSION:
        raise V2xDecodeError(f"{what} protocolVersion {protocol} is not supported (only {PROTOCOL_VERSION})")


# --------------------------------------------------------------------------- CAM


def encode_cam(cam: Cam) -> bytes:
    """The CAM as UPER bytes; a value outside its range raises ``V2xEncodeError``."""
    high_frequency = {
        "heading": _heading_value(cam.heading_deg, cam.heading_confidence_deg, "Cam.heading"),
        "speed": _speed_value(cam.speed_mps, cam.speed_confidence_mps, "Cam.speed"),
        "driveDirection": _DRIVE_DIRECTION.encode(cam.drive_direction, "Cam.drive_direction"),
        "vehicleLength": {
            "vehicleLengthValue": _VEHICLE_LENGTH.encode(cam.vehicle_length_m, "Cam.vehicle_length_m"),
            "vehicleLengthConfidenceIndication": _LENGTH_CONFIDENCE.encode(
                cam.vehicle_length_confidence, "Cam.vehicle_length_confidence"
            ),
        },
        "vehicleWidth": _VEHICLE_WIDTH.encode(cam.vehicle_width_m, "Cam.vehicle_width_m"),
        "longitudinalAcceleration": {
            "longitudinalAccelerationValue": _ACCELERATION.encode(
                cam.longitudinal_acceleration_mps2, "Cam.longitudinal_acceleration_mps2"
            ),
            "longitudinalAccelerationConfidence": _ACCELERATION_CONFIDENCE.encode(
                cam.longitudinal_acceleration_confidence_mps2, "Cam.longitudinal_acceleration_confidence_mps2"
            ),
        },
        "curvature": {
            "curvatureValue": _CURVATURE.encode(cam.curvature_per_m, "Cam.curvature_per_m"),
            "curvatureConfidence": _CURVATURE_CONFIDENCE.encode(
                cam.curvature_confidence_per_m, "Cam.curvature_confidence_per_m"
            ),
        },
        "curvatureCalculationMode": _CURVATURE_MODE.encode(
            cam.curvature_calculation_mode, "Cam.curvature_calculation_mode"
        ),
        "yawRate": {
            "yawRateValue": _YAW_RATE.encode(cam.yaw_rate_dps, "Cam.yaw_rate_dps"),
            "yawRateConfidence": _YAW_RATE_CONFIDENCE.encode(
                cam.yaw_rate_confidence_dps, "Cam.yaw_rate_confidence_dps"
            ),
        },
    }
    parameters: dict[str, Any] = {
        "basicContainer": {
            "stationType": check_integer(cam.station_type, "Cam.station_type", 0, 255),
            "referencePosition": _position_value(cam.position, "Cam.position"),
        },
        "highFrequencyContainer": ("basicVehicleContainerHighFrequency", high_frequency),
    }
    low = cam.low_frequency
    if low is not None:
        parameters["lowFrequencyContainer"] = (
            "basicVehicleContainerLowFrequency",
            {
                "vehicleRole": _VEHICLE_ROLE.encode(low.vehicle_role, "Cam.low_frequency.vehicle_role"),
                "exteriorLights": _exterior_lights_value(
                    low.exterior_lights, "Cam.low_frequency.exterior_lights"
                ),
                "pathHistory": _path_value(low.path_history, "Cam.low_frequency.path_history"),
            },
        )
    value = {
        "header": _header(MESSAGE_ID_CAM, cam.station_id, "Cam.station_id"),
        "cam": {
            "generationDeltaTime": check_integer(
                cam.generation_delta_time, "Cam.generation_delta_time", 0, 65535
            ),
            "camParameters": parameters,
        },
    }
    return _encode_pdu(_CAM_PDU, value, "CAM")


def decode_cam(data: bytes) -> Cam:
    """A CAM from UPER bytes; anything else raises ``V2xDecodeError``."""
    _check_header(data, MESSAGE_ID_CAM, "CAM")
    value = _decode_pdu(_CAM_PDU, data, "CAM")
    parameters = value["cam"]["camParameters"]
    kind, high = parameters["highFrequencyContainer"]
    if kind != "basicVehicleContainerHighFrequency":
        raise V2xDecodeError(f"CAM high-frequency container {kind!r} is not supported (only vehicle CAMs)")
    low_frequency = None
    if "lowFrequencyContainer" in parameters:
        low_kind, low = parameters["lowFrequencyContainer"]
        if low_kind != "basicVehicleContainerLowFrequency":
            raise V2xDecodeError(f"CAM low-frequency container {low_kind!r} is not supported")
        low_frequency = CamLowFrequency(
            vehicle_role=_VEHICLE_ROLE.decode(low["vehicleRole"], VehicleRole),
            exterior_lights=_exterior_lights(low["exteriorLights"]),
            path_history=_path(low["pathHistory"]),
        )
    basic = parameters["basicContainer"]
    acceleration = high["longitudinalAcceleration"]
    return Cam(
        station_id=value["header"]["stationID"],
        station_type=_station_type(basic["stationType"]),
        generation_delta_time=value["cam"]["generationDeltaTime"],
        position=_position(basic["referencePosition"]),
        heading_deg=_HEADING.decode(high["heading"]["headingValue"]),
        heading_confidence_deg=_HEADING_CONFIDENCE.decode(high["heading"]["headingConfidence"]),
        speed_mps=_SPEED.decode(high["speed"]["speedValue"]),
        speed_confidence_mps=_SPEED_CONFIDENCE.decode(high["speed"]["speedConfidence"]),
        drive_direction=_DRIVE_DIRECTION.decode(high["driveDirection"], DriveDirection),
        vehicle_length_m=_VEHICLE_LENGTH.decode(high["vehicleLength"]["vehicleLengthValue"]),
        vehicle_length_confidence=_LENGTH_CONFIDENCE.decode(
            high["vehicleLength"]["vehicleLengthConfidenceIndication"], VehicleLengthConfidence
        ),
        vehicle_width_m=_VEHICLE_WIDTH.decode(high["vehicleWidth"]),
        longitudinal_acceleration_mps2=_ACCELERATION.decode(acceleration["longitudinalAccelerationValue"]),
        longitudinal_acceleration_confidence_mps2=_ACCELERATION_CONFIDENCE.decode(
            acceleration["longitudinalAccelerationConfidence"]
        ),
        curvature_per_m=_CURVATURE.decode(high["curvature"]["curvatureValue"]),
        curvature_confidence_per_m=_CURVATURE_CONFIDENCE.decode(high["curvature"]["curvatureConfidence"]),
        curvature_calculation_mode=_CURVATURE_MODE.decode(
            high["curvatureCalculationMode"], CurvatureCalculationMode
        ),
        yaw_rate_dps=_YAW_RATE.decode(high["yawRate"]["yawRateValue"]),
        yaw_rate_confidence_dps=_YAW_RATE_CONFIDENCE.decode(high["yawRate"]["yawRateConfidence"]),
        low_frequency=low_frequency,
    )


# --------------------------------------------------------------------------- DENM

_DEFAULT_VALIDITY_S = 600


def _management_value(management: DenmManagement) -> dict[str, Any]:
    field = "Denm.management"
    action = management.action_id
    value: dict[str, Any] = {
        "actionID": {
            "originatingStationID": check_integer(
                action.originating_station_id, f"{field}.action_id.originating_station_id", 0, _STATION_ID_MAX
            ),
            "sequenceNumber": check_integer(
                action.sequence_number, f"{field}.action_id.sequence_number", 0, 65535
            ),
        },
        "detectionTime": check_integer(
            management.detection_time, f"{field}.detection_time", 0, TIMESTAMP_ITS_MAX
        ),
        "referenceTime": check_integer(
            management.reference_time, f"{field}.reference_time", 0, TIMESTAMP_ITS_MAX
        ),
        "eventPosition": _position_value(management.event_position, f"{field}.event_position"),
        "stationType": check_integer(management.station_type, f"{field}.station_type", 0, 255),
    }
    if management.termination is not None:
        value["termination"] = _TERMINATION.encode(management.termination, f"{field}.termination")
    if management.relevance_distance is not None:
        value["relevanceDistance"] = _RELEVANCE_DISTANCE.encode(
            management.relevance_distance, f"{field}.relevance_distance"
        )
    if management.relevance_traffic_direction is not None:
        value["relevanceTrafficDirection"] = _RELEVANCE_DIRECTION.encode(
            management.relevance_traffic_direction, f"{field}.relevance_traffic_direction"
        )
    validity = check_integer(management.validity_duration_s, f"{field}.validity_duration_s", 0, 86400)
    if validity != _DEFAULT_VALIDITY_S:  # a DEFAULT value is left out of PER encodings
        value["validityDuration"] = validity
    if management.transmission_interval_ms is not None:
        value["transmissionInterval"] = check_integer(
            management.transmission_interval_ms, f"{field}.transmission_interval_ms", 1, 10000
        )
    return value


def _management(value: dict[str, Any]) -> DenmManagement:
    action = value["actionID"]
    termination = value.get("termination")
    distance = value.get("relevanceDistance")
    direction = value.get("relevanceTrafficDirection")
    return DenmManagement(
        action_id=ActionId(action["originatingStationID"], action["sequenceNumber"]),
        detection_time=value["detectionTime"],
        reference_time=value["referenceTime"],
        event_position=_position(value["eventPosition"]),
        station_type=_station_type(value["stationType"]),
        termination=None if termination is None else _TERMINATION.decode(termination, Termination),
        relevance_distance=None
        if distance is None
        else _RELEVANCE_DISTANCE.decode(distance, RelevanceDistance),
        relevance_traffic_direction=(
            None if direction is None else _RELEVANCE_DIRECTION.decode(direction, RelevanceTrafficDirection)
        ),
        validity_duration_s=value.get("validityDuration", _DEFAULT_VALIDITY_S),
        transmission_interval_ms=value.get("transmissionInterval"),
    )


def _situation_value(situation: DenmSituation) -> dict[str, Any]:
    field = "Denm.situation"
    return {
        "informationQuality": check_integer(
            situation.information_quality, f"{field}.information_quality", 0, 7
        ),
        "eventType": {
            "causeCode": check_integer(situation.cause_code, f"{field}.cause_code", 0, 255),
            "subCauseCode": check_integer(situation.sub_cause_code, f"{field}.sub_cause_code", 0, 255),
        },
    }


def _location_value(location: DenmLocation) -> dict[str, Any]:
    field = "Denm.location"
    if not 1 <= len(location.traces) <= _TRACES_MAX:
        raise V2xEncodeError(
            f"{field}.traces has {len(location.traces)} paths; 1 .. {_TRACES_MAX} are required"
        )
    value: dict[str, Any] = {
        "traces": [
            _path_value(path, f"{field}.traces[{index}]") for index, path in enumerate(location.traces)
        ]
    }
    if location.event_speed_mps is not None:
        value["eventSpeed"] = _speed_value(
            location.event_speed_mps, location.event_speed_confidence_mps, f"{field}.event_speed"
        )
    elif location.event_speed_confidence_mps is not None:
        raise V2xEncodeError(f"{field}.event_speed_confidence_mps is set but event_speed_mps is None")
    if location.event_heading_deg is not None:
        value["eventPositionHeading"] = _heading_value(
            location.event_heading_deg, location.event_heading_confidence_deg, f"{field}.event_heading"
        )
    elif location.event_heading_confidence_deg is not None:
        raise V2xEncodeError(f"{field}.event_heading_confidence_deg is set but event_heading_deg is None")
    return value


def _location(value: dict[str, Any]) -> DenmLocation:
    speed = value.get("eventSpeed")
    heading = value.get("eventPositionHeading")
    return DenmLocation(
        traces=tuple(_path(path) for path in value["traces"]),
        event_speed_mps=None if speed is None else _SPEED.decode(speed["speedValue"]),
        event_speed_confidence_mps=None
        if speed is None
        else _SPEED_CONFIDENCE.decode(speed["speedConfidence"]),
        event_heading_deg=None if heading is None else _HEADING.decode(heading["headingValue"]),
        event_heading_confidence_deg=(
            None if heading is None else _HEADING_CONFIDENCE.decode(heading["headingConfidence"])
        ),
    )


def encode_denm(denm: Denm) -> bytes:
    """The DENM as UPER bytes; a value outside its range raises ``V2xEncodeError``."""
    body: dict[str, Any] = {"management": _management_value(denm.management)}
    if denm.situation is not None:
        body["situation"] = _situation_value(denm.situation)
    if denm.location is not None:
        body["location"] = _location_value(denm.location)
    value = {"header": _header(MESSAGE_ID_DENM, denm.station_id, "Denm.station_id"), "denm": body}
    return _encode_pdu(_DENM_PDU, value, "DENM")


def decode_denm(data: bytes) -> Denm:
    """A DENM from UPER bytes; anything else raises ``V2xDecodeError``."""
    _check_header(data, MESSAGE_ID_DENM, "DENM")
    value = _decode_pdu(_DENM_PDU, data, "DENM")
    body = value["denm"]
    situation = body.get("situation")
    location = body.get("location")
    return Denm(
        station_id=value["header"]["stationID"],
        management=_management(body["management"]),
        situation=None
        if situation is None
        else DenmSituation(
            information_quality=situation["informationQuality"],
            cause_code=situation["eventType"]["causeCode"],
            sub_cause_code=situation["eventType"]["subCauseCode"],
        ),
        location=None if location is None else _location(location),
    )


def decode_its_pdu(data: bytes) -> Cam | Denm:
    """A CAM or DENM, chosen by the ItsPduHeader messageID."""
    _protocol, message_id, _station = read_its_pdu_header(data)
    if message_id == MESSAGE_ID_CAM:
        return decode_cam(data)
    if message_id == MESSAGE_ID_DENM:
        return decode_denm(data)
    raise V2xDecodeError(
        f"messageID {message_id} is not supported (only CAM {MESSAGE_ID_CAM}, DENM {MESSAGE_ID_DENM})"
    )
