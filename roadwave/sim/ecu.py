"""Simulated ECUs that answer OBD-II and UDS diagnostic requests over ISO-TP.

:class:`DiagnosticState` is one car's diagnostic truth: live values (what mode 01 PIDs
report), injected faults, and a DTC memory per ECU that follows the ISO 14229 status
model. :class:`SimulatedEcus` puts it on a python-can bus: the engine ECU (requests to
0x7E0, answers from 0x7E8) and the brake ECU (0x7E1 / 0x7E9) answer functional (0x7DF)
and physical requests: OBD modes 01, 03, 04, 07 and UDS ReadDTCInformation 0x19 0x01 /
0x02, single- or multi-frame, honouring the tester's flow control. Payload layouts come
from :mod:`edge.diagnostics`, so client and simulator share one definition.

Faults and the DTCs they set (thresholds are the simulator's choices, see
docs/diagnostics.md):

- misfire on cylinder N: P030N (and P0300 when two or more cylinders misfire); pending
  in the first drive cycle, confirmed with the MIL on when it fails again in the next;
- weakening 12 V battery: PID 0x42 drops; P0562 below :data:`LOW_VOLTAGE_V`;
- overheating engine: PID 0x05 rises; P0217 above :data:`OVERHEAT_C`;
- worn brakes: C0288 in the brake ECU (not emission-related, so UDS only).

:class:`Fault` is one such fault as ``roadwave sim --fault`` gives it, and
:class:`EcuDriver` keeps a state in step with a simulated vehicle: live values from its
signals, faults when they are due, a new drive cycle every :data:`DRIVE_CYCLE_S`.

Example, next to a client on the same virtual channel::

    with SimulatedEcus.open("virtual", "car0") as ecus:
        ecus.state.inject_misfire(3)
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from types import TracebackType
from typing import Any, Self

import can

from edge.diagnostics import DiagnosticError
from edge.diagnostics.client import (
    FUNCTIONAL_REQUEST_ID,
    NEGATIVE_RESPONSE,
    PHYSICAL_REQUEST_IDS,
    RESPONSE_OFFSET,
    RESPONSE_PENDING,
    IsoTpConfig,
    IsoTpEndpoint,
)
from edge.diagnostics.dtc import (
    READ_DTC_INFORMATION,
    REPORT_BY_STATUS_MASK,
    REPORT_NUMBER_BY_STATUS_MASK,
    Dtc,
    DtcRecord,
    DtcStatus,
    encode_dtc_count,
    encode_dtc_report,
)
from edge.diagnostics.obd import (
    BITMAP_PIDS,
    CLEAR_DTCS,
    MAX_PIDS_PER_REQUEST,
    MONITOR_STATUS,
    PIDS,
    SHOW_CURRENT_DATA,
    SHOW_PENDING_DTCS,
    SHOW_STORED_DTCS,
    MonitorStatus,
    encode_dtc_response,
    encode_pid_response,
    encode_supported,
    with_bitmaps,
)

LOGGER = logging.getLogger(__name__)
#: How often the ECUs' notifier thread looks up from the bus; bounds the time :meth:`stop` takes.
NOTIFIER_POLL_S = 0.1

#: Coolant above this sets P0217 (domain facts: danger above about 116 degC).
OVERHEAT_C = 116.0
#: Control module voltage below this, engine running, sets P0562 (a simulator choice;
#: manufacturers calibrate their own, typically 10-11.5 V).
LOW_VOLTAGE_V = 11.0
#: A DTC is confirmed (and lights the MIL) when it fails in this many drive cycles in a row.
CONFIRM_AFTER_CYCLES = 2
#: The MIL goes off after this many drive cycles without the failure (OBD practice).
MIL_OFF_AFTER_CYCLES = 3
CYLINDERS = 8
BRAKE_WEAR_DTC = Dtc("C0288")
OVERHEAT_DTC = Dtc("P0217")
LOW_VOLTAGE_DTC = Dtc("P0562")
MULTIPLE_MISFIRE_DTC = Dtc("P0300")
#: The status bits our ECUs maintain: not the two "test not completed" bits.
AVAILABILITY = (
    DtcStatus.TEST_FAILED
    | DtcStatus.TEST_FAILED_THIS_OPERATION_CYCLE
    | DtcStatus.PENDING
    | DtcStatus.CONFIRMED
    | DtcStatus.TEST_FAILED_SINCE_LAST_CLEAR
    | DtcStatus.WARNING_INDICATOR_REQUESTED
)
#: NRCs the simulated ECUs send (ISO 14229-1).
SERVICE_NOT_SUPPORTED = 0x11
SUBFUNCTION_NOT_SUPPORTED = 0x12
INCORRECT_LENGTH = 0x13
REQUEST_OUT_OF_RANGE = 0x31


def misfire_dtc(cylinder: int) -> Dtc:
    """P0301 ... P0308."""
    return Dtc(f"P030{cylinder}")


@dataclass(frozen=True, slots=True)
class EcuSpec:
    """One simulated ECU: name, physical request ID, the mode 01 PIDs it answers."""

    name: str
    request_id: int
    pids: frozenset[int]

    def __post_init__(self) -> None:
        if self.request_id not in PHYSICAL_REQUEST_IDS:
            raise ValueError(
                f"EcuSpec {self.name!r}: request_id must be within 0x7E0-0x7E7, got {self.request_id!r}"
            )
        unknown = sorted(self.pids - PIDS.keys() - {MONITOR_STATUS})
        if unknown:
            raise ValueError(f"EcuSpec {self.name!r}: no simulated value for PIDs {unknown}")

    @property
    def response_id(self) -> int:
        return self.request_id + RESPONSE_OFFSET


ENGINE = EcuSpec("engine", 0x7E0, frozenset({MONITOR_STATUS, *PIDS}))
BRAKES = EcuSpec("brakes", 0x7E1, frozenset({MONITOR_STATUS, 0x0D}))


@dataclass(frozen=True, slots=True)
class LiveValues:
    """What the engine reports right now (physical units of the mode 01 PIDs)."""

    engine_load_pct: float = 20.0
    coolant_c: float = 90.0
    engine_rpm: float = 750.0
    speed_kmh: float = 0.0
    run_time_s: float = 0.0
    fuel_pct: float = 60.0
    battery_v: float = 14.1
    oil_c: float = 95.0
    odometer_km: float = 10_000.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            pid = PIDS[_FIELD_PIDS[item.name]]
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"LiveValues.{item.name} must be a finite number, got {value!r}")
            # The run-time counter stops at its maximum (J1979); other values must fit their PID.
            high = math.inf if item.name == "run_time_s" else pid.maximum
            if not pid.minimum <= value <= high:
                raise ValueError(
                    f"LiveValues.{item.name} must be within [{pid.minimum:g}, {high:g}] {pid.unit} "
                    f"(PID 0x{pid.number:02X}), got {value!r}"
                )


_FIELD_PIDS = {
    "engine_load_pct": 0x04,
    "coolant_c": 0x05,
    "engine_rpm": 0x0C,
    "speed_kmh": 0x0D,
    "run_time_s": 0x1F,
    "fuel_pct": 0x2F,
    "battery_v": 0x42,
    "oil_c": 0x5C,
    "odometer_km": 0xA6,
}
_PID_FIELDS = {pid: name for name, pid in _FIELD_PIDS.items()}
#: Vehicle model signals (:class:`roadwave.sim.vehicle.VehicleModel`) that feed live values.
SIGNAL_FIELDS = {
    "VehicleSpeed": "speed_kmh",
    "EngineSpeed": "engine_rpm",
    "CoolantTemp": "coolant_c",
    "BatteryVoltage": "battery_v",
    "FuelLevel": "fuel_pct",
    "Odometer": "odometer_km",
}


@dataclass
class _Entry:
    status: DtcStatus
    emission_related: bool
    failed_cycles: int = 0  # consecutive drive cycles with a failure, this one included
    passed_cycles: int = 0  # consecutive drive cycles without one


class DtcMemory:
    """One ECU's fault memory with the ISO 14229 status bits of :data:`AVAILABILITY`."""

    def __init__(self) -> None:
        self._entries: dict[Dtc, _Entry] = {}

    def test_result(self, dtc: Dtc, failed: bool, emission_related: bool = True) -> None:
        """A monitor's verdict in the current drive cycle."""
        entry = self._entries.get(dtc)
        if not failed:
            if entry is not None:
                entry.status &= ~DtcStatus.TEST_FAILED
            return
        if entry is None:
            entry = self._entries[dtc] = _Entry(DtcStatus(0), emission_related)
        if DtcStatus.TEST_FAILED_THIS_OPERATION_CYCLE not in entry.status:
            entry.failed_cycles += 1
            entry.passed_cycles = 0
        entry.status |= (
            DtcStatus.TEST_FAILED
            | DtcStatus.TEST_FAILED_THIS_OPERATION_CYCLE
            | DtcStatus.PENDING
            | DtcStatus.TEST_FAILED_SINCE_LAST_CLEAR
        )
        if entry.failed_cycles >= CONFIRM_AFTER_CYCLES:
            entry.status |= DtcStatus.CONFIRMED | DtcStatus.WARNING_INDICATOR_REQUESTED

    def end_drive_cycle(self) -> None:
        """Close the operation cycle: DTCs that did not fail lose PENDING and, in time, the MIL."""
        for entry in self._entries.values():
            if DtcStatus.TEST_FAILED_THIS_OPERATION_CYCLE in entry.status:
                entry.status &= ~DtcStatus.TEST_FAILED_THIS_OPERATION_CYCLE
                continue
            entry.failed_cycles = 0
            entry.passed_cycles += 1
            entry.status &= ~DtcStatus.PENDING
            if entry.passed_cycles >= MIL_OFF_AFTER_CYCLES:
                entry.status &= ~DtcStatus.WARNING_INDICATOR_REQUESTED

    def clear(self, emission_only: bool) -> None:
        """Mode 04 clears the emission-related DTCs; UDS 0x14 (not simulated) would clear all."""
        self._entries = {
            dtc: entry for dtc, entry in self._entries.items() if emission_only and not entry.emission_related
        }

    def records(self, mask: int) -> list[DtcRecord]:
        """Entries with any status bit of ``mask`` set, in code order."""
        return [
            DtcRecord(dtc, entry.status)
            for dtc, entry in sorted(self._entries.items(), key=lambda item: item[0].code)
            if entry.status & mask
        ]

    def emission_dtcs(self, bit: DtcStatus) -> list[Dtc]:
        """Emission-related DTCs with ``bit`` set (CONFIRMED for mode 03, PENDING for mode 07)."""
        return [record.dtc for record in self.records(bit) if self._entries[record.dtc].emission_related]

    @property
    def mil_on(self) -> bool:
        return any(DtcStatus.WARNING_INDICATOR_REQUESTED in e.status for e in self._entries.values())

    def status(self, dtc: Dtc) -> DtcStatus | None:
        entry = self._entries.get(dtc)
        return None if entry is None else entry.status


def _negative(service: int, code: int) -> bytes:
    return bytes([NEGATIVE_RESPONSE, service, code])


class DiagnosticState:
    """One car's diagnostic truth: live values, faults and the ECUs' DTC memories. Thread-safe.

    Monitors run after every change: a fault present now fails its test in the current
    drive cycle; :meth:`next_drive_cycle` ends the cycle and starts the next.
    """

    def __init__(self, values: LiveValues = LiveValues(), ecus: Sequence[EcuSpec] = (ENGINE, BRAKES)) -> None:
        names = [ecu.name for ecu in ecus]
        ids = [ecu.request_id for ecu in ecus]
        if len(set(names)) != len(names) or len(set(ids)) != len(ids):
            raise ValueError(
                f"ECU names and request IDs must be unique, got {names} / {[hex(i) for i in ids]}"
            )
        self.ecus = tuple(ecus)
        self._lock = threading.RLock()
        self._values = values
        self._memories = {ecu.name: DtcMemory() for ecu in ecus}
        self._misfiring: set[int] = set()
        self._battery_drop_v = 0.0
        self._overheat_c: float | None = None
        self._brakes_worn = False
        self._odometer_at_clear_km = values.odometer_km

    # --- inputs ---

    @property
    def values(self) -> LiveValues:
        return self._values

    def update(self, **changes: float) -> None:
        """Set live values by :class:`LiveValues` field name; unknown names or bad values raise."""
        unknown = sorted(changes.keys() - {f.name for f in fields(LiveValues)})
        if unknown:
            raise ValueError(f"no live value named {unknown}; known: {[f.name for f in fields(LiveValues)]}")
        with self._lock:
            self._values = replace(self._values, **changes)
            self._run_monitors()

    def update_from_signals(self, signals: Mapping[str, Any]) -> None:
        """Take the live values from a vehicle model's signals (see :data:`SIGNAL_FIELDS`)."""
        self.update(
            **{name: float(signals[signal]) for signal, name in SIGNAL_FIELDS.items() if signal in signals}
        )

    def inject_misfire(self, cylinder: int) -> None:
        if not isinstance(cylinder, int) or not 1 <= cylinder <= CYLINDERS:
            raise ValueError(f"cylinder must be an integer 1-{CYLINDERS}, got {cylinder!r}")
        with self._lock:
            self._misfiring.add(cylinder)
            self._run_monitors()

    def weaken_battery(self, drop_v: float) -> None:
        """The control module voltage reads ``drop_v`` below the live battery value (at least 0 V)."""
        high = PIDS[0x42].maximum
        if not isinstance(drop_v, int | float) or not 0 <= drop_v <= high:
            raise ValueError(f"drop_v must be within [0, {high:g}] V, got {drop_v!r}")
        with self._lock:
            self._battery_drop_v = float(drop_v)
            self._run_monitors()

    def overheat(self, coolant_c: float = 121.0) -> None:
        """The coolant reads at least ``coolant_c``."""
        limit = PIDS[0x05]
        if not isinstance(coolant_c, int | float) or not limit.minimum <= coolant_c <= limit.maximum:
            raise ValueError(
                f"coolant_c must be within [{limit.minimum:g}, {limit.maximum:g}], got {coolant_c!r}"
            )
        with self._lock:
            self._overheat_c = float(coolant_c)
            self._run_monitors()

    def wear_brakes(self) -> None:
        with self._lock:
            self._brakes_worn = True
            self._run_monitors()

    def repair(self) -> None:
        """Remove every fault; the DTCs stay until cleared or aged out by drive cycles."""
        with self._lock:
            self._misfiring.clear()
            self._battery_drop_v, self._overheat_c, self._brakes_worn = 0.0, None, False
            self._run_monitors()

    def next_drive_cycle(self) -> None:
        """End the drive cycle and start the next (engine run time restarts at 0)."""
        with self._lock:
            for memory in self._memories.values():
                memory.end_drive_cycle()
            self._values = replace(self._values, run_time_s=0.0)
            self._run_monitors()

    # --- what the ECUs see ---

    def coolant_c(self) -> float:
        with self._lock:
            return max(self._values.coolant_c, self._overheat_c or -math.inf)

    def module_voltage_v(self) -> float:
        with self._lock:
            return max(self._values.battery_v - self._battery_drop_v, 0.0)

    def dtc_status(self, ecu: str, dtc: Dtc) -> DtcStatus | None:
        with self._lock:
            return self._memories[ecu].status(dtc)

    def _run_monitors(self) -> None:
        engine, brakes = self._memories.get(ENGINE.name), self._memories.get(BRAKES.name)
        if engine is not None:
            for cylinder in range(1, CYLINDERS + 1):
                engine.test_result(misfire_dtc(cylinder), cylinder in self._misfiring)
            engine.test_result(MULTIPLE_MISFIRE_DTC, len(self._misfiring) >= 2)
            engine.test_result(OVERHEAT_DTC, self.coolant_c() > OVERHEAT_C)
            engine.test_result(LOW_VOLTAGE_DTC, self.module_voltage_v() < LOW_VOLTAGE_V)
        if brakes is not None:
            brakes.test_result(BRAKE_WEAR_DTC, self._brakes_worn, emission_related=False)

    def _pid_value(self, pid: int) -> float:
        if pid == 0x05:
            return self.coolant_c()
        if pid == 0x42:
            return self.module_voltage_v()
        if pid == 0x31:
            distance = self._values.odometer_km - self._odometer_at_clear_km
            return min(max(distance, 0.0), PIDS[pid].maximum)  # J1979 counters stop at their maximum
        value = float(getattr(self._values, _PID_FIELDS[pid]))
        return min(value, PIDS[pid].maximum) if pid == 0x1F else value

    def answer(self, ecu: EcuSpec, request: bytes, functional: bool) -> bytes | None:
        """The ECU's response payload, or None when it stays silent (functional, nothing to say)."""
        with self._lock:
            service = request[0]
            if service == SHOW_CURRENT_DATA:
                return self._mode01(ecu, request, functional)
            if service in (SHOW_STORED_DTCS, SHOW_PENDING_DTCS, CLEAR_DTCS) and len(request) != 1:
                return None if functional else _negative(service, INCORRECT_LENGTH)
            memory = self._memories[ecu.name]
            if service == SHOW_STORED_DTCS:
                return encode_dtc_response(service, memory.emission_dtcs(DtcStatus.CONFIRMED))
            if service == SHOW_PENDING_DTCS:
                return encode_dtc_response(service, memory.emission_dtcs(DtcStatus.PENDING))
            if service == CLEAR_DTCS:
                memory.clear(emission_only=True)
                if ecu.name == ENGINE.name:
                    self._odometer_at_clear_km = self._values.odometer_km
                return bytes([CLEAR_DTCS + 0x40])
            if service == READ_DTC_INFORMATION:
                return self._read_dtc_information(memory, request)
            return None if functional else _negative(service, SERVICE_NOT_SUPPORTED)

    def _mode01(self, ecu: EcuSpec, request: bytes, functional: bool) -> bytes | None:
        asked = request[1:]
        if not 1 <= len(asked) <= MAX_PIDS_PER_REQUEST:
            return None if functional else _negative(SHOW_CURRENT_DATA, INCORRECT_LENGTH)
        supported = with_bitmaps(ecu.pids)
        data: dict[int, bytes] = {}
        for pid in dict.fromkeys(asked):
            if pid not in supported:
                continue
            if pid in BITMAP_PIDS:
                data[pid] = encode_supported(pid, supported)
            elif pid == MONITOR_STATUS:
                memory = self._memories[ecu.name]
                confirmed = len(memory.emission_dtcs(DtcStatus.CONFIRMED))
                data[pid] = MonitorStatus(memory.mil_on, min(confirmed, 0x7F)).encode()
            else:
                data[pid] = PIDS[pid].encode(self._pid_value(pid))
        if not data:
            return None if functional else _negative(SHOW_CURRENT_DATA, REQUEST_OUT_OF_RANGE)
        return encode_pid_response(data)

    @staticmethod
    def _read_dtc_information(memory: DtcMemory, request: bytes) -> bytes:
        if len(request) < 2:
            return _negative(READ_DTC_INFORMATION, INCORRECT_LENGTH)
        subfunction = request[1]
        if subfunction not in (REPORT_NUMBER_BY_STATUS_MASK, REPORT_BY_STATUS_MASK):
            return _negative(READ_DTC_INFORMATION, SUBFUNCTION_NOT_SUPPORTED)
        if len(request) != 3:
            return _negative(READ_DTC_INFORMATION, INCORRECT_LENGTH)
        records = memory.records(request[2] & AVAILABILITY)
        if subfunction == REPORT_NUMBER_BY_STATUS_MASK:
            return encode_dtc_count(AVAILABILITY, len(records))
        return encode_dtc_report(AVAILABILITY, records)


@dataclass(frozen=True, slots=True)
class EcuBehaviour:
    """How an ECU misbehaves, for tests: stay silent, answer 0x78 ``pending`` times first
    (``pending_delay_s`` apart), or refuse every request with NRC ``refuse_with``."""

    silent: bool = False
    pending: int = 0
    pending_delay_s: float = 0.05
    refuse_with: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pending, int) or self.pending < 0:
            raise ValueError(f"EcuBehaviour.pending must be an integer >= 0, got {self.pending!r}")
        if not 0 <= self.pending_delay_s <= 60:
            raise ValueError(
                f"EcuBehaviour.pending_delay_s must be within [0, 60] s, got {self.pending_delay_s!r}"
            )
        if self.refuse_with is not None and not 0x10 <= self.refuse_with <= 0xFF:
            raise ValueError(f"EcuBehaviour.refuse_with must be an NRC 0x10-0xFF, got {self.refuse_with!r}")


class SimulatedEcus:
    """The ECUs of a :class:`DiagnosticState` answering on ``bus`` until :meth:`stop`.

    The bus gets its own :class:`can.Notifier`; answers are computed and sent by a worker
    thread, so a multi-frame answer can wait for the tester's flow control.
    """

    def __init__(
        self,
        bus: can.BusABC,
        state: DiagnosticState | None = None,
        *,
        isotp: IsoTpConfig | None = None,
        owns_bus: bool = False,
    ) -> None:
        self.bus = bus
        self.state = state or DiagnosticState()
        self._owns_bus = owns_bus
        routes: dict[int, int | None] = {FUNCTIONAL_REQUEST_ID: None}
        routes |= {ecu.request_id: ecu.response_id for ecu in self.state.ecus}
        self.endpoint = IsoTpEndpoint(bus, routes, self._on_request, isotp or IsoTpConfig())
        self._behaviour = {ecu.name: EcuBehaviour() for ecu in self.state.ecus}
        self._requests: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=32)
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._notifier: can.Notifier | None = None
        self._worker: threading.Thread | None = None

    @classmethod
    def open(
        cls, interface: str, channel: str, state: DiagnosticState | None = None, **bus_kwargs: Any
    ) -> SimulatedEcus:
        """Open a python-can bus for the ECUs (closed on :meth:`stop`) and start answering."""
        ecus = cls(can.Bus(interface=interface, channel=channel, **bus_kwargs), state, owns_bus=True)
        ecus.start()
        return ecus

    def set_behaviour(self, ecu: str, behaviour: EcuBehaviour) -> None:
        if ecu not in self._behaviour:
            raise ValueError(f"no ECU named {ecu!r}; known: {sorted(self._behaviour)}")
        self._behaviour[ecu] = behaviour

    def counts(self) -> dict[str, int]:
        """Requests answered and problems, by name, plus the ISO-TP endpoint's counts."""
        with self._counts_lock:
            return self.endpoint.counts() | dict(self._counts)

    def _count(self, name: str) -> None:
        with self._counts_lock:
            self._counts[name] += 1

    def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("the simulated ECUs are already running")
        self._worker = threading.Thread(target=self._serve, name="sim-ecus", daemon=True)
        self._worker.start()
        self._notifier = can.Notifier(self.bus, [self.endpoint], timeout=NOTIFIER_POLL_S)

    def stop(self) -> None:
        """Stop answering (and close the bus if :meth:`open` opened it); idempotent."""
        if self._notifier is not None:
            self._notifier.stop()
            self._notifier = None
        if self._worker is not None:
            self._requests.put(None)
            self._worker.join()
            self._worker = None
        if self._owns_bus:
            self.bus.shutdown()
            self._owns_bus = False

    def __enter__(self) -> Self:
        if self._worker is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _on_request(self, source: int, payload: bytes) -> None:
        try:
            self._requests.put_nowait((source, payload))
        except queue.Full:
            self._count("requests dropped")

    def _serve(self) -> None:
        while (item := self._requests.get()) is not None:
            source, request = item
            functional = source == FUNCTIONAL_REQUEST_ID
            for ecu in self.state.ecus:
                if functional or ecu.request_id == source:
                    self._answer(ecu, request, functional)

    def _answer(self, ecu: EcuSpec, request: bytes, functional: bool) -> None:
        behaviour = self._behaviour[ecu.name]
        if behaviour.silent:
            self._count("requests ignored")
            return
        try:
            for _ in range(behaviour.pending):
                self._send(ecu, _negative(request[0], RESPONSE_PENDING))
                time.sleep(behaviour.pending_delay_s)
            if behaviour.refuse_with is not None:
                response: bytes | None = _negative(request[0], behaviour.refuse_with)
            else:
                response = self.state.answer(ecu, request, functional)
            if response is not None:
                self._send(ecu, response)
                self._count("responses sent")
        except (DiagnosticError, can.CanError) as exc:  # the tester let a transfer lapse, or a bus error
            self._count("responses failed")
            LOGGER.warning("simulated %s ECU: response to %s not sent: %s", ecu.name, request[:4].hex(), exc)

    def _send(self, ecu: EcuSpec, payload: bytes) -> None:
        self.endpoint.send(ecu.response_id, payload, flow_control_from=ecu.request_id)


# --- driving the ECUs from a simulation -------------------------------------------------------

#: Simulated seconds per drive cycle when a simulation drives the ECUs: a fault present
#: from the start is pending in the first minute and confirmed (MIL on) in the second.
#: Real drive cycles are trips (engine start to stop); a minute keeps demos short.
DRIVE_CYCLE_S = 60.0
#: Simulated seconds between two updates of the live values from the vehicle's signals.
VALUE_UPDATE_S = 1.0
#: Fault kinds as ``--fault`` writes them (``[...]``: optional).
FAULT_USAGE = "misfire=CYL, battery=DROP_V, overheat[=C], brakes"
FAULTS_WITH_VALUE = frozenset({"misfire", "battery"})
FAULTS_WITHOUT_VALUE = frozenset({"brakes"})
FAULT_KINDS = FAULTS_WITH_VALUE | FAULTS_WITHOUT_VALUE | {"overheat"}


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault injected ``at_s`` simulated seconds after the start.

    ``misfire`` takes the cylinder, ``battery`` the voltage drop (V), ``overheat``
    optionally the coolant temperature (degC, default that of
    :meth:`DiagnosticState.overheat`); ``brakes`` takes none. Values are checked by
    applying the fault to a fresh :class:`DiagnosticState`, so they cannot fail later.
    """

    kind: str
    value: float | None = None
    at_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; kinds: {FAULT_USAGE}")
        if self.value is None and self.kind in FAULTS_WITH_VALUE:
            raise ValueError(f"{self.kind} needs a value ({FAULT_USAGE})")
        if self.value is not None and self.kind in FAULTS_WITHOUT_VALUE:
            raise ValueError(f"{self.kind} takes no value")
        if not isinstance(self.at_s, int | float) or not 0 <= self.at_s < math.inf:
            raise ValueError(f"a fault's time must be a finite number of seconds >= 0, got {self.at_s!r}")
        self.apply(DiagnosticState())

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Read ``KIND[=VALUE][@SECONDS]``, e.g. ``misfire=3``, ``overheat@30``, ``battery=2.5@600``."""
        head, at_sign, at = text.partition("@")
        kind, equals, value = head.partition("=")
        try:
            return cls(
                kind.strip(),
                _fault_number(value, "value") if equals else None,
                _fault_number(at, "time") if at_sign else 0.0,
            )
        except ValueError as exc:
            raise ValueError(f"fault {text!r}: {exc}") from None

    def apply(self, state: DiagnosticState) -> None:
        if self.kind == "misfire":
            cylinder = self.value
            if cylinder is None or not float(cylinder).is_integer():
                raise ValueError(f"misfire needs a cylinder number 1-{CYLINDERS}, got {cylinder!r}")
            state.inject_misfire(int(cylinder))
        elif self.kind == "battery":
            assert self.value is not None
            state.weaken_battery(self.value)
        elif self.kind == "overheat":
            if self.value is None:
                state.overheat()
            else:
                state.overheat(self.value)
        else:
            state.wear_brakes()


def _fault_number(text: str, what: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"the {what} {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"the {what} {text!r} is not a finite number")
    return number


class EcuDriver:
    """Keeps a :class:`DiagnosticState` in step with one simulated vehicle.

    :meth:`advance` takes each frame's time and values: live values follow the vehicle's
    signals (every :data:`VALUE_UPDATE_S`), faults are injected when due, and a drive
    cycle ends every ``drive_cycle_s``, so a lasting fault becomes confirmed.
    """

    def __init__(
        self, state: DiagnosticState, faults: Iterable[Fault] = (), drive_cycle_s: float = DRIVE_CYCLE_S
    ) -> None:
        if not isinstance(drive_cycle_s, int | float) or not 0 < drive_cycle_s < math.inf:
            raise ValueError(f"drive_cycle_s must be a finite number of seconds > 0, got {drive_cycle_s!r}")
        self.state = state
        self._faults = sorted(faults, key=lambda fault: fault.at_s)
        self._drive_cycle_s = float(drive_cycle_s)
        self._cycles = 0
        self._signals: dict[str, Any] = {}
        self._next_update_s = 0.0

    @property
    def drive_cycles(self) -> int:
        """Drive cycles ended so far."""
        return self._cycles

    def advance(self, t_s: float, signals: Mapping[str, Any]) -> None:
        """The vehicle ``t_s`` simulated seconds after the start, with (some of) its signals."""
        self._signals.update((name, signals[name]) for name in SIGNAL_FIELDS.keys() & signals.keys())
        while self._faults and self._faults[0].at_s <= t_s:
            self._faults.pop(0).apply(self.state)
        due = int(t_s // self._drive_cycle_s)
        while self._cycles < due:
            self.state.next_drive_cycle()
            self._cycles += 1
        if t_s >= self._next_update_s:
            self.state.update_from_signals(self._signals)
            self.state.update(run_time_s=t_s - self._cycles * self._drive_cycle_s)
            self._next_update_s = t_s + VALUE_UPDATE_S
