"""CAN frames in, VSS records out: decoding one bus with its DBC and mapping."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import can
import cantools.database

from edge.mapping import SampleValueError, SignalMapping, default_mapping_path, load_mapping
from roadwave.contract import Record, Value

LOGGER = logging.getLogger(__name__)


class DbcLoadError(ValueError):
    """A DBC file could not be loaded; the message names the file and the cause."""


@dataclass
class DecodeStats:
    """Counters of one bus's decoder.

    ``frames_received == frames_decoded + frames_unknown + frames_malformed +
    frames_ignored`` (error and remote frames are ignored) and
    ``samples_decoded == samples_emitted + samples_throttled + samples_invalid``.
    """

    frames_received: int = 0
    frames_decoded: int = 0
    frames_unknown: int = 0
    frames_malformed: int = 0
    frames_ignored: int = 0
    samples_decoded: int = 0
    samples_emitted: int = 0
    samples_throttled: int = 0
    samples_invalid: int = 0
    unknown_ids: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        """The counters as plain numbers (for status output)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class _SampleGate:
    """Applies a mapping's publishing rule (every frame, interval or on-change)."""

    __slots__ = ("mapping", "last_t_ns", "last_value")

    def __init__(self, mapping: SignalMapping) -> None:
        self.mapping = mapping
        self.last_t_ns: int | None = None
        self.last_value: Value | None = None

    def admit(self, t_ns: int, value: Value) -> bool:
        mapping = self.mapping
        if mapping.on_change:
            if self.last_t_ns is not None and value == self.last_value:
                return False
        elif self.last_t_ns is not None and t_ns - self.last_t_ns < mapping.interval_ns:
            return False
        self.last_t_ns, self.last_value = t_ns, value
        return True


def load_dbc(paths: Iterable[Path]) -> cantools.database.can.Database:
    """Load one or more DBC files into one database."""
    db = cantools.database.can.Database()
    for path in paths:
        try:
            db.add_dbc_file(str(path))
        except FileNotFoundError as exc:
            raise DbcLoadError(f"{path}: DBC file not found") from exc
        except (OSError, UnicodeDecodeError, cantools.database.UnsupportedDatabaseFormatError) as exc:
            raise DbcLoadError(f"{path}: cannot load DBC: {exc}") from exc
        except Exception as exc:  # cantools raises assorted errors on bad input
            raise DbcLoadError(f"{path}: cannot load DBC: {type(exc).__name__}: {exc}") from exc
    return db


class FrameDecoder:
    """Decodes one bus's frames into :class:`Record` objects, counting every outcome.

    Only frames of messages with at least one mapped signal are decoded; frames of
    other known messages count as decoded with no samples.
    """

    def __init__(
        self, bus: str, db: cantools.database.can.Database, mappings: Iterable[SignalMapping]
    ) -> None:
        self.bus = bus
        self.stats = DecodeStats()
        gates: dict[str, list[_SampleGate]] = {}
        for mapping in mappings:
            gates.setdefault(mapping.message, []).append(_SampleGate(mapping))
        self._routes: dict[tuple[int, bool], tuple[cantools.database.can.Message, list[_SampleGate]]]
        self._routes = {(m.frame_id, m.is_extended_frame): (m, gates.get(m.name, [])) for m in db.messages}

    @classmethod
    def from_files(cls, bus: str, dbc_paths: list[Path], mapping_path: Path | None) -> FrameDecoder:
        """Build a decoder from DBC files and a mapping (default: beside the first DBC)."""
        db = load_dbc(dbc_paths)
        return cls(bus, db, load_mapping(mapping_path or default_mapping_path(dbc_paths[0]), db))

    def decode(self, frame: can.Message) -> Record | None:
        """Decode a frame; return its record, or None when nothing is to be published."""
        stats = self.stats
        stats.frames_received += 1
        if frame.is_error_frame or frame.is_remote_frame:
            stats.frames_ignored += 1
            return None
        route = self._routes.get((frame.arbitration_id, frame.is_extended_id))
        if route is None:
            stats.frames_unknown += 1
            if frame.arbitration_id not in stats.unknown_ids:
                stats.unknown_ids.add(frame.arbitration_id)
                LOGGER.info("bus %s: frame id 0x%X is not in the DBC", self.bus, frame.arbitration_id)
            return None
        message, gates = route
        try:
            values = cast(Mapping[str, float], message.decode(frame.data, decode_choices=False))  # type: ignore[arg-type]
        except Exception as exc:  # cantools raises DecodeError, bitstruct errors, ...
            stats.frames_malformed += 1
            LOGGER.debug("bus %s: %s (0x%X) malformed: %s", self.bus, message.name, frame.arbitration_id, exc)
            return None
        stats.frames_decoded += 1
        t_ns = round(frame.timestamp * 1_000_000) * 1000
        signals: dict[str, Value] = {}
        for gate in gates:
            raw = values.get(gate.mapping.signal)
            if raw is None:  # a multiplexed signal not in this frame
                continue
            stats.samples_decoded += 1
            try:
                value = gate.mapping.convert(raw)
            except SampleValueError as exc:
                stats.samples_invalid += 1
                LOGGER.debug("bus %s: %s", self.bus, exc)
                continue
            if gate.admit(t_ns, value):
                signals[gate.mapping.vss_path] = value
            else:
                stats.samples_throttled += 1
        stats.samples_emitted += len(signals)
        return Record(t_ns, self.bus, signals) if signals else None
