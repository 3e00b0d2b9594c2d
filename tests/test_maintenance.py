"""Maintenance rules on scripted samples, the alert lifecycle, the alert document, the InfluxDB store."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cloud.influx import InfluxClient, InfluxSettings
from cloud.maintenance.alerts import (
    ACKNOWLEDGED,
    ACTIVE,
    CLEARED,
    ESCALATED,
    OPENED,
    UPDATED,
    Alert,
    AlertBook,
    AlertError,
    AlertFormatError,
    Notification,
    UnknownAlertError,
)
from cloud.maintenance.rules import (
    AIR_TEMPERATURE,
    BRAKE_PEDAL,
    COOLANT,
    ENGINE_SPEED,
    ODOMETER,
    SPEED,
    VOLTAGE,
    BrakeWearSettings,
    CoolantSettings,
    DtcSettings,
    DtcStatus,
    Finding,
    MaintenanceConfig,
    MaintenanceInputError,
    MaintenanceMonitor,
    Normal,
    Observation,
    OilLifeSettings,
    RuleConfigError,
    ServiceDueSettings,
    parse_maintenance_config,
)
from cloud.maintenance.store import active_alerts_query, alert_lines, read_active, read_history
from roadwave.configfile import ConfigError, Table
from roadwave.contract import RANGE, Record, TelemetryBatch

VIN = "RWDEM000000000001"
VIN_B = "RWDEM000000000002"
FLEET = "demo"
T0 = 1_763_700_000_000_000_000
HOUR = 3600.0

Samples = list[tuple[float, dict[str, Any]]]


def at(seconds: float) -> int:
    return T0 + round(seconds * 1e9)


def series(start_s: float, end_s: float, hz: float, **values: Any) -> Samples:
    """Samples every 1/hz s in [start_s, end_s); keyword names are the paths' short names below."""
    paths = {"rpm": ENGINE_SPEED, "volt": VOLTAGE, "ect": COOLANT, "air": AIR_TEMPERATURE}
    paths |= {"speed": SPEED, "pedal": BRAKE_PEDAL, "odo": ODOMETER}
    count = round((end_s - start_s) * hz)
    return [(start_s + i / hz, {paths[k]: v for k, v in values.items()}) for i in range(count)]


def feed(monitor: MaintenanceMonitor, samples: Samples, vin: str = VIN) -> list[Observation]:
    return [o for t, signals in samples for o in monitor.feed(vin, at(t), signals)]


def kinds(observations: Iterable[Observation]) -> list[tuple[str, str, int]]:
    """(Finding|Normal, alert type, severity or 0) per observation."""
    return [(type(o).__name__, o.type, o.severity if isinstance(o, Finding) else 0) for o in observations]


def advice(observation: Observation) -> str:
    assert isinstance(observation, Finding)
    return observation.recommendation


# --- battery ---------------------------------------------------------------------------------


def drive_then_park(park_s: float, resting_v: float, start_at_s: float = 0.0) -> Samples:
    """Drive 10 s, stop the engine, then (after ``park_s``) wake up with the engine off."""
    drive = series(start_at_s, start_at_s + 10, 10, rpm=2000, volt=14.2)
    stop = series(start_at_s + 10, start_at_s + 11, 10, rpm=0, volt=12.8)
    wake = start_at_s + 10 + park_s
    return [*drive, *stop, *series(wake, wake + 2, 10, rpm=0, volt=resting_v)]


@pytest.mark.parametrize(
    ("resting_v", "expected"),
    [(12.25, []), (12.2, []), (12.15, [("Finding", "battery", 1)]), (11.95, [("Finding", "battery", 2)])],
)
def test_battery_resting_voltage_after_a_park(resting_v: float, expected: list[Any]) -> None:
    observations = feed(MaintenanceMonitor(), drive_then_park(2 * HOUR, resting_v))
    assert kinds(observations) == expected
    if expected:
        assert observations[0].value == {"resting_voltage_v": resting_v}
        assert "charge" in advice(observations[0])


def test_battery_resting_voltage_needs_the_engine_off_long_enough() -> None:
    assert feed(MaintenanceMonitor(), drive_then_park(0.5 * HOUR, 11.5)) == []


def test_battery_every_bad_park_is_a_finding_and_it_clears_only_above_75_percent() -> None:
    monitor = MaintenanceMonitor()
    samples = drive_then_park(2 * HOUR, 12.1)
    samples += drive_then_park(2 * HOUR, 12.1, start_at_s=3 * HOUR)  # a repeat
    samples += drive_then_park(2 * HOUR, 12.3, start_at_s=6 * HOUR)  # in between: nothing
    samples += drive_then_park(2 * HOUR, 12.5, start_at_s=9 * HOUR)  # good: normal
    observations = feed(monitor, samples)
    assert kinds(observations) == [
        ("Finding", "battery", 1),
        ("Finding", "battery", 1),
        ("Normal", "battery", 0),
    ]
    normal = observations[-1]
    assert isinstance(normal, Normal) and normal.hold_s == 86_400.0
    assert normal.value == {"resting_voltage_v": 12.5}


def crank(start_s: float, dip_v: float, air_c: float) -> Samples:
    """Wake with the engine off, then crank for 1 s at ``dip_v`` and run."""
    wake = series(start_s, start_s + 1, 10, rpm=0, volt=12.5, air=air_c)
    cranking = series(start_s + 1, start_s + 2, 10, rpm=250, volt=dip_v, air=air_c)
    running = series(start_s + 2, start_s + 6, 10, rpm=800, volt=14.1, air=air_c)
    return [*wake, *cranking, *running]


@pytest.mark.parametrize(
    ("dip_v", "air_c", "expected"),
    [
        (9.3, 25.0, [("Finding", "battery", 2)]),
        (9.7, 25.0, []),  # just above the weak level
        (9.3, 5.0, []),  # the 9.6 V figure holds at >= 20 degC only: not judged
    ],
)
def test_battery_cranking_dip(dip_v: float, air_c: float, expected: list[Any]) -> None:
    samples = [*series(0, 5, 10, rpm=2000, volt=14.2), *crank(2 * HOUR, dip_v, air_c)]
    observations = feed(MaintenanceMonitor(), samples)
    assert kinds(observations) == expected
    if expected:
        assert observations[0].value["cranking_min_v"] == dip_v
        assert "load-tested" in advice(observations[0])


def test_battery_low_at_rest_and_weak_when_cranking_is_critical() -> None:
    samples = [*series(0, 5, 10, rpm=2000, volt=14.2)]
    samples += [
        (t, {**s, VOLTAGE: 12.1} if s[ENGINE_SPEED] == 0 else s) for t, s in crank(2 * HOUR, 9.2, 22.0)
    ]
    observations = feed(MaintenanceMonitor(), samples)
    assert kinds(observations) == [("Finding", "battery", 1), ("Finding", "battery", 3)]
    assert observations[1].value == {"resting_voltage_v": 12.1, "cranking_min_v": 9.2}


# --- coolant ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ect", "seconds", "expected"),
    [
        (106, 40, [("Finding", "coolant_overtemp", 2)]),
        (105, 120, []),  # the top of the normal range is normal
        (106, 29, []),  # not held for 30 s
        (117, 40, [("Finding", "coolant_overtemp", 3)]),
        (116, 40, [("Finding", "coolant_overtemp", 2)]),  # danger is above 116
    ],
)
def test_coolant_over_temperature_held_for_a_duration(ect: int, seconds: float, expected: list[Any]) -> None:
    observations = feed(MaintenanceMonitor(), series(0, seconds, 1, ect=ect))
    assert kinds(observations) == expected
    if expected:
        assert observations[0].t_ns == at(30)
        assert observations[0].value == {"ect_c": ect, "above_s": 30.0}


def test_coolant_escalates_and_clears_below_a_lower_threshold() -> None:
    samples = [*series(0, 40, 1, ect=110), *series(40, 80, 1, ect=118)]
    samples += [*series(80, 100, 1, ect=102), *series(100, 110, 1, ect=100)]
    observations = feed(MaintenanceMonitor(), samples)
    assert kinds(observations) == [
        ("Finding", "coolant_overtemp", 2),
        ("Finding", "coolant_overtemp", 3),
        ("Normal", "coolant_overtemp", 0),
    ]
    assert [o.t_ns for o in observations] == [at(30), at(70), at(100)]
    assert "Stop as soon as it is safe" in advice(observations[1])


def test_flagged_samples_are_skipped() -> None:
    monitor = MaintenanceMonitor()
    for t, signals in series(0, 60, 1, ect=120):
        assert monitor.feed(VIN, at(t), signals, {COOLANT: RANGE}) == []
    assert monitor.stats.samples_flagged == 60 and monitor.stats.samples == 0


# --- brake wear ------------------------------------------------------------------------------

STOP_ENERGY_J = 0.5 * 1500 * (100 / 3.6) ** 2


def stops(count: int, pedal: int = 20, drop_kmh: float = 1.0) -> Samples:
    """``count`` brakings from 100 km/h to standstill, ``drop_kmh`` per 0.1 s, each after accelerating."""
    samples: Samples = []
    for n in range(count):
        start = n * 40.0
        samples += [(start + i / 10, {SPEED: i / 2.0, BRAKE_PEDAL: 0}) for i in range(200)]  # 0 -> 100 km/h
        steps = round(100 / drop_kmh)
        samples += [
            (start + 20 + i / 10, {SPEED: 100.0 - i * drop_kmh, BRAKE_PEDAL: pedal}) for i in range(steps + 1)
        ]
    return samples


def brake_monitor(budget_mj: float) -> MaintenanceMonitor:
    return MaintenanceMonitor(MaintenanceConfig(brake_wear=BrakeWearSettings(pad_budget_mj=budget_mj)))


def test_brake_wear_sums_braking_energy_and_grades_the_fraction_used() -> None:
    # 1/2 m v^2 per stop from 100 km/h: 0.579 MJ; one stop is 48 % of 1.2 MJ, two 96 %, three 145 %.
    observations = feed(brake_monitor(1.2), stops(3, drop_kmh=100))
    assert kinds(observations) == [("Finding", "brake_wear", 2), ("Finding", "brake_wear", 3)]
    second, third = observations
    assert second.value["braking_energy_mj"] == pytest.approx(2 * STOP_ENERGY_J / 1e6)
    assert third.value["used_fraction"] == pytest.approx(3 * STOP_ENERGY_J / 1.2e6)
    assert "estimate" in advice(third)


def test_brake_wear_in_gradual_stops_passes_every_level() -> None:
    observations = feed(brake_monitor(1.2), stops(3))
    assert kinds(observations) == [("Finding", "brake_wear", s) for s in (1, 2, 3)]
    assert [o.value["used_fraction"] for o in observations] == pytest.approx([0.8, 0.9, 1.0], abs=0.02)


def test_brake_wear_just_under_the_first_level_raises_nothing() -> None:
    monitor = brake_monitor(2 * STOP_ENERGY_J / 1e6 / 0.7999)
    assert feed(monitor, stops(2)) == []
    third = feed(monitor, [(t + 80, signals) for t, signals in stops(1)])
    assert kinds(third) == [("Finding", "brake_wear", s) for s in (1, 2, 3)]  # 80 % to 120 %
    assert third[0].value["used_fraction"] == pytest.approx(0.8, abs=0.02)


def test_slowing_down_without_the_brake_or_across_a_gap_wears_nothing() -> None:
    monitor = brake_monitor(0.1)
    assert feed(monitor, stops(2, pedal=0)) == []
    gap = [
        (100.0, {SPEED: 100.0, BRAKE_PEDAL: 30}),
        (106.0, {SPEED: 0.0, BRAKE_PEDAL: 30}),
    ]  # 6 s > max_gap_s
    assert feed(monitor, gap) == []


def test_brake_wear_reset_clears_the_alert() -> None:
    monitor = brake_monitor(0.5)
    assert kinds(feed(monitor, stops(1, drop_kmh=100))) == [("Finding", "brake_wear", 3)]
    normal = monitor.reset(VIN, "brake_wear", at(500))
    assert kinds(normal) == [("Normal", "brake_wear", 0)] and normal[0].value["used_fraction"] == 0.0
    assert monitor.reset(VIN, "brake_wear", at(501)) == []  # nothing was raised any more


# --- oil life --------------------------------------------------------------------------------


def oil_monitor(budget_mrev: float) -> MaintenanceMonitor:
    """Only oil life (hot coolant would raise its own alert)."""
    config = MaintenanceConfig(
        oil_life=OilLifeSettings(budget_mrev=budget_mrev), coolant_overtemp=CoolantSettings(enabled=False)
    )
    return MaintenanceMonitor(config)


@pytest.mark.parametrize("ect", [40, 110])
def test_oil_life_weighs_cold_and_hot_revolutions_double(ect: int) -> None:
    # 3000 rpm = 50 rev/s; budget 11,000 weighted revolutions, "soon" at 85 % = 9,350.
    warm = feed(oil_monitor(0.011), series(0, 100.1, 10, rpm=3000, ect=90))
    assert warm == []  # 5,000 revolutions: 45 %
    [soon] = feed(oil_monitor(0.011), series(0, 100.1, 10, rpm=3000, ect=ect))
    assert kinds([soon]) == [("Finding", "oil_life", 1)]
    assert abs(soon.t_ns - at(93.5)) <= 100_000_000  # 9,350 / (2 x 50 rev/s)
    assert soon.value["weighted_mrev"] == pytest.approx(0.00935, abs=0.00001)
    assert "Plan an oil change" in advice(soon)


def test_oil_life_escalates_to_used_up() -> None:
    observations = feed(oil_monitor(0.005), series(0, 120, 10, rpm=3000, ect=90))
    assert kinds(observations) == [("Finding", "oil_life", s) for s in (1, 2, 3)]
    assert [o.value["weighted_mrev"] * 1e6 for o in observations] == pytest.approx([4250, 4750, 5000], abs=6)


# --- service due -----------------------------------------------------------------------------


def test_service_due_by_odometer_and_reset_after_service() -> None:
    settings = ServiceDueSettings(interval_km=100.0, interval_engine_h=0.0)
    monitor = MaintenanceMonitor(MaintenanceConfig(service_due=settings))
    odometer = [(float(i), {ODOMETER: 5_000_000 + i * 100}) for i in range(0, 1200)]  # 100 m per step
    observations = feed(monitor, odometer)
    assert kinds(observations) == [("Finding", "service_due", s) for s in (1, 2, 3)]
    assert [o.value["distance_km"] for o in observations] == [90.0, 100.0, 110.0]
    assert kinds(monitor.reset(VIN, "service_due", at(1200))) == [("Normal", "service_due", 0)]
    after = feed(monitor, [(1201.0, {ODOMETER: 5_000_000 + 1199 * 100 + 89_900})])
    assert after == []  # 89.9 km since the service: just under 90 %


def test_service_due_by_engine_hours() -> None:
    settings = ServiceDueSettings(interval_km=0.0, interval_engine_h=0.01)  # 36 s
    monitor = MaintenanceMonitor(MaintenanceConfig(service_due=settings))
    observations = feed(monitor, [*series(0, 10, 10, rpm=0), *series(10, 45, 10, rpm=900)])
    assert kinds(observations) == [("Finding", "service_due", 1)]
    assert observations[0].value["engine_h"] == pytest.approx(0.009, abs=1e-5)


# --- DTCs ------------------------------------------------------------------------------------


def test_dtcs_pending_confirmed_and_gone() -> None:
    monitor = MaintenanceMonitor()
    pending = DtcStatus("P0301", pending=True, confirmed=False, ecu="7E8")
    confirmed = DtcStatus("P0301", pending=True, confirmed=True, ecu="7E8")
    history = DtcStatus("C0035", pending=False, confirmed=False, ecu="7E9")
    assert kinds(monitor.feed_dtcs(VIN, at(0), [pending, history])) == [("Finding", "dtc_P0301", 1)]
    assert monitor.feed_dtcs(VIN, at(60), [pending]) == []
    found = monitor.feed_dtcs(VIN, at(120), [confirmed])
    assert kinds(found) == [("Finding", "dtc_P0301", 2)]
    assert "confirmed by ECU 7E8" in advice(found[0])
    gone = monitor.feed_dtcs(VIN, at(180), [])
    assert (
        kinds(gone) == [("Normal", "dtc_P0301", 0)]
        and isinstance(gone[0], Normal)
        and gone[0].hold_s == 3600.0
    )
    assert monitor.feed_dtcs(VIN, at(240), []) == []


@pytest.mark.parametrize("code", ["X0301", "p0301", "P4301", "P030", "P03011", ""])
def test_invalid_dtc_codes_are_refused(code: str) -> None:
    with pytest.raises(MaintenanceInputError, match="invalid DTC"):
        DtcStatus(code, pending=True, confirmed=False, ecu="7E8")


def test_a_dtc_report_must_hold_dtc_statuses() -> None:
    with pytest.raises(MaintenanceInputError, match="DtcStatus items"):
        MaintenanceMonitor().feed_dtcs(VIN, at(0), ["P0301"])  # type: ignore[list-item]


# --- monitor input ---------------------------------------------------------------------------


def test_a_batch_delivered_twice_counts_once() -> None:
    records = [Record(at(t), "can0", signals) for t, signals in stops(1, drop_kmh=100)]
    batch = TelemetryBatch(VIN, FLEET, 0, records)
    monitor = brake_monitor(STOP_ENERGY_J / 1e6 / 0.85)  # one stop: 85 %; counted twice it would be 170 %
    assert kinds(monitor.feed_batch(batch)) == [("Finding", "brake_wear", 1)]
    assert monitor.feed_batch(batch) == []
    assert monitor.stats.records_out_of_order == len(records) - 1  # the last one has the same time


@pytest.mark.parametrize(
    ("vin", "t_ns", "signals", "message"),
    [
        ("NOT-A-VIN", T0, {SPEED: 10.0}, "invalid VIN"),
        (VIN, 12, {SPEED: 10.0}, "within years 2000-2099"),
        (VIN, T0, {SPEED: "fast"}, "Vehicle.Speed is float"),
        (VIN, T0, {COOLANT: 40000}, "outside"),
        (VIN, T0, {SPEED: math.nan}, "finite"),
    ],
)
def test_bad_input_is_refused_precisely(vin: str, t_ns: int, signals: dict[str, Any], message: str) -> None:
    with pytest.raises(MaintenanceInputError, match=message):
        MaintenanceMonitor().feed(vin, t_ns, signals)


def test_reset_of_a_rule_that_is_no_counter() -> None:
    with pytest.raises(MaintenanceInputError, match="counters enabled are brake_wear, oil_life, service_due"):
        MaintenanceMonitor().reset(VIN, "battery", T0)


# --- configuration ---------------------------------------------------------------------------


def table(data: dict[str, Any]) -> Table:
    return Table(data, "fleet.toml [maintenance]", Path("."))


def test_defaults_come_from_the_reference_figures() -> None:
    config = parse_maintenance_config(table({}))
    assert (config.battery.resting_low_v, config.battery.resting_warning_v) == (12.2, 12.0)
    assert (config.battery.resting_clear_v, config.battery.cranking_weak_v) == (12.4, 9.6)
    assert config.battery.cranking_min_temp_c == 20.0
    assert (config.coolant_overtemp.threshold_c, config.coolant_overtemp.critical_c) == (105.0, 116.0)


def test_toml_overrides_and_disabling() -> None:
    config = parse_maintenance_config(
        table(
            {
                "notify_interval_s": 600,
                "brake_wear": {"vehicle_mass_kg": 2200, "pad_budget_mj": 9000},
                "dtc": {"pending_severity": 2, "confirmed_severity": 3},
                "battery": {"enabled": False},
            }
        )
    )
    assert config.notify_interval_s == 600.0 and config.brake_wear.vehicle_mass_kg == 2200.0
    assert (config.dtc.pending_severity, config.dtc.confirmed_severity) == (2, 3)
    observations = feed(MaintenanceMonitor(config), drive_then_park(2 * HOUR, 11.0))
    assert observations == []  # battery disabled


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"coolant": {}}, r"unknown key\(s\) coolant"),
        ({"coolant_overtemp": {"treshold_c": 110}}, r"\[coolant_overtemp\]: unknown key\(s\) treshold_c"),
        ({"coolant_overtemp": {"clear_c": 110}}, r"clear_c \(110\) must be below threshold_c \(105\)"),
        ({"battery": {"resting_low_v": 11.9}}, r"resting_warning_v \(12\) must be below resting_low_v"),
        ({"oil_life": {"soon": 0.99}}, r"soon \(0.99\) must be below due \(0.95\)"),
        ({"dtc": {"pending_severity": 4}}, "must be <= 3"),
        ({"dtc": {"clear_hold_s": 0}}, "clear_hold_s must be > 0"),
        ({"brake_wear": {"vehicle_mass_kg": "heavy"}}, "vehicle_mass_kg must be int or float"),
        ({"max_gap_s": 0}, "max_gap_s must be > 0"),
    ],
)
def test_invalid_settings_name_the_table_and_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_maintenance_config(table(data))


def test_settings_validate_without_toml_too() -> None:
    with pytest.raises(RuleConfigError, match="coolant_overtemp: threshold_c .* must be below critical_c"):
        CoolantSettings(critical_c=100.0)
    with pytest.raises(RuleConfigError, match="pad_budget_mj must be a finite number"):
        BrakeWearSettings(pad_budget_mj=math.inf)
    with pytest.raises(RuleConfigError, match="oil_life: cold_weight must be a finite number >= 0, got '2'"):
        OilLifeSettings(cold_weight="2")  # type: ignore[arg-type]
    with pytest.raises(RuleConfigError, match="dtc: enabled must be true or false"):
        DtcSettings(enabled=1)  # type: ignore[arg-type]


# --- alert lifecycle -------------------------------------------------------------------------


def finding(t_s: float, severity: int = 2, vin: str = VIN, kind: str = "coolant_overtemp") -> Finding:
    return Finding(
        vin, kind, at(t_s), severity, {"ect_c": 110.0 + severity}, f"advice at severity {severity}"
    )


def normal(t_s: float, hold_s: float = 600.0, vin: str = VIN, kind: str = "coolant_overtemp") -> Normal:
    return Normal(vin, kind, at(t_s), {"ect_c": 95.0}, hold_s)


def transitions(notes: Iterable[Notification]) -> list[tuple[str, int, str]]:
    return [(n.transition, n.t_ns, n.alert.state) for n in notes]


def test_a_finding_opens_an_alert_and_repeats_update_it() -> None:
    book = AlertBook(notify_interval_s=3600)
    [opened] = book.observe(FLEET, [finding(0)])
    alert = opened.alert
    assert (opened.transition, alert.state, alert.count, alert.severity) == (OPENED, ACTIVE, 1, 2)
    assert alert.id == f"coolant_overtemp-{VIN}-{at(0)}"
    assert book.observe(FLEET, [finding(60), finding(120, severity=1)]) == []  # coalesced
    [current] = book.open_alerts()
    assert (current.id, current.count, current.last_seen_ns, current.severity) == (alert.id, 3, at(120), 2)
    assert current.value == {"ect_c": 111.0} and current.recommendation == "advice at severity 2"
    assert book.tick(at(3599)) == []
    [update] = book.tick(at(3600))
    assert (update.transition, update.alert.count) == (UPDATED, 3)
    assert book.tick(at(9000)) == []  # nothing new to tell


def test_updates_are_rate_limited_per_alert() -> None:
    book = AlertBook(notify_interval_s=3600)
    notes = []
    for minute in range(0, 181, 10):  # a finding every 10 minutes for 3 hours
        notes += book.observe(FLEET, [finding(minute * 60)])
        notes += book.observe(FLEET, [finding(minute * 60, vin=VIN_B)])
    mine = [n for n in notes if n.alert.vin == VIN]
    assert transitions(mine) == [(OPENED, at(0), ACTIVE)] + [
        (UPDATED, at(h * HOUR), ACTIVE) for h in (1, 2, 3)
    ]
    assert [n.alert.count for n in mine] == [1, 7, 13, 19]
    assert len(notes) == 2 * len(mine)  # the other vehicle has its own limit


def test_escalation_is_notified_at_once_and_needs_a_new_acknowledgement() -> None:
    book = AlertBook()
    [opened] = book.observe(FLEET, [finding(0)])
    [ack] = book.acknowledge(opened.alert.id, "ops@example.com", at(10))
    assert (ack.transition, ack.alert.state, ack.alert.acknowledged_by) == (
        ACKNOWLEDGED,
        ACKNOWLEDGED,
        "ops@example.com",
    )
    assert ack.alert.acknowledged_at_ns == at(10)
    [escalated] = book.observe(FLEET, [finding(20, severity=3)])
    assert (escalated.transition, escalated.alert.state, escalated.alert.severity) == (ESCALATED, ACTIVE, 3)
    assert (
        escalated.alert.acknowledged_by is None and escalated.alert.recommendation == "advice at severity 3"
    )


def test_acknowledging_twice_changes_nothing_and_unknown_ids_are_refused() -> None:
    book = AlertBook()
    [opened] = book.observe(FLEET, [finding(0)])
    assert len(book.acknowledge(opened.alert.id, "ops", at(5))) == 1
    assert book.acknowledge(opened.alert.id, "someone else", at(6)) == []
    assert book.open_alerts()[0].acknowledged_by == "ops"
    with pytest.raises(UnknownAlertError, match="no open alert has id 'nope'"):
        book.acknowledge("nope", "ops", at(7))
    with pytest.raises(AlertError, match="printable"):
        book.acknowledge(opened.alert.id, "ops\n", at(7))


def test_clears_after_the_hold_and_a_re_raise_is_a_new_alert() -> None:
    book = AlertBook()
    [opened] = book.observe(FLEET, [finding(0)])
    assert book.observe(FLEET, [normal(100, hold_s=600)]) == []
    assert book.tick(at(700)) == []  # exactly the hold: not yet
    [cleared] = book.tick(at(701))
    assert (cleared.transition, cleared.t_ns, cleared.alert.cleared_at_ns) == (CLEARED, at(700), at(700))
    assert cleared.alert.id == opened.alert.id and book.open_alerts() == []
    [again] = book.observe(FLEET, [finding(800)])
    assert again.transition == OPENED and again.alert.id != opened.alert.id and again.alert.count == 1
    with pytest.raises(UnknownAlertError, match="cleared already"):
        book.acknowledge(opened.alert.id, "ops", at(900))


def test_a_finding_within_the_hold_keeps_the_alert() -> None:
    book = AlertBook()
    book.observe(FLEET, [finding(0), normal(100)])
    assert book.observe(FLEET, [finding(650)]) == []  # back within 600 s: a repeat
    assert [n.transition for n in book.tick(at(5000))] == [UPDATED]  # the repeat; no clear
    assert [a.count for a in book.open_alerts()] == [2]
    notes = book.observe(FLEET, [normal(6000), finding(6700)])  # after the hold: cleared, then new
    assert [n.transition for n in notes] == [CLEARED, OPENED]
    assert notes[0].t_ns == at(6600) < notes[1].t_ns == at(6700)


def test_acknowledging_after_the_hold_ran_out_reports_the_clear() -> None:
    book = AlertBook()
    [opened] = book.observe(FLEET, [finding(0), normal(10)])
    assert transitions(book.acknowledge(opened.alert.id, "ops", at(1000))) == [(CLEARED, at(610), CLEARED)]


def test_flapping_coolant_keeps_one_alert_and_counts_episodes() -> None:
    monitor = MaintenanceMonitor()
    book = AlertBook(notify_interval_s=3600)
    notes: list[Notification] = []
    samples: Samples = []
    for cycle in range(45):  # one hour: 40 s at 120 degC, 40 s at 95 degC
        samples += series(cycle * 80, cycle * 80 + 40, 1, ect=120)
        samples += series(cycle * 80 + 40, cycle * 80 + 80, 1, ect=95)
    samples += series(3600, 4800, 1, ect=90)  # then normal for 20 minutes
    for t, signals in samples:
        notes += book.observe(FLEET, monitor.feed(VIN, at(t), signals))
        notes += book.tick(at(t), vin=VIN)
    assert [n.transition for n in notes] == [OPENED, UPDATED, CLEARED]
    assert [n.alert.count for n in notes] == [1, 45, 45]
    assert notes[-1].alert.cleared_at_ns == at(44 * 80 + 40 + 600)


def test_notification_times_strictly_increase_per_vehicle_and_type() -> None:
    book = AlertBook(notify_interval_s=0)
    notes = book.observe(FLEET, [finding(0), finding(0)])
    [opened] = notes[:1]
    notes += book.acknowledge(opened.alert.id, "ops", at(0))
    assert [n.transition for n in notes] == [OPENED, UPDATED, ACKNOWLEDGED]
    assert [n.t_ns for n in notes] == [at(0), at(0) + 1, at(0) + 2]


def test_out_of_order_times_do_not_move_an_alert_backwards() -> None:
    book = AlertBook()
    book.observe(FLEET, [finding(100)])
    book.observe(FLEET, [finding(50)])
    assert book.open_alerts()[0].last_seen_ns == at(100)


def test_the_book_restores_open_alerts() -> None:
    book = AlertBook()
    [opened] = book.observe(FLEET, [finding(0)])
    restored = AlertBook(alerts=book.open_alerts())
    assert restored.observe(FLEET, [finding(30)]) == []  # an update of the same alert
    assert restored.open_alerts()[0].id == opened.alert.id
    cleared = replace(opened.alert, state=CLEARED, cleared_at_ns=at(5))
    with pytest.raises(AlertError, match="cannot restore"):
        AlertBook(alerts=[cleared])


def test_the_book_refuses_bad_input() -> None:
    with pytest.raises(AlertError, match="invalid fleet name"):
        AlertBook().observe("bad fleet", [finding(0)])
    with pytest.raises(AlertFormatError, match="'severity' must be 1, 2 or 3"):
        AlertBook().observe(FLEET, [finding(0, severity=5)])
    with pytest.raises(AlertError, match="notify_interval_s"):
        AlertBook(notify_interval_s=-1)
    with pytest.raises(AlertError, match="'time': 1.5 is not integer nanoseconds"):
        AlertBook().tick(1.5)  # type: ignore[arg-type]


# --- alert documents -------------------------------------------------------------------------


def sample_alert() -> Alert:
    book = AlertBook()
    book.observe(FLEET, [finding(0), finding(60, severity=3)])
    return book.open_alerts()[0]


def test_alert_documents_round_trip_through_json() -> None:
    alert = sample_alert()
    document = json.loads(json.dumps(alert.to_dict()))
    assert document["v"] == 1 and document["id"] == alert.id and document["state"] == ACTIVE
    assert Alert.from_dict(document) == alert
    acked = AlertBook(alerts=[alert])
    acked.acknowledge(alert.id, "x", at(80))
    again = acked.open_alerts()[0]
    assert Alert.from_dict(json.loads(json.dumps(again.to_dict()))) == again


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"v": 2}, "alert schema version 2 is not 1"),
        ({"severity": 0}, "'severity' must be 1, 2 or 3"),
        ({"severity": True}, "'severity' must be int"),
        ({"state": "open"}, "'state' must be one of active, acknowledged, cleared"),
        ({"state": "cleared"}, "a cleared alert needs 'cleared_at'"),
        ({"cleared_at": T0 + 10**12}, "only a cleared alert has 'cleared_at' \\(state is active\\)"),
        ({"id": "something-else"}, "does not match type, vin and first_seen"),
        ({"vin": "RWDEM00000000000I"}, "invalid VIN"),
        ({"fleet": "a/b"}, "invalid fleet name"),
        ({"type": "Coolant"}, "not an alert type"),
        ({"last_seen": T0 - 1}, "'last_seen' is before 'first_seen'"),
        ({"first_seen": 5}, "within years 2000-2099"),
        ({"count": 0}, "'count' must be an integer >= 1"),
        ({"value": {"ect_c": math.nan}}, "ect_c must be a finite number"),
        ({"value": {"ECT": 1.0}}, "not a measure name"),
        ({"value": [1.0]}, "'value' must be dict"),
        ({"recommendation": ""}, "'recommendation' must be text"),
        ({"acknowledged_by": "ops"}, "go together"),
        ({"state": "acknowledged"}, "needs 'acknowledged_by'"),
        ({"acknowledged_by": "ops", "acknowledged_at": T0 + 5}, "an active alert is not acknowledged"),
    ],
)
def test_malformed_alert_documents_are_rejected(change: dict[str, Any], message: str) -> None:
    document = sample_alert().to_dict()
    document.update(change)
    if "id" not in change:
        document["id"] = f"{document['type']}-{document['vin']}-{document['first_seen']}"
    with pytest.raises(AlertFormatError, match=message):
        Alert.from_dict(document)


@pytest.mark.parametrize("missing", ["v", "id", "vin", "value", "cleared_at"])
def test_alert_documents_need_every_key(missing: str) -> None:
    document = sample_alert().to_dict()
    del document[missing]
    with pytest.raises(AlertFormatError, match=f"missing '{missing}'"):
        Alert.from_dict(document)
    with pytest.raises(AlertFormatError, match="JSON object"):
        Alert.from_dict([document])


# --- InfluxDB --------------------------------------------------------------------------------


@pytest.mark.integration
def test_transitions_in_influxdb_give_the_active_view_and_the_history(influxdb, influx_database) -> None:
    book = AlertBook(notify_interval_s=0)
    tricky = 'Check "coolant", level=low; path C:\\ok'  # line-protocol and JSON escaping
    notes = book.observe(FLEET, [Finding(VIN, "coolant_overtemp", at(0), 2, {"ect_c": 112}, tricky)])
    notes += book.observe(FLEET, [finding(5, kind="battery", severity=1)])
    notes += book.acknowledge(notes[0].alert.id, "ops@example.com", at(10))
    notes += book.observe(FLEET, [normal(20, hold_s=60, kind="battery")])
    notes += book.tick(at(100))  # battery cleared at 80 s
    notes += book.observe(FLEET, [finding(120, kind="battery", severity=1)])  # re-raised: new id
    notes += book.observe("other", [Finding(VIN_B, "dtc_P0301", at(30), 1, {"pending": 1.0}, "x")])
    notes += book.observe(FLEET, [finding(130, kind="coolant_overtemp", severity=2)])  # updated, count 2
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    client.write_lines(alert_lines(notes))
    client.write_lines(alert_lines(notes))  # a retry overwrites the same points

    active = read_active(client)
    assert active == sorted(book.open_alerts(), key=lambda a: (a.first_seen_ns, a.id))
    assert {(a.type, a.state, a.count) for a in active} == {
        ("coolant_overtemp", ACKNOWLEDGED, 2),
        ("battery", ACTIVE, 1),
        ("dtc_P0301", ACTIVE, 1),
    }
    assert [a.vin for a in read_active(client, fleet="other")] == [VIN_B]
    rows = client.query(active_alerts_query(FLEET))
    assert sorted((row["type"], row["severity"], row["state"]) for row in rows) == [
        ("battery", 1, ACTIVE),
        ("coolant_overtemp", 2, ACKNOWLEDGED),
    ]

    history = read_history(client, VIN)
    assert history[0].alert.recommendation == tricky
    expected = [n for n in notes if n.alert.vin == VIN]
    assert history == sorted(expected, key=lambda n: n.t_ns)
    assert [(n.transition, n.alert.type) for n in history] == [
        (OPENED, "coolant_overtemp"),
        (OPENED, "battery"),
        (ACKNOWLEDGED, "coolant_overtemp"),
        (CLEARED, "battery"),
        (OPENED, "battery"),
        (UPDATED, "coolant_overtemp"),
    ]
    assert read_history(client, VIN, since_ns=at(100)) == history[-2:]
    values = client.query(
        f"SELECT \"value_ect_c\" FROM alerts WHERE vin = '{VIN}' AND \"type\" = 'coolant_overtemp'"
    )
    assert [row["value_ect_c"] for row in values] == [112.0, 112.0, 112.0]
    client.close()
