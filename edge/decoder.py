"""CAN frames in, checked values and VSS records out, for one bus.

Two layers, so the ``roadwave decode`` tool and the agent share every check:

* :class:`BusDecoder` decodes frames with the DBC, verifies checksums and rolling
  counters, flags values outside the DBC range and tracks per-message timeouts.
* :class:`FrameDecoder` adds the VSS mapping: it turns decoded frames into
  :class:`~roadwave.contract.Record` objects whose samples carry their quality,
  applies the overlay's publishing rules and emits stale samples on timeouts.

Every frame and every sample is counted in :class:`DecodeStats`, whose counters
reconcile exactly (see its docstring).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import can
import cantools.database

from edge.dbcload import load_dbc_files
from edge.diagnostics.client import is_diagnostic_id
from edge.integrity import IntegritySpec, integrity_specs
from edge.mapping import SampleValueError, SignalMapping, default_mapping_path, load_mapping
from roadwave.contract import INTEGRITY, MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS, RANGE, STALE, Record, Value

LOGGER = logging.getLogger(__name__)

#: Timeout of a message = this factor x its cycle time (DBC ``GenMsgCycleTime`` or learned).
DEFAULT_TIMEOUT_FACTOR = 3.0
#: Intervals observed before a cycle time is learned for a message the DBC gives none.
LEARN_INTERVALS = 8
#: Longest DBC cycle time taken as one (a day); longer ones are learned from the traffic instead.
MAX_CYCLE_MS = 86_400_000
#: Counter jumps in a row after which a message's frames are treated as failing.
MAX_COUNTER_JUMPS = 3
#: How often (frame time) timeouts are looked for when no timeout is shorter.
DEFAULT_CHECK_INTERVAL_NS = 100_000_000
#: Frame times a bus decoder accepts by default: what fits signed 64-bit nanoseconds.
DEFAULT_TIME_RANGE_NS = (0, 2**63)

Emit = Callable[[Record], None]


@dataclass
class DecodeStats:
    """Counters of one bus, reconciling exactly::

        frames_received == frames_decoded + frames_unknown + frames_diagnostic
                           + frames_integrity_failed + frames_malformed + frames_ignored
        samples_decoded + samples_stale == samples_emitted + samples_throttled + samples_invalid

    Frames the DBC does not name are ``diagnostic`` when their ID is OBD/UDS addressing
    (0x7DF, 0x7E0-0x7EF, 29-bit 0x18DA/0x18DB...: a tester's requests and the ECUs'
    answers), else ``unknown``. Error and remote frames are ``ignored``; frames whose
    timestamp is not finite or outside the decoder's time range are ``malformed``. Frames
    that fail their checksum or counter check are decoded, but counted as
    ``integrity_failed`` and their samples flagged. ``samples_flagged`` counts emitted
    samples that are not good; ``samples_invalid`` those due for publication whose value
    does not fit the VSS datatype (conversion only happens for samples that are published).
    """

    frames_received: int = 0
    frames_decoded: int = 0
    frames_unknown: int = 0
    frames_diagnostic: int = 0
    frames_integrity_failed: int = 0
    frames_malformed: int = 0
    frames_ignored: int = 0
    counter_jumps: int = 0
    timeouts: int = 0
    samples_decoded: int = 0
    samples_stale: int = 0
    samples_emitted: int = 0
    samples_throttled: int = 0
    samples_invalid: int = 0
    samples_flagged: int = 0
    unknown_ids: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        """The counters as plain numbers (for status output)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


def signal_limits(signal: cantools.database.can.Signal) -> tuple[float, float] | None:
    """The range the DBC declares for a signal, widened by half a step; None if unbounded."""
    if signal.minimum is None or signal.maximum is None or signal.choices:
        return None
    slack = abs(signal.scale) / 2
    return signal.minimum - slack, signal.maximum + slack


class DecodedFrame(NamedTuple):
    """One frame decoded with the DBC, with the outcome of its integrity check."""

    t_ns: int
    bus: str
    message: cantools.database.can.Message
    values: Mapping[str, float]  # physical values; choice signals as their number
    problem: str | None = None  # why the frame failed its integrity check

    @property
    def out_of_range(self) -> list[str]:
        """Signals whose value lies outside the range the DBC declares."""
        outside = []
        for name, value in self.values.items():
            limits = signal_limits(self.message.get_signal_by_name(name))
            if limits is not None and not limits[0] <= value <= limits[1]:
                outside.append(name)
        return outside

    @property
    def labels(self) -> dict[str, str]:
        """Value-table labels of the choice signals present in the frame."""
        labels = {}
        for name, value in self.values.items():
            choices = self.message.get_signal_by_name(name).choices
            if choices and math.isfinite(value) and int(value) == value and int(value) in choices:
                labels[name] = str(choices[int(value)])
        return labels


def _timeout_ns(message: cantools.database.can.Message, factor: float) -> int | None:
    """``factor`` times the DBC cycle time; None (learn it) when the DBC gives none or an absurd one."""
    cycle_ms = message.cycle_time
    if not cycle_ms:
        return None
    if not 0 < cycle_ms <= MAX_CYCLE_MS:
        LOGGER.warning(
            "%s: cycle time %s ms is not usable; learning it from the traffic", message.name, cycle_ms
        )
        return None
    return round(cycle_ms * factor * 1e6)


class _MessageState:
    """What a bus decoder remembers about one DBC message."""

    __slots__ = (
        "message", "integrity", "last_counter", "counter_jumps", "last_t_ns",
        "timeout_ns", "intervals", "stale",
    )  # fmt: skip

    def __init__(
        self, message: cantools.database.can.Message, integrity: IntegritySpec | None, factor: float
    ) -> None:
        self.message = message
        self.integrity = integrity
        self.last_counter: int | None = None
        self.counter_jumps = 0
        self.last_t_ns: int | None = None
        self.timeout_ns: int | None = _timeout_ns(message, factor)
        self.intervals: list[int] = []
        self.stale = False


def frame_time_ns(frame: can.Message) -> int:
    """The frame's timestamp in nanoseconds, kept at microsecond resolution."""
    return round(frame.timestamp * 1_000_000) * 1000


def _usable_time_ns(frame: can.Message, time_range_ns: tuple[int, int]) -> int | None:
    """The frame's time in nanoseconds if it is finite and within ``time_range_ns``, else None."""
    if not abs(frame.timestamp) < 1e12:  # also NaN and infinities; keeps the conversion exact
        return None
    t_ns = frame_time_ns(frame)
    return t_ns if time_range_ns[0] <= t_ns < time_range_ns[1] else None


class BusDecoder:
    """Decodes and checks the frames of one bus against its DBC database."""

    def __init__(
        self,
        bus: str,
        db: cantools.database.can.Database,
        *,
        integrity: Mapping[str, IntegritySpec] | None = None,
        timeout_factor: float = DEFAULT_TIMEOUT_FACTOR,
        time_range_ns: tuple[int, int] = DEFAULT_TIME_RANGE_NS,
    ) -> None:
        self.bus = bus
        self.stats = DecodeStats()
        self.time_range_ns = time_range_ns
        self._timeout_factor = timeout_factor
        specs = integrity_specs(db) if integrity is None else integrity
        self._states: dict[tuple[int, bool], _MessageState] = {
            (m.frame_id, m.is_extended_frame): _MessageState(m, specs.get(m.name), timeout_factor)
            for m in db.messages
        }
        timeouts = [s.timeout_ns for s in self._states.values() if s.timeout_ns]
        self._check_interval_ns = min([DEFAULT_CHECK_INTERVAL_NS, *(t // 2 for t in timeouts)])
        self.next_check_ns = 0

    def decode(self, frame: can.Message) -> DecodedFrame | None:
        """Decode and check a frame; None for unknown, diagnostic, malformed, error and remote frames."""
        stats = self.stats
        stats.frames_received += 1
        if frame.is_error_frame or frame.is_remote_frame:
            stats.frames_ignored += 1
            return None
        t_ns = _usable_time_ns(frame, self.time_range_ns)
        if t_ns is None:
            stats.frames_malformed += 1
            LOGGER.debug(
                "bus %s: 0x%X: unusable timestamp %r", self.bus, frame.arbitration_id, frame.timestamp
            )
            return None
        state = self._states.get((frame.arbitration_id, frame.is_extended_id))
        if state is None:
            if is_diagnostic_id(frame.arbitration_id, frame.is_extended_id):
                stats.frames_diagnostic += 1
                return None
            stats.frames_unknown += 1
            if frame.arbitration_id not in stats.unknown_ids:
                stats.unknown_ids.add(frame.arbitration_id)
                LOGGER.info("bus %s: frame id 0x%X is not in the DBC", self.bus, frame.arbitration_id)
            return None
        message = state.message
        try:
            values = cast(Mapping[str, float], message.decode(frame.data, decode_choices=False))  # type: ignore[arg-type]
        except Exception as exc:  # cantools raises DecodeError, bitstruct errors, ...
            stats.frames_malformed += 1
            LOGGER.debug("bus %s: %s (0x%X) malformed: %s", self.bus, message.name, frame.arbitration_id, exc)
            return None
        self._track_timing(state, t_ns)
        problem = self._check_integrity(state, frame.data, values) if state.integrity else None
        if problem is None:
            stats.frames_decoded += 1
        else:
            stats.frames_integrity_failed += 1
        return DecodedFrame(t_ns, self.bus, message, values, problem)

    def _track_timing(self, state: _MessageState, t_ns: int) -> None:
        last = state.last_t_ns
        state.last_t_ns = t_ns
        state.stale = False
        if state.timeout_ns is None and last is not None and t_ns > last:
            state.intervals.append(t_ns - last)
            if len(state.intervals) >= LEARN_INTERVALS:
                state.timeout_ns = round(statistics.median(state.intervals) * self._timeout_factor)
                state.intervals.clear()
                self._check_interval_ns = min(self._check_interval_ns, state.timeout_ns // 2)

    def _check_integrity(
        self, state: _MessageState, data: bytes | bytearray, values: Mapping[str, float]
    ) -> str | None:
        spec = cast(IntegritySpec, state.integrity)
        problem = None if spec.verify(data) else "checksum mismatch"
        value = values[spec.counter_signal]
        if not math.isfinite(value):  # a DBC whose counter scaling overflows
            return problem or f"counter value {value} is not finite"
        counter = int(value)
        last = state.last_counter
        state.last_counter = counter
        if last is None:
            return problem
        if counter == last:
            return problem or "counter repeated"
        if counter == (last + 1) % spec.counter_modulus:
            state.counter_jumps = 0
            return problem
        self.stats.counter_jumps += 1
        state.counter_jumps += 1
        if state.counter_jumps >= MAX_COUNTER_JUMPS:
            return problem or f"counter out of sequence {state.counter_jumps} times in a row"
        return problem

    def expire(self, now_ns: int) -> list[tuple[cantools.database.can.Message, int]]:
        """Messages that timed out by ``now_ns``, each with the time it timed out, once each.

        Cheap to call often: it only looks every few tens of milliseconds
        (:attr:`next_check_ns`).
        """
        if now_ns < self.next_check_ns:
            return []
        self.next_check_ns = now_ns + self._check_interval_ns
        expired = []
        for state in self._states.values():
            if state.stale or state.last_t_ns is None or state.timeout_ns is None:
                continue
            deadline = state.last_t_ns + state.timeout_ns
            if deadline < now_ns:
                state.stale = True
                self.stats.timeouts += 1
                expired.append((state.message, deadline))
        return expired


class _SampleGate:
    """One mapped signal: its range check and publishing rule (every frame, interval, on-change).

    The rule is applied to the DBC value before conversion, so samples that are not
    published cost no conversion. A change of quality is always published; after a
    timeout the next sample is published at once.
    """

    __slots__ = ("mapping", "limits", "last_t_ns", "last_published", "last_raw")

    def __init__(self, mapping: SignalMapping, signal: cantools.database.can.Signal) -> None:
        self.mapping = mapping
        self.limits = signal_limits(signal)
        self.last_t_ns: int | None = None
        self.last_published: tuple[float, str | None] | None = None
        self.last_raw: float | None = None  # last decoded DBC value, published or not

    def quality(self, raw: float) -> str | None:
        """RANGE when the DBC value is outside its declared range."""
        limits = self.limits
        return RANGE if limits is not None and not limits[0] <= raw <= limits[1] else None

    def admit(self, t_ns: int, raw: float, quality: str | None) -> bool:
        last = self.last_published
        if last is not None and quality == last[1]:
            if self.mapping.on_change:
                if raw == last[0]:
                    return False
            elif self.last_t_ns is not None and t_ns - self.last_t_ns < self.mapping.interval_ns:
                return False
        self.last_t_ns, self.last_published = t_ns, (raw, quality)
        return True


class FrameDecoder:
    """Turns one bus's frames into VSS records (see the module docstring).

    Frames timed outside years 2000-2099, which no record may carry, count as malformed.
    """

    def __init__(
        self,
        bus: str,
        db: cantools.database.can.Database,
        mappings: Iterable[SignalMapping],
        **bus_options: Any,
    ) -> None:
        bus_options.setdefault("time_range_ns", (MIN_TIMESTAMP_NS, MAX_TIMESTAMP_NS))
        self.bus_decoder = BusDecoder(bus, db, **bus_options)
        self.bus = bus
        self.stats = self.bus_decoder.stats
        self._gates: dict[str, list[_SampleGate]] = {}
        for mapping in mappings:
            signal = db.get_message_by_name(mapping.message).get_signal_by_name(mapping.signal)
            self._gates.setdefault(mapping.message, []).append(_SampleGate(mapping, signal))

    @property
    def vss_paths(self) -> frozenset[str]:
        """The VSS paths the bus's mapping produces."""
        return frozenset(gate.mapping.vss_path for gates in self._gates.values() for gate in gates)

    @classmethod
    def from_files(
        cls, bus: str, dbc_paths: list[Path], mapping_path: Path | None, **bus_options: Any
    ) -> FrameDecoder:
        """Build a decoder from DBC files and a mapping (default: beside the first DBC)."""
        db = load_dbc_files(dbc_paths).database
        mappings = load_mapping(mapping_path or default_mapping_path(dbc_paths[0]), db)
        return cls(bus, db, mappings, **bus_options)

    def decode(self, frame: can.Message, emit: Emit) -> None:
        """Decode a frame and ``emit`` its record, plus stale records of timed-out messages."""
        bus_decoder = self.bus_decoder
        decoded = bus_decoder.decode(frame)
        if decoded is not None:
            gates = self._gates.get(decoded.message.name)
            if gates:
                self._emit_samples(decoded, gates, emit)
            now_ns = decoded.t_ns
        else:
            usable = _usable_time_ns(frame, bus_decoder.time_range_ns)
            if usable is None:
                return
            now_ns = usable
        if now_ns >= bus_decoder.next_check_ns:
            self.expire(now_ns, emit)

    def expire(self, now_ns: int, emit: Emit) -> None:
        """Emit stale samples for messages that timed out by ``now_ns`` (frame or wall time)."""
        for message, deadline_ns in self.bus_decoder.expire(now_ns):
            signals: dict[str, Value] = {}
            for gate in self._gates.get(message.name, ()):
                if gate.last_raw is None:
                    continue
                gate.last_published = None  # publish the first fresh value at once
                try:
                    signals[gate.mapping.vss_path] = gate.mapping.convert(gate.last_raw)
                except SampleValueError:
                    continue  # was counted invalid when it arrived
            if signals:
                count = len(signals)
                self.stats.samples_stale += count
                self.stats.samples_emitted += count
                self.stats.samples_flagged += count
                emit(Record(deadline_ns, self.bus, signals, dict.fromkeys(signals, STALE)))

    def _emit_samples(self, decoded: DecodedFrame, gates: list[_SampleGate], emit: Emit) -> None:
        stats = self.stats
        t_ns, values = decoded.t_ns, decoded.values
        frame_quality = INTEGRITY if decoded.problem else None
        signals: dict[str, Value] = {}
        quality: dict[str, str] = {}
        for gate in gates:
            mapping = gate.mapping
            raw = values.get(mapping.signal)
            if raw is None:  # a multiplexed signal not in this frame
                continue
            stats.samples_decoded += 1
            gate.last_raw = raw
            sample_quality = frame_quality or gate.quality(raw)
            if not gate.admit(t_ns, raw, sample_quality):
                stats.samples_throttled += 1
                continue
            try:
                signals[mapping.vss_path] = mapping.convert(raw)
            except SampleValueError as exc:
                stats.samples_invalid += 1
                LOGGER.debug("bus %s: %s", self.bus, exc)
                continue
            if sample_quality:
                quality[mapping.vss_path] = sample_quality
        if signals:
            stats.samples_emitted += len(signals)
            stats.samples_flagged += len(quality)
            emit(Record(t_ns, self.bus, signals, quality))
