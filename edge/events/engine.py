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

from collections import deque

from edge.events.config import EventsConfig
from edge.events.detectors import LATITUDE, LONGITUDE, Detector, Step, build_detectors
from edge.events.primitives import History, SignalTable, seconds_ns, traces
from roadwave.contract import Record
from roadwave.contract.events import ENDED, ONGOING, Event


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
