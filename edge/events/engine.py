"""The event engine: decoded records in, event updates out.

``EventEngine(config).feed(record)`` returns the events that record changed:

* at the sample that starts an event, the :class:`Event` in state ``ongoing``: start
  and detection time, severity and peaks so far, position, snapshot up to now;
* once ``post_s`` of frame time has passed after its end, the same event (same
  :attr:`Event.id`) in state ``ended``: end time, final severity and peaks, and the
  whole snapshot.

So a caller publishes at once when an event starts and again when it is complete.
:meth:`EventEngine.flush` completes events when no records arrive (wall time);
:meth:`EventEngine.finish` ends everything at the end of the input.

The snapshot holds the samples of the detector's signals from ``pre_s`` before the
start to ``post_s`` after the end. Of a long event it keeps the first ``pre_s + post_s``
seconds and the last ``pre_s + post_s``, so its size stays bounded.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from edge.events.config import EventsConfig
from edge.events.detectors import LATITUDE, LONGITUDE, Detector, Step, build_detectors
from edge.events.primitives import History, SignalTable, seconds_ns, traces
from roadwave.contract import MAX_TIMESTAMP_NS, MIN_TIMESTAMP_NS, QUALITIES, VSS_CATALOG, Record

#: The event JSON schema version :meth:`Event.to_dict` writes and :meth:`Event.from_dict` reads.
EVENT_SCHEMA_VERSION = 1
ONGOING, ENDED = "ongoing", "ended"
STATES = (ONGOING, ENDED)
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")

Snapshot = dict[str, dict[str, list[Any]]]


class EventFormatError(ValueError):
    """An event document that does not follow the event schema; the message says where."""


@dataclass(frozen=True, slots=True)
class Event:
    """One update of a detected event (see the module docstring); times in ns since the epoch.

    ``start_ns`` is the first sample of the condition, ``detected_ns`` the sample at
    which it had held long enough to be reported; ``end_ns`` is None while ``ongoing``.
    ``severity``: 1 info, 2 warning, 3 critical. ``peak`` maps measure names (with their
    unit, e.g. ``deceleration_mps2``) to their worst value. ``position`` is the latest
    good (latitude, longitude) at detection. ``snapshot`` maps VSS paths to columns
    ``t`` (ns), ``v`` and, if a sample was flagged, ``q`` (its quality, else None).
    """

    kind: str
    state: str
    severity: int
    start_ns: int
    detected_ns: int
    end_ns: int | None
    peak: dict[str, float]
    position: tuple[float, float] | None
    snapshot: Snapshot

    @property
    def id(self) -> str:
        """Identifies the event across its updates: type and start time."""
        return f"{self.kind}-{self.start_ns}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document (schema :data:`EVENT_SCHEMA_VERSION`)."""
        return {
            "v": EVENT_SCHEMA_VERSION,
            "id": self.id,
            "type": self.kind,
            "state": self.state,
            "severity": self.severity,
            "start": self.start_ns,
            "detected": self.detected_ns,
            "end": self.end_ns,
            "peak": dict(self.peak),
            "position": None if self.position is None else {"lat": self.position[0], "lon": self.position[1]},
            "snapshot": {path: {k: list(v) for k, v in cols.items()} for path, cols in self.snapshot.items()},
        }

    @classmethod
    def from_dict(cls, document: Any) -> Event:
        """Read and validate an event document.

        Raises:
            EventFormatError: naming the key and the problem.
        """
        if not isinstance(document, dict):
            raise EventFormatError("an event must be a JSON object")
        version = _get(document, "v", int)
        if version != EVENT_SCHEMA_VERSION:
            raise EventFormatError(f"event schema version {version} is not {EVENT_SCHEMA_VERSION}")
        kind = _get(document, "type", str)
        if not KIND_PATTERN.fullmatch(kind):
            raise EventFormatError(f"'type' {kind!r} is not an event type name (a-z, 0-9, _)")
        state = _get(document, "state", str)
        if state not in STATES:
            raise EventFormatError(f"'state' must be one of {', '.join(STATES)}, got {state!r}")
        severity = _get(document, "severity", int)
        if severity not in (1, 2, 3):
            raise EventFormatError(f"'severity' must be 1, 2 or 3, got {severity}")
        start, detected = _timestamp(document, "start"), _timestamp(document, "detected")
        end = None if document.get("end") is None else _timestamp(document, "end")
        if (end is None) != (state == ONGOING):
            raise EventFormatError(f"an {state} event must {'not ' if state == ONGOING else ''}have an 'end'")
        if not start <= detected or (end is not None and end < start):
            raise EventFormatError("times must satisfy start <= detected and start <= end")
        expected_id = f"{kind}-{start}"
        if document.get("id", expected_id) != expected_id:
            raise EventFormatError(f"'id' {document['id']!r} does not match type and start ({expected_id!r})")
        peak = _get(document, "peak", dict)
        for name, value in peak.items():
            if not _finite(value):
                raise EventFormatError(f"peak {name!r} must be a finite number, got {value!r}")
        snapshot = _snapshot(_get(document, "snapshot", dict))
        return cls(kind, state, severity, start, detected, end, dict(peak), _position(document), snapshot)


def _get(document: dict[str, Any], key: str, kind: type) -> Any:
    if key not in document:
        raise EventFormatError(f"missing {key!r}")
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise EventFormatError(f"{key!r} must be {kind.__name__}, got {value!r}")
    return value


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _timestamp(document: dict[str, Any], key: str) -> int:
    value: int = _get(document, key, int)
    if not MIN_TIMESTAMP_NS <= value < MAX_TIMESTAMP_NS:
        raise EventFormatError(f"{key!r}: {value} ns is outside years 2000-2099")
    return value


def _position(document: dict[str, Any]) -> tuple[float, float] | None:
    position = document.get("position")
    if position is None:
        return None
    if not isinstance(position, dict) or set(position) != {"lat", "lon"}:
        raise EventFormatError("'position' must be null or an object with exactly 'lat' and 'lon'")
    lat, lon = position["lat"], position["lon"]
    if not (_finite(lat) and _finite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise EventFormatError(f"'position' {lat!r}, {lon!r} is not a latitude and longitude in degrees")
    return float(lat), float(lon)


def _snapshot(snapshot: dict[str, Any]) -> Snapshot:
    for path, columns in snapshot.items():
        where = f"snapshot {path!r}"
        if path not in VSS_CATALOG:
            raise EventFormatError(f"{where}: not a path of the roadwave VSS catalog")
        if not isinstance(columns, dict) or not {"t", "v"} <= set(columns) <= {"t", "v", "q"}:
            raise EventFormatError(f"{where}: needs columns 't' and 'v' (and optionally 'q')")
        if not all(isinstance(c, list) and len(c) == len(columns["t"]) for c in columns.values()):
            raise EventFormatError(f"{where}: columns must be lists of equal length")
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in columns["t"]):
            raise EventFormatError(f"{where}: 't' must hold integer nanoseconds")
        if not all(isinstance(v, bool) or _finite(v) for v in columns["v"]):
            raise EventFormatError(f"{where}: 'v' must hold finite numbers or booleans")
        if not all(q is None or q in QUALITIES for q in columns.get("q", ())):
            raise EventFormatError(f"{where}: 'q' must hold null or one of {', '.join(QUALITIES)}")
    return snapshot


class _Capture:
    """The records of one event's snapshot (see the module docstring)."""

    __slots__ = ("pre_ns", "post_ns", "head_until_ns", "end_ns", "head", "tail")

    def __init__(self, start_ns: int, pre_ns: int, post_ns: int) -> None:
        self.pre_ns, self.post_ns = pre_ns, post_ns
        self.head_until_ns = start_ns + post_ns
        self.end_ns: int | None = None
        self.head: list[Record] = []
        self.tail: deque[Record] = deque()

    def add(self, record: Record) -> None:
        t_ns = record.t_ns
        if t_ns <= self.head_until_ns:
            self.head.append(record)
            return
        if self.end_ns is not None:
            if t_ns <= self.end_ns + self.post_ns:
                self.tail.append(record)
            return
        tail = self.tail
        tail.append(record)
        horizon = t_ns - self.pre_ns
        while tail[0].t_ns < horizon:
            tail.popleft()

    def records(self) -> list[Record]:
        return [*self.head, *self.tail]


class _Tracked:
    """An event between its start and its last update."""

    __slots__ = ("detector", "start_ns", "detected_ns", "position", "capture", "end_ns", "peaks", "severity")

    def __init__(
        self, detector: Detector, detected_ns: int, position: tuple[float, float] | None, capture: _Capture
    ) -> None:
        self.detector = detector
        self.start_ns = detector.onset_ns
        self.detected_ns = detected_ns
        self.position = position
        self.capture = capture
        self.end_ns: int | None = None
        self.peaks = dict(detector.peaks)
        self.severity = detector.severity

    def event(self, state: str) -> Event:
        detector = self.detector
        return Event(
            kind=detector.kind,
            state=state,
            severity=self.severity,
            start_ns=self.start_ns,
            detected_ns=self.detected_ns,
            end_ns=self.end_ns,
            peak=dict(self.peaks),
            position=self.position,
            snapshot=traces(self.capture.records(), detector.snapshot_paths),
        )


class EventEngine:
    """Runs every enabled detector of ``config`` (default: the car defaults) on decoded records."""

    def __init__(self, config: EventsConfig | None = None) -> None:
        self.config = config or EventsConfig.for_class()
        self.detectors = build_detectors(self.config)
        self._by_clock: dict[str, list[Detector]] = {}
        for detector in self.detectors:
            self._by_clock.setdefault(detector.clock, []).append(detector)
        self._pre_ns, self._post_ns = seconds_ns(self.config.pre_s), seconds_ns(self.config.post_s)
        # An event starts up to its minimum duration before it is detected.
        longest = max((d.settings.min_duration_s for d in self.detectors), default=0.0)
        self._history = History(self.config.pre_s + longest)
        self._signals = SignalTable()
        self._open: dict[Detector, _Tracked] = {}
        self._closing: list[_Tracked] = []
        self._now_ns = 0

    def feed(self, record: Record) -> list[Event]:
        """Take one decoded record; return the events it started or completed."""
        t_ns = record.t_ns
        self._signals.update(record)
        self._history.append(record)
        for tracked in self._open.values():
            tracked.capture.add(record)
        for tracked in self._closing:
            tracked.capture.add(record)
        updates: list[Event] = []
        by_clock = self._by_clock
        for path in record.signals:
            for detector in by_clock.get(path, ()):
                step = detector.update(t_ns, self._signals)
                if step is Step.STARTED:
                    updates.append(self._start(detector, t_ns))
                elif step is Step.ENDED:
                    self._end(detector, t_ns)
        self._now_ns = max(self._now_ns, t_ns)
        if self._closing:
            updates.extend(self.flush(self._now_ns))
        return updates

    def flush(self, now_ns: int) -> list[Event]:
        """The ended events whose post-window has passed by ``now_ns``, completed."""
        due = [t for t in self._closing if t.end_ns is not None and t.end_ns + self._post_ns <= now_ns]
        if not due:
            return []
        self._closing = [t for t in self._closing if t not in due]
        return [tracked.event(ENDED) for tracked in due]

    def finish(self) -> list[Event]:
        """End the input: end ongoing events at the last record's time and complete all."""
        for detector in list(self._open):
            self._end(detector, self._now_ns)
        done, self._closing = self._closing, []
        return [tracked.event(ENDED) for tracked in done]

    def _start(self, detector: Detector, t_ns: int) -> Event:
        latitude, longitude = self._signals.number(LATITUDE), self._signals.number(LONGITUDE)
        position = None if latitude is None or longitude is None else (latitude, longitude)
        start_ns = detector.onset_ns
        capture = _Capture(start_ns, self._pre_ns, self._post_ns)
        for record in self._history.since(start_ns - self._pre_ns):
            capture.add(record)
        tracked = _Tracked(detector, t_ns, position, capture)
        self._open[detector] = tracked
        return tracked.event(ONGOING)

    def _end(self, detector: Detector, t_ns: int) -> None:
        tracked = self._open.pop(detector)
        tracked.end_ns = tracked.capture.end_ns = t_ns
        tracked.peaks = dict(detector.peaks)
        tracked.severity = detector.severity
        detector.active = False
        self._closing.append(tracked)
