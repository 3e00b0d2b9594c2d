"""What the agent does with decoded records besides uploading them: events and V2X.

Every record of every bus goes through :meth:`Analysis.on_record`, in the bus's own
thread, right after decoding:

* the event engine (``[events]``) turns records into event updates, which are handed to
  ``publish`` at once (the agent spools and sends them on the events topic);
* the V2X stack (``[v2x]``) follows the vehicle's motion and gets the events its DENMs
  announce from a second engine with no snapshot window, so a DENM is cancelled the
  moment its situation ends rather than after the published event's post-window.

Time: the V2X stack is ticked whenever record time has moved on by :data:`V2X_TICK_NS`,
so a replayed log drives CAM timing and DENM repetitions at its own pace; on live buses
the agent's main loop also calls :meth:`tick` with the wall clock, for when records
stop arriving.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

from edge.events.config import DETECTOR_KINDS, EventsConfig
from edge.events.engine import EventEngine
from edge.v2x.denm_service import PROFILES
from edge.v2x.stack import V2xStack
from roadwave.contract import Record
from roadwave.contract.events import ONGOING, Event

#: Record time between two V2X ticks driven by records: half the shortest CAM interval.
V2X_TICK_NS = 50_000_000


def denm_engine_config(events: EventsConfig) -> EventsConfig:
    """The detectors whose events DENMs announce, with no snapshot window."""
    switched_off = {
        kind: dataclasses.replace(getattr(events, kind), enabled=False)
        for kind in DETECTOR_KINDS
        if kind not in PROFILES
    }
    return dataclasses.replace(events, pre_s=0.0, post_s=0.0, **switched_off)


class Analysis:
    """Runs the event engine and the V2X stack on the decoded records; thread-safe."""

    def __init__(
        self,
        events: EventsConfig | None,
        publish: Callable[[Event], None],
        v2x: V2xStack | None = None,
    ) -> None:
        self._events = None if events is None else EventEngine(events)
        self._publish = publish
        self._v2x = v2x
        self._denm_events = (
            None if v2x is None else EventEngine(denm_engine_config(events or EventsConfig.for_class()))
        )
        self._lock = threading.Lock()
        self._ticked_ns = 0
        self.events_detected = 0

    def on_record(self, record: Record) -> None:
        """Feed one decoded record to the engines and the stack."""
        with self._lock:
            if self._events is not None:
                self._emit(self._events.feed(record))
            if self._v2x is None or self._denm_events is None:
                return
            self._v2x.on_record(record)
            for event in self._denm_events.feed(record):
                self._v2x.on_event(event)
            if record.t_ns - self._ticked_ns >= V2X_TICK_NS:
                self._tick(record.t_ns)

    def tick(self, now_ns: int) -> None:
        """Complete events whose post-window passed by ``now_ns``; send what V2X has due."""
        with self._lock:
            if self._events is not None:
                self._emit(self._events.flush(now_ns))
            if self._v2x is not None and self._denm_events is not None and now_ns > self._ticked_ns:
                for event in self._denm_events.flush(now_ns):
                    self._v2x.on_event(event)
                self._tick(now_ns)

    def finish(self) -> None:
        """The input ended: end and publish every open event, cancel every DENM."""
        with self._lock:
            if self._events is not None:
                self._emit(self._events.finish())
            if self._v2x is not None and self._denm_events is not None:
                for event in self._denm_events.finish():
                    self._v2x.on_event(event)

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            if event.state == ONGOING:
                self.events_detected += 1
            self._publish(event)

    def _tick(self, now_ns: int) -> None:
        assert self._v2x is not None
        self._ticked_ns = now_ns
        self._v2x.tick(now_ns)
