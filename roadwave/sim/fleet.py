"""Fleet simulator: ring-road traffic turned into one CAN frame stream per connected vehicle.

Every DBC message with a cycle time (``GenMsgCycleTime``) is sent periodically with a
fixed phase: the n-th scheduled message (DBC order) fires at ``n mod cycle`` ms, so frame
times are whole milliseconds after ``start_time`` and not every message fires at t = 0.
Frame payloads come from :mod:`cantools` (the DBC is loaded once); values are clamped to
the DBC range and rounded to the signal resolution first, so ``SimFrame.values`` equals
what a decoder reads back. Integrity-protected messages get a rolling counter and a
checksum (:mod:`edge.integrity`); multiplexed messages cycle through their pages.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import can
import cantools.database
import numpy as np
from cantools.database.can import Message as DbcMessage
from cantools.database.can import Signal as DbcSignal

from edge.integrity import IntegritySpec, integrity_specs
from roadwave import REFERENCE_DBC
from roadwave.sim.ecu import EcuDriver, SimulatedEcus
from roadwave.sim.traffic import SUGIYAMA_CARS, IDMParameters, RingParameters, RingTraffic
from roadwave.sim.vehicle import (
    Kinematics,
    RingSite,
    SignalValue,
    VehicleModel,
    VehicleParameters,
)

logger = logging.getLogger(__name__)

#: The reference DBC in the repository (``dbc/roadwave_car.dbc``).
DEFAULT_DBC = REFERENCE_DBC

# ISO 3779 VIN: 17 characters from this alphabet (no I, O, Q); position 9 is the
# North American check digit (49 CFR 565), which we compute so the VINs validate anywhere.
VIN_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_VIN_VALUES = dict(zip("0123456789", range(10), strict=True)) | {
    letter: value
    for letters, start in (("ABCDEFGH", 1), ("JKLMN", 1), ("P", 7), ("R", 9), ("STUVWXYZ", 2))
    for value, letter in enumerate(letters, start)
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
#: World manufacturer "RWD" + descriptor "EM0SM" ("DEMO" with a zero: O is not a VIN letter);
#: then the check digit, model year S (2025), plant R and a 6-digit serial.
_VIN_HEAD, _VIN_YEAR_PLANT = "RWDEM0SM", "SR"


def vin_check_digit(vin: str) -> str:
    """The ISO 3779 / 49 CFR 565 check digit for a 17-character VIN (position 9 ignored)."""
    if len(vin) != 17 or any(c not in VIN_ALPHABET for c in vin.upper()):
        raise ValueError(f"not a 17-character VIN over {VIN_ALPHABET}: {vin!r}")
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin.upper(), _VIN_WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def make_vin(seed: int, index: int) -> str:
    """Deterministic, valid VIN for vehicle ``index`` of the fleet simulated with ``seed``."""
    serial = f"{(seed * 7919 + index) % 1_000_000:06d}"
    body = f"{_VIN_HEAD}0{_VIN_YEAR_PLANT}{serial}"
    return body[:8] + vin_check_digit(body) + body[9:]


def _floor_now() -> float:
    return float(math.floor(time.time()))


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate. ``start_time`` is the epoch time (s) of the first millisecond."""

    dbc: Path = DEFAULT_DBC
    vehicles: int = 3  # connected vehicles, each with its own CAN stream
    duration_s: float = 60.0
    seed: int = 0
    start_time: float = field(default_factory=_floor_now)
    fleet: str = "demo"
    bus: str = "can0"
    ring_cars: int | None = None  # None: max(22, vehicles), at Sugiyama's density
    warmup_s: float = 0.0  # traffic simulated before the first frame, so waves already exist
    idm: IDMParameters = field(default_factory=IDMParameters)
    site: RingSite = field(default_factory=RingSite)
    vehicle: VehicleParameters = field(default_factory=VehicleParameters)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dbc", Path(self.dbc))

        def is_int(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not is_int(self.vehicles) or self.vehicles < 1:
            raise ValueError(f"SimConfig.vehicles must be an integer >= 1, got {self.vehicles!r}")
        if self.ring_cars is not None and (
            not is_int(self.ring_cars) or self.ring_cars < max(2, self.vehicles)
        ):
            raise ValueError(
                f"SimConfig.ring_cars must be an integer >= vehicles ({self.vehicles}) and >= 2, "
                f"got {self.ring_cars!r}"
            )
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"SimConfig.seed must be an integer >= 0, got {self.seed!r}")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise ValueError(f"SimConfig.duration_s must be finite and > 0, got {self.duration_s!r}")
        if not (math.isfinite(self.start_time) and self.start_time >= 0):
            raise ValueError(f"SimConfig.start_time must be finite and >= 0, got {self.start_time!r}")
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise ValueError(f"SimConfig.warmup_s must be finite and >= 0, got {self.warmup_s!r}")
        for name in ("fleet", "bus"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"SimConfig.{name} must be a non-empty string, got {value!r}")

    @property
    def ring(self) -> RingParameters:
        """The ring road: Sugiyama's density, scaled to the number of cars."""
        return RingParameters.sugiyama(self.ring_cars or max(SUGIYAMA_CARS, self.vehicles))


@dataclass(frozen=True, slots=True)
class SimFrame:
    """One simulated CAN frame and the physical values encoded into it."""

    vehicle: int
    vin: str
    bus: str
    timestamp: float  # epoch seconds, equal to ``message.timestamp``
    message: can.Message
    message_name: str
    values: dict[str, SignalValue]  # signal -> value given to cantools (labels for choices)


@dataclass(frozen=True, slots=True)
class _Page:
    """Signals sent together: the whole message, or one page of a multiplexed message."""

    fixed: dict[str, int]  # multiplexer signal -> page id
    quantised: tuple[tuple[str, float, float, int, int], ...]  # name, scale, offset, raw min/max
    clamped: tuple[tuple[str, float, float], ...]  # float signals: name, min, max
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessagePlan:
    message: DbcMessage
    cycle_ms: int
    offset_ms: int
    pages: tuple[_Page, ...]
    integrity: IntegritySpec | None


def _raw_limit(limit: float, offset: float, scale: float, upper: bool) -> int:
    raw = (limit - offset) / scale
    nearest = round(raw)
    if abs(raw - nearest) < 1e-6:
        return nearest
    return math.floor(raw) if upper else math.ceil(raw)


def _page(signals: Sequence[DbcSignal], fixed: dict[str, int]) -> _Page:
    quantised, clamped, labels = [], [], []
    for signal in signals:
        if signal.name in VehicleModel.LABEL_SIGNALS:
            labels.append(signal.name)
        elif signal.is_float:
            low = -math.inf if signal.minimum is None else signal.minimum
            high = math.inf if signal.maximum is None else signal.maximum
            clamped.append((signal.name, low, high))
        else:
            scale, offset = signal.scale, signal.offset
            bits_low = -(1 << (signal.length - 1)) if signal.is_signed else 0
            bits_high = (1 << (signal.length - 1 if signal.is_signed else signal.length)) - 1
            low, high = bits_low, bits_high
            limits = [signal.minimum, signal.maximum] if scale > 0 else [signal.maximum, signal.minimum]
            if limits[0] is not None:
                low = max(low, _raw_limit(limits[0], offset, scale, upper=False))
            if limits[1] is not None:
                high = min(high, _raw_limit(limits[1], offset, scale, upper=True))
            quantised.append((signal.name, scale, offset, low, high))
    return _Page(fixed, tuple(quantised), tuple(clamped), tuple(labels))


def plan_messages(database: cantools.database.can.Database) -> tuple[MessagePlan, ...]:
    """Which messages the simulator sends and how; unsupported ones are skipped with a warning."""
    specs = integrity_specs(database)
    plans: list[MessagePlan] = []
    for message in database.messages:
        cycle = message.cycle_time
        if not cycle or cycle <= 0:
            logger.warning("%s: no GenMsgCycleTime, not simulated", message.name)
            continue
        integrity = specs.get(message.name)
        framing = {integrity.counter_signal, integrity.checksum_signal} if integrity else set()
        multiplexers = [s for s in message.signals if s.is_multiplexer]
        physical = [s for s in message.signals if s.name not in framing and not s.is_multiplexer]
        unknown = sorted({s.name for s in physical} - VehicleModel.SIGNALS)
        if unknown:
            logger.warning("%s: no simulated value for %s, not simulated", message.name, ", ".join(unknown))
            continue
        unlabelled = [s.name for s in physical if s.name in VehicleModel.LABEL_SIGNALS and not s.choices]
        if unlabelled:
            logger.warning("%s: %s need a VAL_ table, not simulated", message.name, ", ".join(unlabelled))
            continue
        if len(multiplexers) > 1:
            logger.warning("%s: nested multiplexing is not supported, not simulated", message.name)
            continue
        if multiplexers:
            mux = multiplexers[0].name
            ids = sorted({i for s in physical for i in s.multiplexer_ids or ()})
            pages = tuple(
                _page(
                    [s for s in physical if not s.multiplexer_ids or i in s.multiplexer_ids],
                    {mux: i},
                )
                for i in ids
            )
        else:
            pages = (_page(physical, {}),)
        plans.append(MessagePlan(message, int(cycle), len(plans) % int(cycle), pages, integrity))
    if not plans:
        raise ValueError(f"{database!r}: no message can be simulated (see the warnings)")
    return tuple(plans)


class FleetSimulator:
    """Iterate to get :class:`SimFrame` objects of all vehicles in timestamp order.

    Each iteration replays the same deterministic run from the start.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        database = cantools.database.load_file(config.dbc)
        if not isinstance(database, cantools.database.can.Database):
            raise ValueError(f"{config.dbc} is not a CAN database")
        self.database = database
        self._plans = plan_messages(database)
        ring = config.ring
        self.ring = ring
        #: Ring car index of each connected vehicle, spread evenly around the ring.
        self.cars = tuple(i * ring.cars // config.vehicles for i in range(config.vehicles))
        self.vins = tuple(make_vin(config.seed, i) for i in range(config.vehicles))

    @property
    def message_names(self) -> tuple[str, ...]:
        """Names of the simulated messages, in DBC order."""
        return tuple(plan.message.name for plan in self._plans)

    @property
    def cycle_times_ms(self) -> dict[str, int]:
        """Cycle time of each simulated message (ms)."""
        return {plan.message.name: plan.cycle_ms for plan in self._plans}

    @property
    def phase_offsets_ms(self) -> dict[str, int]:
        """Time of each message's first frame after ``start_time`` (ms)."""
        return {plan.message.name: plan.offset_ms for plan in self._plans}

    @property
    def frames_per_vehicle_second(self) -> float:
        """Frames each vehicle sends per simulated second."""
        return sum(1000.0 / plan.cycle_ms for plan in self._plans)

    def __iter__(self) -> Iterator[SimFrame]:
        config, ring = self.config, self.ring
        root = np.random.SeedSequence(config.seed)
        traffic_seed, vehicles_seed = root.spawn(2)
        traffic = RingTraffic(config.idm, ring, traffic_seed)
        models = [
            VehicleModel(ring.radius_m, np.random.default_rng(seq), config.site, config.vehicle)
            for seq in vehicles_seed.spawn(config.vehicles)
        ]
        dt_ms = round(ring.dt_s * 1000)
        warmup_steps = round(config.warmup_s * 1000) // dt_ms
        end_ms = math.ceil(config.duration_s * 1000 - 1e-6)
        plans, bus, vins, start = self._plans, config.bus, self.vins, config.start_time
        sent = [[0] * len(plans) for _ in range(config.vehicles)]
        events = [(plan.offset_ms, index) for index, plan in enumerate(plans)]
        heapq.heapify(events)
        signals: list[dict[str, SignalValue]] = []
        signals_step = -1
        while events[0][0] < end_ms:
            tick = events[0][0]
            firing: list[int] = []
            while events[0][0] == tick:
                _, index = heapq.heappop(events)
                firing.append(index)
                heapq.heappush(events, (tick + plans[index].cycle_ms, index))
            step = warmup_steps + tick // dt_ms
            if step != signals_step:
                while traffic.steps < step:
                    traffic.step()
                signals = self._signals(traffic, models)
                signals_step = step
            timestamp = start + tick / 1000.0
            for vehicle, vehicle_signals in enumerate(signals):
                counts = sent[vehicle]
                for index in firing:
                    plan = plans[index]
                    data, values = encode_frame(plan, vehicle_signals, counts[index])
                    counts[index] += 1
                    message = plan.message
                    yield SimFrame(
                        vehicle,
                        vins[vehicle],
                        bus,
                        timestamp,
                        can.Message(
                            timestamp=timestamp,
                            arbitration_id=message.frame_id,
                            is_extended_id=message.is_extended_frame,
                            is_fd=message.is_fd,
                            bitrate_switch=message.is_fd,
                            data=data,
                            channel=bus,
                        ),
                        message.name,
                        values,
                    )

    def _signals(self, traffic: RingTraffic, models: Sequence[VehicleModel]) -> list[dict[str, SignalValue]]:
        time_s = traffic.time_s
        positions, travelled = traffic.positions.tolist(), traffic.travelled.tolist()
        speeds, accels = traffic.speeds.tolist(), traffic.accels.tolist()
        gaps, lead_speeds = traffic.gaps.tolist(), traffic.lead_speeds.tolist()
        return [
            model.signals(
                Kinematics(
                    time_s,
                    positions[c],
                    travelled[c],
                    speeds[c],
                    accels[c],
                    gaps[c],
                    lead_speeds[c],
                )
            )
            for model, c in zip(models, self.cars, strict=True)
        ]


def encode_frame(
    plan: MessagePlan, signals: dict[str, SignalValue], count: int
) -> tuple[bytes, dict[str, SignalValue]]:
    """Payload and ground-truth values of the ``count``-th frame of ``plan`` for one vehicle."""
    page = plan.pages[count % len(plan.pages)]
    values: dict[str, SignalValue] = dict(page.fixed)
    integrity = plan.integrity
    if integrity is not None:
        values[integrity.counter_signal] = count % integrity.counter_modulus
        values[integrity.checksum_signal] = 0
    for name, scale, offset, low, high in page.quantised:
        raw = round((signals[name] - offset) / scale)  # type: ignore[operator]
        values[name] = (low if raw < low else high if raw > high else raw) * scale + offset
    for name, minimum, maximum in page.clamped:
        values[name] = min(max(signals[name], minimum), maximum)
    for name in page.labels:
        values[name] = signals[name]
    data = plan.message.encode(values, strict=False)
    if integrity is not None:
        checksum = integrity.checksum(data)
        payload = bytearray(data)
        payload[integrity.checksum_byte] = checksum
        values[integrity.checksum_signal] = checksum
        return bytes(payload), values
    return data, values


# --- outputs -----------------------------------------------------------------------------


class FrameSink(ABC):
    """Takes simulated frames; :meth:`close` (or leaving a ``with`` block) releases it."""

    @abstractmethod
    def write(self, frame: SimFrame) -> None:
        """Consume one frame."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release files or buses."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class CandumpLogSink(FrameSink):
    """One ``candump -L`` log per vehicle: ``<directory>/<VIN>.log``."""

    def __init__(self, directory: Path, vins: Sequence[str]) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = {vin: directory / f"{vin}.log" for vin in vins}
        self._writers = {vin: can.io.CanutilsLogWriter(path) for vin, path in self.paths.items()}

    def write(self, frame: SimFrame) -> None:
        self._writers[frame.vin].on_message_received(frame.message)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.stop()


class TruthJsonlSink(FrameSink):
    """One JSON object per line and frame: t, vin, bus, message, id, data (hex), values."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("w", encoding="utf-8")

    def write(self, frame: SimFrame) -> None:
        record = {
            "t": frame.timestamp,
            "vin": frame.vin,
            "bus": frame.bus,
            "message": frame.message_name,
            "id": frame.message.arbitration_id,
            "data": frame.message.data.hex(),
            "values": frame.values,
        }
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


class BusSink(FrameSink):
    """Send each vehicle's frames on its own python-can bus, optionally paced in real time.

    ``realtime`` is the speed-up factor (1.0: real time, 10.0: ten times faster); None sends
    as fast as the buses accept. ``ecus``, one :class:`EcuDriver` per vehicle, puts that
    vehicle's simulated ECUs on its bus, answering diagnostic requests until :meth:`close`;
    each frame advances them. ``bus_kwargs`` go to every ``can.Bus``.
    """

    def __init__(
        self,
        sim: FleetSimulator,
        interface: str,
        channels: Sequence[str],
        realtime: float | None = None,
        ecus: Sequence[EcuDriver] = (),
        **bus_kwargs: Any,
    ) -> None:
        vehicles = sim.config.vehicles
        if len(channels) != vehicles:
            raise ValueError(
                f"{vehicles} vehicle(s) need as many channels, got {len(channels)}: {list(channels)}"
            )
        if ecus and len(ecus) != vehicles:
            raise ValueError(f"{vehicles} vehicle(s) need as many ECU drivers, got {len(ecus)}")
        if realtime is not None and not (math.isfinite(realtime) and realtime > 0):
            raise ValueError(f"realtime must be None or a finite factor > 0, got {realtime!r}")
        if len(set(channels)) != len(channels):
            raise ValueError(f"every vehicle needs its own channel, got duplicates in {list(channels)}")
        self._start = sim.config.start_time
        self._realtime = realtime
        self._wall_start: float | None = None
        self._buses: list[can.BusABC] = []
        self._drivers = list(ecus)
        self._ecus: list[SimulatedEcus] = []
        for channel in channels:
            try:
                self._buses.append(can.Bus(interface=interface, channel=channel, **bus_kwargs))
            except (OSError, can.CanError) as error:
                self.close()
                raise can.CanInitializationError(
                    f"cannot open {interface} channel {channel!r}: {error}"
                ) from error
        for bus, driver in zip(self._buses, self._drivers, strict=False):
            self._ecus.append(SimulatedEcus(bus, driver.state))
            self._ecus[-1].start()

    def write(self, frame: SimFrame) -> None:
        if self._realtime is not None:
            now = time.monotonic()
            if self._wall_start is None:
                self._wall_start = now
            delay = self._wall_start + (frame.timestamp - self._start) / self._realtime - now
            if delay > 0:
                time.sleep(delay)
        if self._drivers:
            self._drivers[frame.vehicle].advance(frame.timestamp - self._start, frame.values)
        self._buses[frame.vehicle].send(frame.message)

    def close(self) -> None:
        for ecus in self._ecus:
            ecus.stop()
        for bus in self._buses:
            bus.shutdown()


@dataclass(frozen=True, slots=True)
class RunStats:
    """What one pass over the simulator produced."""

    frames: int
    simulated_s: float
    wall_s: float

    @property
    def frames_per_s(self) -> float:
        """Frames produced per wall-clock second."""
        return self.frames / self.wall_s if self.wall_s > 0 else math.inf


def run(sim: FleetSimulator, sinks: Sequence[FrameSink]) -> RunStats:
    """Simulate once and hand every frame to every sink (the caller closes the sinks)."""
    started = time.perf_counter()
    frames = 0
    for frame in sim:
        for sink in sinks:
            sink.write(frame)
        frames += 1
    return RunStats(frames, sim.config.duration_s, time.perf_counter() - started)


def write_candump_logs(sim: FleetSimulator, directory: Path) -> dict[str, Path]:
    """Write one ``candump -L`` log per vehicle into ``directory``; returns VIN -> path."""
    with CandumpLogSink(directory, sim.vins) as sink:
        run(sim, [sink])
    return dict(sink.paths)


def stream_to_buses(
    sim: FleetSimulator,
    interface: str,
    channels: Sequence[str],
    realtime: float | None = None,
    **bus_kwargs: Any,
) -> int:
    """Send vehicle i's frames on ``channels[i]`` of python-can ``interface``; returns the count."""
    with BusSink(sim, interface, channels, realtime, **bus_kwargs) as sink:
        return run(sim, [sink]).frames


def ground_truth_jsonl(sim: FleetSimulator, path: Path) -> int:
    """Write one JSON line per frame (see :class:`TruthJsonlSink`); returns frames written."""
    with TruthJsonlSink(path) as sink:
        return run(sim, [sink]).frames
