"""V2X facilities: CAM triggering, DENM lifecycle and reception, quadkeys, topics, the stack, the relay check.

Drives are scripted: kinematics integrated every 10 ms, records published every 100 ms
(as the reference DBC publishes position, heading and speed), the CAM service polled
every 10 ms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from paho.mqtt.client import topic_matches_sub
from pcapfile import read_pcap

from edge.v2x.cam_service import CamService, Motion, MotionTracker, VehicleDescription
from edge.v2x.certificates import Validity, generate_authority, issue_ticket
from edge.v2x.codec import decode_cam, decode_denm, encode_cam, encode_denm
from edge.v2x.denm_service import (
    PROFILES,
    TERMINATION_REPEATS,
    DenmOriginator,
    DenmReceiver,
    Reception,
    WarningState,
    its_time,
)
from edge.v2x.errors import V2xConfigError
from edge.v2x.geonet import (
    BTP_PORT_CAM,
    AreaShape,
    GeoArea,
    GnAddress,
    LongPositionVector,
    build_gbc,
    build_shb,
    parse_packet,
)
from edge.v2x.model import (
    ActionId,
    Cam,
    Denm,
    DenmLocation,
    DenmManagement,
    DenmSituation,
    ExteriorLights,
    ReferencePosition,
    RelevanceDistance,
    RelevanceTrafficDirection,
    StationType,
    Termination,
)
from edge.v2x.pcap import PcapWriter
from edge.v2x.quadkey import EARTH_RADIUS_M, QuadkeyError, Tile, bearing_deg, distance_m, quadkey
from edge.v2x.security import SecurityConfig, Signer, V2xSecurityError, Verifier
from edge.v2x.stack import V2xConfig, V2xStack, generation_location, inside_area, its_microseconds
from edge.v2x.transport import (
    MqttRelayTransport,
    PacketRoute,
    TransportError,
    UdpMulticastTransport,
    V2xTransport,
)
from roadwave.cli.v2x_relay import UploadRefused, check_upload
from roadwave.contract import Record, TopicError
from roadwave.contract import v2x as topics
from roadwave.contract.events import ENDED, ONGOING, Event
from roadwave.mqtt import MqttSettings

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MS = 1_000_000
LAT0, LON0 = 48.137, 11.575
SPEED = "Vehicle.Speed"
LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
HEADING = "Vehicle.CurrentLocation.Heading"
ACCELERATION = "Vehicle.Acceleration.Longitudinal"


def offset(east_m: float, north_m: float) -> tuple[float, float]:
    """Latitude and longitude ``east_m``, ``north_m`` from the origin (same sphere as the code)."""
    latitude = LAT0 + math.degrees(north_m / EARTH_RADIUS_M)
    longitude = LON0 + math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(LAT0))))
    return latitude, longitude


def motion_record(
    t_ns: int, east_m: float, north_m: float, heading_deg: float, speed_mps: float, accel: float = 0.0
) -> Record:
    latitude, longitude = offset(east_m, north_m)
    signals = {
        LATITUDE: latitude,
        LONGITUDE: longitude,
        HEADING: heading_deg % 360.0,
        SPEED: speed_mps * 3.6,
        ACCELERATION: accel,
    }
    return Record(t_ns, "can0", signals)


@dataclasses.dataclass
class Drive:
    """The CAMs (with their send times) of a scripted drive, and the records it published."""

    times_ns: list[int]
    cams: list[Cam]
    records: list[Record]

    def intervals_ms(self, since_s: float = 0.0, until_s: float = math.inf) -> list[float]:
        kept = [t for t in self.times_ns if since_s * 1e9 <= t - T0 <= until_s * 1e9]
        return [(b - a) / MS for a, b in zip(kept, kept[1:], strict=False)]


def drive(
    seconds: float,
    speed: Callable[[float], float],
    yaw_rate_dps: Callable[[float], float] = lambda _t: 0.0,
    record_every_ms: int = 100,
) -> Drive:
    """Integrate a drive in 10 ms steps; publish a record every ``record_every_ms``; poll every 10 ms.

    ``speed(t)`` is the speed in m/s; the published acceleration is its derivative.
    """
    tracker = MotionTracker()
    service = CamService(77, VehicleDescription(length_m=4.5, width_m=1.8), tracker)
    east = north = 0.0
    heading = 0.0
    result = Drive([], [], [])
    steps = round(seconds * 100)
    for step in range(steps + 1):
        t = step / 100
        now_ns = T0 + step * 10 * MS
        v = speed(t)
        if step % (record_every_ms // 10) == 0:
            accel = (speed(t + 0.01) - v) / 0.01
            record = motion_record(now_ns, east, north, heading, v, accel)
            tracker.update(record)
            result.records.append(record)
        cam = service.poll(now_ns)
        if cam is not None:
            result.times_ns.append(now_ns)
            result.cams.append(cam)
        heading += yaw_rate_dps(t) * 0.01
        east += v * 0.01 * math.sin(math.radians(heading))
        north += v * 0.01 * math.cos(math.radians(heading))
    return result


# --------------------------------------------------------------------------- CAM timing


@pytest.mark.parametrize("speed_mps", [0.0, 3.9])  # under 4 m in 1 s
def test_standstill_and_slow_straight_drive_send_one_cam_per_second(speed_mps: float) -> None:
    result = drive(10.0, lambda _t: speed_mps)
    assert result.intervals_ms() == [1000.0] * 10


def test_straight_drive_at_constant_speed_sends_a_cam_every_4_m() -> None:
    # EN 302 637-2: a position change over 4 m triggers a CAM, so from 4 m/s on the 1 s timer never
    # runs out. At 16 m/s: 3.2 m after 200 ms, 4.8 m after 300 ms.
    result = drive(10.0, lambda _t: 16.0)
    intervals = result.intervals_ms()
    assert set(intervals) == {300.0}
    positions = [(c.position.latitude_deg or 0.0, c.position.longitude_deg or 0.0) for c in result.cams]
    steps = [distance_m(*a, *b) for a, b in zip(positions, positions[1:], strict=False)]
    assert steps == pytest.approx([4.8] * len(steps), abs=0.01)


def test_hard_braking_sends_cams_at_10_hz_and_never_faster() -> None:
    # 1 s at 20 m/s, then 8 m/s^2 braking to a stop at 3.5 s, then standing still.
    def speed(t: float) -> float:
        return 20.0 if t < 1.0 else max(0.0, 20.0 - 8.0 * (t - 1.0))

    result = drive(8.0, speed)
    assert min(result.intervals_ms()) >= 100.0
    # With a record every 10 ms the speed change passes 0.5 m/s after 70 ms: the 100 ms minimum holds.
    assert set(drive(8.0, speed, record_every_ms=10).intervals_ms(since_s=1.1, until_s=3.5)) == {100.0}
    braking = result.intervals_ms(since_s=1.1, until_s=3.5)
    assert braking and set(braking) == {100.0}
    # After the stop: the last interval is kept for 3 CAMs, then back to 1 s.
    # Standing still from 3.5 s: the last interval (100 ms) is kept for 3 CAMs, then back to 1 s.
    assert result.intervals_ms(since_s=3.5) == [100.0, 100.0, 100.0, 1000.0, 1000.0, 1000.0, 1000.0]


def test_turning_sends_cams_up_to_10_hz_then_t_gen_cam_holds_for_3_cams() -> None:
    # Slow enough (2 m/s) that the position rule never fires: only the heading triggers.
    def fast_turn(t: float) -> float:
        return 50.0 if 1.0 <= t < 3.0 else 0.0

    result = drive(6.0, lambda _t: 2.0, fast_turn)
    assert set(result.intervals_ms(since_s=1.1, until_s=3.0)) == {100.0}  # 5 deg per 100 ms

    def slow_turn(t: float) -> float:
        return 15.0 if 1.0 <= t < 4.0 else 0.0

    result = drive(9.0, lambda _t: 2.0, slow_turn)
    during = result.intervals_ms(since_s=1.2, until_s=4.0)
    assert set(during) == {300.0}  # 4.5 deg per 300 ms, 3 deg per 200 ms
    after = result.intervals_ms(since_s=3.8)
    assert after[:4] == [300.0, 300.0, 300.0, 1000.0]
    assert set(after[4:]) == {1000.0}


def test_speed_change_alone_triggers() -> None:
    # 6 m/s^2 from standstill: 0.6 m/s per 100 ms > 0.5 m/s.
    result = drive(2.0, lambda t: 6.0 * t if t < 1.0 else 6.0)
    assert set(result.intervals_ms(since_s=0.0, until_s=0.95)) == {100.0}


def test_low_frequency_container_in_the_first_cam_then_every_500_ms() -> None:
    result = drive(8.0, lambda t: 20.0 if t < 1.0 else max(0.0, 20.0 - 8.0 * (t - 1.0)))
    assert result.cams[0].low_frequency is not None
    with_low = [
        t for t, cam in zip(result.times_ns, result.cams, strict=True) if cam.low_frequency is not None
    ]
    gaps = [(b - a) / MS for a, b in zip(with_low, with_low[1:], strict=False)]
    assert min(gaps) >= 500.0
    # While CAMs go at 10 Hz, every fifth one has it; at 1 Hz all do.
    braking = [cam for t, cam in zip(result.times_ns, result.cams, strict=True) if 1.5e9 <= t - T0 < 3.0e9]
    assert sum(cam.low_frequency is not None for cam in braking) == 3
    late = [cam for t, cam in zip(result.times_ns, result.cams, strict=True) if t - T0 > 5.5e9]
    assert late and all(cam.low_frequency is not None for cam in late)


def test_path_history_leads_back_along_the_driven_path() -> None:
    result = drive(12.0, lambda _t: 15.0, lambda t: 10.0 if t > 4.0 else 0.0)
    cam = [c for c in result.cams if c.low_frequency is not None][-1]
    assert cam.low_frequency is not None
    path = cam.low_frequency.path_history
    assert 10 <= len(path) <= 20
    driven = [(r.signals[LATITUDE], r.signals[LONGITUDE]) for r in result.records]
    latitude, longitude = cam.position.latitude_deg, cam.position.longitude_deg
    assert latitude is not None and longitude is not None
    for point in path:
        assert point.delta_latitude_deg is not None and point.delta_longitude_deg is not None
        latitude += point.delta_latitude_deg
        longitude += point.delta_longitude_deg
        nearest = min(distance_m(latitude, longitude, *p) for p in driven)
        assert nearest < 0.05  # each point is a published position, up to 1e-7 deg rounding
    # A point every 10 m: 7 records of 1.5 m at 15 m/s (the first is at most that before the CAM).
    assert all(p.delta_time_s == pytest.approx(0.7) for p in path[1:])
    assert path[0].delta_time_s is not None and 0 < path[0].delta_time_s <= 0.7
    assert decode_cam(encode_cam(cam)).low_frequency == cam.low_frequency


def test_cams_carry_the_motion_and_encode() -> None:
    result = drive(3.0, lambda t: 10.0 + 2.0 * t, lambda _t: 5.0)
    cam = result.cams[-1]
    record = [r for r in result.records if r.t_ns <= result.times_ns[-1]][-1]
    assert cam.station_id == 77 and cam.station_type == StationType.PASSENGER_CAR
    assert cam.speed_mps == pytest.approx(record.signals[SPEED] / 3.6)
    assert cam.heading_deg == pytest.approx(record.signals[HEADING])
    assert cam.longitudinal_acceleration_mps2 == pytest.approx(2.0, abs=1e-6)
    assert cam.generation_delta_time == its_time(result.times_ns[-1]) % 65536
    decoded = decode_cam(encode_cam(cam))
    assert decoded.position.latitude_deg == pytest.approx(cam.position.latitude_deg, abs=1e-7)
    assert decoded.vehicle_length_m == 4.5


def test_flagged_samples_are_never_used() -> None:
    tracker = MotionTracker()
    service = CamService(1, VehicleDescription(), tracker)
    good = motion_record(T0, 0.0, 0.0, 90.0, 10.0)
    tracker.update(good)
    tracker.update(Record(T0 + 50 * MS, "can0", {SPEED: 300.0}, {SPEED: "range"}))
    cam = service.poll(T0 + 60 * MS)
    assert cam is not None and cam.speed_mps is None and cam.heading_deg == 90.0
    hazard = "Vehicle.Body.Lights.Hazard.IsSignaling"
    tracker.update(Record(T0 + 70 * MS, "can0", {hazard: True}))
    assert tracker.current is not None
    assert tracker.current.lights == ExteriorLights.LEFT_TURN_SIGNAL | ExteriorLights.RIGHT_TURN_SIGNAL
    tracker.update(Record(T0 + 80 * MS, "can0", {LATITUDE: 48.0, LONGITUDE: 11.0}, {LATITUDE: "stale"}))
    assert tracker.current is None
    assert service.poll(T0 + 2000 * MS) is None  # no position, no CAM


def test_vehicle_description_is_validated() -> None:
    with pytest.raises(V2xConfigError, match="station_type 40 is outside 0 .. 31"):
        VehicleDescription(station_type=40)
    with pytest.raises(V2xConfigError, match="length_m must be a positive number"):
        VehicleDescription(length_m=-1.0)
    with pytest.raises(V2xConfigError, match="station_id -1 is not an integer"):
        V2xConfig(station_id=-1)


# --------------------------------------------------------------------------- DENM originating side


def event(kind: str, state: str = ONGOING, start_s: float = 0.0, end_s: float | None = None) -> Event:
    start_ns = T0 + round(start_s * 1e9)
    return Event(
        kind=kind,
        state=state,
        severity=3,
        start_ns=start_ns,
        detected_ns=start_ns + 500 * MS,
        end_ns=None if end_s is None else T0 + round(end_s * 1e9),
        peak={},
        position=offset(0.0, 0.0),
        snapshot={},
    )


def tracker_driving(until_s: float, speed_mps: float = 20.0) -> MotionTracker:
    """A tracker that has driven north at ``speed_mps`` up to the origin at ``until_s``."""
    tracker = MotionTracker()
    for step in range(round(until_s * 10) + 1):
        t = step / 10
        tracker.update(motion_record(T0 + step * 100 * MS, 0.0, speed_mps * (t - until_s), 0.0, speed_mps))
    return tracker


# Cause and sub-cause codes: ETSI TS 102 894-2 (see the facts file, "Cause/sub-cause").
@pytest.mark.parametrize(
    ("kind", "cause", "sub_cause"),
    [
        ("emergency_braking", 99, 1),
        ("stationary_vehicle", 94, 0),
        ("end_of_queue", 27, 1),
        ("forward_collision", 97, 1),
        ("traffic_jam", 1, 0),
    ],
)
def test_each_event_type_becomes_a_denm_with_its_cause(kind: str, cause: int, sub_cause: int) -> None:
    tracker = tracker_driving(5.0)
    originator = DenmOriginator(9, StationType.PASSENGER_CAR, tracker)
    now_ns = T0 + 5_000 * MS
    denm = originator.on_event(event(kind, start_s=4.5), now_ns)
    assert denm is not None and denm.situation is not None and denm.location is not None
    assert (denm.situation.cause_code, denm.situation.sub_cause_code) == (cause, sub_cause)
    management = denm.management
    assert management.action_id == ActionId(9, 0)
    assert management.detection_time == its_time(T0 + 5_000 * MS)  # event detected at 4.5 + 0.5 s
    assert management.reference_time == its_time(now_ns)
    assert management.termination is None
    assert management.validity_duration_s == PROFILES[kind].validity_s
    assert management.transmission_interval_ms == PROFILES[kind].repetition_ms
    assert management.event_position.latitude_deg == pytest.approx(LAT0)
    trace = denm.location.traces[0]
    assert len(trace) >= 5  # 5 s at 20 m/s, a point every 10 m
    assert all(p.delta_latitude_deg is not None and p.delta_latitude_deg < 0 for p in trace)  # behind: south
    assert denm.location.event_heading_deg == 0.0 and denm.location.event_speed_mps == pytest.approx(20.0)
    assert encode_denm(decode_denm(encode_denm(denm))) == encode_denm(denm)


def test_action_ids_count_up_per_event_and_unknown_kinds_send_nothing() -> None:
    originator = DenmOriginator(9, StationType.PASSENGER_CAR, tracker_driving(1.0))
    now_ns = T0 + 1_000 * MS
    first = originator.on_event(event("emergency_braking", start_s=0.1), now_ns)
    second = originator.on_event(event("stationary_vehicle", start_s=0.2), now_ns)
    assert first is not None and second is not None
    assert [first.management.action_id.sequence_number, second.management.action_id.sequence_number] == [0, 1]
    assert originator.on_event(event("harsh_braking"), now_ns) is None
    assert originator.on_event(event("emergency_braking", ENDED, start_s=7.0, end_s=8.0), now_ns) is None
    lost = DenmOriginator(9, StationType.PASSENGER_CAR, MotionTracker())
    assert lost.on_event(dataclasses.replace(event("emergency_braking"), position=None), now_ns) is None


def test_repetition_update_and_cancellation() -> None:
    tracker = tracker_driving(1.0)
    originator = DenmOriginator(9, StationType.PASSENGER_CAR, tracker)
    start = T0 + 1_000 * MS
    new = originator.on_event(event("emergency_braking", start_s=0.5), start)
    assert new is not None
    # Repeated unchanged every 100 ms, not sooner.
    sent: list[tuple[int, Denm]] = []
    for step in range(1, 31):
        now_ns = start + step * 10 * MS
        sent.extend((now_ns, denm) for denm in originator.poll(now_ns))
    assert [(t - start) // MS for t, _ in sent] == [100, 200, 300]
    assert all(denm == new for _, denm in sent)
    # Half the validity (5 s) after detection, an update renews it.
    updates = originator.poll(T0 + 6_000 * MS)
    assert len(updates) == 1
    update = updates[0].management
    assert update.action_id == new.management.action_id
    assert update.reference_time > new.management.reference_time
    assert update.detection_time == its_time(T0 + 6_000 * MS)
    # The end cancels it: same actionID, newer referenceTime, sent TERMINATION_REPEATS times, then silence.
    end_ns = T0 + 6_050 * MS
    cancel = originator.on_event(event("emergency_braking", ENDED, start_s=0.5, end_s=1.5), end_ns)
    assert cancel is not None and cancel.management.termination == Termination.IS_CANCELLATION
    assert cancel.management.action_id == new.management.action_id
    assert cancel.management.reference_time > update.reference_time
    assert cancel.management.detection_time == its_time(T0 + 1_500 * MS)
    assert cancel.situation is None and cancel.location is None
    repeats = [d for step in range(1, 100) for d in originator.poll(end_ns + step * 10 * MS)]
    assert repeats == [cancel] * (TERMINATION_REPEATS - 1)
    assert originator.on_event(event("emergency_braking", ENDED, start_s=0.5, end_s=1.5), end_ns) is None
    assert encode_denm(decode_denm(encode_denm(cancel))) == encode_denm(cancel)


def test_a_moving_event_follows_its_vehicle() -> None:
    tracker = tracker_driving(1.0, speed_mps=5.0)
    originator = DenmOriginator(9, StationType.PASSENGER_CAR, tracker)
    new = originator.on_event(event("traffic_jam", start_s=0.5), T0 + 1_000 * MS)
    assert new is not None
    seen: list[Denm] = []
    for step in range(11, 400):  # 5 m/s north: 100 m after 20 s
        now_ns = T0 + step * 100 * MS
        tracker.update(motion_record(now_ns, 0.0, 5.0 * (step / 10 - 1.0), 0.0, 5.0))
        seen.extend(
            d for d in originator.poll(now_ns) if d.management.reference_time != new.management.reference_time
        )
    moved = [d for d in seen if d.management.event_position != new.management.event_position]
    assert moved, "no update with a new position"
    first = moved[0].management
    assert first.action_id == new.management.action_id
    latitude, longitude = first.event_position.latitude_deg, first.event_position.longitude_deg
    assert latitude is not None and longitude is not None
    assert distance_m(LAT0, LON0, latitude, longitude) == pytest.approx(100.0, abs=5.5)


# --------------------------------------------------------------------------- DENM receiving side


def received_denm(
    *,
    sequence: int = 0,
    reference_ms: int = 0,
    detection_ms: int = 0,
    termination: Termination | None = None,
    sender: int = 9,
    validity_s: int = 10,
    north_m: float = 0.0,
    direction: RelevanceTrafficDirection = RelevanceTrafficDirection.UPSTREAM_TRAFFIC,
    heading: float | None = 0.0,
) -> Denm:
    latitude, longitude = offset(0.0, north_m)
    base = its_time(T0)
    return Denm(
        station_id=sender,
        management=DenmManagement(
            action_id=ActionId(9, sequence),
            detection_time=base + detection_ms,
            reference_time=base + reference_ms,
            event_position=ReferencePosition(latitude_deg=latitude, longitude_deg=longitude),
            station_type=StationType.PASSENGER_CAR,
            termination=termination,
            relevance_distance=RelevanceDistance.LESS_THAN_500_M,
            relevance_traffic_direction=direction,
            validity_duration_s=validity_s,
        ),
        situation=None
        if termination
        else DenmSituation(information_quality=4, cause_code=99, sub_cause_code=1),
        location=None
        if termination or heading is None
        else DenmLocation(traces=((),), event_heading_deg=heading),
    )


def own_motion(north_m: float, heading: float = 0.0) -> Motion:
    tracker = MotionTracker()
    tracker.update(motion_record(T0, 0.0, north_m, heading, 20.0))
    motion = tracker.current
    assert motion is not None
    return motion


def test_receiver_lifecycle_new_repetition_update_cancel() -> None:
    receiver = DenmReceiver()
    now = its_time(T0) + 100
    behind = own_motion(-150.0)
    outcome, warnings = receiver.receive(received_denm(), now, behind)
    assert outcome == Reception.NEW
    assert [w.state for w in warnings] == [WarningState.RAISED]
    assert warnings[0].hazard == "dangerous_situation/1"
    assert warnings[0].distance_m == pytest.approx(150.0, abs=0.5)
    assert receiver.receive(received_denm(), now, behind) == (Reception.REPETITION, [])
    outcome, warnings = receiver.receive(received_denm(reference_ms=50), now, behind)
    assert outcome == Reception.UPDATE and [w.state for w in warnings] == [WarningState.UPDATED]
    assert receiver.receive(received_denm(reference_ms=20), now, behind)[0] == Reception.OUTDATED
    cancel = received_denm(reference_ms=80, termination=Termination.IS_CANCELLATION)
    outcome, warnings = receiver.receive(cancel, now, behind)
    assert outcome == Reception.CANCELLED
    assert [(w.state, w.reason, w.hazard) for w in warnings] == [
        (WarningState.CLEARED, "cancelled", "dangerous_situation/1")
    ]
    # Late copies of the event and of its cancellation change nothing.
    assert receiver.receive(received_denm(reference_ms=50), now, behind)[0] == Reception.OUTDATED
    assert receiver.receive(cancel, now, behind)[0] == Reception.REPETITION
    later = received_denm(reference_ms=90)
    assert receiver.receive(later, now, behind)[0] == Reception.AFTER_TERMINATION


def test_receiver_terminations_from_others() -> None:
    receiver = DenmReceiver()
    now = its_time(T0) + 100
    behind = own_motion(-100.0)
    unknown = received_denm(sequence=5, termination=Termination.IS_CANCELLATION)
    assert receiver.receive(unknown, now, behind)[0] == Reception.UNKNOWN_TERMINATION
    receiver.receive(received_denm(), now, behind)
    forged = received_denm(reference_ms=10, termination=Termination.IS_CANCELLATION, sender=66)
    assert receiver.receive(forged, now, behind)[0] == Reception.FOREIGN_CANCELLATION
    negation = received_denm(reference_ms=10, termination=Termination.IS_NEGATION, sender=66)
    outcome, warnings = receiver.receive(negation, now, behind)
    assert outcome == Reception.NEGATED and [w.reason for w in warnings] == ["negated"]


def test_receiver_expiry() -> None:
    receiver = DenmReceiver()
    behind = own_motion(-100.0)
    start = its_time(T0)
    assert receiver.receive(received_denm(), start + 10_001, behind)[0] == Reception.EXPIRED
    assert (
        DenmReceiver().receive(received_denm(), start + 10_000, behind)[0] == Reception.NEW
    )  # the last valid ms
    outcome, warnings = receiver.receive(received_denm(), start + 9_000, behind)
    assert outcome == Reception.NEW and len(receiver) == 1
    assert receiver.review(start + 10_000, behind) == []
    cleared = receiver.review(start + 10_001, behind)
    assert [(w.state, w.reason) for w in cleared] == [(WarningState.CLEARED, "expired")]
    assert len(receiver) == 0


def test_receiver_table_is_bounded() -> None:
    receiver = DenmReceiver(max_events=2)
    now = its_time(T0)
    outcomes = [receiver.receive(received_denm(sequence=n), now, None)[0] for n in range(3)]
    assert outcomes == [Reception.NEW, Reception.NEW, Reception.TABLE_FULL]


@pytest.mark.parametrize(
    ("north_m", "heading", "direction", "relevant"),
    [
        (-150.0, 0.0, RelevanceTrafficDirection.UPSTREAM_TRAFFIC, True),  # approaching from behind
        (-600.0, 0.0, RelevanceTrafficDirection.UPSTREAM_TRAFFIC, False),  # beyond 500 m
        (150.0, 0.0, RelevanceTrafficDirection.UPSTREAM_TRAFFIC, False),  # already past it
        (150.0, 180.0, RelevanceTrafficDirection.UPSTREAM_TRAFFIC, False),  # oncoming
        (150.0, 180.0, RelevanceTrafficDirection.OPPOSITE_TRAFFIC, True),
        (-150.0, 0.0, RelevanceTrafficDirection.OPPOSITE_TRAFFIC, False),
        (150.0, 0.0, RelevanceTrafficDirection.DOWNSTREAM_TRAFFIC, True),
        (150.0, 90.0, RelevanceTrafficDirection.ALL_TRAFFIC_DIRECTIONS, True),
        (-10.0, 0.0, RelevanceTrafficDirection.UPSTREAM_TRAFFIC, True),  # at the event
    ],
)
def test_relevance_by_distance_and_direction(
    north_m: float, heading: float, direction: RelevanceTrafficDirection, relevant: bool
) -> None:
    receiver = DenmReceiver()
    denm = received_denm(direction=direction)
    _, warnings = receiver.receive(denm, its_time(T0), own_motion(north_m, heading))
    assert bool(warnings) == relevant


def test_relevance_is_judged_again_as_the_vehicle_moves() -> None:
    receiver = DenmReceiver()
    now = its_time(T0)
    _, warnings = receiver.receive(received_denm(validity_s=600), now, own_motion(-800.0))
    assert warnings == []
    raised = receiver.review(now + 1, own_motion(-400.0))
    assert [w.state for w in raised] == [WarningState.RAISED]
    assert receiver.review(now + 2, own_motion(-200.0)) == []
    passed = receiver.review(now + 3, own_motion(60.0))
    assert [(w.state, w.reason) for w in passed] == [(WarningState.CLEARED, "not_relevant")]


def test_warning_document() -> None:
    _, warnings = DenmReceiver().receive(received_denm(), its_time(T0), own_motion(-150.0))
    document = warnings[0].to_dict()
    assert document["state"] == "raised" and document["hazard"] == "dangerous_situation/1"
    assert (document["station"], document["sequence"], document["cause"]) == (9, 0, 99)
    assert document["valid_until"] == its_time(T0) + 10_000


# --------------------------------------------------------------------------- quadkeys and topics


def test_quadkeys_follow_the_bing_tile_system() -> None:
    assert Tile(3, 5, 3).quadkey == "213"  # the example of the Bing Maps tile system documentation
    assert Tile.from_quadkey("213") == Tile(3, 5, 3)
    assert quadkey(10.0, 10.0, 1) == "1" and quadkey(-10.0, -10.0, 1) == "2"
    assert quadkey(LAT0, LON0, 18).startswith(quadkey(LAT0, LON0, 14))
    assert Tile.at(0.0, 180.0, 5) == Tile.at(0.0, -180.0, 5)
    deep = Tile.at(LAT0, LON0, 23)
    assert Tile.from_quadkey(deep.quadkey) == deep


def test_tile_neighbours() -> None:
    centre = Tile.at(LAT0, LON0, 14)
    block = centre.neighbours()
    assert len(set(block)) == 9 and centre in block
    assert all(abs(t.x - centre.x) <= 1 and abs(t.y - centre.y) <= 1 for t in block)
    edge = Tile(0, 0, 4).neighbours()
    assert len(edge) == 6 and Tile(15, 0, 4) in edge and Tile(15, 1, 4) in edge


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Tile.at(86.0, 0.0, 5), "latitude 86.0 deg is outside"),
        (lambda: Tile.at(float("nan"), 0.0, 5), "not a finite number"),
        (lambda: Tile.at(0.0, 0.0, 24), "zoom level 24 is not an integer 1 .. 23"),
        (lambda: Tile.from_quadkey("124"), "is not 1 .. 23 digits 0-3"),
        (lambda: Tile(0, 0, 3).neighbours(-1), "radius -1"),
    ],
)
def test_quadkey_errors(call: Callable[[], object], message: str) -> None:
    with pytest.raises(QuadkeyError, match=message):
        call()


def test_distances_and_bearings() -> None:
    assert distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(math.radians(1.0) * EARTH_RADIUS_M)
    assert distance_m(*offset(0.0, 0.0), *offset(300.0, 400.0)) == pytest.approx(500.0, rel=1e-4)
    assert bearing_deg(*offset(0.0, 0.0), *offset(0.0, 100.0)) == pytest.approx(0.0, abs=1e-6)
    assert bearing_deg(*offset(0.0, 0.0), *offset(100.0, 0.0)) == pytest.approx(90.0, abs=0.01)


def test_tile_topics_match_the_subscriptions_around_the_vehicle() -> None:
    here = quadkey(LAT0, LON0, topics.PUBLISH_ZOOM)
    published = topics.tile_topic(topics.DENM, here)
    assert published == f"roadwave/v2x/v1/tile/denm/{'/'.join(here)}"
    centre = Tile.at(LAT0, LON0, topics.SUBSCRIBE_ZOOM)
    filters = [topics.tile_filter(t.quadkey) for t in centre.neighbours(topics.SUBSCRIBE_RADIUS)]
    assert sum(topic_matches_sub(f, published) for f in filters) == 1
    far = topics.tile_topic(topics.CAM, quadkey(LAT0 + 0.2, LON0, topics.PUBLISH_ZOOM))
    assert not any(topic_matches_sub(f, far) for f in filters)
    upload = topics.upload_topic("car-1", topics.CAM, here)
    assert topic_matches_sub(topics.UPLOAD_SUBSCRIPTION, upload)
    assert topics.parse_upload_topic(upload) == topics.UploadAddress("car-1", "cam", here)
    assert (
        topics.warning_topic("fleet1", "WVWZZZ1JZXW000001")
        == "roadwave/v1/fleet1/WVWZZZ1JZXW000001/v2x-warning"
    )


@pytest.mark.parametrize(
    "topic",
    [
        "roadwave/v2x/v1/up/car-1/cam",
        "roadwave/v2x/v1/up/car 1/cam/0123",
        "roadwave/v2x/v1/up/car-1/spam/0123",
        "roadwave/v2x/v1/up/car-1/cam/0124",
        "roadwave/v1/up/car-1/cam/0123",
    ],
)
def test_bad_upload_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        topics.parse_upload_topic(topic)


# --------------------------------------------------------------------------- transports and the stack


class MemoryLink(V2xTransport):
    """An in-process medium: a packet sent by one attached transport reaches all of them (sender too)."""

    name = "memory"

    def __init__(self, peers: list[MemoryLink]) -> None:
        super().__init__()
        self.peers = peers
        peers.append(self)
        self.sent: list[tuple[bytes, PacketRoute]] = []

    def _open(self) -> None:
        pass

    def _send(self, packet: bytes, route: PacketRoute) -> None:
        self.sent.append((packet, route))
        for peer in self.peers:
            peer._deliver(packet)

    def close(self) -> None:
        pass


def clock() -> int:
    return T0


def test_stack_sends_cams_and_denms_and_raises_warnings(tmp_path: Path) -> None:
    pcap_path = tmp_path / "b.pcap"
    peers: list[MemoryLink] = []
    warnings: list[object] = []
    with (
        PcapWriter(pcap_path, station_id=2) as pcap,
        V2xStack(V2xConfig(station_id=1), [MemoryLink(peers)], clock=clock) as a,
        V2xStack(
            V2xConfig(station_id=2), [MemoryLink(peers)], on_warning=warnings.append, pcap=pcap, clock=clock
        ) as b,
    ):
        b.on_record(motion_record(T0, 0.0, -150.0, 0.0, 20.0))
        a.on_record(motion_record(T0, 0.0, 0.0, 0.0, 20.0))
        a.tick(T0)
        b.tick(T0)
        a.on_event(event("emergency_braking", start_s=-0.5))
        a.tick(T0 + 100 * MS)  # a repetition
    assert [w.state for w in warnings] == [WarningState.RAISED]  # type: ignore[attr-defined]
    assert a.counters() == {"echoes.memory": 3, "received.cam": 1, "sent.cam": 1, "sent.denm": 2}
    assert b.counters() == {
        "denm.new": 1,
        "echoes.memory": 1,
        "received.cam": 1,
        "received.denm": 2,
        "rejected.denm_repetition": 1,
        "sent.cam": 1,
        "warnings.raised": 1,
    }
    assert [route.kind for _packet, route in peers[0].sent] == ["cam", "denm", "denm"]
    # b recorded its own CAM and the three packets it heard: 4 pcap records.
    assert len(read_pcap(pcap_path)[1]) == 4


def test_the_denm_goes_to_the_relevance_circle_and_vehicles_outside_drop_it() -> None:
    peers: list[MemoryLink] = []
    warnings: list[object] = []
    a = V2xStack(V2xConfig(station_id=1), [MemoryLink(peers)], clock=clock)
    far = V2xStack(V2xConfig(station_id=3), [MemoryLink(peers)], on_warning=warnings.append, clock=clock)
    far.on_record(motion_record(T0, 0.0, -700.0, 0.0, 20.0))
    a.on_record(motion_record(T0, 0.0, 0.0, 0.0, 20.0))
    a.on_event(event("emergency_braking", start_s=-0.5))
    packet = parse_packet(peers[0].sent[0][0])
    assert packet.body is not None
    area = packet.body.extended.area  # type: ignore[union-attr]
    assert (area.distance_a_m, area.latitude_deg) == (500, pytest.approx(LAT0, abs=1e-7))
    assert far.counters()["rejected.outside_area"] == 1 and warnings == []


def test_inside_area_shapes() -> None:
    circle = GeoArea.circle(LAT0, LON0, 100)
    assert inside_area(circle, *offset(60.0, 70.0)) and not inside_area(circle, *offset(80.0, 70.0))
    rectangle = GeoArea(
        shape=AreaShape.RECTANGLE,
        latitude_deg=LAT0,
        longitude_deg=LON0,
        distance_a_m=200,
        distance_b_m=10,
        angle_deg=90,  # the long side runs east-west
    )
    assert inside_area(rectangle, *offset(190.0, 5.0)) and not inside_area(rectangle, *offset(5.0, 190.0))
    ellipse = dataclasses.replace(rectangle, shape=AreaShape.ELLIPSE)
    assert inside_area(ellipse, *offset(190.0, 0.0)) and not inside_area(ellipse, *offset(190.0, 9.0))


def _shb(
    payload: bytes, port: int = BTP_PORT_CAM, station: int = 5, secure: Callable[[bytes], bytes] | None = None
) -> bytes:
    latitude, longitude = offset(0.0, 0.0)
    source = LongPositionVector(
        address=GnAddress.for_station(station, StationType.PASSENGER_CAR),
        timestamp_ms=0,
        latitude_deg=latitude,
        longitude_deg=longitude,
    )
    return build_shb(payload, source=source, destination_port=port, secure=secure)


def a_cam(station: int = 5) -> Cam:
    return Cam(
        station_id=station,
        station_type=StationType.PASSENGER_CAR,
        generation_delta_time=1,
        position=ReferencePosition(latitude_deg=LAT0, longitude_deg=LON0),
    )


def test_refused_packets_are_counted_by_reason() -> None:
    peers: list[MemoryLink] = []
    link = MemoryLink(peers)
    stack = V2xStack(V2xConfig(station_id=2), [MemoryLink(peers)], clock=clock)
    wrap = lambda body: b"\x03" + body  # noqa: E731 - a stand-in security envelope
    for packet in (
        b"\x11\x00",
        _shb(b"\x02\x02garbage"),
        _shb(encode_cam(a_cam()), port=9999),
        _shb(encode_cam(a_cam()), secure=wrap),
        _shb(encode_cam(a_cam())),
    ):
        link.send(packet, PacketRoute("cam", LAT0, LON0))
    assert stack.counters() == {
        "received.cam": 1,
        "rejected.btp_port": 1,
        "rejected.geonetworking": 1,
        "rejected.message": 1,
        "rejected.secured_without_verifier": 1,
    }


class Fleet:
    """A V2X root and a signed authorization ticket per station, valid around ``T0``."""

    def __init__(self) -> None:
        self.start_s = its_time(T0) // 1000 - 3600
        self.authority = generate_authority(Validity(self.start_s, 7 * 86400))
        self.config = SecurityConfig(trusted_authorities=[self.authority.certificate])

    def signer(self) -> Signer:
        key = ec.generate_private_key(ec.SECP256R1())
        return Signer(key, issue_ticket(self.authority, key.public_key(), Validity(self.start_s, 86400)))


def test_signed_cams_and_denms() -> None:
    fleet = Fleet()
    verifier = Verifier(fleet.config)
    peers: list[MemoryLink] = []
    warnings: list[object] = []
    a = V2xStack(V2xConfig(station_id=1), [MemoryLink(peers)], signer=fleet.signer(), clock=clock)
    b = V2xStack(
        V2xConfig(station_id=2),
        [MemoryLink(peers)],
        verifier=verifier,
        on_warning=warnings.append,
        clock=clock,
    )
    b.on_record(motion_record(T0, 0.0, -150.0, 0.0, 20.0))
    a.on_record(motion_record(T0, 0.0, 0.0, 0.0, 20.0))
    a.tick(T0)
    a.on_event(event("emergency_braking", start_s=-0.5))  # signed at the same instant as the CAM
    assert b.counters() == {"denm.new": 1, "received.cam": 1, "received.denm": 1, "warnings.raised": 1}
    assert verifier.counters["accepted"] == 2 and len(warnings) == 1
    radio = MemoryLink(peers)
    cam_packet, _denm_packet = (packet for packet, _route in peers[0].sent)
    radio.send(cam_packet, PacketRoute("cam", LAT0, LON0))  # the same signed CAM again
    forger = fleet.signer()

    def tampered(body: bytes) -> bytes:
        signed = forger.sign(body, 36, its_time(T0) * 1000 + 5)
        return signed[:-1] + bytes([signed[-1] ^ 1])  # a changed signature

    radio.send(_shb(encode_cam(a_cam()), secure=tampered), PacketRoute("cam", LAT0, LON0))
    radio.send(_shb(encode_cam(a_cam())), PacketRoute("cam", LAT0, LON0))
    counters = b.counters()
    assert counters["rejected.security_replay"] == 1
    assert counters["rejected.security_bad_signature"] == 1
    assert counters["rejected.security_unsigned"] == 1


def test_hearing_an_unknown_station_sends_the_full_ticket_in_the_next_cam() -> None:
    fleet = Fleet()
    peers: list[MemoryLink] = []
    b = V2xStack(
        V2xConfig(station_id=2),
        [MemoryLink(peers)],
        signer=fleet.signer(),
        verifier=Verifier(fleet.config),
        clock=clock,
    )
    newcomer = Verifier(fleet.config)  # has never seen b's ticket

    def cam_after(step: int) -> bytes:
        b.on_record(motion_record(T0 + step * 200 * MS, 0.0, 5.0 * step, 0.0, 20.0))
        b.tick(T0 + step * 200 * MS)
        return peers[0].sent[-1][0]

    def verifiable_by_newcomer(packet: bytes) -> bool:
        try:
            newcomer.verify(parse_packet(packet).secured, its_microseconds(T0 + 2000 * MS))  # type: ignore[arg-type]
        except V2xSecurityError as exc:
            assert exc.reason == "unknown_signer"
            return False
        return True

    cam_after(0)  # b's first CAM carries its ticket, and the next ones for a second only its digest
    assert not verifiable_by_newcomer(cam_after(1))
    other = fleet.signer()
    other.sign(b"first", 36, its_time(T0) * 1000)  # the ticket in full, heard by nobody
    digest_only = _shb(encode_cam(a_cam()), secure=lambda body: other.sign(body, 36, its_time(T0) * 1000 + 1))
    MemoryLink(peers).send(digest_only, PacketRoute("cam", LAT0, LON0))
    assert b.counters()["rejected.security_unknown_signer"] == 1
    assert verifiable_by_newcomer(cam_after(2))  # within the second, yet in full


def test_generation_location_elevation() -> None:
    assert generation_location(LAT0, LON0, 520.04).elevation == 5200
    assert generation_location(LAT0, LON0, -0.1).elevation == 0xFFFF
    assert generation_location(LAT0, LON0, -409.5).elevation == 0xF001
    assert generation_location(LAT0, LON0, None).elevation == 0xF000  # unknown
    assert generation_location(LAT0, LON0, -430.0).elevation == 0xF000  # below what it can hold
    assert generation_location(LAT0, LON0, 0.0).latitude == 481_370_000


def test_transport_settings_are_validated() -> None:
    with pytest.raises(TransportError, match="multicast group '10.0.0.1' is not in 224.0.0.0/4"):
        UdpMulticastTransport("10.0.0.1", 5000)
    with pytest.raises(TransportError, match="port 0 is not an integer 1 .. 65535"):
        UdpMulticastTransport("239.1.2.3", 0)
    with pytest.raises(TransportError, match="interface address 'lo' is not an IPv4 address"):
        UdpMulticastTransport("239.1.2.3", 5000, interface="lo")
    settings = MqttSettings()
    with pytest.raises(TransportError, match="sender: invalid V2X sender 'car 1'"):
        MqttRelayTransport(settings, "car 1")
    with pytest.raises(TransportError, match="sender: invalid V2X sender 'a/b'"):
        MqttRelayTransport(settings, "car-1", sender="a/b")
    with pytest.raises(TransportError, match="subscribe_zoom 19 is not an integer 1 .. 18"):
        MqttRelayTransport(settings, "car-1", subscribe_zoom=19)
    with pytest.raises(TransportError, match="radius"):
        MqttRelayTransport(settings, "car-1", radius=5)


def test_an_mqtt_transport_can_start_out_of_coverage() -> None:
    transport = MqttRelayTransport(MqttSettings(port=1), "car-1", connect_timeout_s=None)
    transport.open(lambda _packet: None)
    try:
        transport.on_position(LAT0, LON0)
        assert len(transport.tiles) == 9 and not transport.wait_subscribed(0.05)
        with pytest.raises(TransportError, match="cannot publish to roadwave/v2x/v1/up/car-1/cam/"):
            transport.send(b"packet", PacketRoute("cam", LAT0, LON0))
    finally:
        transport.close()


# --------------------------------------------------------------------------- the relay's check


def test_relay_forwards_valid_uploads_to_their_tile() -> None:
    here = quadkey(LAT0, LON0, topics.PUBLISH_ZOOM)
    packet = _shb(encode_cam(a_cam()))
    assert check_upload(topics.upload_topic("car-1", "cam", here), packet) == topics.tile_topic("cam", here)
    secured = _shb(encode_cam(a_cam()), secure=lambda body: b"opaque" + body)
    assert check_upload(topics.upload_topic("car-1", "cam", here), secured) == topics.tile_topic("cam", here)


@pytest.mark.parametrize(
    ("topic_kind", "packet_kind", "where", "size", "reason"),
    [
        ("cam", "cam", (LAT0 + 0.01, LON0), 4096, "tile"),
        ("denm", "cam", (LAT0, LON0), 4096, "kind"),
        ("cam", "garbage", (LAT0, LON0), 4096, "geonetworking"),
        ("cam", "bad-asn1", (LAT0, LON0), 4096, "message"),
        ("cam", "cam", (LAT0, LON0), 50, "too_large"),
    ],
)
def test_relay_refuses_bad_uploads(
    topic_kind: str, packet_kind: str, where: tuple[float, float], size: int, reason: str
) -> None:
    topic = topics.upload_topic("car-1", topic_kind, quadkey(*where, topics.PUBLISH_ZOOM))
    packet = {
        "cam": _shb(encode_cam(a_cam())),
        "garbage": b"\x11\x00\x00",
        "bad-asn1": _shb(b"\x02\x02\x00\x00\x00\x05\xff"),
    }[packet_kind]
    with pytest.raises(UploadRefused) as refused:
        check_upload(topic, packet, size)
    assert refused.value.reason == reason
    with pytest.raises(UploadRefused, match="topic"):
        check_upload("roadwave/v2x/v1/up/x", packet)


def test_a_gbc_denm_upload_is_checked_against_its_area_centre() -> None:
    denm = received_denm()
    latitude, longitude = offset(0.0, 0.0)
    source = LongPositionVector(
        address=GnAddress.for_station(9, StationType.PASSENGER_CAR),
        timestamp_ms=0,
        latitude_deg=latitude + 0.05,  # the sender has driven on: the event position routes the packet
        longitude_deg=longitude,
    )
    area = GeoArea.circle(latitude, longitude, 500)
    packet = build_gbc(encode_denm(denm), source=source, area=area, sequence_number=1)
    topic = topics.upload_topic("car-1", "denm", quadkey(latitude, longitude, topics.PUBLISH_ZOOM))
    assert check_upload(topic, packet).startswith("roadwave/v2x/v1/tile/denm/")
