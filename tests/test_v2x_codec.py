"""CAM/DENM UPER codec (edge/v2x/codec.py), model and ITS time base."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.v2x.codec import decode_cam, decode_denm, decode_its_pdu, encode_cam, encode_denm
from edge.v2x.errors import V2xDecodeError, V2xEncodeError
from edge.v2x.model import (
    ActionId,
    Cam,
    CamLowFrequency,
    CauseCode,
    CurvatureCalculationMode,
    Denm,
    DenmLocation,
    DenmManagement,
    DenmSituation,
    DriveDirection,
    ExteriorLights,
    PathPoint,
    ReferencePosition,
    RelevanceDistance,
    RelevanceTrafficDirection,
    StationType,
    Termination,
    VehicleLengthConfidence,
    VehicleRole,
)
from edge.v2x.timebase import (
    TIMESTAMP_ITS_MAX,
    generation_delta_time,
    gn_timestamp,
    timestamp_its_from_unix_ms,
    unix_ms_from_timestamp_its,
)

ASN1_DIR = Path(__file__).resolve().parents[2] / "shared" / "asn1"

POSITION = ReferencePosition(
    latitude_deg=48.1234567,
    longitude_deg=11.7654321,
    altitude_m=520.5,
    semi_major_confidence_m=2.5,
    semi_minor_confidence_m=1.0,
    semi_major_orientation_deg=45.0,
    altitude_confidence_m=5.0,
)
UNKNOWN_POSITION = ReferencePosition(latitude_deg=None, longitude_deg=None)
PATH = (
    PathPoint(delta_latitude_deg=0.0001, delta_longitude_deg=-0.0002, delta_altitude_m=0.5, delta_time_s=0.5),
    PathPoint(delta_latitude_deg=None, delta_longitude_deg=None),
)

FULL_CAM = Cam(
    station_id=1234,
    station_type=StationType.PASSENGER_CAR,
    generation_delta_time=4242,
    position=POSITION,
    heading_deg=123.4,
    heading_confidence_deg=1.0,
    speed_mps=13.89,
    speed_confidence_mps=0.1,
    drive_direction=DriveDirection.FORWARD,
    vehicle_length_m=4.5,
    vehicle_length_confidence=VehicleLengthConfidence.NO_TRAILER_PRESENT,
    vehicle_width_m=1.8,
    longitudinal_acceleration_mps2=-2.5,
    longitudinal_acceleration_confidence_mps2=0.5,
    curvature_per_m=0.01,
    curvature_confidence_per_m=0.002,
    curvature_calculation_mode=CurvatureCalculationMode.YAW_RATE_USED,
    yaw_rate_dps=-3.25,
    yaw_rate_confidence_dps=1.0,
    low_frequency=CamLowFrequency(
        vehicle_role=VehicleRole.DEFAULT,
        exterior_lights=ExteriorLights.LOW_BEAM_HEADLIGHTS | ExteriorLights.PARKING_LIGHTS,
        path_history=PATH,
    ),
)
MINIMAL_CAM = Cam(
    station_id=7, station_type=StationType.UNKNOWN, generation_delta_time=0, position=UNKNOWN_POSITION
)

MANAGEMENT = DenmManagement(
    action_id=ActionId(1234, 7),
    detection_time=600_000_000_000,
    reference_time=600_000_000_100,
    event_position=POSITION,
    station_type=StationType.PASSENGER_CAR,
)
FULL_DENM = Denm(
    station_id=99,
    management=dataclasses.replace(
        MANAGEMENT,
        termination=Termination.IS_NEGATION,
        relevance_distance=RelevanceDistance.LESS_THAN_500_M,
        relevance_traffic_direction=RelevanceTrafficDirection.UPSTREAM_TRAFFIC,
        validity_duration_s=60,
        transmission_interval_ms=100,
    ),
    situation=DenmSituation(
        information_quality=3, cause_code=CauseCode.DANGEROUS_SITUATION, sub_cause_code=1
    ),
    location=DenmLocation(
        traces=(PATH, ()),
        event_speed_mps=20.0,
        event_speed_confidence_mps=0.5,
        event_heading_deg=270.0,
        event_heading_confidence_deg=2.0,
    ),
)
MINIMAL_DENM = Denm(station_id=1234, management=MANAGEMENT)


def _cam(**changes: Any) -> Cam:
    return dataclasses.replace(FULL_CAM, **changes)


def _position(**changes: Any) -> Cam:
    return _cam(position=dataclasses.replace(POSITION, **changes))


def _path_point(**changes: Any) -> Cam:
    point = dataclasses.replace(PATH[0], **changes)
    return _cam(low_frequency=CamLowFrequency(path_history=(point,)))


def _denm(**changes: Any) -> Denm:
    return dataclasses.replace(FULL_DENM, management=dataclasses.replace(FULL_DENM.management, **changes))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "cam",
    [
        FULL_CAM,
        MINIMAL_CAM,
        _cam(low_frequency=CamLowFrequency()),  # empty path history, no lights
        _cam(low_frequency=None),
        _cam(station_type=200),  # a station type without a name
    ],
    ids=["full", "minimal", "empty-low-frequency", "no-low-frequency", "unnamed-station-type"],
)
def test_cam_round_trip(cam: Cam) -> None:
    assert decode_cam(encode_cam(cam)) == cam
    assert decode_its_pdu(encode_cam(cam)) == cam


@pytest.mark.parametrize(
    "denm",
    [
        FULL_DENM,
        MINIMAL_DENM,
        _denm(termination=Termination.IS_CANCELLATION, validity_duration_s=600),
        dataclasses.replace(FULL_DENM, location=None),
        dataclasses.replace(FULL_DENM, situation=None),
        dataclasses.replace(FULL_DENM, location=DenmLocation(traces=((),))),
    ],
    ids=["full", "minimal", "cancellation", "no-location", "no-situation", "bare-location"],
)
def test_denm_round_trip(denm: Denm) -> None:
    assert decode_denm(encode_denm(denm)) == denm
    assert decode_its_pdu(encode_denm(denm)) == denm


def test_unavailable_values_come_back_as_none() -> None:
    cam = decode_cam(encode_cam(MINIMAL_CAM))
    assert cam.position == ReferencePosition(latitude_deg=None, longitude_deg=None)
    assert (cam.speed_mps, cam.heading_deg, cam.yaw_rate_dps, cam.curvature_per_m) == (None, None, None, None)
    assert cam.drive_direction is DriveDirection.UNAVAILABLE


def test_default_validity_is_left_out_of_the_encoding() -> None:
    default = encode_denm(_denm(validity_duration_s=600))
    other = encode_denm(_denm(validity_duration_s=599))
    assert len(other) * 8 - len(default) * 8 >= 17 - 7  # 17 value bits minus byte padding
    assert decode_denm(default).management.validity_duration_s == 600


@pytest.mark.parametrize(
    "cam",
    [
        _cam(speed_mps=0.0),
        _cam(speed_mps=163.82),
        _cam(heading_deg=0.0),
        _cam(heading_deg=360.0),
        _cam(longitudinal_acceleration_mps2=-16.0),
        _cam(longitudinal_acceleration_mps2=16.0),
        _cam(yaw_rate_dps=-327.66),
        _cam(yaw_rate_dps=327.66),
        _cam(curvature_per_m=-0.1023),
        _cam(curvature_per_m=0.1022),
        _cam(vehicle_length_m=0.1),
        _cam(vehicle_length_m=102.1),
        _cam(vehicle_width_m=0.1),
        _cam(vehicle_width_m=6.0),
        _cam(station_id=0, generation_delta_time=0),
        _cam(station_id=2**32 - 1, generation_delta_time=65535),
        _position(latitude_deg=-90.0, longitude_deg=-180.0, altitude_m=-1000.0),
        _position(latitude_deg=90.0, longitude_deg=180.0, altitude_m=8000.0),
        _position(semi_major_confidence_m=0.0, semi_minor_confidence_m=40.93),
        _path_point(delta_latitude_deg=-0.0131071, delta_longitude_deg=0.0131071, delta_altitude_m=-127.0),
        _path_point(delta_time_s=0.01, delta_altitude_m=127.99),
        _path_point(delta_time_s=655.35),
        _cam(low_frequency=CamLowFrequency(path_history=PATH[:1] * 40, exterior_lights=ExteriorLights(0xFF))),
    ],
)
def test_cam_range_edges_round_trip(cam: Cam) -> None:
    assert decode_cam(encode_cam(cam)) == cam


@pytest.mark.parametrize(
    "denm",
    [
        _denm(detection_time=0, reference_time=TIMESTAMP_ITS_MAX),
        _denm(validity_duration_s=0, transmission_interval_ms=1),
        _denm(validity_duration_s=86400, transmission_interval_ms=10000),
        _denm(action_id=ActionId(2**32 - 1, 65535)),
        dataclasses.replace(
            FULL_DENM, situation=DenmSituation(information_quality=7, cause_code=255, sub_cause_code=255)
        ),
        dataclasses.replace(FULL_DENM, location=DenmLocation(traces=(PATH[:1] * 40,) * 7)),
    ],
)
def test_denm_range_edges_round_trip(denm: Denm) -> None:
    assert decode_denm(encode_denm(denm)) == denm


@pytest.mark.parametrize(
    ("cam", "field", "expected"),
    [
        (_cam(vehicle_width_m=6.1), "vehicle_width_m", math.inf),
        (_cam(vehicle_length_m=math.inf), "vehicle_length_m", math.inf),
        (_cam(heading_confidence_deg=20.0), "heading_confidence_deg", math.inf),
        (_cam(heading_confidence_deg=0.13), "heading_confidence_deg", 0.2),  # rounded up, never down
        (_cam(heading_confidence_deg=0.0), "heading_confidence_deg", 0.1),
        (_cam(speed_confidence_mps=0.3), "speed_confidence_mps", 0.3),
        (
            _cam(longitudinal_acceleration_confidence_mps2=12.0),
            "longitudinal_acceleration_confidence_mps2",
            math.inf,
        ),
        (_cam(yaw_rate_confidence_dps=0.07), "yaw_rate_confidence_dps", 0.1),
        (_cam(yaw_rate_confidence_dps=500.0), "yaw_rate_confidence_dps", math.inf),
        (_cam(curvature_confidence_per_m=0.00002), "curvature_confidence_per_m", 0.00002),
        (_cam(speed_mps=13.894), "speed_mps", 13.89),  # resolution 0.01 m/s
    ],
)
def test_quantisation_and_out_of_range_codes(cam: Cam, field: str, expected: float) -> None:
    assert getattr(decode_cam(encode_cam(cam)), field) == expected


def test_position_confidences_beyond_the_scale_decode_as_infinite() -> None:
    cam = _position(semi_major_confidence_m=41.0, altitude_confidence_m=250.0)
    position = decode_cam(encode_cam(cam)).position
    assert position.semi_major_confidence_m == math.inf
    assert position.altitude_confidence_m == math.inf
    assert (
        decode_cam(encode_cam(_position(altitude_confidence_m=0.03))).position.altitude_confidence_m == 0.05
    )


# --------------------------------------------------------------------------- refused values


@pytest.mark.parametrize(
    ("message", "field", "allowed"),
    [
        (_cam(speed_mps=163.83), "Cam.speed_mps", "0 .. 163.82 m/s"),
        (_cam(speed_mps=-0.5), "Cam.speed_mps", "0 .. 163.82 m/s"),
        (_cam(speed_mps=math.inf), "Cam.speed_mps", "0 .. 163.82 m/s"),
        (_cam(heading_deg=360.06), "Cam.heading_deg", "0 .. 360 deg"),
        (
            _cam(longitudinal_acceleration_mps2=-16.06),
            "Cam.longitudinal_acceleration_mps2",
            "-16 .. 16 m/s^2",
        ),
        (_cam(yaw_rate_dps=400.0), "Cam.yaw_rate_dps", "-327.66 .. 327.66 deg/s"),
        (_cam(curvature_per_m=0.2), "Cam.curvature_per_m", "-0.1023 .. 0.1022 1/m"),
        (_cam(vehicle_width_m=0.04), "Cam.vehicle_width_m", "0.1 .. 6 m"),
        (_position(latitude_deg=90.0000001), "Cam.position.latitude_deg", "-90 .. 90 deg"),
        (_position(longitude_deg=-180.1), "Cam.position.longitude_deg", "-180 .. 180 deg"),
        (_position(altitude_m=8000.01), "Cam.position.altitude_m", "-1000 .. 8000 m"),
        (_position(semi_major_confidence_m=-1.0), "Cam.position.semi_major_confidence_m", "negative"),
        (_position(altitude_confidence_m=-0.1), "Cam.position.altitude_confidence_m", "negative"),
        (
            _path_point(delta_latitude_deg=0.0131072),
            "path_history[0].delta_latitude_deg",
            "-0.0131071 .. 0.0131071",
        ),
        (_path_point(delta_altitude_m=128.0), "path_history[0].delta_altitude_m", "-127 .. 127.99 m"),
        (_path_point(delta_time_s=0.0), "path_history[0].delta_time_s", "0.01 .. 655.35 s"),
        (_path_point(delta_time_s=700.0), "path_history[0].delta_time_s", "0.01 .. 655.35 s"),
        (_cam(low_frequency=CamLowFrequency(path_history=PATH[:1] * 41)), "path_history", "at most 40"),
        (_cam(station_id=2**32), "Cam.station_id", "0 .. 4294967295"),
        (_cam(station_id=-1), "Cam.station_id", "0 .. 4294967295"),
        (_cam(station_type=256), "Cam.station_type", "0 .. 255"),
        (_cam(generation_delta_time=65536), "Cam.generation_delta_time", "0 .. 65535"),
        (_cam(generation_delta_time=1.5), "Cam.generation_delta_time", "must be an integer"),
        (_cam(speed_mps=math.nan), "Cam.speed_mps", "NaN"),
        (_cam(speed_mps="fast"), "Cam.speed_mps", "must be a number"),
        (_cam(drive_direction=7), "Cam.drive_direction", "is not one of"),
        (
            _cam(low_frequency=CamLowFrequency(exterior_lights=ExteriorLights(0x100))),
            "Cam.low_frequency.exterior_lights",
            "0 .. 255",
        ),
    ],
)
def test_cam_out_of_range_is_refused_naming_the_field(message: Cam, field: str, allowed: str) -> None:
    with pytest.raises(V2xEncodeError) as caught:
        encode_cam(message)
    assert field in str(caught.value)
    assert allowed in str(caught.value)


@pytest.mark.parametrize(
    ("message", "field", "allowed"),
    [
        (_denm(validity_duration_s=86401), "validity_duration_s", "0 .. 86400"),
        (_denm(transmission_interval_ms=0), "transmission_interval_ms", "1 .. 10000"),
        (_denm(detection_time=-1), "detection_time", "0 .. 4398046511103"),
        (_denm(action_id=ActionId(1, 65536)), "action_id.sequence_number", "0 .. 65535"),
        (_denm(event_position=UNKNOWN_POSITION, station_type=-3), "station_type", "0 .. 255"),
        (
            dataclasses.replace(FULL_DENM, situation=DenmSituation(information_quality=8, cause_code=1)),
            "situation.information_quality",
            "0 .. 7",
        ),
        (
            dataclasses.replace(FULL_DENM, situation=DenmSituation(information_quality=1, cause_code=256)),
            "situation.cause_code",
            "0 .. 255",
        ),
        (dataclasses.replace(FULL_DENM, location=DenmLocation(traces=())), "location.traces", "1 .. 7"),
        (
            dataclasses.replace(FULL_DENM, location=DenmLocation(traces=((),) * 8)),
            "location.traces",
            "1 .. 7",
        ),
        (
            dataclasses.replace(FULL_DENM, location=DenmLocation(traces=((),), event_speed_mps=170.0)),
            "location.event_speed_mps",
            "0 .. 163.82 m/s",
        ),
        (
            dataclasses.replace(
                FULL_DENM, location=DenmLocation(traces=((),), event_heading_confidence_deg=1.0)
            ),
            "location.event_heading_confidence_deg",
            "event_heading_deg is None",
        ),
    ],
)
def test_denm_out_of_range_is_refused_naming_the_field(message: Denm, field: str, allowed: str) -> None:
    with pytest.raises(V2xEncodeError) as caught:
        encode_denm(message)
    assert field in str(caught.value)
    assert allowed in str(caught.value)


# --------------------------------------------------------------------------- refused bytes


def test_every_truncation_is_refused() -> None:
    for data in (encode_cam(FULL_CAM), encode_denm(FULL_DENM)):
        for length in range(len(data)):
            with pytest.raises(V2xDecodeError):
                decode_its_pdu(data[:length])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(V2xDecodeError, match="1 bytes follow the end of the CAM"):
        decode_cam(encode_cam(FULL_CAM) + b"\x00")


def test_wrong_message_kind_and_version_are_refused() -> None:
    cam, denm = encode_cam(FULL_CAM), encode_denm(FULL_DENM)
    with pytest.raises(V2xDecodeError, match="messageID 1 is not a CAM"):
        decode_cam(denm)
    with pytest.raises(V2xDecodeError, match="messageID 2 is not a DENM"):
        decode_denm(cam)
    with pytest.raises(V2xDecodeError, match="protocolVersion 1 is not supported"):
        decode_cam(b"\x01" + cam[1:])
    with pytest.raises(V2xDecodeError, match="messageID 6 is not supported"):
        decode_its_pdu(cam[:1] + b"\x06" + cam[2:])
    with pytest.raises(V2xDecodeError, match="too short"):
        decode_its_pdu(b"\x02\x02")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(V2xDecodeError):
        assert isinstance(decode_its_pdu(data), Cam | Denm)


_VALID_PDUS = (encode_cam(FULL_CAM), encode_denm(FULL_DENM))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_VALID_PDUS), st.data())
def test_corrupted_messages_decode_to_valid_values_or_raise_decode_error(
    valid: bytes, data: st.DataObject
) -> None:
    bit = data.draw(st.integers(16, len(valid) * 8 - 1), label="flipped bit after the header")
    corrupted = bytearray(valid)
    corrupted[bit // 8] ^= 0x80 >> (bit % 8)
    try:
        message = decode_its_pdu(bytes(corrupted))
    except V2xDecodeError:
        return
    # whatever decoded is in range, so it encodes again
    encoded = encode_cam(message) if isinstance(message, Cam) else encode_denm(message)
    assert decode_its_pdu(encoded) == message


@settings(max_examples=60, deadline=None)
@given(
    speed=st.integers(0, 16382),
    heading=st.integers(0, 3600),
    latitude=st.integers(-900_000_000, 900_000_000),
    longitude=st.integers(-1_800_000_000, 1_800_000_000),
    yaw_rate=st.integers(-32766, 32766),
    acceleration=st.integers(-160, 160),
)
def test_any_value_on_the_etsi_grid_round_trips(
    speed: int, heading: int, latitude: int, longitude: int, yaw_rate: int, acceleration: int
) -> None:
    cam = _cam(
        speed_mps=speed / 100,
        heading_deg=heading / 10,
        position=dataclasses.replace(POSITION, latitude_deg=latitude / 1e7, longitude_deg=longitude / 1e7),
        yaw_rate_dps=yaw_rate / 100,
        longitudinal_acceleration_mps2=acceleration / 10,
    )
    assert decode_cam(encode_cam(cam)) == cam


def test_concurrent_encoding_keeps_messages_apart() -> None:
    results: dict[int, list[Cam]] = {}

    def work(worker: int) -> None:
        decoded = []
        for index in range(40):
            cam = _cam(station_id=worker * 1000 + index, speed_mps=index / 4)
            decoded.append(decode_cam(encode_cam(cam)))
        results[worker] = decoded

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [0, 1, 2, 3]
    for worker, decoded in results.items():
        assert [(cam.station_id, cam.speed_mps) for cam in decoded] == [
            (worker * 1000 + index, index / 4) for index in range(40)
        ]


# --------------------------------------------------------------------------- time base


def _unix_ms(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> int:
    return round(datetime(year, month, day, hour, minute, second, us, tzinfo=UTC).timestamp() * 1000)


def test_timestamp_its_counts_leap_seconds_since_2004() -> None:
    assert timestamp_its_from_unix_ms(_unix_ms(2004, 1, 1)) == 0
    assert timestamp_its_from_unix_ms(_unix_ms(2005, 12, 31, 23, 59, 59)) == _unix_ms(
        2005, 12, 31, 23, 59, 59
    ) - _unix_ms(2004, 1, 1)
    now = _unix_ms(2025, 6, 1, 12)
    assert timestamp_its_from_unix_ms(now) == now - _unix_ms(2004, 1, 1) + 5000
    assert (
        timestamp_its_from_unix_ms(_unix_ms(2010, 1, 1)) - (_unix_ms(2010, 1, 1) - _unix_ms(2004, 1, 1))
        == 2000
    )


@pytest.mark.parametrize(
    "unix_ms",
    [
        _unix_ms(2004, 1, 1),
        _unix_ms(2017, 1, 1) - 1,
        _unix_ms(2017, 1, 1),
        _unix_ms(2025, 6, 1, 12, 0, 0, 123_000),
    ],
)
def test_timestamp_its_inverse(unix_ms: int) -> None:
    assert unix_ms_from_timestamp_its(timestamp_its_from_unix_ms(unix_ms)) == unix_ms


def test_timestamp_inside_a_leap_second_maps_to_its_end() -> None:
    before = timestamp_its_from_unix_ms(_unix_ms(2017, 1, 1) - 1)
    assert unix_ms_from_timestamp_its(before + 500) == _unix_ms(2017, 1, 1)
    with pytest.raises(V2xEncodeError, match="before the ITS epoch"):
        timestamp_its_from_unix_ms(_unix_ms(2003, 12, 31))
    with pytest.raises(V2xDecodeError, match="outside"):
        unix_ms_from_timestamp_its(-1)


def test_generation_delta_time_and_gn_timestamp_wrap() -> None:
    assert generation_delta_time(65535) == 65535
    assert generation_delta_time(65536 * 3 + 17) == 17
    assert gn_timestamp(2**32 + 5) == 5


# --------------------------------------------------------------------------- independent codec

FULL_CAM_ETSI: dict[str, Any] = {
    "header": {"protocolVersion": 2, "messageID": 2, "stationID": 1234},
    "cam": {
        "generationDeltaTime": 4242,
        "camParameters": {
            "basicContainer": {
                "stationType": 5,
                "referencePosition": {
                    "latitude": 481234567,
                    "longitude": 117654321,
                    "positionConfidenceEllipse": {
                        "semiMajorConfidence": 250,
                        "semiMinorConfidence": 100,
                        "semiMajorOrientation": 450,
                    },
                    "altitude": {"altitudeValue": 52050, "altitudeConfidence": "alt-005-00"},
                },
            },
            "highFrequencyContainer": (
                "basicVehicleContainerHighFrequency",
                {
                    "heading": {"headingValue": 1234, "headingConfidence": 10},
                    "speed": {"speedValue": 1389, "speedConfidence": 10},
                    "driveDirection": "forward",
                    "vehicleLength": {
                        "vehicleLengthValue": 45,
                        "vehicleLengthConfidenceIndication": "noTrailerPresent",
                    },
                    "vehicleWidth": 18,
                    "longitudinalAcceleration": {
                        "longitudinalAccelerationValue": -25,
                        "longitudinalAccelerationConfidence": 5,
                    },
                    "curvature": {"curvatureValue": 100, "curvatureConfidence": "onePerMeter-0-002"},
                    "curvatureCalculationMode": "yawRateUsed",
                    "yawRate": {"yawRateValue": -325, "yawRateConfidence": "degSec-001-00"},
                },
            ),
            "lowFrequencyContainer": (
                "basicVehicleContainerLowFrequency",
                {
                    "vehicleRole": "default",
                    "exteriorLights": (b"\x81", 8),  # bit 0 (low beam) and bit 7 (parking lights)
                    "pathHistory": [
                        {
                            "pathPosition": {
                                "deltaLatitude": 1000,
                                "deltaLongitude": -2000,
                                "deltaAltitude": 50,
                            },
                            "pathDeltaTime": 50,
                        },
                        {
                            "pathPosition": {
                                "deltaLatitude": 131072,
                                "deltaLongitude": 131072,
                                "deltaAltitude": 12800,
                            }
                        },
                    ],
                },
            ),
        },
    },
}

_UNAVAILABLE_POSITION_ETSI = {
    "latitude": 900000001,
    "longitude": 1800000001,
    "positionConfidenceEllipse": {
        "semiMajorConfidence": 4095,
        "semiMinorConfidence": 4095,
        "semiMajorOrientation": 3601,
    },
    "altitude": {"altitudeValue": 800001, "altitudeConfidence": "unavailable"},
}
MINIMAL_CAM_ETSI: dict[str, Any] = {
    "header": {"protocolVersion": 2, "messageID": 2, "stationID": 7},
    "cam": {
        "generationDeltaTime": 0,
        "camParameters": {
            "basicContainer": {"stationType": 0, "referencePosition": _UNAVAILABLE_POSITION_ETSI},
            "highFrequencyContainer": (
                "basicVehicleContainerHighFrequency",
                {
                    "heading": {"headingValue": 3601, "headingConfidence": 127},
                    "speed": {"speedValue": 16383, "speedConfidence": 127},
                    "driveDirection": "unavailable",
                    "vehicleLength": {
                        "vehicleLengthValue": 1023,
                        "vehicleLengthConfidenceIndication": "unavailable",
                    },
                    "vehicleWidth": 62,
                    "longitudinalAcceleration": {
                        "longitudinalAccelerationValue": 161,
                        "longitudinalAccelerationConfidence": 102,
                    },
                    "curvature": {"curvatureValue": 1023, "curvatureConfidence": "unavailable"},
                    "curvatureCalculationMode": "unavailable",
                    "yawRate": {"yawRateValue": 32767, "yawRateConfidence": "unavailable"},
                },
            ),
        },
    },
}

FULL_DENM_ETSI: dict[str, Any] = {
    "header": {"protocolVersion": 2, "messageID": 1, "stationID": 99},
    "denm": {
        "management": {
            "actionID": {"originatingStationID": 1234, "sequenceNumber": 7},
            "detectionTime": 600_000_000_000,
            "referenceTime": 600_000_000_100,
            "termination": "isNegation",
            "eventPosition": FULL_CAM_ETSI["cam"]["camParameters"]["basicContainer"]["referencePosition"],
            "relevanceDistance": "lessThan500m",
            "relevanceTrafficDirection": "upstreamTraffic",
            "validityDuration": 60,
            "transmissionInterval": 100,
            "stationType": 5,
        },
        "situation": {"informationQuality": 3, "eventType": {"causeCode": 99, "subCauseCode": 1}},
        "location": {
            "eventSpeed": {"speedValue": 2000, "speedConfidence": 50},
            "eventPositionHeading": {"headingValue": 2700, "headingConfidence": 20},
            "traces": [
                FULL_CAM_ETSI["cam"]["camParameters"]["lowFrequencyContainer"][1]["pathHistory"],
                [],
            ],
        },
    },
}

MINIMAL_DENM_ETSI: dict[str, Any] = {
    "header": {"protocolVersion": 2, "messageID": 1, "stationID": 1234},
    "denm": {
        "management": {
            "actionID": {"originatingStationID": 1234, "sequenceNumber": 7},
            "detectionTime": 600_000_000_000,
            "referenceTime": 600_000_000_100,
            "eventPosition": FULL_CAM_ETSI["cam"]["camParameters"]["basicContainer"]["referencePosition"],
            "stationType": 5,
        },
    },
}


@pytest.fixture(scope="module")
def etsi_asn1() -> Any:
    """asn1tools compiled from the official release 1 CAM, DENM and ITS-Container modules."""
    if not ASN1_DIR.is_dir():
        pytest.skip(f"{ASN1_DIR} is absent")
    asn1tools = pytest.importorskip("asn1tools")
    release1 = ASN1_DIR / "release1"
    files = [
        release1 / "cam_en302637_2" / "CAM-PDU-Descriptions.asn",
        release1 / "denm_en302637_3" / "DENM-PDU-Descriptions.asn",
        release1 / "cam_en302637_2" / "cdd" / "ITS-Container.asn",
    ]
    return asn1tools.compile_files([str(path) for path in files], "uper")


@pytest.mark.parametrize(
    ("pdu", "ours", "etsi"),
    [
        ("CAM", encode_cam(FULL_CAM), FULL_CAM_ETSI),
        ("CAM", encode_cam(MINIMAL_CAM), MINIMAL_CAM_ETSI),
        ("DENM", encode_denm(FULL_DENM), FULL_DENM_ETSI),
        ("DENM", encode_denm(MINIMAL_DENM), MINIMAL_DENM_ETSI),
    ],
    ids=["full-cam", "minimal-cam", "full-denm", "minimal-denm"],
)
def test_official_asn1_agrees_with_our_bytes(
    etsi_asn1: Any, pdu: str, ours: bytes, etsi: dict[str, Any]
) -> None:
    assert etsi_asn1.encode(pdu, etsi, check_constraints=True) == ours
    default_validity = pdu == "DENM" and "validityDuration" not in etsi["denm"]["management"]
    # asn1tools fills an absent DEFAULT component with the name of the default value
    # ("defaultValidity"), which its own constraint checker then cannot compare
    decoded = etsi_asn1.decode(pdu, ours, check_constraints=not default_validity)
    if default_validity:
        assert decoded["denm"]["management"].pop("validityDuration") in (600, "defaultValidity")
    assert decoded == etsi


def test_official_asn1_messages_decode_with_our_codec(etsi_asn1: Any) -> None:
    """Bytes from the independent encoder, with a value we did not produce ourselves."""
    etsi = dict(MINIMAL_CAM_ETSI, header={"protocolVersion": 2, "messageID": 2, "stationID": 4_000_000_000})
    cam = decode_its_pdu(etsi_asn1.encode("CAM", etsi, check_constraints=True))
    assert cam == dataclasses.replace(MINIMAL_CAM, station_id=4_000_000_000)
