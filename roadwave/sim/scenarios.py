"""Scripted single-vehicle drives with ground-truth event labels, sent as real CAN frames.

A :class:`Scenario` holds the true state of one vehicle every 10 ms (:class:`Track`),
the physical value of every DBC signal derived from it, with sensor noise, the events
that truly happen (:class:`Label`), and faults: frames dropped (the decoder then marks
the samples stale) or sent with a wrong checksum and bogus values (integrity failures).
:func:`scenario_frames` encodes them with the DBC exactly as the fleet simulator does
(quantisation, rolling counters, checksums), so detectors evaluated on them go
through the whole decoding path.

Labels come from the event definitions applied to the true, noise-free, 10 ms signals
(:func:`ground_truth`); detectors see noisy, quantised, throttled and sometimes corrupt
samples. Scripts size their manoeuvres from the thresholds of an
:class:`~edge.events.config.EventsConfig`: events clear a threshold by 8 % or more,
near misses stay 12 % or more under it. ``Scenario.expected`` states what a script
means to contain, so a test can check it against the labels.

Only the messages the event detectors read are sent (:data:`MESSAGES`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import can
import cantools.database
import numpy as np

from edge.events.config import DetectorSettings, EventsConfig
from edge.events.primitives import Threshold
from roadwave.sim.fleet import DEFAULT_DBC, MessagePlan, encode_frame, plan_messages
from roadwave.sim.vehicle import EARTH_RADIUS_M, RingSite, VehicleModel, VehicleParameters

STEP_S = 0.01
STEP_MS = 10
#: Epoch time of a scenario's first frame: 2026-01-01T00:00:00Z.
START_TIME = 1_767_225_600.0
#: The messages sent: every one carrying a signal the event detectors read.
MESSAGES = (
    "ESP_Speed", "ESP_Dynamics", "BRK_Status", "ENG_Status",
    "RDR_LeadObject", "CAM_Lane", "BDY_Status", "GNSS_Position", "GNSS_Course",
)  # fmt: skip
#: Standard deviation of the sensor noise per DBC signal (DBC units) at noise scale 1.
NOISE_SIGMA = {
    "VehicleSpeed": 0.1,
    "LongitudinalAccel": 0.08,
    "LateralAccel": 0.08,
    "YawRate": 0.1,
    "LeadRange": 0.1,
    "LeadRangeRate": 0.1,
    "LaneLateralOffset": 0.02,
}
GROUPS = ("event", "near_miss", "noise", "fault", "uneventful")
#: Response time of the commanded acceleration (first-order lag).
ACCEL_LAG_S = 0.15
STANDSTILL_GAP_M = 2.0
LANE_WIDTH_M = 3.5
#: Lateral wander in the lane: standard deviation (m) and correlation time (s).
WANDER_M, WANDER_S = 0.06, 4.0
VEHICLE = VehicleParameters()


@dataclass(frozen=True, slots=True)
class Label:
    """An event that truly happens: from when its definition is met to when it ends (s)."""

    kind: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Fault:
    """Frames of ``message`` within [start_s, end_s): dropped (``values`` None), or sent
    with these signal values and a wrong checksum."""

    message: str
    start_s: float
    end_s: float
    values: Mapping[str, float] | None = None


# --- the true state ------------------------------------------------------------------------


class Profile:
    """A speed profile: phases of commanded acceleration, followed with a short lag."""

    def __init__(self, speed_kmh: float) -> None:
        self.start_mps = speed_kmh / 3.6
        self._mps = self.start_mps  # planned speed at the end of the phases so far
        self.t = 0.0  # planned duration so far (s)
        self._phases: list[tuple[float, float]] = []

    @property
    def kmh(self) -> float:
        """Planned speed at the end of the phases so far."""
        return self._mps * 3.6

    def hold(self, seconds: float, accel: float = 0.0) -> Profile:
        """Command ``accel`` (m/s^2) for ``seconds``; the speed does not go below 0."""
        self._phases.append((seconds, accel))
        self.t += seconds
        self._mps = max(0.0, self._mps + accel * seconds)
        return self

    def to(self, speed_kmh: float, rate: float) -> Profile:
        """Accelerate or brake at ``rate`` (m/s^2, positive) to ``speed_kmh``."""
        delta = speed_kmh / 3.6 - self._mps
        return self.hold(abs(delta) / rate, math.copysign(rate, delta))

    def follow(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Speed (m/s) and acceleration at ``steps`` steps of 10 ms."""
        command = np.zeros(steps)
        edges = np.cumsum([0.0, *(seconds for seconds, _ in self._phases)])
        for (_, rate), begin, end in zip(self._phases, edges[:-1], edges[1:], strict=True):
            command[round(begin / STEP_S) : round(end / STEP_S)] = rate
        speed, accel = np.empty(steps), np.empty(steps)
        weight = 1.0 - math.exp(-STEP_S / ACCEL_LAG_S)
        v, a = self.start_mps, 0.0
        for i, target in enumerate(command.tolist()):
            a += (target - a) * weight
            if v <= 0.0 and a < 0.0:
                a = 0.0  # standing: brakes hold, nothing moves
            v = max(0.0, v + a * STEP_S)
            speed[i], accel[i] = v, a
        return speed, accel


def smooth(t: np.ndarray, start_s: float, duration_s: float, before: float, after: float) -> np.ndarray:
    """``before`` until ``start_s``, a cosine transition over ``duration_s``, then ``after``."""
    x = np.clip((t - start_s) / duration_s, 0.0, 1.0)
    return before + (after - before) * (1.0 - np.cos(np.pi * x)) / 2.0


def pulse(t: np.ndarray, start_s: float, ramp_s: float, hold_s: float, height: float) -> np.ndarray:
    """0, a smooth rise to ``height`` over ``ramp_s``, held ``hold_s``, a smooth fall back."""
    rise = smooth(t, start_s, ramp_s, 0.0, height)
    fall = smooth(t, start_s + ramp_s + hold_s, ramp_s, 0.0, height)
    return rise - fall


@dataclass
class Track:
    """The true state of the vehicle and its surroundings every 10 ms (SI units).

    The lane offset is positive to the left of the lane centre; ``lead_rate`` is the
    rate of change of the gap, negative while closing in.
    """

    speed: np.ndarray
    accel: np.ndarray
    t: np.ndarray = field(init=False)
    lateral: np.ndarray = field(init=False)
    lead_valid: np.ndarray = field(init=False)
    lead_gap: np.ndarray = field(init=False)
    lead_rate: np.ndarray = field(init=False)
    lane_offset: np.ndarray = field(init=False)
    lane_width: np.ndarray = field(init=False)
    left: np.ndarray = field(init=False)
    right: np.ndarray = field(init=False)
    hazard: np.ndarray = field(init=False)
    park: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.speed)
        self.t = np.arange(n) * STEP_S
        for name in ("lateral", "lead_gap", "lead_rate", "lane_offset"):
            setattr(self, name, np.zeros(n))
        for name in ("lead_valid", "left", "right", "hazard", "park"):
            setattr(self, name, np.zeros(n, dtype=bool))
        self.lane_width = np.full(n, LANE_WIDTH_M)

    @classmethod
    def of(cls, profile: Profile, tail_s: float = 0.0) -> Track:
        """The track of a speed profile, ``tail_s`` longer than its phases."""
        return cls(*profile.follow(round((profile.t + tail_s) / STEP_S)))

    @property
    def duration_s(self) -> float:
        return len(self.t) * STEP_S

    @property
    def kmh(self) -> np.ndarray:
        return self.speed * 3.6

    def window(self, start_s: float, end_s: float = math.inf) -> np.ndarray:
        """Steps within [start_s, end_s)."""
        return (self.t >= start_s - 1e-9) & (self.t < end_s - 1e-9)

    def set_lead(self, start_s: float, end_s: float, gap: np.ndarray) -> None:
        """A lead vehicle ``gap`` (whole-track array) ahead within [start_s, end_s)."""
        inside = self.window(start_s, end_s)
        self.lead_gap[inside] = gap[inside]
        self.lead_rate[inside] = np.gradient(gap[inside], STEP_S)
        self.lead_valid[inside] = gap[inside] <= VehicleModel.RADAR_VALID_RANGE_M

    def follow(self, start_s: float, end_s: float, headway_s: float | np.ndarray) -> None:
        """A lead vehicle at a time headway (s, or an array over the whole track)."""
        self.set_lead(start_s, end_s, STANDSTILL_GAP_M + headway_s * self.speed)

    def lead_driving(self, start_s: float, end_s: float, gap_m: float, lead: Profile) -> None:
        """A lead vehicle ``gap_m`` ahead at ``start_s``, driving profile ``lead`` (from t = 0)."""
        lead_speed, _ = lead.follow(len(self.t))
        inside = self.window(start_s)
        relative = np.where(inside, lead_speed - self.speed, 0.0)
        self.set_lead(start_s, end_s, gap_m + np.cumsum(relative) * STEP_S)

    def lane_change(self, start_s: float, duration_s: float, left: bool, signal: bool) -> None:
        """Cross into the next lane; with ``signal``, the indicator is on from 2 s before to mid-way."""
        width = LANE_WIDTH_M if left else -LANE_WIDTH_M
        y = smooth(self.t, start_s, duration_s, 0.0, width)
        self.lane_offset += np.where(np.abs(y) > LANE_WIDTH_M / 2, y - width, y)
        if signal:
            lever = self.left if left else self.right
            lever[self.window(start_s - 2.0, start_s + duration_s / 2 + 0.5)] = True

    def wander(self, rng: np.random.Generator) -> None:
        """Add the driver's lateral wander in the lane (an Ornstein-Uhlenbeck process)."""
        decay = math.exp(-STEP_S / WANDER_S)
        kicks = rng.normal(0.0, WANDER_M * math.sqrt(1.0 - decay * decay), len(self.t))
        state = rng.normal(0.0, WANDER_M)
        wander = np.empty(len(self.t))
        for i, kick in enumerate(kicks.tolist()):
            state = state * decay + kick
            wander[i] = state
        self.lane_offset += wander


@dataclass(frozen=True)
class Placement:
    """Where a scenario's drive starts and the heading it starts on (degrees clockwise from north)."""

    latitude_deg: float = RingSite().centre_lat
    longitude_deg: float = RingSite().centre_lon
    heading_deg: float | None = None  # None: a random heading
    altitude_m: float = 120.0


def _course(
    track: Track, rng: np.random.Generator, placement: Placement
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitude, longitude and heading (degrees): dead reckoning from the placement."""
    start = (
        rng.uniform(0.0, 2 * math.pi)
        if placement.heading_deg is None
        else math.radians(placement.heading_deg)
    )
    yaw_rate = np.where(track.speed > 0.5, track.lateral / np.maximum(track.speed, 0.5), 0.0)
    heading = start - np.cumsum(yaw_rate) * STEP_S  # a left turn (positive lateral) turns anticlockwise
    north = np.cumsum(track.speed * np.cos(heading)) * STEP_S
    east = np.cumsum(track.speed * np.sin(heading)) * STEP_S
    latitude = placement.latitude_deg + np.degrees(north / EARTH_RADIUS_M)
    longitude = placement.longitude_deg + np.degrees(
        east / (EARTH_RADIUS_M * math.cos(math.radians(placement.latitude_deg)))
    )
    return latitude, longitude, np.degrees(heading) % 360.0


def dbc_signals(
    track: Track, rng: np.random.Generator, noise: float = 1.0, placement: Placement = Placement()
) -> dict[str, list[float | str]]:
    """The physical value of every signal of :data:`MESSAGES` every 10 ms, with sensor noise."""
    n, p = len(track.t), VEHICLE
    speed, accel = track.speed, track.accel
    moving = speed > 0.05

    def noisy(name: str, values: np.ndarray) -> np.ndarray:
        return values + rng.normal(0.0, NOISE_SIGMA[name] * noise, n)

    friction = np.clip(-accel - p.engine_brake_decel, 0.0, None)
    holding = ~moving & ~track.park
    kmh = track.kmh
    latitude, longitude, heading = _course(track, rng, placement)
    columns: dict[str, np.ndarray] = {
        "VehicleSpeed": np.where(moving, np.maximum(noisy("VehicleSpeed", kmh), 0.0), 0.0),
        "LongitudinalAccel": noisy("LongitudinalAccel", accel),
        "LateralAccel": noisy("LateralAccel", track.lateral),
        "YawRate": noisy("YawRate", np.degrees(track.lateral / np.maximum(speed, 0.5)) * moving),
        "ABSActive": (moving & (-accel > p.abs_decel)).astype(float),
        "BrakePedalPosition": np.where(holding, p.hold_brake_pct, friction * p.brake_pedal_pct_per_mps2),
        "BrakePressure": np.where(holding, p.hold_brake_bar, friction * p.brake_bar_per_mps2),
        "EngineSpeed": p.idle_rpm + 30.0 * np.minimum(kmh, 120.0),
        "AcceleratorPedal": np.clip(100.0 * accel / p.full_throttle_accel, 0.0, 100.0),
        "GearCurrent": np.where(track.park, 0, 1 + np.minimum(kmh // 25, 5)),
        "LeadValid": track.lead_valid.astype(float),
        "LeadRange": np.where(track.lead_valid, noisy("LeadRange", track.lead_gap), 0.0),
        "LeadRangeRate": np.where(track.lead_valid, noisy("LeadRangeRate", track.lead_rate), 0.0),
        "LeadAzimuth": np.zeros(n),
        "LeadWidth": np.full(n, p.width_m),
        "LaneLateralOffset": noisy("LaneLateralOffset", track.lane_offset),
        "LaneWidth": track.lane_width,
        "TurnSignalLeft": track.left.astype(float),
        "TurnSignalRight": track.right.astype(float),
        "HazardLights": track.hazard.astype(float),
        "Odometer": rng.uniform(5_000.0, 150_000.0) + np.cumsum(speed) * STEP_S / 1000.0,
        "Latitude": latitude,
        "Longitude": longitude,
        "Heading": heading,
        "Altitude": np.full(n, placement.altitude_m),
    }
    signals: dict[str, list[float | str]] = {name: values.tolist() for name, values in columns.items()}
    signals["GearSelected"] = ["P" if parked else "D" for parked in track.park.tolist()]
    return signals


# --- ground truth ----------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [begin, end) step ranges where ``mask`` is true."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _recently(mask: np.ndarray, within_s: float) -> np.ndarray:
    """True where ``mask`` was true at some step within the last ``within_s``."""
    steps = round(within_s / STEP_S)
    count = np.cumsum(mask.astype(np.int64))
    before = np.concatenate((np.zeros(steps + 1, dtype=np.int64), count))[: len(count)]
    return (count - before) > 0


def _lasting(mask: np.ndarray, min_s: float) -> np.ndarray:
    """True where ``mask`` has been true without a break for ``min_s``."""
    lasting = np.zeros_like(mask)
    steps = round(min_s / STEP_S)
    for begin, end in _runs(mask):
        lasting[begin + steps : end] = True
    return lasting


def _mean_over(values: np.ndarray, window_s: float) -> np.ndarray:
    """Mean over the last ``window_s``; NaN until a whole window has passed."""
    steps = round(window_s / STEP_S)
    total = np.concatenate(([0.0], np.cumsum(values)))
    mean = np.full(len(values), np.nan)
    mean[steps - 1 :] = (total[steps:] - total[:-steps]) / steps
    return mean


def _levels(measure: np.ndarray, s: DetectorSettings) -> tuple[np.ndarray, np.ndarray]:
    """Where ``measure`` reaches the threshold, and where it is not yet released."""
    threshold = Threshold(s.threshold, s.hysteresis, s.rising)
    with np.errstate(invalid="ignore"):
        if threshold.rising:
            return measure >= threshold.level, measure >= threshold.release_level
        return measure <= threshold.level, measure <= threshold.release_level


def _intervals(
    t: np.ndarray, levels: tuple[np.ndarray, np.ndarray], gate: np.ndarray, s: DetectorSettings
) -> list[Label]:
    """Events of one definition: reached with the gate for the minimum duration, until released."""
    reached, held = levels
    steps = round(s.min_duration_s / STEP_S)
    starts = [begin + steps for begin, end in _runs(reached & gate) if begin + steps < end]
    labels = []
    for begin, end in _runs(held):
        inside = [start for start in starts if begin <= start < end]
        if inside:
            labels.append(Label(s.kind, float(t[inside[0]]), float(t[end - 1])))
    return labels


def ground_truth(track: Track, config: EventsConfig) -> tuple[Label, ...]:
    """Every event of ``config``'s enabled detectors in the true signals, by start time."""
    c, kmh = config, track.kmh
    valid, gap = track.lead_valid, track.lead_gap
    closing = -track.lead_rate
    fcw = c.forward_collision
    with np.errstate(divide="ignore", invalid="ignore"):
        ttc = np.where(valid & (closing > 0) & (closing >= fcw.min_closing_speed_mps), gap / closing, np.inf)
        headway = np.where(valid & (track.speed > 0), gap / track.speed, np.inf)
    lane = c.lane_departure
    excess = np.abs(track.lane_offset) + lane.vehicle_width_m / 2 - track.lane_width / 2
    no_signal = ~_recently(track.left | track.right, lane.indicator_hold_s)
    stopped = c.stationary_vehicle
    in_lane = (kmh <= stopped.threshold) & ~track.park & ~(valid & (gap <= stopped.queue_gap_m))
    queue, jam = c.end_of_queue, c.traffic_jam
    # The highest speed of the last within_s reaches a level exactly when some speed did.
    queue_levels = tuple(
        _recently(kmh >= level, queue.within_s)
        for level in (queue.threshold, Threshold(queue.threshold, queue.hysteresis).release_level)
    )
    jam_gate = valid & _recently(kmh >= jam.prior_speed_kmh, jam.prior_window_s)
    definitions: Sequence[tuple[DetectorSettings, tuple[np.ndarray, np.ndarray], np.ndarray]] = (
        (c.harsh_braking, _levels(-track.accel, c.harsh_braking), kmh >= c.harsh_braking.min_speed_kmh),
        (
            c.harsh_acceleration,
            _levels(track.accel, c.harsh_acceleration),
            kmh >= c.harsh_acceleration.min_speed_kmh,
        ),
        (
            c.harsh_cornering,
            _levels(np.abs(track.lateral), c.harsh_cornering),
            kmh >= c.harsh_cornering.min_speed_kmh,
        ),
        (
            c.emergency_braking,
            _levels(-track.accel, c.emergency_braking),
            kmh >= c.emergency_braking.min_speed_kmh,
        ),
        (fcw, _levels(ttc, fcw), kmh >= fcw.min_speed_kmh),
        (c.tailgating, _levels(headway, c.tailgating), kmh >= c.tailgating.min_speed_kmh),
        (lane, _levels(excess, lane), (kmh >= lane.min_speed_kmh) & no_signal),
        (stopped, _levels(kmh, stopped), track.hazard | _lasting(in_lane, stopped.stopped_s)),
        (queue, (queue_levels[0], queue_levels[1]), kmh <= queue.to_speed_kmh),
        (jam, _levels(_mean_over(kmh, jam.window_s), jam), jam_gate),
    )
    labels = [
        label
        for settings, levels, gate in definitions
        if settings.enabled
        for label in _intervals(track.t, levels, gate, settings)
    ]
    return tuple(sorted(labels, key=lambda label: label.start_s))


# --- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One scripted drive: its true state, DBC signal values, labels and faults."""

    name: str
    group: str
    expected: Mapping[str, int]
    track: Track
    signals: Mapping[str, list[float | str]]
    labels: tuple[Label, ...]
    faults: tuple[Fault, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.track.duration_s


def _scenario(
    name: str,
    group: str,
    expected: Mapping[str, int],
    track: Track,
    rng: np.random.Generator,
    config: EventsConfig,
    *,
    noise: float = 1.0,
    faults: tuple[Fault, ...] = (),
) -> Scenario:
    signals = dbc_signals(track, rng, noise)
    return Scenario(name, group, expected, track, signals, ground_truth(track, config), faults)


def _calm(config: EventsConfig) -> float:
    """An acceleration or braking rate well below the harsh-driving thresholds (m/s^2)."""
    return 0.55 * min(config.harsh_braking.threshold, config.harsh_acceleration.threshold)


def _calm_turn(config: EventsConfig) -> float:
    return 0.55 * config.harsh_cornering.threshold


Builder = Callable[[np.random.Generator, EventsConfig], Scenario]


def harsh_braking(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Three brakings, one per severity, from motorway speed."""
    s = c.harsh_braking
    profile = Profile(rng.uniform(80.0, 100.0)).hold(8.0)
    decelerations = [s.threshold * rng.uniform(1.15, 1.3)]
    decelerations += [level * rng.uniform(1.08, 1.15) for level in (s.warning, s.critical)]
    for decel in decelerations:
        cruise = profile.kmh
        profile.hold(1.5, -decel).hold(3.0).to(cruise, _calm(c)).hold(3.0)
    track = Track.of(profile)
    track.wander(rng)
    return _scenario("harsh_braking", "event", {"harsh_braking": 3}, track, rng, c)


def harsh_acceleration(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A hard start from standstill, then a hard acceleration at warning level."""
    s = c.harsh_acceleration
    profile = Profile(0.0).hold(3.0).hold(4.0, s.threshold * rng.uniform(1.15, 1.3)).hold(4.0)
    profile.hold(3.0, s.warning * rng.uniform(1.08, 1.15)).hold(5.0)
    track = Track.of(profile)
    track.wander(rng)
    return _scenario("harsh_acceleration", "event", {"harsh_acceleration": 2}, track, rng, c)


def harsh_cornering(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A left and a right bend taken too fast."""
    s = c.harsh_cornering
    track = Track.of(Profile(rng.uniform(55.0, 70.0)).hold(24.0))
    track.lateral += pulse(track.t, 5.0, 1.0, 3.0, s.threshold * rng.uniform(1.15, 1.3))
    track.lateral += pulse(track.t, 14.0, 1.0, 3.0, -s.warning * rng.uniform(1.08, 1.15))
    track.wander(rng)
    return _scenario("harsh_cornering", "event", {"harsh_cornering": 2}, track, rng, c)


def emergency_braking(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Full braking below motorway speed: an EEBL event, and a harsh braking."""
    cruise = rng.uniform(55.0, 72.0)
    profile = Profile(cruise).hold(6.0).hold(1.2, -c.emergency_braking.threshold * rng.uniform(1.12, 1.25))
    profile.hold(2.0).to(cruise, _calm(c)).hold(4.0)
    track = Track.of(profile)
    track.wander(rng)
    expected = {"emergency_braking": 1, "harsh_braking": 1}
    return _scenario("emergency_braking", "event", expected, track, rng, c)


def _approach(rng: np.random.Generator, c: EventsConfig, react_ttc_s: float, lead_accel: float) -> Track:
    """Closing in on a slower lead until the time to collision is ``react_ttc_s``; then the
    driver brakes calmly and the lead speeds up."""
    own, closing, appear_s, gap_m = rng.uniform(85.0, 100.0), rng.uniform(6.0, 9.0), 3.0, 90.0
    react_s = appear_s + (gap_m - react_ttc_s * closing) / closing
    profile = Profile(own).hold(react_s).hold(4.0, -0.75 * c.harsh_braking.threshold).hold(10.0)
    lead = Profile(own - closing * 3.6).hold(react_s).hold(6.0, lead_accel).hold(8.0)
    track = Track.of(profile)
    track.lead_driving(appear_s, track.duration_s, gap_m, lead)
    track.wander(rng)
    return track


def forward_collision(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Closing in on a slower lead until well under the time-to-collision threshold."""
    track = _approach(rng, c, c.forward_collision.threshold * rng.uniform(0.7, 0.78), 2.0)
    return _scenario("forward_collision", "event", {"forward_collision": 1}, track, rng, c)


def tailgating(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Following too close at motorway speed for 40 s, then dropping back."""
    s = c.tailgating
    track = Track.of(Profile(rng.uniform(95.0, 115.0)).hold(55.0))
    track.follow(0.0, 55.0, smooth(track.t, 40.0, 12.0, s.threshold * rng.uniform(0.6, 0.8), 2.2))
    track.wander(rng)
    return _scenario("tailgating", "event", {"tailgating": 1}, track, rng, c)


def _touch_offset(c: EventsConfig) -> float:
    """Lane offset (m) at which the vehicle's side touches the marking."""
    return LANE_WIDTH_M / 2 - c.lane_departure.vehicle_width_m / 2


def lane_departure(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A drift over the marking and back, then a lane change without the turn signal."""
    s = c.lane_departure
    track = Track.of(Profile(rng.uniform(80.0, 115.0)).hold(32.0))
    side = rng.choice((-1.0, 1.0))
    track.lane_offset += pulse(
        track.t, 5.0, 2.5, 1.5, side * (_touch_offset(c) + s.threshold * rng.uniform(1.8, 3.0))
    )
    track.lane_change(18.0, 4.0, left=bool(rng.integers(2)), signal=False)
    track.wander(rng)
    return _scenario("lane_departure", "event", {"lane_departure": 2}, track, rng, c)


def stationary_hazard(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Stopping in lane and switching on the hazard lights."""
    profile = Profile(rng.uniform(40.0, 60.0)).hold(3.0).to(0.0, _calm(c))
    stopped_s = profile.t
    profile.hold(18.0).to(40.0, _calm(c)).hold(3.0)
    track = Track.of(profile)
    track.hazard[track.window(stopped_s + 2.0, stopped_s + 16.0)] = True
    track.wander(rng)
    return _scenario("stationary_hazard", "event", {"stationary_vehicle": 1}, track, rng, c)


def stopped_in_lane(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Stopping in lane, in drive, with nothing ahead, for longer than the stopped time."""
    profile = Profile(rng.uniform(30.0, 50.0)).hold(2.0).to(0.0, _calm(c))
    profile.hold(c.stationary_vehicle.stopped_s + rng.uniform(8.0, 15.0)).to(40.0, _calm(c)).hold(3.0)
    track = Track.of(profile)
    track.wander(rng)
    return _scenario("stopped_in_lane", "event", {"stationary_vehicle": 1}, track, rng, c)


def _firm_braking(rng: np.random.Generator, c: EventsConfig, low: float, high: float) -> tuple[float, bool]:
    """A braking rate in [low, high] (m/s^2) clear of the harsh-braking threshold, and whether it is harsh.

    When the range comes within 15 % of the threshold (vans, trucks), the rate is made
    clearly harsh instead.
    """
    threshold = c.harsh_braking.threshold
    if high < 0.85 * threshold:
        return rng.uniform(low, high), False
    return max(low, threshold * rng.uniform(1.1, 1.2)), True


def end_of_queue(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A firm slow-down from motorway speed to a crawl, well within the end-of-queue time."""
    s = c.end_of_queue
    least = (s.threshold - s.to_speed_kmh) / 3.6 / s.within_s
    rate, harsh = _firm_braking(rng, c, 1.15 * least, 1.3 * least)
    profile = Profile(rng.uniform(95.0, 120.0)).hold(8.0).to(rng.uniform(10.0, 20.0), rate).hold(15.0)
    track = Track.of(profile)
    track.wander(rng)
    expected = {"end_of_queue": 1} | ({"harsh_braking": 1} if harsh else {})
    return _scenario("end_of_queue", "event", expected, track, rng, c)


def _stop_and_go(rng: np.random.Generator, profile: Profile, seconds: float, top_kmh: float) -> None:
    end = profile.t + seconds
    while profile.t < end:
        profile.to(0.0, 0.9).hold(rng.uniform(3.0, 6.0)).to(rng.uniform(0.6, 1.0) * top_kmh, 0.9)
        profile.hold(rng.uniform(3.0, 8.0))


def traffic_jam(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """From motorway speed into 75 s of stop-and-go behind a queue, then out again."""
    profile = Profile(rng.uniform(95.0, 110.0)).hold(10.0).to(20.0, 0.8)
    _stop_and_go(rng, profile, 75.0, 25.0)
    jam_end = profile.t
    profile.to(80.0, 1.0).hold(5.0)
    track = Track.of(profile)
    track.follow(8.0, jam_end + 6.0, 1.5)
    track.wander(rng)
    return _scenario("traffic_jam", "event", {"traffic_jam": 1}, track, rng, c)


def near_miss_harsh(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Firm braking, acceleration and cornering, each 12-20 % under its threshold."""
    cruise = 80.0
    profile = Profile(cruise).hold(5.0).hold(2.0, -c.harsh_braking.threshold * rng.uniform(0.8, 0.88))
    profile.hold(3.0).to(cruise, _calm(c)).hold(3.0)
    profile.hold(2.5, c.harsh_acceleration.threshold * rng.uniform(0.8, 0.88)).hold(3.0).to(cruise, _calm(c))
    bend_s = profile.t + 3.0
    track = Track.of(profile.hold(12.0))
    track.lateral += pulse(track.t, bend_s, 1.0, 3.0, c.harsh_cornering.threshold * rng.uniform(0.8, 0.88))
    track.wander(rng)
    return _scenario("near_miss_harsh", "near_miss", {}, track, rng, c)


def near_miss_emergency(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Emergency-level braking too short for EEBL, and long braking 12-18 % under its level."""
    s = c.emergency_braking
    cruise = rng.uniform(62.0, 72.0)
    # Over the threshold for about 60 % of the minimum duration (the lag takes 0.3 s to get there).
    too_short_s = 0.6 * s.min_duration_s + 0.3
    profile = Profile(cruise).hold(5.0).hold(too_short_s, -s.threshold * rng.uniform(1.1, 1.2))
    profile.hold(2.0).to(cruise, _calm(c)).hold(3.0)
    profile.hold(1.5, -s.threshold * rng.uniform(0.82, 0.88)).hold(3.0).to(cruise, _calm(c)).hold(2.0)
    track = Track.of(profile)
    track.wander(rng)
    return _scenario("near_miss_emergency", "near_miss", {"harsh_braking": 2}, track, rng, c)


def near_miss_collision(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Closing in on a slower lead, reacting while the time to collision is still comfortable."""
    track = _approach(rng, c, c.forward_collision.threshold * rng.uniform(1.4, 1.55), 2.5)
    return _scenario("near_miss_collision", "near_miss", {}, track, rng, c)


def near_miss_tailgating(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A long follow just over the headway threshold, then a short one under it."""
    s = c.tailgating
    track = Track.of(Profile(rng.uniform(95.0, 115.0)).hold(76.0))
    close_s = 40.0 + s.min_duration_s * rng.uniform(0.55, 0.65)
    headway = smooth(track.t, 32.0, 8.0, s.threshold * rng.uniform(1.2, 1.35), s.threshold * 0.7)
    headway = np.where(track.t < close_s, headway, smooth(track.t, close_s, 8.0, s.threshold * 0.7, 2.2))
    track.follow(0.0, track.duration_s, headway)
    track.wander(rng)
    return _scenario("near_miss_tailgating", "near_miss", {}, track, rng, c)


def near_miss_lane(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A drift to just inside the marking, a signalled lane change, a departure below the speed gate."""
    s = c.lane_departure
    profile = Profile(rng.uniform(80.0, 110.0)).hold(22.0).to(0.75 * s.min_speed_kmh, _calm(c))
    slow_s = profile.t + 2.0
    track = Track.of(profile.hold(12.0))
    inside = _touch_offset(c) + s.threshold - rng.uniform(0.2, 0.25)
    track.lane_offset += pulse(track.t, 4.0, 2.5, 2.0, rng.choice((-1.0, 1.0)) * inside)
    track.lane_change(14.0, 4.0, left=bool(rng.integers(2)), signal=True)
    track.lane_offset += pulse(track.t, slow_s, 2.0, 1.5, _touch_offset(c) + 3 * s.threshold)
    track.wander(rng)
    return _scenario("near_miss_lane", "near_miss", {}, track, rng, c)


def near_miss_end_of_queue(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A firm slow-down from just under motorway speed, then a long one from motorway speed."""
    s = c.end_of_queue
    least = (s.threshold - s.to_speed_kmh) / 3.6 / s.within_s
    rate, harsh = _firm_braking(rng, c, 1.15 * least, 1.3 * least)
    profile = Profile(s.threshold * rng.uniform(0.85, 0.88)).hold(4.0).to(15.0, rate).hold(4.0)
    profile.to(100.0, _calm(c)).hold(5.0).to(25.0, least / rng.uniform(1.3, 1.5)).hold(5.0)
    track = Track.of(profile)
    track.wander(rng)
    return _scenario(
        "near_miss_end_of_queue", "near_miss", {"harsh_braking": 1} if harsh else {}, track, rng, c
    )


def near_miss_jam(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Dense but moving traffic behind a lead, its mean speed over the jam threshold."""
    s = c.traffic_jam
    profile = Profile(100.0).hold(5.0).to(s.threshold * 1.45, 1.0)
    queue_s = profile.t
    while profile.t < queue_s + s.window_s + 5.0:
        profile.to(s.threshold * rng.uniform(1.25, 1.35), 0.6).hold(2.0).to(s.threshold * 1.6, 0.6).hold(2.0)
    slow_end = profile.t
    profile.to(90.0, _calm(c)).hold(5.0)
    track = Track.of(profile)
    track.follow(queue_s - 5.0, slow_end + 5.0, 1.5)
    track.wander(rng)
    return _scenario("near_miss_jam", "near_miss", {}, track, rng, c)


def noisy_events(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """A harsh braking, a harsh bend and a lane departure, with twice the sensor noise."""
    profile = Profile(90.0).hold(6.0).hold(1.5, -c.harsh_braking.threshold * 1.35).hold(3.0)
    track = Track.of(profile.to(90.0, _calm(c)).hold(24.0))
    track.lateral += pulse(track.t, 18.0, 1.0, 3.0, c.harsh_cornering.threshold * 1.35)
    track.lane_offset += pulse(track.t, 28.0, 2.5, 1.5, _touch_offset(c) + 3 * c.lane_departure.threshold)
    track.wander(rng)
    expected = {"harsh_braking": 1, "harsh_cornering": 1, "lane_departure": 1}
    return _scenario("noisy_events", "noise", expected, track, rng, c, noise=2.0)


def _motorway(rng: np.random.Generator, c: EventsConfig, seconds: float) -> Track:
    """Motorway driving: gentle speed changes, leads at safe headways, signalled lane changes, bends."""
    profile = Profile(rng.uniform(110.0, 125.0))
    while profile.t < seconds - 25.0:
        profile.hold(rng.uniform(10.0, 20.0)).to(rng.uniform(100.0, 130.0), rng.uniform(0.3, 0.6))
    track = Track.of(profile.hold(max(0.0, seconds - profile.t)))
    for start in np.arange(5.0, seconds - 40.0, 50.0).tolist():
        track.follow(start, start + 35.0, smooth(track.t, start + 10.0, 15.0, 3.0, rng.uniform(1.8, 2.4)))
    for start in np.arange(42.0, seconds - 10.0, 50.0).tolist():
        track.lane_change(start, 5.0, left=bool(rng.integers(2)), signal=True)
    for start in np.arange(20.0, seconds - 10.0, 45.0).tolist():
        track.lateral += pulse(track.t, start, 2.0, 5.0, rng.choice((-1.0, 1.0)) * _calm_turn(c) * 0.8)
    track.wander(rng)
    return track


def motorway_drive(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Three uneventful minutes on the motorway."""
    return _scenario("motorway_drive", "uneventful", {}, _motorway(rng, c, 180.0), rng, c)


def noisy_motorway(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """An uneventful motorway drive with 2.5 times the sensor noise."""
    return _scenario("noisy_motorway", "noise", {}, _motorway(rng, c, 60.0), rng, c, noise=2.5)


def urban_drive(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Town driving: a red light first in line, a turn, a queue at a light, hazard lights
    while rolling, then parking for longer than the stopped time."""
    calm = _calm(c)
    profile = Profile(0.0).hold(2.0).to(50.0, calm).hold(15.0).to(0.0, calm).hold(30.0)
    profile.to(45.0, calm).hold(6.0)
    turn_s = profile.t
    profile.to(22.0, calm).hold(6.0).to(50.0, calm).hold(10.0).to(0.0, calm)
    queue_s = profile.t
    profile.hold(20.0).to(40.0, calm).hold(10.0)
    hazard_s = profile.t
    profile.hold(8.0).to(0.0, calm)
    park_s = profile.t + 2.0
    profile.hold(c.stationary_vehicle.stopped_s + 10.0)
    track = Track.of(profile)
    track.lateral += pulse(track.t, turn_s + 4.0, 1.0, 3.0, _calm_turn(c) * 1.1)
    track.follow(queue_s - 8.0, queue_s + 26.0, 1.2)
    track.hazard[track.window(hazard_s, hazard_s + 6.0)] = True
    track.park[track.window(park_s)] = True
    track.wander(rng)
    return _scenario("urban_drive", "uneventful", {}, track, rng, c)


def corrupted_dynamics(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Cruising while dynamics frames with failed checksums carry violent accelerations."""
    track = Track.of(Profile(80.0).hold(30.0))
    track.wander(rng)
    faults = (
        Fault("ESP_Dynamics", 10.0, 11.5, {"LongitudinalAccel": -9.5, "LateralAccel": 7.5}),
        Fault("ESP_Dynamics", 20.0, 21.0, {"LongitudinalAccel": 6.0}),
    )
    return _scenario("corrupted_dynamics", "fault", {}, track, rng, c, faults=faults)


def corrupted_radar(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """Following at a safe distance while radar frames with failed checksums report a crash course."""
    track = Track.of(Profile(100.0).hold(25.0))
    track.follow(0.0, 25.0, 2.5)
    track.wander(rng)
    faults = (
        Fault("RDR_LeadObject", 10.0, 11.5, {"LeadValid": 1, "LeadRange": 4.0, "LeadRangeRate": -15.0}),
    )
    return _scenario("corrupted_radar", "fault", {}, track, rng, c, faults=faults)


def stale_speed(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """The speed message stops at motorway speed; the vehicle slows to town speed and drifts
    over the marking, which is no lane departure below the speed gate."""
    s = c.lane_departure
    profile = Profile(100.0).hold(8.0).to(0.75 * s.min_speed_kmh, _calm(c))
    drift_s = profile.t + 3.0
    track = Track.of(profile.hold(15.0))
    track.lane_offset += pulse(track.t, drift_s, 2.0, 2.0, _touch_offset(c) + 3 * s.threshold)
    track.wander(rng)
    faults = (Fault("ESP_Speed", 6.0, track.duration_s),)
    return _scenario("stale_speed", "fault", {}, track, rng, c, faults=faults)


def stale_radar(rng: np.random.Generator, c: EventsConfig) -> Scenario:
    """The radar stops while it sees no lead; the vehicle then waits in a queue, longer than the
    stopped time, which is no stopped-in-lane event: a queue is ahead, but the radar is stale."""
    profile = Profile(50.0).hold(8.0).to(0.0, _calm(c))
    profile.hold(c.stationary_vehicle.stopped_s + 10.0).to(30.0, _calm(c)).hold(3.0)
    track = Track.of(profile)
    track.follow(10.0, track.duration_s, 1.5)
    track.wander(rng)
    faults = (Fault("RDR_LeadObject", 5.0, track.duration_s),)
    return _scenario("stale_radar", "fault", {}, track, rng, c, faults=faults)


#: Every scenario, in evaluation order.
SCENARIOS: dict[str, Builder] = {
    builder.__name__: builder
    for builder in (
        harsh_braking, harsh_acceleration, harsh_cornering, emergency_braking, forward_collision,
        tailgating, lane_departure, stationary_hazard, stopped_in_lane, end_of_queue, traffic_jam,
        near_miss_harsh, near_miss_emergency, near_miss_collision, near_miss_tailgating, near_miss_lane,
        near_miss_end_of_queue, near_miss_jam,
        noisy_events, noisy_motorway,
        corrupted_dynamics, corrupted_radar, stale_speed, stale_radar,
        motorway_drive, urban_drive,
    )
}  # fmt: skip


def build_scenarios(
    config: EventsConfig, seed: int = 0, run: int = 0, names: Sequence[str] | None = None
) -> list[Scenario]:
    """The scenarios (all, or those named) of one run; the seed and run pick their details.

    Raises:
        ValueError: an unknown scenario name.
    """
    chosen = list(SCENARIOS) if names is None else list(names)
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [
        SCENARIOS[name](np.random.default_rng([seed, run, index]), config)
        for index, name in enumerate(SCENARIOS)
        if name in chosen
    ]


#: How a convoy's braking car gets back to speed: 12 % under the car's harsh-acceleration threshold.
RECOVERY_MPS2 = 2.0


def convoy(
    brakes: int,
    config: EventsConfig,
    *,
    gap_m: float = 150.0,
    cruise_kmh: float = 60.0,
    period_s: float = 6.0,
    placement: Placement = Placement(heading_deg=0.0),
    seed: int = 0,
) -> tuple[Scenario, Scenario]:
    """Two cars on a straight road: A brakes hard ``brakes`` times (emergency braking, one
    every ``period_s``), B follows ``gap_m`` behind at A's mean speed, so the gap stays
    within about 15 m of ``gap_m``. A brakes for 1 s, 15 % over the EEBL threshold, and
    gets back to speed at 2 m/s^2, under the harsh-acceleration threshold. Returns (A, B);
    their labels are the truth."""
    rng = np.random.default_rng(seed)
    decel = config.emergency_braking.threshold * 1.15
    profile = Profile(cruise_kmh).hold(3.0)
    for _ in range(brakes):
        started = profile.t
        profile.hold(1.0, -decel).hold(0.5).to(cruise_kmh, RECOVERY_MPS2)
        profile.hold(max(0.0, period_s - (profile.t - started)))
    track_a = Track.of(profile, tail_s=2.0)
    track_b = Track(np.full(len(track_a.t), float(np.mean(track_a.speed))), np.zeros(len(track_a.t)))
    heading = math.radians(placement.heading_deg or 0.0)
    north, east = -gap_m * math.cos(heading), -gap_m * math.sin(heading)
    behind = dataclasses.replace(
        placement,
        latitude_deg=placement.latitude_deg + math.degrees(north / EARTH_RADIUS_M),
        longitude_deg=placement.longitude_deg
        + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(placement.latitude_deg)))),
    )
    expected = {"emergency_braking": brakes, "harsh_braking": brakes}
    a = Scenario(
        "convoy_a", "event", expected, track_a, dbc_signals(track_a, rng, placement=placement),
        ground_truth(track_a, config),
    )  # fmt: skip
    b = Scenario(
        "convoy_b", "uneventful", {}, track_b, dbc_signals(track_b, rng, placement=behind),
        ground_truth(track_b, config),
    )  # fmt: skip
    return a, b


# --- frames ----------------------------------------------------------------------------------


@cache
def _plans(dbc: Path) -> tuple[MessagePlan, ...]:
    database = cantools.database.load_file(dbc)
    if not isinstance(database, cantools.database.can.Database):
        raise ValueError(f"{dbc} is not a CAN database")
    return tuple(plan for plan in plan_messages(database) if plan.message.name in MESSAGES)


def scenario_frames(
    scenario: Scenario, start_time: float = START_TIME, dbc: Path = DEFAULT_DBC
) -> Iterator[can.Message]:
    """The scenario's CAN frames in time order, each message at its DBC cycle time."""
    plans = _plans(Path(dbc))
    faults: dict[str, list[Fault]] = {}
    for planned in scenario.faults:
        target = next((p for p in plans if p.message.name == planned.message), None)
        if target is None:
            raise ValueError(f"fault on {planned.message!r}: not a simulated message ({', '.join(MESSAGES)})")
        if planned.values is not None and target.integrity is None:
            raise ValueError(f"fault on {planned.message!r}: it has no checksum to corrupt")
        faults.setdefault(planned.message, []).append(planned)
    signals = scenario.signals
    end_ms = len(scenario.track.t) * STEP_MS
    # Every frame's (time, message) in order: message i fires at offset_i + k * cycle_i ms.
    per_plan = [np.arange(plan.offset_ms, end_ms, plan.cycle_ms) for plan in plans]
    ticks = np.concatenate(per_plan)
    indices = np.repeat(np.arange(len(plans)), [len(t) for t in per_plan])
    order = np.lexsort((indices, ticks))
    counts = [0] * len(plans)
    step, values = -1, dict[str, float | str]()
    for tick, index in zip(ticks[order].tolist(), indices[order].tolist(), strict=True):
        plan = plans[index]
        count = counts[index]
        counts[index] += 1
        if tick // STEP_MS != step:
            step = tick // STEP_MS
            values = {name: column[step] for name, column in signals.items()}
        message = plan.message
        fault = None
        for candidate in faults.get(message.name, ()):
            if candidate.start_s <= tick / 1000 < candidate.end_s:
                fault = candidate
        if fault is None:
            data, _ = encode_frame(plan, values, count)
        elif fault.values is None:
            continue  # dropped: the sender's counter still advances
        else:
            payload = bytearray(encode_frame(plan, {**values, **fault.values}, count)[0])
            payload[plan.integrity.checksum_byte] ^= 0x5A
            data = bytes(payload)
        yield can.Message(
            timestamp=start_time + tick / 1000.0,
            arbitration_id=message.frame_id,
            is_extended_id=message.is_extended_frame,
            is_fd=message.is_fd,
            bitrate_switch=message.is_fd,
            data=data,
        )
