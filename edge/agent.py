"""The edge agent: CAN sources -> decoders -> batcher -> spool -> MQTT uplink, plus events and V2X.

Live buses are read by python-can's :class:`can.Notifier`, one per bus, whose
listener decodes and queues records; recorded logs are replayed by a thread
each. Batches go to the on-disk spool and from there to the broker
(:mod:`edge.uplink`), so the agent starts and runs without a connection. The
main loop looks for message timeouts on live buses (wall clock) and publishes
the agent's health. The agent ends when every log is replayed and no live bus
is configured, or when ``stop`` is set.

Every decoded record also goes to :class:`~edge.analysis.Analysis`: event updates go
to the spool at once (events topic), and the V2X stack, when configured, sends CAMs and
DENMs and publishes the warnings it raises on the vehicle's ``v2x-warning`` topic.

With ``[diagnostics]``, a poller reads OBD-II/UDS from the ECUs on one live bus for the
agent's lifetime (:mod:`edge.diagnostics.agent`), through that bus's notifier; records
carrying the MIL signal trigger a cycle, and every report goes to the spool at once
(diagnostics topic).

A replayed log resumes where an earlier run's spool left off: the decoder is
deterministic, so the run decodes the log again from the start and skips the
records the spool already holds (or delivered). Events are detected again from the
start: an event update already delivered arrives again and overwrites itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import paho.mqtt.client as paho

from edge.analysis import Analysis
from edge.batcher import Batcher
from edge.config import BusSettings, EdgeConfig
from edge.dbcload import load_dbc_files
from edge.decoder import Emit, FrameDecoder
from edge.diagnostics.agent import AgentDiagnostics, bus_problem
from edge.integrity import resolve_integrity
from edge.mapping import default_mapping_path, load_mapping
from edge.uplink import TelemetryUplink, status_message
from edge.v2x.config import build_stack
from edge.v2x.pcap import PcapWriter
from edge.v2x.stack import warning_publisher
from roadwave import mqtt
from roadwave.contract import AgentHealth, Record
from roadwave.spool import DiskQueue

LOGGER = logging.getLogger(__name__)

#: How often the main loop looks for timeouts on live buses.
TICK_S = 0.05


class BusListener(can.Listener):
    """Decodes frames of one bus and hands the records to ``emit``.

    Thread-safe: the notifier (or replay) thread decodes while the agent's main
    loop looks for timeouts.
    """

    def __init__(self, decoder: FrameDecoder, emit: Emit) -> None:
        self.decoder = decoder
        self.emit = emit
        self._lock = threading.Lock()

    def on_message_received(self, msg: can.Message) -> None:
        with self._lock:
            self.decoder.decode(msg, self.emit)

    def tick(self, now_ns: int) -> None:
        """Emit stale samples for messages silent since before ``now_ns``."""
        with self._lock:
            self.decoder.expire(now_ns, self.emit)

    def on_error(self, exc: Exception) -> None:
        LOGGER.error("bus %s: receive error: %s", self.decoder.bus, exc)


@dataclass(frozen=True)
class AgentReport:
    """What one agent run did: per-bus decoding counters and the uplink's counters."""

    vin: str
    buses: dict[str, dict[str, int]]
    uplink: dict[str, int]
    delivered: bool
    wall_time_s: float
    events_detected: int = 0
    v2x: dict[str, int] | None = None
    diagnostics: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "vin": self.vin,
            "buses": self.buses,
            "uplink": self.uplink,
            "events_detected": self.events_detected,
            "v2x": self.v2x,
            "diagnostics": self.diagnostics,
            "delivered": self.delivered,
            "wall_time_s": round(self.wall_time_s, 3),
        }


def open_log(path: Path) -> Iterable[can.Message]:
    """Frames of a recorded log, with absolute timestamps, format chosen by suffix.

    candump ``-L`` logs and BLF files carry absolute times; ASC files count from
    the start date in their header, which python-can adds when asked.
    """
    if path.suffix.lower() == ".asc":
        return can.LogReader(path, relative_timestamp=False)
    return can.LogReader(path)


def replay_source(bus: BusSettings) -> str:
    """The spool's progress key of a replayed log: bus, file and size."""
    assert bus.log is not None
    return f"replay:{bus.name}:{bus.log}:{bus.log.stat().st_size}"


class _Resume:
    """Numbers a replay's records and skips those an earlier run already spooled."""

    def __init__(self, source: str, skip: int, batcher: Batcher) -> None:
        self._source, self._skip, self._batcher = source, skip, batcher
        self._position = 0

    def emit(self, record: Record) -> None:
        self._position += 1
        if self._position > self._skip:
            self._batcher.add(record, (self._source, self._position))


def _replay(log: Path, realtime: bool, listener: BusListener, stop: threading.Event) -> None:
    """Feed a recorded log through a listener, at recorded pace when asked."""
    try:
        frames = open_log(log)
        if realtime:
            frames = can.MessageSync(frames, timestamps=True)
        for frame in frames:
            if stop.is_set():
                break
            listener.on_message_received(frame)
    except (OSError, ValueError) as exc:
        LOGGER.error("bus %s: replay of %s stopped: %s", listener.decoder.bus, log, exc)


class BusOpenError(ConnectionError):
    """A configured CAN interface could not be opened."""


def _open_bus(settings: BusSettings) -> can.BusABC:
    try:
        return can.Bus(interface=settings.interface, channel=settings.channel, **settings.options)
    except (can.CanError, OSError, ValueError, TypeError, ImportError) as exc:
        raise BusOpenError(
            f"bus {settings.name!r}: cannot open {settings.interface} channel {settings.channel!r}: {exc}"
        ) from exc


def build_decoder(settings: BusSettings) -> FrameDecoder:
    """The decoder of one configured bus: DBC files, overlay, integrity overrides, timeouts.

    Raises ``DbcLoadError``, ``MappingError`` or ``ValueError`` (integrity overrides).
    """
    db = load_dbc_files(list(settings.dbc)).database
    mappings = load_mapping(settings.mapping or default_mapping_path(settings.dbc[0]), db)
    try:
        integrity = resolve_integrity(db, settings.integrity)
    except ValueError as exc:
        raise ValueError(f"bus {settings.name!r}: {exc}") from exc
    return FrameDecoder(
        settings.name, db, mappings, integrity=integrity, timeout_factor=settings.timeout_factor
    )


class EdgeAgent:
    """One vehicle's agent, built from a validated :class:`EdgeConfig`.

    ``v2x_pcap`` records every V2X packet to that file instead of ``[v2x] pcap``.
    """

    def __init__(self, config: EdgeConfig, v2x_pcap: Path | None = None) -> None:
        if v2x_pcap is not None and config.v2x is None:
            raise ValueError("a V2X pcap needs V2X: add a [v2x] section to the configuration")
        self.config = config
        self.v2x_pcap = v2x_pcap or (None if config.v2x is None else config.v2x.pcap)
        self.decoders = {bus.name: build_decoder(bus) for bus in config.buses}
        if config.diagnostics is not None:
            self._check_diagnostics()
        #: Set once every bus is being read (live buses listened to, replays started).
        self.ready = threading.Event()
        self._started = time.monotonic()
        self._diagnostics: AgentDiagnostics | None = None

    def _check_diagnostics(self) -> None:
        """Refuse diagnostics the buses cannot serve (a config built in code skips EdgeConfig.load)."""
        settings = self.config.diagnostics
        assert settings is not None
        live = [bus.name for bus in self.config.buses if bus.log is None]
        replayed = [bus.name for bus in self.config.buses if bus.log is not None]
        problem = bus_problem(settings.bus, live, replayed)
        if problem:
            raise ValueError(f"[diagnostics] {problem}")
        mil = settings.mil_signal
        if mil is not None and not any(mil in decoder.vss_paths for decoder in self.decoders.values()):
            raise ValueError(f"[diagnostics] mil_signal {mil!r}: no [[bus]] mapping produces it")

    def health(self, uplink: TelemetryUplink) -> AgentHealth:
        """The agent's counters now."""
        return AgentHealth(
            vin=self.config.vin,
            fleet=self.config.fleet,
            t_ns=time.time_ns(),
            uptime_s=round(time.monotonic() - self._started, 3),
            buses={name: decoder.stats.as_dict() for name, decoder in self.decoders.items()},
            uplink=vars(uplink.stats).copy(),
            diagnostics=None if self._diagnostics is None else self._diagnostics.counters(),
        )

    def run(self, stop: threading.Event, drain_timeout_s: float = 30.0) -> AgentReport:
        """Run until the logs are replayed or ``stop`` is set; return the report.

        ``stop`` is set when the run ends, whatever ended it.
        """
        self._started = time.monotonic()
        config = self.config
        live_buses: dict[str, can.BusABC] = {}
        spool = DiskQueue(
            config.uplink.spool,
            max_bytes=config.uplink.spool_max_bytes,
            max_age_s=config.uplink.spool_max_age_s,
            key=config.uplink.spool_key,
        )
        pcap = stack = None
        try:  # local problems first: a bus or a V2X socket that cannot open fails before any connection
            for bus in config.buses:
                if bus.log is None:
                    live_buses[bus.name] = _open_bus(bus)
            pcap = None if self.v2x_pcap is None else PcapWriter(self.v2x_pcap)
            if config.v2x is not None:
                stack = build_stack(config.v2x, config.mqtt, config.client_id, config.vin, pcap)
        except BaseException:
            for live in live_buses.values():
                live.shutdown()
            if pcap is not None:
                pcap.close()
            spool.close()
            raise
        connected_ns = time.time_ns()

        def announce(client: paho.Client) -> None:  # the birth message, after every connection
            birth = status_message(config.vin, config.fleet, True, connected_ns)
            client.publish(birth.topic, birth.payload, birth.qos, birth.retain)

        client = mqtt.connect(
            config.mqtt,
            config.client_id,
            persistent=True,
            will=status_message(config.vin, config.fleet, False, connected_ns),
            on_connected=announce,
            timeout_s=None,
        )
        uplink = TelemetryUplink(client, spool, config.vin, config.fleet, config.uplink)
        uplink.start()
        if stack is not None:
            stack.on_warning = warning_publisher(client, config.fleet, config.vin)
        analysis = Analysis(config.events, uplink.send_event, stack)
        observers: list[Callable[[Record], None]] = [analysis.on_record]
        diagnostics = self._diagnostics = None
        if config.diagnostics is not None:
            diagnostics = self._diagnostics = AgentDiagnostics(config.diagnostics, uplink.send_diagnostics)
            if config.diagnostics.mil_signal is not None:
                observers.append(diagnostics.on_record)
        batcher = Batcher(config.batch, uplink.send)
        batcher.start()
        listeners = {
            bus.name: BusListener(self.decoders[bus.name], self._emitter(bus, batcher, spool, observers))
            for bus in config.buses
        }
        notifiers = {name: can.Notifier(live, [listeners[name]]) for name, live in live_buses.items()}
        replays = [
            threading.Thread(
                target=_replay,
                args=(bus.log, bus.realtime, listeners[bus.name], stop),
                name=f"replay-{bus.name}",
            )
            for bus in config.buses
            if bus.log is not None
        ]
        try:
            if diagnostics is not None:
                name = diagnostics.settings.bus
                diagnostics.start(live_buses[name], notifiers[name])
            for thread in replays:
                thread.start()
            self.ready.set()
            self._main_loop(stop, uplink, analysis, [listeners[name] for name in live_buses], replays)
        finally:
            if diagnostics is not None:
                diagnostics.stop()
            for notifier in notifiers.values():
                notifier.stop()
            for live in live_buses.values():
                live.shutdown()
            stop.set()
            for thread in replays:
                thread.join()
            analysis.finish()
            if stack is not None:
                stack.close()
            if pcap is not None:
                pcap.close()
            batcher.stop()
            delivered = uplink.drain(drain_timeout_s)
            spool.close()
            if client.is_connected():
                uplink.publish_health(self.health(uplink)).wait_for_publish(min(drain_timeout_s, 5.0))
                uplink.publish_status(False, time.time_ns()).wait_for_publish(min(drain_timeout_s, 5.0))
            client.disconnect()
            client.loop_stop()
        return AgentReport(
            vin=config.vin,
            buses={name: decoder.stats.as_dict() for name, decoder in self.decoders.items()},
            uplink=vars(uplink.stats).copy(),
            delivered=delivered,
            wall_time_s=time.monotonic() - self._started,
            events_detected=analysis.events_detected,
            v2x=None if stack is None else stack.counters(),
            diagnostics=None if diagnostics is None else diagnostics.counters(),
        )

    @staticmethod
    def _emitter(
        bus: BusSettings, batcher: Batcher, spool: DiskQueue, observers: Sequence[Callable[[Record], None]]
    ) -> Emit:
        """Where a bus's records go: the batcher (through a resume point for replays), then the observers."""
        if bus.log is None:
            batch: Emit = batcher.add
        else:
            source = replay_source(bus)
            skip = spool.progress(source)
            if skip:
                LOGGER.info("bus %s: resuming the replay of %s after record %d", bus.name, bus.log, skip)
            batch = _Resume(source, skip, batcher).emit

        def emit(record: Record) -> None:
            batch(record)
            for observe in observers:
                observe(record)

        return emit

    def _main_loop(
        self,
        stop: threading.Event,
        uplink: TelemetryUplink,
        analysis: Analysis,
        live: list[BusListener],
        replays: list[threading.Thread],
    ) -> None:
        """Tick live buses' timeouts, events and V2X, and publish health until stopped or the logs end."""
        next_health = time.monotonic() + self.config.health_interval_s
        while not stop.wait(TICK_S):
            if not live and not any(thread.is_alive() for thread in replays):
                return
            now_ns = time.time_ns()
            for listener in live:
                listener.tick(now_ns)
            if live:  # replays keep their own time: their records drive events and V2X
                analysis.tick(now_ns)
            if time.monotonic() >= next_health:
                uplink.publish_health(self.health(uplink))
                next_health += self.config.health_interval_s
