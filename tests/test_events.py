"""Event detection: primitives, each detector on crafted records, flagged signals, config, event JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from edge.events import (
    ENDED,
    ONGOING,
    Event,
    EventEngine,
    EventFormatError,
    EventsConfig,
    parse_events_config,
)
from edge.events.detectors import (
    ABS,
    GEAR,
    HAZARD,
    LANE_OFFSET,
    LANE_WIDTH,
    LATERAL,
    LATITUDE,
    LEAD_DETECTED,
    LEAD_DISTANCE,
    LEAD_SPEED,
    LEFT_INDICATOR,
    LONGITUDE,
    LONGITUDINAL,
    PARK,
    RIGHT_INDICATOR,
)
from edge.events.primitives import (
    SPEED,
    AllOf,
    AnyOf,
    Condition,
    Derivative,
    History,
    IsTrue,
    Lasting,
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
from roadwave.configfile import ConfigError, Table
from roadwave.contract import INTEGRITY, QUALITIES, RANGE, STALE, Record

T0 = 1_767_225_600 * 10**9
S = 10**9
DRIVE = 127  # VSS SelectedGear: drive


def at(seconds: float) -> int:
    return T0 + round(seconds * S)


def record(seconds: float, signals: dict[str, Any], quality: dict[str, str] | None = None) -> Record:
    return Record(at(seconds), "can0", dict(signals), dict(quality or {}))


def samples(start: float, stop: float, step: float = 0.1, **signals: Any) -> list[Record]:
    """One record every ``step`` s in [start, stop): each keyword is a VSS path alias -> value."""
    count = round((stop - start) / step)
    return [record(start + i * step, {ALIASES[k]: v for k, v in signals.items()}) for i in range(count)]


ALIASES = {
    "speed": SPEED,
    "ax": LONGITUDINAL,
    "ay": LATERAL,
    "lead": LEAD_DETECTED,
    "gap": LEAD_DISTANCE,
    "rate": LEAD_SPEED,
    "offset": LANE_OFFSET,
    "lane": LANE_WIDTH,
    "left": LEFT_INDICATOR,
    "right": RIGHT_INDICATOR,
    "hazard": HAZARD,
    "gear": GEAR,
    "lat": LATITUDE,
    "lon": LONGITUDE,
}


def run(records: Iterable[Record], config: EventsConfig | None = None) -> list[Event]:
    """Feed every record, then finish; all updates in order."""
    engine = EventEngine(config)
    updates = [update for r in records for update in engine.feed(r)]
    return updates + engine.finish()


def ended(updates: list[Event], kind: str | None = None) -> list[Event]:
    return [u for u in updates if u.state == ENDED and (kind is None or u.kind == kind)]


# --- primitives ------------------------------------------------------------------------------


def test_threshold_rising_and_falling_with_hysteresis() -> None:
    rising = Threshold(2.0, 0.25)
    assert rising.reached(2.0) and not rising.reached(1.99)
    assert rising.release_level == pytest.approx(1.5)
    assert rising.released(1.49) and not rising.released(1.5)
    falling = Threshold(2.0, 0.25, rising=False)
    assert falling.reached(2.0) and not falling.reached(2.01)
    assert falling.released(2.51) and not falling.released(2.5)
    assert falling.worse(1.0, 3.0) == 1.0 and rising.worse(1.0, 3.0) == 3.0
    with pytest.raises(ValueError, match="hysteresis"):
        Threshold(1.0, 1.0)


def test_sustained_needs_an_unbroken_run() -> None:
    sustained = Sustained(0.3)
    assert [sustained.update(at(t), True) for t in (0.0, 0.1, 0.2)] == [False, False, False]
    assert sustained.update(at(0.3), True)
    assert not sustained.update(at(0.4), False)
    assert not sustained.update(at(0.5), True) and sustained.since_ns == at(0.5)


def test_table_reads_flagged_samples_as_unknown() -> None:
    table = SignalTable()
    table.update(record(0, {SPEED: 50.0, HAZARD: True}))
    assert table.number(SPEED) == 50.0 and table.get(HAZARD) is True
    table.update(record(0.1, {SPEED: 51.0}, {SPEED: STALE}))
    assert table.get(SPEED) is None and table.get(HAZARD) is True
    table.update(record(0.2, {SPEED: 52.0}))
    assert table.number(SPEED) == 52.0
    assert table.get(LANE_OFFSET) is None


def test_conditions_use_three_valued_logic() -> None:
    table = SignalTable()
    table.update(record(0, {HAZARD: True, LEFT_INDICATOR: False}))
    yes, no, unknown = IsTrue(HAZARD), IsTrue(LEFT_INDICATOR), IsTrue(RIGHT_INDICATOR)
    conditions: dict[str, Condition] = {
        "and-false": AllOf(yes, no, unknown), "and-unknown": AllOf(yes, unknown), "and": AllOf(yes, yes),
        "or-true": AnyOf(no, unknown, yes), "or-unknown": AnyOf(no, unknown), "or": AnyOf(no, no),
        "not-unknown": Not(unknown), "not": Not(no),
    }  # fmt: skip
    evaluate = {name: condition(0, table) for name, condition in conditions.items()}
    assert evaluate == {
        "and-false": False, "and-unknown": None, "and": True,
        "or-true": True, "or-unknown": None, "or": False,
        "not-unknown": None, "not": True,
    }  # fmt: skip


def test_speed_gate() -> None:
    table = SignalTable()
    gate = SpeedGate(10.0, 30.0)
    assert gate(0, table) is None
    for speed, inside in ((9.9, False), (10.0, True), (30.0, True), (30.1, False)):
        table.update(record(0, {SPEED: speed}))
        assert gate(0, table) is inside


def test_recently_and_lasting_keep_time() -> None:
    table = SignalTable()
    recently, lasting = Recently(IsTrue(HAZARD), 2.0), Lasting(IsTrue(HAZARD), 1.0)
    results = []
    for t, hazard in ((0.0, True), (0.5, True), (1.0, True), (1.5, False), (3.0, False), (3.1, False)):
        table.update(record(t, {HAZARD: hazard}))
        results.append((recently(at(t), table), lasting(at(t), table)))
    assert results == [
        (True, False),
        (True, False),
        (True, True),
        (True, False),
        (True, False),
        (False, False),
    ]
    assert Recently(IsTrue(RIGHT_INDICATOR), 2.0)(at(0), table) is None


def test_derivative_is_the_rate_per_second_and_resets_on_unknown() -> None:
    table = SignalTable()
    jerk = Derivative(Signal(LONGITUDINAL))
    rates = []
    for i in range(4):
        table.update(record(i * 0.1, {LONGITUDINAL: -0.5 * i}))
        rates.append(jerk(at(i * 0.1), table))
    assert rates[0] is None and rates[1:] == pytest.approx([-5.0, -5.0, -5.0])
    table.update(record(0.4, {LONGITUDINAL: 0.0}, {LONGITUDINAL: INTEGRITY}))
    assert jerk(at(0.4), table) is None
    table.update(record(0.5, {LONGITUDINAL: 0.0}))
    assert jerk(at(0.5), table) is None


def test_window_mean_needs_a_covered_window_and_forgets_gaps() -> None:
    table = SignalTable()
    mean = WindowMean(Signal(SPEED), span_s=1.0, max_gap_s=0.5)
    values = []
    for i in range(15):
        table.update(record(i * 0.1, {SPEED: float(i)}))
        values.append(mean(at(i * 0.1), table))
    assert all(v is None for v in values[:10])
    assert values[10] == pytest.approx(sum(range(1, 11)) / 10)  # samples within (t - 1 s, t]
    assert values[14] == pytest.approx(sum(range(5, 15)) / 10)
    table.update(record(2.2, {SPEED: 3.0}))  # 0.8 s without a sample
    assert mean(at(2.2), table) is None


def test_window_max_forgets_old_samples() -> None:
    table = SignalTable()
    highest = WindowMax(Signal(SPEED), span_s=1.0)
    seen = []
    for t, speed in ((0.0, 100.0), (0.5, 60.0), (0.9, 70.0), (1.0, 20.0), (1.6, 10.0), (2.0, 5.0)):
        table.update(record(t, {SPEED: speed}))
        seen.append(highest(at(t), table))
    assert seen == [100.0, 100.0, 100.0, 70.0, 70.0, 10.0]  # over (t - 1 s, t]


def test_history_keeps_its_span() -> None:
    history = History(1.0)
    for i in range(30):
        history.append(record(i * 0.1, {SPEED: float(i)}))
    kept = history.since(0)
    assert kept[0].t_ns == at(1.9) and kept[-1].t_ns == at(2.9)
    assert [r.signals[SPEED] for r in history.since(at(2.7))] == [27.0, 28.0, 29.0]


# --- detectors on crafted records -----------------------------------------------------------

POSITION = {"lat": 48.1, "lon": 11.5}


def braking(decel: float, seconds: float, speed: float = 80.0) -> list[Record]:
    """Cruise 6 s, brake for ``seconds`` at ``decel``, cruise 8 s; 10 Hz."""
    return [
        *samples(0, 6, speed=speed, ax=0.0, **POSITION),
        *samples(6, 6 + seconds, speed=speed, ax=-decel, **POSITION),
        *samples(6 + seconds, 14 + seconds, speed=speed, ax=0.0, **POSITION),
    ]


def test_harsh_braking_lifecycle_severity_peaks_position_and_snapshot() -> None:
    engine = EventEngine()
    updates = [(r.t_ns, u) for r in braking(3.5, 1.0) for u in engine.feed(r)]
    assert [(t, u.state) for t, u in updates] == [(at(6.1), ONGOING), (at(12.0), ENDED)]
    started, done = updates[0][1], updates[1][1]
    assert started.kind == done.kind == "harsh_braking" and started.id == done.id
    assert (started.start_ns, started.detected_ns, started.end_ns) == (at(6.0), at(6.1), None)
    assert (done.end_ns, done.severity) == (at(7.0), 2)  # 3.5 m/s^2: between 0.32 g and 0.41 g
    assert done.peak["deceleration_mps2"] == pytest.approx(3.5)
    assert done.peak["speed_kmh"] == 80.0 and done.peak["jerk_mps3"] == pytest.approx(-35.0)
    assert done.position == (48.1, 11.5)
    speed = done.snapshot[SPEED]["t"]
    assert speed[0] == at(1.0) and speed[-1] == at(12.0)  # 5 s before the start, 5 s after the end
    assert set(done.snapshot) == {LONGITUDINAL, SPEED}  # brake signals were not in the records
    assert started.snapshot[SPEED]["t"][-1] == at(6.1)  # the first update has what was known then


@pytest.mark.parametrize(
    ("decel", "seconds", "speed", "severities"),
    [
        (2.5, 1.0, 80.0, [1]),
        (4.5, 1.0, 80.0, [3]),
        (3.0, 0.1, 80.0, []),  # one sample: not held for 100 ms
        (3.0, 1.0, 8.0, []),  # below the 10 km/h speed gate
        (2.1, 1.0, 80.0, []),  # under 0.23 g
    ],
)
def test_harsh_braking_thresholds_duration_and_gate(
    decel: float, seconds: float, speed: float, severities: list[int]
) -> None:
    assert [e.severity for e in ended(run(braking(decel, seconds, speed)), "harsh_braking")] == severities


def test_hysteresis_keeps_an_event_until_released() -> None:
    records = [
        *samples(0, 2, speed=80.0, ax=0.0),
        *samples(2, 2.5, speed=80.0, ax=-3.0),
        *samples(2.5, 4, speed=80.0, ax=-2.0),  # under 2.26 but above the 17 % release level
        *samples(4, 6, speed=80.0, ax=-1.5),
    ]
    events = ended(run(records), "harsh_braking")
    assert len(events) == 1 and (events[0].start_ns, events[0].end_ns) == (at(2.0), at(4.0))


def test_harsh_acceleration_and_cornering() -> None:
    accelerating = [
        *samples(0, 3, speed=30.0, ax=0.0),
        *samples(3, 5, speed=30.0, ax=2.5),
        *samples(5, 7, ax=0.0),
    ]
    assert [(e.kind, e.severity) for e in ended(run(accelerating))] == [("harsh_acceleration", 1)]
    cornering = [
        *samples(0, 3, speed=60.0, ay=1.0),
        *samples(3, 6, speed=60.0, ay=-4.0),
        *samples(6, 8, ay=0.0),
    ]
    events = ended(run(cornering))
    assert [(e.kind, e.severity) for e in events] == [("harsh_cornering", 2)]
    assert events[0].peak["lateral_acceleration_mps2"] == 4.0


@pytest.mark.parametrize(
    ("seconds", "speed", "kinds"),
    [
        (0.6, 60.0, ["emergency_braking", "harsh_braking"]),
        (0.4, 60.0, ["harsh_braking"]),
        (1.0, 15.0, ["harsh_braking"]),
    ],
)
def test_emergency_braking_needs_500_ms_over_20_kmh(seconds: float, speed: float, kinds: list[str]) -> None:
    events = ended(run(braking(8.0, seconds, speed)))
    assert sorted(e.kind for e in events) == kinds
    assert all(e.severity == 3 for e in events)


def approaching(gap: float, rate: float, detected: bool = True, speed: float = 90.0) -> list[Record]:
    return [
        *samples(0, 2, speed=speed, lead=detected, gap=gap, rate=rate),
        *samples(2, 4, speed=speed, lead=False, gap=0.0, rate=0.0),
    ]


@pytest.mark.parametrize(
    ("gap", "rate", "detected", "expected"),
    [
        (20.0, -10.0, True, [1]),
        (10.0, -10.0, True, [3]),
        (26.0, -10.0, True, []),
        (10.0, -10.0, False, []),
        (10.0, 0.3, True, []),
    ],
)
def test_forward_collision_from_time_to_collision(
    gap: float, rate: float, detected: bool, expected: list[int]
) -> None:
    events = ended(run(approaching(gap, rate, detected)), "forward_collision")
    assert [e.severity for e in events] == expected
    if expected:
        assert events[0].peak["ttc_s"] == pytest.approx(gap / -rate)


@pytest.mark.parametrize(("seconds", "speed", "count"), [(31.0, 100.0, 1), (29.0, 100.0, 0), (31.0, 60.0, 0)])
def test_tailgating_needs_30_s_above_70_kmh(seconds: float, speed: float, count: int) -> None:
    gap = 0.6 * speed / 3.6  # 0.6 s headway
    records = [
        *samples(0, seconds, speed=speed, lead=True, gap=gap, rate=0.0),
        *samples(seconds, seconds + 2, lead=False, gap=0.0),
    ]
    events = ended(run(records), "tailgating")
    assert len(events) == count
    if count:
        assert events[0].detected_ns - events[0].start_ns == 30 * S
        assert events[0].severity == 2  # 0.6 s: between 0.72 s and 0.56 s


def drifting(speed: float = 100.0, left: bool = False, left_until: float | None = None) -> list[Record]:
    """Offset 1.05 m in a 3.5 m lane from 2 s to 3 s: a 1.8 m car is 0.2 m over the marking."""
    records = []
    for i in range(50):
        t = i * 0.1
        offset = 1.05 if 2.0 <= t < 3.0 else 0.0
        indicator = left or (left_until is not None and t < left_until)
        records.append(
            record(
                t,
                {
                    SPEED: speed,
                    LANE_OFFSET: offset,
                    LANE_WIDTH: 3.5,
                    LEFT_INDICATOR: indicator,
                    RIGHT_INDICATOR: False,
                },
            )
        )
    return records


@pytest.mark.parametrize(
    ("records", "count"),
    [
        (drifting(), 1),
        (drifting(left=True), 0),
        (drifting(left_until=1.0), 0),
        (drifting(left_until=-1.0), 1),
        (drifting(50.0), 0),
    ],
    ids=["no-signal", "signal-on", "signal-off-1s-before", "never-signalled", "below-60-kmh"],
)
def test_lane_departure_without_turn_signal(records: list[Record], count: int) -> None:
    events = ended(run(records), "lane_departure")
    assert len(events) == count
    if count:
        assert events[0].peak["excess_m"] == pytest.approx(0.2)


def stopped(seconds: float, **signals: Any) -> list[Record]:
    return [
        *samples(0, 3, speed=30.0, hazard=False, gear=DRIVE, lead=False),
        *samples(3, 3 + seconds, speed=0.0, **signals),
    ]


@pytest.mark.parametrize(
    ("records", "count"),
    [
        (stopped(4.0, hazard=True, gear=DRIVE, lead=False), 1),
        (stopped(1.5, hazard=True, gear=DRIVE, lead=False), 0),
        (stopped(95.0, hazard=False, gear=DRIVE, lead=False), 1),
        (stopped(85.0, hazard=False, gear=DRIVE, lead=False), 0),
        (stopped(95.0, hazard=False, gear=PARK, lead=False), 0),
        (stopped(95.0, hazard=False, gear=DRIVE, lead=True, gap=5.0), 0),
        ([*samples(0, 5, speed=40.0, hazard=True, gear=DRIVE, lead=False)], 0),
    ],
    ids=[
        "hazard",
        "hazard-too-short",
        "stopped-in-lane",
        "stopped-too-short",
        "parked",
        "queued",
        "hazard-moving",
    ],
)
def test_stationary_vehicle(records: list[Record], count: int) -> None:
    assert len(ended(run(records), "stationary_vehicle")) == count


def slowing(from_kmh: float, to_kmh: float, seconds: float) -> list[Record]:
    records = samples(0, 5, speed=from_kmh)
    steps = round(seconds / 0.1)
    records += [
        record(5 + i * 0.1, {SPEED: from_kmh + (to_kmh - from_kmh) * i / steps}) for i in range(steps + 1)
    ]
    return records + samples(5.1 + seconds, 25 + seconds, speed=to_kmh)


@pytest.mark.parametrize(
    ("records", "count"),
    [(slowing(100, 20, 6), 1), (slowing(100, 20, 20), 0), (slowing(75, 10, 5), 0), (slowing(100, 35, 5), 0)],
)
def test_end_of_queue(records: list[Record], count: int) -> None:
    events = ended(run(records), "end_of_queue")
    assert len(events) == count
    if count:
        assert events[0].peak["from_speed_kmh"] >= 80 and events[0].peak["speed_kmh"] == 20


@pytest.mark.parametrize(
    ("first_kmh", "lead", "count"), [(100.0, True, 1), (100.0, False, 0), (50.0, True, 0)]
)
def test_traffic_jam_after_free_flow_behind_a_lead(first_kmh: float, lead: bool, count: int) -> None:
    records = [
        *samples(0, 30, speed=first_kmh, lead=lead, gap=30.0),
        *samples(30, 110, speed=10.0, lead=lead, gap=4.0),
    ]
    events = ended(run(records), "traffic_jam")
    assert len(events) == count
    if count:  # mean of the last 60 s: 30 s at 100 and 30 s at 10 is 55; it reaches 30 at 30 + 46.7 s
        assert at(76.5) <= events[0].detected_ns <= at(77.0)


# --- flagged signals never trigger -----------------------------------------------------------

TRIGGERING = {  # case: event type, records that trigger it, paths whose flagging must prevent it
    "harsh_braking": ("harsh_braking", braking(3.5, 1.0), (LONGITUDINAL, SPEED)),
    "emergency_braking": ("emergency_braking", braking(8.0, 1.0), (LONGITUDINAL, SPEED)),
    "harsh_acceleration": (
        "harsh_acceleration",
        [*samples(0, 3, speed=30.0, ax=0.0), *samples(3, 5, speed=30.0, ax=2.5)],
        (LONGITUDINAL,),
    ),
    "harsh_cornering": ("harsh_cornering", samples(0, 3, speed=60.0, ay=4.0), (LATERAL, SPEED)),
    "forward_collision": (
        "forward_collision",
        approaching(15.0, -10.0),
        (LEAD_DISTANCE, LEAD_SPEED, LEAD_DETECTED, SPEED),
    ),
    "tailgating": (
        "tailgating",
        samples(0, 31, speed=100.0, lead=True, gap=15.0, rate=0.0),
        (LEAD_DISTANCE, LEAD_DETECTED, SPEED),
    ),
    "lane_departure": (
        "lane_departure",
        drifting(),
        (LANE_OFFSET, LANE_WIDTH, SPEED, LEFT_INDICATOR, RIGHT_INDICATOR),
    ),
    "hazard_lights": (
        "stationary_vehicle",
        stopped(10.0, hazard=True, gear=DRIVE, lead=False),
        (SPEED, HAZARD),
    ),
    "stopped_in_lane": (
        "stationary_vehicle",
        stopped(95.0, hazard=False, gear=DRIVE, lead=False),
        (SPEED, GEAR, LEAD_DETECTED),
    ),
    "end_of_queue": ("end_of_queue", slowing(100, 20, 6), (SPEED,)),
    "traffic_jam": (
        "traffic_jam",
        [*samples(0, 30, speed=100.0, lead=True), *samples(30, 110, speed=10.0, lead=True)],
        (SPEED, LEAD_DETECTED),
    ),
}


def flag(records: list[Record], path: str, quality: str) -> list[Record]:
    """The records with every sample of ``path`` flagged."""
    return [
        Record(r.t_ns, r.bus, r.signals, {**r.quality, path: quality}) if path in r.signals else r
        for r in records
    ]


@pytest.mark.parametrize("case", TRIGGERING)
def test_flagged_signals_never_trigger(case: str) -> None:
    kind, records, paths = TRIGGERING[case]
    assert len(ended(run(records), kind)) == 1  # the unflagged records do trigger
    for path in paths:
        for quality in QUALITIES:
            assert ended(run(flag(records, path, quality)), kind) == [], (path, quality)


def test_an_event_ends_when_its_signal_goes_stale() -> None:
    records = [*samples(0, 2, speed=80.0, ax=0.0), *samples(2, 3, speed=80.0, ax=-3.0)]
    records.append(record(3.03, {LONGITUDINAL: -3.0}, {LONGITUDINAL: STALE}))
    records += samples(3.1, 10, speed=80.0)  # no dynamics samples any more
    events = ended(run(records), "harsh_braking")
    assert len(events) == 1 and events[0].end_ns == at(3.03)
    assert events[0].snapshot[LONGITUDINAL]["q"][-1] == STALE


def test_disabled_detectors_do_not_run() -> None:
    config = parse_events_config(Table({"harsh_braking": {"enabled": False}}, "test", Path(".")))
    assert [e.kind for e in ended(run(braking(3.5, 1.0), config))] == []


# --- completion, flush, long events ------------------------------------------------------------


def test_flush_completes_an_event_when_no_records_arrive() -> None:
    engine = EventEngine()
    records = braking(3.5, 1.0)[:75]  # ends at 7.4 s, 0.4 s after the braking ended at 7.0 s
    assert [u.state for r in records for u in engine.feed(r)] == [ONGOING]
    assert engine.flush(at(11.9)) == []
    done = engine.flush(at(12.0))
    assert [(u.state, u.end_ns) for u in done] == [(ENDED, at(7.0))]
    assert engine.finish() == []


def test_finish_ends_an_ongoing_event() -> None:
    engine = EventEngine()
    for r in braking(3.5, 5.0)[:70]:
        engine.feed(r)
    (done,) = engine.finish()
    assert done.state == ENDED and done.end_ns == at(6.9)


def test_long_event_snapshot_keeps_its_beginning_and_end() -> None:
    records = [
        *samples(0, 5, speed=100.0, lead=False),
        *samples(5, 125, speed=100.0, lead=True, gap=15.0, rate=0.0),
    ]
    records += samples(125, 135, speed=100.0, lead=False, gap=0.0)
    (event,) = ended(run(records), "tailgating")
    times = event.snapshot[SPEED]["t"]
    assert times[0] == at(0.0) and times[-1] == at(130.0)
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) > 100 * S  # the middle is left out
    assert all(t <= at(10.0) or t >= at(120.0) for t in times)


# --- configuration -------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> EventsConfig:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return parse_events_config(Table.load(path).table("events"))


def test_defaults_per_vehicle_class(tmp_path: Path) -> None:
    car, van, truck = (EventsConfig.for_class(c) for c in ("car", "van", "truck"))
    assert load(tmp_path, "") == car
    assert car.harsh_braking.threshold == pytest.approx(0.23 * 9.80665, abs=0.01)
    assert car.harsh_braking.critical == pytest.approx(0.41 * 9.80665, abs=0.01)
    assert truck.harsh_braking.threshold < van.harsh_braking.threshold < car.harsh_braking.threshold
    assert truck.lane_departure.vehicle_width_m == 2.55
    assert car.emergency_braking.threshold == 7.0 and car.tailgating.min_duration_s == 30.0
    assert load(tmp_path, '[events]\nvehicle_class = "van"\n') == van


def test_overrides(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[events]\nvehicle_class = "truck"\npost_s = 8\n'
        "[events.harsh_braking]\nthreshold = 2.0\nwarning = 2.5\ncritical = 3\nmin_speed_kmh = 15\n"
        "[events.traffic_jam]\nenabled = false\n",
    )
    assert config.post_s == 8.0 and config.vehicle_class == "truck"
    braking = config.harsh_braking
    assert (braking.threshold, braking.warning, braking.critical, braking.min_speed_kmh) == (
        2.0,
        2.5,
        3.0,
        15.0,
    )
    assert "traffic_jam" not in [s.kind for s in config.detectors] and len(config.detectors) == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('vehicle_class = "bus"', "vehicle_class must be one of car, van, truck; got 'bus'"),
        ("[events.harsh_brakng]\nthreshold = 2", r"unknown key\(s\) harsh_brakng"),
        (
            "[events.harsh_braking]\nthreshhold = 2",
            r"\[events\] \[harsh_braking\]: unknown key\(s\) threshhold",
        ),
        ('[events.harsh_braking]\nthreshold = "high"', "threshold must be int or float"),
        ("[events.harsh_braking]\nthreshold = -1", "threshold must be >= 0.0"),
        (
            "[events.harsh_braking]\nwarning = 2.0",
            "harsh_braking: need threshold <= warning <= critical, got 2.26, 2, 4.02",
        ),
        (
            "[events.forward_collision]\nwarning = 3.0",
            "forward_collision: need threshold >= warning >= critical",
        ),
        ("[events.tailgating]\nhysteresis = 1.5", "tailgating: hysteresis is a fraction below 1"),
        ("[events.emergency_braking]\nseverity = 4", "severity must be <= 3"),
        ("[events.lane_departure]\nenabled = 1", "enabled must be bool"),
        ("pre_s = 120", r"pre_s must be within \[0, 60\] s"),
    ],
)
def test_config_errors_say_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    body = text if text.startswith("[") else f"[events]\n{text}"
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, body)
    assert str(tmp_path / "edge.toml") in str(caught.value)


# --- event JSON --------------------------------------------------------------------------------


def sample_event() -> Event:
    records = [*braking(3.5, 1.0)[:65], record(6.5, {SPEED: 80.0, LONGITUDINAL: -3.5}, {SPEED: RANGE})]
    records += braking(3.5, 1.0)[66:]
    (event,) = ended(run(records), "harsh_braking")
    return event


def test_event_json_round_trip() -> None:
    event = sample_event()
    document = json.loads(json.dumps(event.to_dict(), allow_nan=False))
    assert document["v"] == 1 and document["type"] == "harsh_braking" and document["state"] == "ended"
    assert (
        document["snapshot"][SPEED]["q"].count(RANGE) == 1 and "q" not in document["snapshot"][LONGITUDINAL]
    )
    assert Event.from_dict(document) == event


def _broken(change: dict[str, Any], remove: str | None = None) -> dict[str, Any]:
    document = sample_event().to_dict()
    document.update(change)
    if remove:
        del document[remove]
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_broken({"v": 2}), "event schema version 2 is not 1"),
        (_broken({}, remove="start"), "missing 'start'"),
        (_broken({"start": True}), "'start' must be int"),
        (_broken({"state": "ongoing"}), "an ongoing event must not have an 'end'"),
        (_broken({"end": None}), "an ended event must have an 'end'"),
        (_broken({"severity": 4}), "'severity' must be 1, 2 or 3"),
        (_broken({"type": "Harsh Braking"}), "is not an event type name"),
        (_broken({"id": "harsh_braking-1"}), "does not match type and start"),
        (_broken({"detected": T0 - S}), "start <= detected"),
        (_broken({"peak": {"x": math.inf}}), "peak 'x' must be a finite number"),
        (_broken({"position": {"lat": 91.0, "lon": 0.0}}), "not a latitude and longitude"),
        (
            _broken({"snapshot": {"Vehicle.Warp": {"t": [], "v": []}}}),
            "not a path of the roadwave VSS catalog",
        ),
        (_broken({"snapshot": {SPEED: {"t": [1, 2], "v": [1.0]}}}), "columns must be lists of equal length"),
        (
            _broken({"snapshot": {SPEED: {"t": [T0], "v": [1.0], "q": ["bad"]}}}),
            "'q' must hold null or one of",
        ),
        (_broken({"snapshot": {SPEED: {"t": [1], "v": [1.0]}}}), "'t' must hold integer nanoseconds within"),
        (_broken({"snapshot": {ABS: {"t": [T0], "v": [1]}}}), "IsEngaged is boolean, got 1"),
        (_broken({"snapshot": {SPEED: {"t": [T0], "v": [True]}}}), "Vehicle.Speed is float, got True"),
        ([1, 2], "an event must be a JSON object"),
    ],
)
def test_event_json_errors(document: Any, message: str) -> None:
    with pytest.raises(EventFormatError, match=message):
        Event.from_dict(document)


def test_abs_is_in_the_braking_snapshot_when_sent() -> None:
    records = [
        Record(r.t_ns, r.bus, {**r.signals, ABS: r.signals[LONGITUDINAL] < -3}) for r in braking(3.5, 1.0)
    ]
    (event,) = ended(run(records), "harsh_braking")
    assert True in event.snapshot[ABS]["v"] and False in event.snapshot[ABS]["v"]
