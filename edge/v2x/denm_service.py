"""DENMs (ETSI EN 302 637-3 v1.3.1): announcing detected events, and receiving others'.

Originating side, :class:`DenmOriginator`: an event from ``edge.events`` becomes a new
DENM with its own actionID (this station, next sequence number) when it starts, is
repeated at the profile's interval, updated (same actionID, newer referenceTime) when
the vehicle that follows a moving event has moved on or before its validity runs out,
and cancelled (termination) when the event ends; the cancellation is repeated
:data:`TERMINATION_REPEATS` times.

Receiving side, :class:`DenmReceiver`: drops repetitions (same actionID and
referenceTime), older messages and expired events (detectionTime + validityDuration in
the past), applies updates, cancellations and negations, and judges relevance from the
distance to the event, the relevance distance and the traffic direction. It raises a
:class:`HazardWarning` when an event becomes relevant, updates it, and clears it when the
event ends, expires or stops being relevant.

Times: ``now_ns`` is Unix nanoseconds, converted to ``TimestampIts`` for the messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from edge.v2x.cam_service import MS, Motion, MotionTracker
from edge.v2x.model import (
    ActionId,
    CauseCode,
    Denm,
    DenmLocation,
    DenmManagement,
    DenmSituation,
    ReferencePosition,
    RelevanceDistance,
    RelevanceTrafficDirection,
    Termination,
)
from edge.v2x.quadkey import angle_between_deg, bearing_deg, distance_m
from edge.v2x.timebase import TimestampIts, timestamp_its_from_unix_ms
from roadwave.contract.events import ENDED, ONGOING, Event

#: Upper bound of each relevance distance class, in metres.
RELEVANCE_LIMIT_M = {
    RelevanceDistance.LESS_THAN_50_M: 50.0,
    RelevanceDistance.LESS_THAN_100_M: 100.0,
    RelevanceDistance.LESS_THAN_200_M: 200.0,
    RelevanceDistance.LESS_THAN_500_M: 500.0,
    RelevanceDistance.LESS_THAN_1000_M: 1000.0,
    RelevanceDistance.LESS_THAN_5_KM: 5000.0,
    RelevanceDistance.LESS_THAN_10_KM: 10000.0,
    RelevanceDistance.OVER_10_KM: math.inf,
}
#: informationQuality of every DENM roadwave sends (0 unavailable, 1 lowest .. 7 highest).
INFORMATION_QUALITY = 4
#: How often a cancellation is sent, at the event's repetition interval.
TERMINATION_REPEATS = 3
#: A moving event (queue end, jam) gets a new position once its vehicle is this far from it.
FOLLOW_DISTANCE_M = 100.0
#: Closer than this, an event is where the receiver is: neither ahead nor behind.
AT_EVENT_M = 20.0
#: Headings within this angle count as the same direction of travel.
SAME_DIRECTION_DEG = 45.0
#: Most events a receiver keeps at once; more are refused until some expire.
MAX_RECEIVED_EVENTS = 1000


@dataclass(frozen=True, kw_only=True)
class DenmProfile:
    """How one event type is announced."""

    cause_code: int
    sub_cause_code: int
    relevance_distance: RelevanceDistance
    traffic_direction: RelevanceTrafficDirection
    validity_s: int
    repetition_ms: int
    follows_vehicle: bool = False


_UPSTREAM = RelevanceTrafficDirection.UPSTREAM_TRAFFIC

#: Cause and sub-cause codes from ETSI TS 102 894-2; distances, directions, validities and
#: repetition intervals are roadwave choices (docs/v2x.md).
PROFILES: dict[str, DenmProfile] = {
    "emergency_braking": DenmProfile(  # dangerous situation / emergency electronic brake engaged
        cause_code=CauseCode.DANGEROUS_SITUATION,
        sub_cause_code=1,
        relevance_distance=RelevanceDistance.LESS_THAN_500_M,
        traffic_direction=_UPSTREAM,
        validity_s=10,
        repetition_ms=100,
    ),
    "forward_collision": DenmProfile(  # collision risk / longitudinal collision risk
        cause_code=CauseCode.COLLISION_RISK,
        sub_cause_code=1,
        relevance_distance=RelevanceDistance.LESS_THAN_200_M,
        traffic_direction=_UPSTREAM,
        validity_s=10,
        repetition_ms=100,
    ),
    "stationary_vehicle": DenmProfile(  # stationary vehicle / cause unavailable
        cause_code=CauseCode.STATIONARY_VEHICLE,
        sub_cause_code=0,
        relevance_distance=RelevanceDistance.LESS_THAN_500_M,
        traffic_direction=_UPSTREAM,
        validity_s=60,
        repetition_ms=1000,
    ),
    "end_of_queue": DenmProfile(  # dangerous end of queue / sudden end of queue
        cause_code=CauseCode.DANGEROUS_END_OF_QUEUE,
        sub_cause_code=1,
        relevance_distance=RelevanceDistance.LESS_THAN_1000_M,
        traffic_direction=_UPSTREAM,
        validity_s=20,
        repetition_ms=500,
        follows_vehicle=True,
    ),
    "traffic_jam": DenmProfile(  # traffic condition / trend unavailable
        cause_code=CauseCode.TRAFFIC_CONDITION,
        sub_cause_code=0,
        relevance_distance=RelevanceDistance.LESS_THAN_1000_M,
        traffic_direction=_UPSTREAM,
        validity_s=60,
        repetition_ms=1000,
        follows_vehicle=True,
    ),
}


def its_time(unix_ns: int) -> TimestampIts:
    """TimestampIts of a Unix time in nanoseconds."""
    return timestamp_its_from_unix_ms(unix_ns // MS)


# --------------------------------------------------------------------------- originating side


@dataclass(slots=True)
class _Announcement:
    """An event this station announces, and the DENM it repeats."""

    profile: DenmProfile
    denm: Denm
    detection_ns: int
    last_sent_ns: int
    terminations_left: int | None = None  # counts down once the event has ended


class DenmOriginator:
    """Turns events into DENMs; ``poll`` returns repetitions and updates due."""

    def __init__(
        self,
        station_id: int,
        station_type: int,
        motion: MotionTracker,
        profiles: dict[str, DenmProfile] | None = None,
    ) -> None:
        self.station_id = station_id
        self.station_type = station_type
        self.motion = motion
        self.profiles = PROFILES if profiles is None else profiles
        self._announced: dict[str, _Announcement] = {}
        self._next_sequence = 0

    def on_event(self, event: Event, now_ns: int) -> Denm | None:
        """The DENM to send now for an event update, or None (no profile, unknown position)."""
        profile = self.profiles.get(event.kind)
        if profile is None:
            return None
        announced = self._announced.get(event.id)
        if announced is None:
            return self._new(event, profile, now_ns) if event.state == ONGOING else None
        if announced.terminations_left is not None:
            return None  # already cancelled
        if event.state == ONGOING:
            return self._update(announced, now_ns, _position(event.position, self.motion.current))
        if event.state == ENDED:
            return self._terminate(announced, now_ns if event.end_ns is None else event.end_ns, now_ns)
        return None

    def poll(self, now_ns: int) -> list[Denm]:
        """The DENMs due at ``now_ns``: repetitions, updates and repeated cancellations."""
        due: list[Denm] = []
        for key, announced in list(self._announced.items()):
            profile = announced.profile
            if announced.terminations_left is not None:
                if announced.terminations_left <= 0:
                    del self._announced[key]
                elif now_ns - announced.last_sent_ns >= profile.repetition_ms * MS:
                    due.append(self._send(announced, announced.denm, now_ns))
                    announced.terminations_left -= 1
                continue
            if self._needs_update(announced, now_ns):
                motion = self.motion.current
                moved = _position(None, motion) if profile.follows_vehicle else None
                due.append(self._update(announced, now_ns, moved))
            elif now_ns - announced.last_sent_ns >= profile.repetition_ms * MS:
                due.append(self._send(announced, announced.denm, now_ns))
        return due

    def _needs_update(self, announced: _Announcement, now_ns: int) -> bool:
        if now_ns - announced.detection_ns >= announced.profile.validity_s * 1000 * MS // 2:
            return True  # renew the validity before receivers drop the event
        motion = self.motion.current
        if not announced.profile.follows_vehicle or motion is None:
            return False
        where = announced.denm.management.event_position
        assert where.latitude_deg is not None and where.longitude_deg is not None
        moved = distance_m(where.latitude_deg, where.longitude_deg, motion.latitude_deg, motion.longitude_deg)
        return moved >= FOLLOW_DISTANCE_M

    def _new(self, event: Event, profile: DenmProfile, now_ns: int) -> Denm | None:
        position = _position(event.position, self.motion.current)
        if position is None:
            return None
        action_id = ActionId(self.station_id, self._next_sequence)
        self._next_sequence = (self._next_sequence + 1) % 65536
        denm = self._denm(profile, action_id, event.detected_ns, its_time(now_ns), position)
        announced = _Announcement(profile, denm, event.detected_ns, now_ns)
        self._announced[event.id] = announced
        return self._send(announced, denm, now_ns)

    def _update(self, announced: _Announcement, now_ns: int, position: ReferencePosition | None) -> Denm:
        management = announced.denm.management
        denm = self._denm(
            announced.profile,
            management.action_id,
            now_ns,
            self._reference_time(management, now_ns),
            management.event_position if position is None else position,
        )
        announced.detection_ns = now_ns
        return self._send(announced, denm, now_ns)

    def _terminate(self, announced: _Announcement, end_ns: int, now_ns: int) -> Denm:
        management = announced.denm.management
        denm = Denm(
            station_id=self.station_id,
            management=DenmManagement(
                action_id=management.action_id,
                detection_time=its_time(end_ns),
                reference_time=self._reference_time(management, now_ns),
                event_position=management.event_position,
                station_type=self.station_type,
                termination=Termination.IS_CANCELLATION,
                relevance_distance=management.relevance_distance,
                relevance_traffic_direction=management.relevance_traffic_direction,
                validity_duration_s=management.validity_duration_s,
                transmission_interval_ms=management.transmission_interval_ms,
            ),
        )
        announced.terminations_left = TERMINATION_REPEATS - 1
        return self._send(announced, denm, now_ns)

    @staticmethod
    def _reference_time(management: DenmManagement, now_ns: int) -> TimestampIts:
        """A referenceTime after the previous one, so that receivers take it as new."""
        return max(its_time(now_ns), management.reference_time + 1)

    @staticmethod
    def _send(announced: _Announcement, denm: Denm, now_ns: int) -> Denm:
        announced.denm, announced.last_sent_ns = denm, now_ns
        return denm

    def _denm(
        self,
        profile: DenmProfile,
        action_id: ActionId,
        detection_ns: int,
        reference_time: TimestampIts,
        position: ReferencePosition,
    ) -> Denm:
        assert position.latitude_deg is not None and position.longitude_deg is not None
        motion = self.motion.current
        trace = self.motion.path(
            position.latitude_deg, position.longitude_deg, position.altitude_m, detection_ns
        )
        speed = None if motion is None or motion.speed_mps is None else abs(motion.speed_mps)
        return Denm(
            station_id=self.station_id,
            management=DenmManagement(
                action_id=action_id,
                detection_time=its_time(detection_ns),
                reference_time=reference_time,
                event_position=position,
                station_type=self.station_type,
                relevance_distance=profile.relevance_distance,
                relevance_traffic_direction=profile.traffic_direction,
                validity_duration_s=profile.validity_s,
                transmission_interval_ms=profile.repetition_ms,
            ),
            situation=DenmSituation(
                information_quality=INFORMATION_QUALITY,
                cause_code=profile.cause_code,
                sub_cause_code=profile.sub_cause_code,
            ),
            location=DenmLocation(
                traces=(trace,),
                event_speed_mps=speed,
                event_heading_deg=None if motion is None else motion.heading_deg,
            ),
        )


def _position(event_position: tuple[float, float] | None, motion: Motion | None) -> ReferencePosition | None:
    """The event's position (else the vehicle's), with the vehicle's altitude."""
    altitude = None if motion is None else motion.altitude_m
    if event_position is not None:
        latitude, longitude = event_position
        return ReferencePosition(latitude_deg=latitude, longitude_deg=longitude, altitude_m=altitude)
    if motion is None:
        return None
    return ReferencePosition(
        latitude_deg=motion.latitude_deg, longitude_deg=motion.longitude_deg, altitude_m=altitude
    )


# --------------------------------------------------------------------------- receiving side


class Reception(StrEnum):
    """What the receiver did with a DENM; the last group are reasons to drop it."""

    NEW = "new"
    UPDATE = "update"
    CANCELLED = "cancelled"
    NEGATED = "negated"
    REPETITION = "repetition"
    OUTDATED = "outdated"
    EXPIRED = "expired"
    UNKNOWN_TERMINATION = "unknown_termination"
    FOREIGN_CANCELLATION = "foreign_cancellation"
    AFTER_TERMINATION = "after_termination"
    TABLE_FULL = "table_full"


ACCEPTED = frozenset({Reception.NEW, Reception.UPDATE, Reception.CANCELLED, Reception.NEGATED})


class WarningState(StrEnum):
    RAISED = "raised"
    UPDATED = "updated"
    CLEARED = "cleared"


@dataclass(frozen=True, kw_only=True)
class HazardWarning:
    """An in-vehicle warning about a received event.

    ``reason`` says why a warning is cleared: ``cancelled``, ``negated``, ``expired`` or
    ``not_relevant``. ``distance_m`` is None when the vehicle's own position is unknown.
    """

    state: WarningState
    action_id: ActionId
    cause_code: int | None
    sub_cause_code: int | None
    latitude_deg: float | None
    longitude_deg: float | None
    distance_m: float | None
    detection_time: TimestampIts
    reference_time: TimestampIts
    valid_until: TimestampIts
    reason: str | None = None

    @property
    def hazard(self) -> str:
        """The cause in words, e.g. ``dangerous_situation/1``."""
        if self.cause_code is None:
            return "unknown"
        try:
            name = CauseCode(self.cause_code).name.lower()
        except ValueError:
            name = f"cause_{self.cause_code}"
        return f"{name}/{self.sub_cause_code}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready document, for the vehicle's warning topic."""
        return {
            "state": str(self.state),
            "station": self.action_id.originating_station_id,
            "sequence": self.action_id.sequence_number,
            "hazard": self.hazard,
            "cause": self.cause_code,
            "sub_cause": self.sub_cause_code,
            "lat": self.latitude_deg,
            "lon": self.longitude_deg,
            "distance_m": None if self.distance_m is None else round(self.distance_m, 1),
            "detection_time": self.detection_time,
            "reference_time": self.reference_time,
            "valid_until": self.valid_until,
            "reason": self.reason,
        }


@dataclass(slots=True)
class _Known:
    """A received event: its latest DENM (the last before a termination), the latest
    referenceTime, whether it ended and whether a warning is up."""

    denm: Denm
    reference_time: TimestampIts
    valid_until: TimestampIts
    terminated: bool = False
    warned: bool = False


def valid_until(management: DenmManagement) -> TimestampIts:
    return management.detection_time + 1000 * management.validity_duration_s


def relevance(denm: Denm, motion: Motion | None) -> tuple[bool, float | None]:
    """Whether an event concerns a vehicle moving as ``motion``, and how far away it is.

    Without the vehicle's position (or heading) the event counts as relevant: the radio
    range or destination area already bounded who received it. Without an event position
    it does not: nobody can tell where the hazard is.
    """
    where = denm.management.event_position
    if where.latitude_deg is None or where.longitude_deg is None:
        return False, None
    if motion is None:
        return True, None
    distance = distance_m(motion.latitude_deg, motion.longitude_deg, where.latitude_deg, where.longitude_deg)
    limit = denm.management.relevance_distance
    if limit is not None and distance > RELEVANCE_LIMIT_M[limit]:
        return False, distance
    direction = denm.management.relevance_traffic_direction
    heading = motion.heading_deg
    if direction in (None, RelevanceTrafficDirection.ALL_TRAFFIC_DIRECTIONS) or heading is None:
        return True, distance
    event_heading = None if denm.location is None else denm.location.event_heading_deg
    if direction == RelevanceTrafficDirection.OPPOSITE_TRAFFIC:
        opposite = (
            event_heading is None or angle_between_deg(heading, event_heading + 180.0) <= SAME_DIRECTION_DEG
        )
        return opposite, distance
    if event_heading is not None and angle_between_deg(heading, event_heading) > SAME_DIRECTION_DEG:
        return False, distance
    if distance < AT_EVENT_M:
        return True, distance
    bearing = bearing_deg(motion.latitude_deg, motion.longitude_deg, where.latitude_deg, where.longitude_deg)
    ahead = angle_between_deg(bearing, heading) < 90.0
    return ahead == (direction == RelevanceTrafficDirection.UPSTREAM_TRAFFIC), distance


class DenmReceiver:
    """The receiving side's table of events, by actionID (not thread-safe: the stack locks)."""

    def __init__(self, max_events: int = MAX_RECEIVED_EVENTS) -> None:
        self.max_events = max_events
        self._events: dict[ActionId, _Known] = {}

    def __len__(self) -> int:
        return len(self._events)

    def receive(
        self, denm: Denm, now: TimestampIts, motion: Motion | None
    ) -> tuple[Reception, list[HazardWarning]]:
        """Apply one received DENM; returns what was done and the warnings it changed."""
        management = denm.management
        until = valid_until(management)
        if until < now:
            return Reception.EXPIRED, []
        termination = management.termination
        if termination == Termination.IS_CANCELLATION and (
            denm.station_id != management.action_id.originating_station_id
        ):
            return Reception.FOREIGN_CANCELLATION, []
        known = self._events.get(management.action_id)
        if known is None:
            if termination is not None:
                return Reception.UNKNOWN_TERMINATION, []
            if len(self._events) >= self.max_events:
                return Reception.TABLE_FULL, []
            known = self._events[management.action_id] = _Known(denm, management.reference_time, until)
            return Reception.NEW, self._judge(known, motion)
        if management.reference_time < known.reference_time:
            return Reception.OUTDATED, []
        if management.reference_time == known.reference_time:
            return Reception.REPETITION, []
        if known.terminated:
            return Reception.AFTER_TERMINATION, []
        known.reference_time, known.valid_until = management.reference_time, until
        if termination is None:
            known.denm = denm
            return Reception.UPDATE, self._judge(known, motion)
        known.terminated = True
        cancelled = termination == Termination.IS_CANCELLATION
        reason = Reception.CANCELLED if cancelled else Reception.NEGATED
        return reason, self._clear(known, str(reason), motion)

    def review(self, now: TimestampIts, motion: Motion | None) -> list[HazardWarning]:
        """Forget expired events and judge the others again for the vehicle's new motion."""
        warnings: list[HazardWarning] = []
        for action_id, known in list(self._events.items()):
            if known.valid_until < now:
                del self._events[action_id]
                if not known.terminated:
                    warnings.extend(self._clear(known, "expired", motion))
            elif not known.terminated:
                warnings.extend(self._judge(known, motion, review=True))
        return warnings

    def _judge(self, known: _Known, motion: Motion | None, review: bool = False) -> list[HazardWarning]:
        relevant, distance = relevance(known.denm, motion)
        if relevant and not known.warned:
            known.warned = True
            return [_warning(known, WarningState.RAISED, distance)]
        if relevant and not review:
            return [_warning(known, WarningState.UPDATED, distance)]
        if not relevant and known.warned:
            known.warned = False
            return [_warning(known, WarningState.CLEARED, distance, "not_relevant")]
        return []

    @staticmethod
    def _clear(known: _Known, reason: str, motion: Motion | None) -> list[HazardWarning]:
        if not known.warned:
            return []
        known.warned = False
        return [_warning(known, WarningState.CLEARED, relevance(known.denm, motion)[1], reason)]


def _warning(
    known: _Known, state: WarningState, distance: float | None, reason: str | None = None
) -> HazardWarning:
    denm = known.denm
    management = denm.management
    situation = denm.situation
    return HazardWarning(
        state=state,
        action_id=management.action_id,
        cause_code=None if situation is None else situation.cause_code,
        sub_cause_code=None if situation is None else situation.sub_cause_code,
        latitude_deg=management.event_position.latitude_deg,
        longitude_deg=management.event_position.longitude_deg,
        distance_m=distance,
        detection_time=management.detection_time,
        reference_time=known.reference_time,
        valid_until=known.valid_until,
        reason=reason,
    )
