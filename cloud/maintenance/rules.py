"""Maintenance rules: decoded samples and DTC reports in, findings out.

:class:`MaintenanceMonitor` keeps one set of rules per vehicle. Feed it each vehicle's
samples in time order (:meth:`~MaintenanceMonitor.feed`, or a whole
:class:`~roadwave.contract.TelemetryBatch`) and its DTC reports
(:meth:`~MaintenanceMonitor.feed_dtcs`); it returns observations for the alert book
(``cloud.maintenance.alerts``):

* a :class:`Finding` when a condition is found, again when its severity rises, and,
  for rules that take discrete measurements (battery), at every bad measurement;
* a :class:`Normal` when a condition that was found is measured as gone, past the
  rule's clear threshold, which is distinct from the raise threshold. The alert book
  clears the alert once no finding followed for the ``hold_s`` the normal reading names.

Rules, by alert type (defaults and their sources: ``docs/maintenance.md``):

* ``battery``: 12 V resting voltage after the engine was off for a while; voltage dip
  while cranking;
* ``coolant_overtemp``: coolant above the normal range for a minimum duration;
* ``brake_wear``: braking energy 1/2 m (v1^2 - v2^2) summed while the brake is applied,
  as a fraction of a pad budget (an estimate);
* ``oil_life``: engine revolutions weighted by coolant temperature, as a fraction of a budget;
* ``service_due``: distance and engine hours since the last service against the interval;
* ``dtc_<CODE>`` (``dtc_P0301``): one alert type per trouble code, pending or confirmed.

Counters (brake wear, oil life, service) restart at zero with
:meth:`MaintenanceMonitor.reset` when the work is done, which clears their alerts.
Flagged samples (stale, integrity, range) are skipped; every time is integer
nanoseconds of frame time.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

from roadwave.configfile import Table, read_overrides
from roadwave.contract import (
    ContractError,
    TelemetryBatch,
    Value,
    check_value,
    check_vin,
    is_finite_number,
    is_timestamp,
)
from roadwave.contract.alerts import SEVERITIES

SECOND_NS = 1_000_000_000

VOLTAGE = "Vehicle.LowVoltageBattery.CurrentVoltage"
ENGINE_SPEED = "Vehicle.Powertrain.CombustionEngine.Speed"
COOLANT = "Vehicle.Powertrain.CombustionEngine.ECT"
AIR_TEMPERATURE = "Vehicle.Exterior.AirTemperature"
SPEED = "Vehicle.Speed"
ODOMETER = "Vehicle.TraveledDistance"
BRAKE_PEDAL = "Vehicle.Chassis.Brake.PedalPosition"
BRAKE_PRESSURE = "Vehicle.Chassis.Brake.Pressure"

# --- grounded figures (domain facts, "OBD-II and diagnostics") ------------------------------

#: 12 V lead-acid battery at rest: 12.6 / 12.4 / 12.2 / 12.0 V ~ 100 / 75 / 50 / 25 % charge.
RESTING_75_PERCENT_V = 12.4
RESTING_50_PERCENT_V = 12.2
RESTING_25_PERCENT_V = 12.0
#: A cranking dip below ~9.6 V marks a weak battery; the figure holds at >= 20 degC.
CRANKING_WEAK_V = 9.6
CRANKING_REFERENCE_C = 20.0
#: Coolant: normal 90-105 degC, danger above ~116 degC.
COOLANT_NORMAL_MAX_C = 105.0
COOLANT_DANGER_C = 116.0

DTC_PATTERN = re.compile(r"[PCBU][0-3][0-9A-F]{3}")


class MaintenanceInputError(ValueError):
    """A sample, DTC report or request the maintenance rules cannot take; the message says why."""


class RuleConfigError(ValueError):
    """A rule setting out of range or inconsistent with another; the message names both."""


# --- inputs and outputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtcStatus:
    """One diagnostic trouble code as reported by an ECU, e.g. ``P0301`` pending on ``7E8``.

    A code that is neither pending nor confirmed (a stored or history entry) raises nothing.
    """

    code: str
    pending: bool
    confirmed: bool
    ecu: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not DTC_PATTERN.fullmatch(self.code):
            raise MaintenanceInputError(
                f"invalid DTC {self.code!r}: need a letter P, C, B or U, a digit 0-3, three hex digits"
            )
        if not isinstance(self.pending, bool) or not isinstance(self.confirmed, bool):
            raise MaintenanceInputError(f"DTC {self.code}: pending and confirmed must be booleans")
        if not isinstance(self.ecu, str) or not 0 < len(self.ecu) <= 32:
            raise MaintenanceInputError(f"DTC {self.code}: ecu must be a name of 1-32 characters")


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition found on a vehicle: alert type, severity 1-3, measures, advice, frame time.

    ``value`` maps measure names, which carry their unit (``resting_voltage_v``), to numbers.
    """

    vin: str
    type: str
    t_ns: int
    severity: int
    value: dict[str, float]
    recommendation: str


@dataclass(frozen=True, slots=True)
class Normal:
    """A condition found earlier is measured as gone; the alert clears after ``hold_s`` without findings."""

    vin: str
    type: str
    t_ns: int
    value: dict[str, float]
    hold_s: float


Observation = Finding | Normal


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RuleSettings:
    """What every rule has: a switch and how long its condition must stay gone to clear."""

    kind: ClassVar[str]

    enabled: bool = True
    clear_hold_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise RuleConfigError(f"{self.kind}: enabled must be true or false, got {self.enabled!r}")
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "enabled" or is_finite_number(value) and value >= 0:
                continue
            raise RuleConfigError(f"{self.kind}: {item.name} must be a finite number >= 0, got {value!r}")
        if self.clear_hold_s <= 0:
            raise RuleConfigError(f"{self.kind}: clear_hold_s must be > 0, got {self.clear_hold_s!r}")

    def _need(self, low: str, high: str) -> None:
        """Raise unless setting ``low`` is below setting ``high``."""
        a, b = getattr(self, low), getattr(self, high)
        if not a < b:
            raise RuleConfigError(f"{self.kind}: {low} ({a:g}) must be below {high} ({b:g})")


@dataclass(frozen=True, kw_only=True)
class BatterySettings(RuleSettings):
    """12 V battery: resting voltage (V) and cranking dip (V)."""

    kind: ClassVar[str] = "battery"
    clear_hold_s: float = 86_400.0  # one good reading a day later: readings come once per park
    #: Severity 1 below this resting voltage (about 50 % charge)...
    resting_low_v: float = RESTING_50_PERCENT_V
    #: ...severity 2 below this one (about 25 %).
    resting_warning_v: float = RESTING_25_PERCENT_V
    #: A resting voltage at or above this (about 75 %) is good.
    resting_clear_v: float = RESTING_75_PERCENT_V
    #: The engine must have been off this long for a resting reading (roadwave choice: surface charge).
    rest_s: float = 3600.0
    #: Severity 2 for a cranking minimum below this; 3 with a low resting voltage as well.
    cranking_weak_v: float = CRANKING_WEAK_V
    #: A cranking minimum at or above this is good (roadwave choice: 0.4 V of hysteresis).
    cranking_clear_v: float = 10.0
    #: Voltage samples this long from the first engine revolution form the cranking dip.
    cranking_window_s: float = 3.0
    #: The dip is judged only at or above this air (else coolant) temperature.
    cranking_min_temp_c: float = CRANKING_REFERENCE_C

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need("resting_warning_v", "resting_low_v")
        self._need("resting_low_v", "resting_clear_v")
        self._need("cranking_weak_v", "cranking_clear_v")


@dataclass(frozen=True, kw_only=True)
class CoolantSettings(RuleSettings):
    """Coolant over-temperature (degC) held for a minimum duration."""

    kind: ClassVar[str] = "coolant_overtemp"
    clear_hold_s: float = 600.0
    #: Severity 2 above the top of the normal range...
    threshold_c: float = COOLANT_NORMAL_MAX_C
    #: ...severity 3 above the danger level...
    critical_c: float = COOLANT_DANGER_C
    #: ...each held this long (roadwave choice: ignores short spikes).
    min_duration_s: float = 30.0
    #: Back to normal at or below this (5 degC inside the normal range).
    clear_c: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need("clear_c", "threshold_c")
        self._need("threshold_c", "critical_c")


@dataclass(frozen=True, kw_only=True)
class UsageSettings(RuleSettings):
    """A counter used up towards a budget: severity 1, 2, 3 at fractions ``soon``, ``due``, ``overdue``."""

    clear_hold_s: float = 60.0
    soon: float
    due: float
    overdue: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.soon <= 0:
            raise RuleConfigError(f"{self.kind}: soon must be > 0, got {self.soon!r}")
        self._need("soon", "due")
        self._need("due", "overdue")


@dataclass(frozen=True, kw_only=True)
class BrakeWearSettings(UsageSettings):
    """Braking energy (MJ) against what a set of pads absorbs: an estimate to calibrate per model."""

    kind: ClassVar[str] = "brake_wear"
    soon: float = 0.8
    due: float = 0.9
    overdue: float = 1.0
    vehicle_mass_kg: float = 1500.0
    #: Roadwave assumption: ~50,000 km of pad life at ~0.15 MJ of braking per km.
    pad_budget_mj: float = 7500.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("vehicle_mass_kg", "pad_budget_mj"):
            if getattr(self, name) <= 0:
                raise RuleConfigError(f"{self.kind}: {name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True, kw_only=True)
class OilLifeSettings(UsageSettings):
    """Engine revolutions weighted by coolant temperature, against a budget (millions)."""

    kind: ClassVar[str] = "oil_life"
    soon: float = 0.85
    due: float = 0.95
    overdue: float = 1.0
    #: Roadwave assumption: ~250 engine hours at 2,000 rpm (about 15,000 km) per oil change.
    budget_mrev: float = 30.0
    #: Revolutions below this coolant temperature (a cold engine) weigh ``cold_weight``...
    cold_below_c: float = 60.0
    cold_weight: float = 2.0
    #: ...and above the top of the normal range, ``hot_weight``; 1 in between.
    hot_above_c: float = COOLANT_NORMAL_MAX_C
    hot_weight: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._need("cold_below_c", "hot_above_c")
        if self.budget_mrev <= 0:
            raise RuleConfigError(f"{self.kind}: budget_mrev must be > 0, got {self.budget_mrev!r}")


@dataclass(frozen=True, kw_only=True)
class ServiceDueSettings(UsageSettings):
    """Distance (km) or engine hours since the last service, whichever is further along."""

    kind: ClassVar[str] = "service_due"
    soon: float = 0.9
    due: float = 1.0
    overdue: float = 1.1
    #: Roadwave assumption, a common manufacturer schedule; 0 disables that measure.
    interval_km: float = 15_000.0
    interval_engine_h: float = 500.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.interval_km or self.interval_engine_h):
            raise RuleConfigError(f"{self.kind}: interval_km and interval_engine_h cannot both be 0")


@dataclass(frozen=True, kw_only=True)
class DtcSettings(RuleSettings):
    """Diagnostic trouble codes: the severity of a pending and of a confirmed code."""

    kind: ClassVar[str] = "dtc"
    clear_hold_s: float = 3600.0
    pending_severity: int = 1
    confirmed_severity: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pending_severity", "confirmed_severity"):
            if getattr(self, name) not in SEVERITIES:
                raise RuleConfigError(f"{self.kind}: {name} must be 1, 2 or 3, got {getattr(self, name)!r}")
        self._need("pending_severity", "confirmed_severity")


@dataclass(frozen=True, kw_only=True)
class MaintenanceConfig:
    """Every rule's settings, the sample gap rules bridge and the alert notification interval."""

    #: Updates of an active alert are notified at most once per this interval (alert book).
    notify_interval_s: float = 3600.0
    #: Samples further apart are not integrated across; values older than this are unknown.
    max_gap_s: float = 5.0
    battery: BatterySettings = field(default_factory=BatterySettings)
    coolant_overtemp: CoolantSettings = field(default_factory=CoolantSettings)
    brake_wear: BrakeWearSettings = field(default_factory=BrakeWearSettings)
    oil_life: OilLifeSettings = field(default_factory=OilLifeSettings)
    service_due: ServiceDueSettings = field(default_factory=ServiceDueSettings)
    dtc: DtcSettings = field(default_factory=DtcSettings)

    def __post_init__(self) -> None:
        for name in ("notify_interval_s", "max_gap_s"):
            value = getattr(self, name)
            if not is_finite_number(value) or value < 0:
                raise RuleConfigError(f"maintenance: {name} must be a finite number >= 0, got {value!r}")
        if self.max_gap_s <= 0:
            raise RuleConfigError(f"maintenance: max_gap_s must be > 0, got {self.max_gap_s!r}")


#: The rule tables of ``[maintenance]``, by rule kind.
RULE_KINDS = tuple(
    item.name for item in fields(MaintenanceConfig) if item.name not in ("notify_interval_s", "max_gap_s")
)


def parse_maintenance_config(table: Table) -> MaintenanceConfig:
    """Read a ``[maintenance]`` table (pass ``root.table("maintenance")``; absent reads as defaults).

    Raises:
        ConfigError: naming the file, the table, the key and the problem.
    """
    base = MaintenanceConfig()
    notify_interval_s = table.number("notify_interval_s", base.notify_interval_s, minimum=0.0)
    max_gap_s = table.number("max_gap_s", base.max_gap_s, minimum=0.0)
    rules: dict[str, Any] = {
        kind: read_overrides(table.table(kind), getattr(base, kind), (min(SEVERITIES), max(SEVERITIES)))
        for kind in RULE_KINDS
    }
    table.finish()
    try:
        return replace(base, notify_interval_s=notify_interval_s, max_gap_s=max_gap_s, **rules)
    except RuleConfigError as exc:
        raise table.error(str(exc)) from None


# --- rules --------------------------------------------------------------------------------------


def _seconds_ns(seconds: float) -> int:
    return round(seconds * SECOND_NS)


class Readings:
    """The latest good sample of each signal of one vehicle; older than ``max_gap_s`` reads as unknown."""

    __slots__ = ("_latest", "max_gap_ns")

    def __init__(self, max_gap_s: float) -> None:
        self._latest: dict[str, tuple[int, float]] = {}
        self.max_gap_ns = _seconds_ns(max_gap_s)

    def update(self, t_ns: int, sample: Mapping[str, float]) -> None:
        """Take good samples taken at ``t_ns``."""
        for path, value in sample.items():
            self._latest[path] = (t_ns, value)

    def fresh(self, path: str, t_ns: int) -> float | None:
        """The value of ``path`` if it was sampled at most ``max_gap_s`` before ``t_ns``, else None."""
        entry = self._latest.get(path)
        if entry is None or t_ns - entry[0] > self.max_gap_ns:
            return None
        return entry[1]


class _Trigger:
    """Turns one alert type's verdicts into observations: findings on the rise, a normal at the end."""

    __slots__ = ("vin", "type", "hold_s", "raised")

    def __init__(self, vin: str, alert_type: str, hold_s: float) -> None:
        self.vin, self.type, self.hold_s = vin, alert_type, hold_s
        #: Severity found in the current episode; 0 while normal.
        self.raised = 0

    def judge(
        self,
        t_ns: int,
        severity: int | None,
        value: Callable[[], dict[str, float]],
        advice: Callable[[int], str],
        repeat: bool = False,
    ) -> Observation | None:
        """Observe a verdict: severity 1-3 found, 0 normal (past the clear threshold), None in between.

        A finding is reported when the severity rises, and with ``repeat`` (a bad
        discrete measurement) at every finding; ``value`` and ``advice`` are only
        called for what is reported.
        """
        if severity is None or severity == 0 and not self.raised:
            return None
        if severity == 0:
            self.raised = 0
            return Normal(self.vin, self.type, t_ns, value(), self.hold_s)
        if severity <= self.raised and not repeat:
            return None
        self.raised = max(self.raised, severity)
        return Finding(self.vin, self.type, t_ns, severity, value(), advice(severity))


SettingsT = TypeVar("SettingsT", bound=RuleSettings)
UsageT = TypeVar("UsageT", bound=UsageSettings)


class Rule(ABC, Generic[SettingsT]):
    """One maintenance rule over one vehicle's samples."""

    #: Paths whose samples make the rule evaluate (it may read others from :class:`Readings`).
    inputs: ClassVar[frozenset[str]]

    def __init__(self, vin: str, settings: SettingsT) -> None:
        self.settings = settings
        self.trigger = _Trigger(vin, settings.kind, settings.clear_hold_s)

    @abstractmethod
    def update(self, t_ns: int, sample: Mapping[str, float], readings: Readings) -> Observation | None:
        """Take the good samples of one frame (already in ``readings``); return what it observed."""


def _grade(value: float, bad: tuple[tuple[float, int], ...], good: float) -> int | None:
    """Severity of a reading that is bad when low: that of the first ``(level, severity)`` it is
    below, 0 at or above ``good``, None in between."""
    for level, severity in bad:
        if value < level:
            return severity
    return 0 if value >= good else None


class BatteryRule(Rule[BatterySettings]):
    """Resting voltage once per park, and the voltage dip of every engine start.

    Each bad reading is a finding; both measures bad make severity 3.
    """

    inputs = frozenset({VOLTAGE, ENGINE_SPEED})

    def __init__(self, vin: str, settings: BatterySettings) -> None:
        super().__init__(vin, settings)
        self._last_running_ns: int | None = None
        self._rest_judged = False
        self._last_rpm: tuple[int, float] | None = None
        self._crank_start_ns: int | None = None
        self._crank_min_v: float | None = None
        #: Each measure's verdict (severity, 0 good, None unknown) and latest reading.
        self._resting: tuple[int | None, float | None] = (None, None)
        self._cranking: tuple[int | None, float | None] = (None, None)

    def update(self, t_ns: int, sample: Mapping[str, float], readings: Readings) -> Observation | None:
        rpm, voltage = sample.get(ENGINE_SPEED), sample.get(VOLTAGE)
        if rpm is not None:
            previous, self._last_rpm = self._last_rpm, (t_ns, rpm)
            if rpm > 0:
                # Off before: stopped, or silent (the agent sleeps while parked); unknown at first sight.
                was_off = previous is not None and (
                    previous[1] == 0 or t_ns - previous[0] > readings.max_gap_ns
                )
                if was_off and self._crank_start_ns is None:
                    self._crank_start_ns, self._crank_min_v = t_ns, None
                self._last_running_ns, self._rest_judged = t_ns, False
        measured: int | None = None  # severity of what was measured now
        start = self._crank_start_ns
        if start is not None and t_ns <= start + _seconds_ns(self.settings.cranking_window_s):
            if voltage is not None:
                self._crank_min_v = voltage if self._crank_min_v is None else min(self._crank_min_v, voltage)
        elif start is not None:
            self._crank_start_ns = None
            measured = self._judge_cranking(t_ns, readings)
        if voltage is not None and readings.fresh(ENGINE_SPEED, t_ns) == 0:
            resting = self._judge_resting(t_ns, voltage)
            measured = resting if measured is None else max(measured, resting or 0)
        if measured is None:
            return None
        return self.trigger.judge(t_ns, self._severity(), self._value, self._advice, repeat=measured > 0)

    def _judge_resting(self, t_ns: int, voltage: float) -> int | None:
        s = self.settings
        off_since = self._last_running_ns
        if self._rest_judged or off_since is None or t_ns - off_since < _seconds_ns(s.rest_s):
            return None
        self._rest_judged = True
        grade = _grade(voltage, ((s.resting_warning_v, 2), (s.resting_low_v, 1)), s.resting_clear_v)
        self._resting = (self._resting[0] if grade is None else grade, voltage)  # in between: as before
        return grade or 0

    def _judge_cranking(self, t_ns: int, readings: Readings) -> int | None:
        s = self.settings
        temperature = readings.fresh(AIR_TEMPERATURE, t_ns)
        if temperature is None:
            temperature = readings.fresh(COOLANT, t_ns)
        dip = self._crank_min_v
        if dip is None or temperature is None or temperature < s.cranking_min_temp_c:
            return None
        grade = _grade(dip, ((s.cranking_weak_v, 2),), s.cranking_clear_v)
        self._cranking = (self._cranking[0] if grade is None else grade, dip)
        return grade or 0

    def _severity(self) -> int | None:
        resting, cranking = self._resting[0], self._cranking[0]
        if resting and cranking:
            return 3
        if resting or cranking:
            return max(resting or 0, cranking or 0)
        return 0 if 0 in (resting, cranking) else None

    def _value(self) -> dict[str, float]:
        value = {}
        if self._resting[1] is not None:
            value["resting_voltage_v"] = self._resting[1]
        if self._cranking[1] is not None:
            value["cranking_min_v"] = self._cranking[1]
        return value

    def _advice(self, severity: int) -> str:
        if severity == 3:
            return (
                "The battery is low at rest and its voltage collapses when starting: it may soon fail "
                "to start the engine. Test and replace it."
            )
        if self._cranking[0]:
            return (
                "The battery voltage dips too far when starting the engine: the battery is weak. "
                "Have it load-tested."
            )
        level = "about 25 % or less" if self._resting[0] == 2 else "about 50 % or less"
        return (
            f"The battery charge at rest is low ({level}). Charge it or drive longer trips; "
            "have the battery and charging system tested if this recurs."
        )


class CoolantRule(Rule[CoolantSettings]):
    """Coolant temperature above the normal range (severity 2) or the danger level (3) for a while."""

    inputs = frozenset({COOLANT})

    def __init__(self, vin: str, settings: CoolantSettings) -> None:
        super().__init__(vin, settings)
        self._levels = ((settings.critical_c, 3), (settings.threshold_c, 2))
        self._held_ns = _seconds_ns(settings.min_duration_s)
        #: Level -> when the coolant went above it, for each level it is above now.
        self._above_since: dict[float, int] = {}

    def update(self, t_ns: int, sample: Mapping[str, float], readings: Readings) -> Observation | None:
        ect = sample[COOLANT]
        for level, _ in self._levels:
            if ect > level:
                self._above_since.setdefault(level, t_ns)
            else:
                self._above_since.pop(level, None)
        since = self._above_since
        held = [
            grade for level, grade in self._levels if level in since and t_ns - since[level] >= self._held_ns
        ]
        severity = 0 if ect <= self.settings.clear_c else max(held, default=None)
        return self.trigger.judge(t_ns, severity, lambda: self._value(t_ns, ect), self._advice)

    def _value(self, t_ns: int, ect: float) -> dict[str, float]:
        since = self._above_since.get(self.settings.threshold_c)
        return {"ect_c": ect, "above_s": 0.0 if since is None else (t_ns - since) / SECOND_NS}

    def _advice(self, severity: int) -> str:
        if severity == 3:
            return (
                "The engine coolant is at a dangerous temperature. Stop as soon as it is safe, switch the "
                "engine off and have the cooling system checked before driving on."
            )
        return (
            "The engine runs hotter than normal. Check the coolant level when the engine is cold and "
            "have the cooling system (thermostat, fan, radiator) inspected."
        )


class UsageRule(Rule[UsageT]):
    """A counter that grows towards a budget; severity by the fraction used, reset by service."""

    @property
    @abstractmethod
    def used(self) -> float:
        """Fraction of the budget used since the last reset."""

    @abstractmethod
    def measures(self) -> dict[str, float]:
        """The counters behind :attr:`used`, with their units in the names."""

    @abstractmethod
    def restart(self) -> None:
        """Start counting again from zero (the work was done)."""

    @abstractmethod
    def advice(self, severity: int) -> str:
        """What to do at a severity."""

    def verdict(self, t_ns: int) -> Observation | None:
        """The observation for the current count."""
        s, used = self.settings, self.used
        severity = 3 if used >= s.overdue else 2 if used >= s.due else 1 if used >= s.soon else 0
        return self.trigger.judge(
            t_ns, severity, lambda: {"used_fraction": used, **self.measures()}, self.advice
        )

    def reset(self, t_ns: int) -> Observation | None:
        """The work was done at ``t_ns``: restart the count; a normal reading if the alert was raised."""
        self.restart()
        return self.verdict(t_ns)


def _step_s(previous: tuple[int, float], t_ns: int, readings: Readings) -> float | None:
    """Seconds since the previous sample, or None if the gap is too long to bridge."""
    step_ns = t_ns - previous[0]
    return step_ns / SECOND_NS if step_ns <= readings.max_gap_ns else None


class BrakeWearRule(UsageRule[BrakeWearSettings]):
    """Kinetic energy removed while the brake is applied: sum of 1/2 m (v1^2 - v2^2) per speed step."""

    inputs = frozenset({SPEED})

    def __init__(self, vin: str, settings: BrakeWearSettings) -> None:
        super().__init__(vin, settings)
        self.energy_j = 0.0
        self._last: tuple[int, float] | None = None

    def update(self, t_ns: int, sample: Mapping[str, float], readings: Readings) -> Observation | None:
        speed_mps = sample[SPEED] / 3.6
        previous, self._last = self._last, (t_ns, speed_mps)
        if previous is None or speed_mps >= previous[1] or _step_s(previous, t_ns, readings) is None:
            return None
        pedal = readings.fresh(BRAKE_PEDAL, t_ns) or 0.0
        pressure = readings.fresh(BRAKE_PRESSURE, t_ns) or 0.0
        if pedal <= 0 and pressure <= 0:
            return None
        self.energy_j += 0.5 * self.settings.vehicle_mass_kg * (previous[1] ** 2 - speed_mps**2)
        return self.verdict(t_ns)

    @property
    def used(self) -> float:
        return self.energy_j / (self.settings.pad_budget_mj * 1e6)

    def measures(self) -> dict[str, float]:
        return {"braking_energy_mj": self.energy_j / 1e6}

    def restart(self) -> None:
        self.energy_j = 0.0

    def advice(self, severity: int) -> str:
        state = {3: "likely worn out", 2: "likely near the end of their life", 1: "likely well worn"}[
            severity
        ]
        action = {
            3: "Have the brakes inspected now.",
            2: "Book a brake inspection.",
            1: "Check them at the next service.",
        }[severity]
        estimate = "This is an estimate from braking energy, not a measurement."
        return f"The brake pads are {state}. {action} {estimate}"


class OilLifeRule(UsageRule[OilLifeSettings]):
    """Engine revolutions, weighted more when the coolant is cold or hot, against a budget."""

    inputs = frozenset({ENGINE_SPEED})

    def __init__(self, vin: str, settings: OilLifeSettings) -> None:
        super().__init__(vin, settings)
        self.weighted_revolutions = 0.0
        self._last: tuple[int, float] | None = None

    def update(self, t_ns: int, sample: Mapping[str, float], readings: Readings) -> Observation | None:
        previous, self._last = self._last, (t_ns, sample[ENGINE_SPEED])
        if previous is None or previous[1] <= 0:
            return None
        step_s = _step_s(previous, t_ns, readings)
        if step_s is None:
            return None
        s = self.settings
        ect = readings.fresh(COOLANT, t_ns)
        weight = 1.0
        if ect is not None and ect < s.cold_below_c:
            weight = s.cold_weight
        elif ect is not None and ect > s.hot_above_c:
            weight = s.hot_weight
        self.weighted_revolutions += previous[1] / 60.0 * step_s * weight
        return self.verdict(t_ns)

    @property
    def used(self) -> float:
        return self.weighted_revolutions / (self.settings.budget_mrev * 1e6)

    def measures(self) -> dict[str, float]:
        return {"weighted_mrev": self.weighted_revolutions / 1e6}

    def restart(self) -> None:
        self.weighted_revolutions = 0.0

    def advice(self, severity: int) -> str:
        return {
            3: "The engine oil is used up. Change the oil and filter now.",
            2: "The engine oil is nearly used up. Change the oil and filter soon.",
            1: "The engine oil life is running low. Plan an oil change.",
        }[severity]


class ServiceDueRule(UsageRule[ServiceDueSettings]):
    """Distance by odometer and engine hours since the last service, against the interval."""

    inputs = frozenset({ODOMETER, ENGINE_SPEED})

    def __init__(self, vin: str, settings: ServiceDueSettings) -> None:
        super().__init__(vin, settings)
        self.engine_s = 0.0
        self.distance_m = 0.0
        #: Odometer at the last service (the first reading if none was recorded).
        self._base_m: float | None = None
        self._odometer_m: float | None = None
        self._last_rpm: tuple[int, float] | None = None

    def update(self, t_ns: int, sample: Mapping[str, float], readings: Readings) -> Observation | None:
        odometer = sample.get(ODOMETER)
        if odometer is not None:
            self._odometer_m = odometer
            if self._base_m is None:
                self._base_m = odometer
            self.distance_m = max(self.distance_m, odometer - self._base_m)  # a reading going back is ignored
        rpm = sample.get(ENGINE_SPEED)
        if rpm is not None:
            previous, self._last_rpm = self._last_rpm, (t_ns, rpm)
            if previous is not None and previous[1] > 0:
                self.engine_s += _step_s(previous, t_ns, readings) or 0.0
        return self.verdict(t_ns)

    @property
    def used(self) -> float:
        s = self.settings
        by_distance = self.distance_m / (s.interval_km * 1000) if s.interval_km else 0.0
        by_hours = self.engine_s / (s.interval_engine_h * 3600) if s.interval_engine_h else 0.0
        return max(by_distance, by_hours)

    def measures(self) -> dict[str, float]:
        return {"distance_km": self.distance_m / 1000, "engine_h": self.engine_s / 3600}

    def restart(self) -> None:
        self.engine_s = self.distance_m = 0.0
        self._base_m = self._odometer_m

    def advice(self, severity: int) -> str:
        return {
            3: "The scheduled service is overdue. Book it now.",
            2: "The scheduled service is due. Book it.",
            1: "The scheduled service is due soon. Plan an appointment.",
        }[severity]


class DtcRule:
    """One alert type per trouble code: raised pending or confirmed, normal once no longer reported."""

    def __init__(self, vin: str, settings: DtcSettings) -> None:
        self.vin = vin
        self.settings = settings
        self._triggers: dict[str, _Trigger] = {}

    def update(
        self, t_ns: int, dtcs: Iterable[DtcStatus], complete: bool = True, mil_on: bool | None = None
    ) -> list[Observation]:
        """Take a report of the codes set on the vehicle's ECUs; only a ``complete`` one clears codes.

        ``mil_on`` (the malfunction lamp, None if unknown) joins the measures of what is observed.
        """
        reported: dict[str, tuple[bool, set[str]]] = {}
        for dtc in dtcs:
            if not isinstance(dtc, DtcStatus):
                raise MaintenanceInputError(f"a DTC report holds DtcStatus items, got {dtc!r}")
            if dtc.pending or dtc.confirmed:
                confirmed, ecus = reported.get(dtc.code, (False, set()))
                reported[dtc.code] = (confirmed or dtc.confirmed, ecus | {dtc.ecu})
        judged = reported.keys() | self._triggers.keys() if complete else reported.keys()
        observations = []
        for code in sorted(judged):
            observation = self._judge(code, t_ns, reported.get(code), mil_on)
            if observation is not None:
                observations.append(observation)
        return observations

    def _judge(
        self, code: str, t_ns: int, report: tuple[bool, set[str]] | None, mil_on: bool | None
    ) -> Observation | None:
        trigger = self._triggers.setdefault(
            code, _Trigger(self.vin, f"dtc_{code}", self.settings.clear_hold_s)
        )
        confirmed, ecus = report or (False, set())
        severity = 0
        if report is not None:
            severity = self.settings.confirmed_severity if confirmed else self.settings.pending_severity

        def measures() -> dict[str, float]:
            value = {"confirmed": float(confirmed), "pending": float(report is not None and not confirmed)}
            if mil_on is not None:
                value["mil_on"] = float(mil_on)
            return value

        observation = trigger.judge(t_ns, severity, measures, lambda _: _dtc_advice(code, confirmed, ecus))
        if not trigger.raised:
            del self._triggers[code]
        return observation


def _dtc_advice(code: str, confirmed: bool, ecus: set[str]) -> str:
    where = ", ".join(sorted(ecus))
    if confirmed:
        return f"Trouble code {code} is confirmed by ECU {where}. Have the vehicle diagnosed."
    return f"Trouble code {code} is pending on ECU {where}: a fault was seen once. Watch whether it returns."


# --- the monitor --------------------------------------------------------------------------------


@dataclass
class MonitorStats:
    """Counters of one monitor."""

    samples: int = 0
    samples_flagged: int = 0
    records_out_of_order: int = 0


class _Vehicle:
    __slots__ = ("readings", "rules", "usage", "dtc", "last_ns")

    def __init__(self, vin: str, config: MaintenanceConfig) -> None:
        self.readings = Readings(config.max_gap_s)
        self.usage: dict[str, UsageRule[Any]] = {
            rule.settings.kind: rule
            for rule in (
                BrakeWearRule(vin, config.brake_wear),
                OilLifeRule(vin, config.oil_life),
                ServiceDueRule(vin, config.service_due),
            )
            if rule.settings.enabled
        }
        conditions: list[Rule[Any]] = [
            BatteryRule(vin, config.battery),
            CoolantRule(vin, config.coolant_overtemp),
        ]
        self.rules = [*(rule for rule in conditions if rule.settings.enabled), *self.usage.values()]
        self.dtc = DtcRule(vin, config.dtc) if config.dtc.enabled else None
        self.last_ns: int | None = None


#: Every path some rule evaluates on or reads.
INPUTS = frozenset(
    {VOLTAGE, ENGINE_SPEED, COOLANT, AIR_TEMPERATURE, SPEED, ODOMETER, BRAKE_PEDAL, BRAKE_PRESSURE}
)


def _check_time(t_ns: Any) -> int:
    if not is_timestamp(t_ns):
        raise MaintenanceInputError(f"time {t_ns!r} is not integer nanoseconds within years 2000-2099")
    return int(t_ns)


class MaintenanceMonitor:
    """Runs the enabled rules of ``config`` (default: :class:`MaintenanceConfig`) per vehicle."""

    def __init__(self, config: MaintenanceConfig | None = None) -> None:
        self.config = config or MaintenanceConfig()
        self.stats = MonitorStats()
        self._vehicles: dict[str, _Vehicle] = {}

    def _vehicle(self, vin: str) -> _Vehicle:
        vehicle = self._vehicles.get(vin)
        if vehicle is None:
            try:
                check_vin(vin)
            except ContractError as exc:
                raise MaintenanceInputError(str(exc)) from None
            vehicle = self._vehicles[vin] = _Vehicle(vin, self.config)
        return vehicle

    def feed(
        self, vin: str, t_ns: int, signals: Mapping[str, Value], quality: Mapping[str, str] | None = None
    ) -> list[Observation]:
        """Take one vehicle's samples of one frame time; paths in ``quality`` are flagged and skipped.

        Samples older than the vehicle's latest are ignored (and counted): a batch
        delivered twice must not count braking energy or revolutions twice.

        Raises:
            MaintenanceInputError: an invalid VIN, time or value of a path the rules use.
        """
        vehicle = self._vehicle(vin)
        _check_time(t_ns)
        if vehicle.last_ns is not None and t_ns < vehicle.last_ns:
            self.stats.records_out_of_order += 1
            return []
        vehicle.last_ns = t_ns
        sample: dict[str, float] = {}
        for path, value in signals.items():
            if path not in INPUTS:
                continue
            if quality and path in quality:
                self.stats.samples_flagged += 1
                continue
            try:
                sample[path] = check_value(path, value)
            except ContractError as exc:
                raise MaintenanceInputError(f"{vin} at {t_ns}: {exc}") from None
        if not sample:
            return []
        self.stats.samples += len(sample)
        vehicle.readings.update(t_ns, sample)
        observations = []
        for rule in vehicle.rules:
            if not rule.inputs.isdisjoint(sample):
                observation = rule.update(t_ns, sample, vehicle.readings)
                if observation is not None:
                    observations.append(observation)
        return observations

    def feed_batch(self, batch: TelemetryBatch) -> list[Observation]:
        """Take every record of a validated telemetry batch."""
        return [
            observation
            for record in batch.records
            for observation in self.feed(batch.vin, record.t_ns, record.signals, record.quality)
        ]

    def feed_dtcs(
        self,
        vin: str,
        t_ns: int,
        dtcs: Iterable[DtcStatus],
        *,
        complete: bool = True,
        mil_on: bool | None = None,
    ) -> list[Observation]:
        """Take a vehicle's DTC report; codes a ``complete`` report no longer lists are gone.

        A report that is not ``complete`` (a read went unanswered) may miss codes: the
        codes it lists are raised or updated, and none is taken as gone. ``mil_on``, the
        malfunction lamp when known, is recorded in the measures as 0 or 1.

        Raises:
            MaintenanceInputError: an invalid VIN, time, report item or flag.
        """
        vehicle = self._vehicle(vin)
        _check_time(t_ns)
        if not isinstance(complete, bool) or not isinstance(mil_on, bool | None):
            raise MaintenanceInputError(f"{vin}: complete must be a boolean and mil_on a boolean or None")
        return [] if vehicle.dtc is None else vehicle.dtc.update(t_ns, dtcs, complete, mil_on)

    def reset(self, vin: str, kind: str, t_ns: int) -> list[Observation]:
        """The work behind counter ``kind`` (brake_wear, oil_life, service_due) was done: count from zero.

        Returns the normal reading that clears a raised alert, if there was one.

        Raises:
            MaintenanceInputError: an invalid VIN or time, or not a counter rule that is enabled.
        """
        vehicle = self._vehicle(vin)
        _check_time(t_ns)
        rule = vehicle.usage.get(kind)
        if rule is None:
            enabled = ", ".join(vehicle.usage) or "none"
            raise MaintenanceInputError(f"cannot reset {kind!r}: counters enabled are {enabled}")
        observation = rule.reset(t_ns)
        return [] if observation is None else [observation]
