"""The edge agent: CAN sources -> decoders -> batcher -> MQTT uplink.

Live buses are read by python-can's :class:`can.Notifier`, one per bus, whose
listener decodes and queues records; recorded logs are replayed by a thread
each. The agent ends when every log is replayed and no live bus is configured,
or when ``stop`` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can

from edge.batcher import Batcher
from edge.config import BusSettings, EdgeConfig
from edge.decoder import FrameDecoder
from edge.uplink import TelemetryUplink
from roadwave import mqtt

LOGGER = logging.getLogger(__name__)


class BusListener(can.Listener):
    """Decodes frames of one bus and hands the records to the batcher."""

    def __init__(self, decoder: FrameDecoder, batcher: Batcher) -> None:
        self.decoder = decoder
        self.batcher = batcher

    def on_message_received(self, msg: can.Message) -> None:
        record = self.decoder.decode(msg)
        if record is not None:
            self.batcher.add(record)

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

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "vin": self.vin,
            "buses": self.buses,
            "uplink": self.uplink,
            "delivered": self.delivered,
            "wall_time_s": round(self.wall_time_s, 3),
        }


def _replay(log: Path, realtime: bool, listener: BusListener, stop: threading.Event) -> None:
    """Feed a recorded log through a listener, at recorded pace when asked."""
    try:
        frames: Iterable[can.Message] = can.LogReader(log)
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


class EdgeAgent:
    """One vehicle's agent, built from a validated :class:`EdgeConfig`."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.decoders = {
            bus.name: FrameDecoder.from_files(bus.name, list(bus.dbc), bus.mapping) for bus in config.buses
        }
        #: Set once every bus is being read (live buses listened to, replays started).
        self.ready = threading.Event()

    def run(self, stop: threading.Event, drain_timeout_s: float = 30.0) -> AgentReport:
        """Run until the logs are replayed or ``stop`` is set; return the report.

        ``stop`` is set when the run ends, whatever ended it.
        """
        started = time.monotonic()
        config = self.config
        live_buses: dict[str, can.BusABC] = {}
        try:  # local problems first: a bus that cannot open fails before any connection
            for bus in config.buses:
                if bus.log is None:
                    live_buses[bus.name] = _open_bus(bus)
            client = mqtt.connect(config.mqtt, config.client_id)
        except BaseException:
            for live in live_buses.values():
                live.shutdown()
            raise
        uplink = TelemetryUplink(client, config.vin, config.fleet)
        batcher = Batcher(config.batch, uplink.send)
        batcher.start()
        notifiers: list[can.Notifier] = []
        replays: list[threading.Thread] = []
        try:
            for bus in config.buses:
                listener = BusListener(self.decoders[bus.name], batcher)
                if bus.log is None:
                    notifiers.append(can.Notifier(live_buses[bus.name], [listener]))
                    continue
                thread = threading.Thread(
                    target=_replay,
                    args=(bus.log, bus.realtime, listener, stop),
                    name=f"replay-{bus.name}",
                )
                thread.start()
                replays.append(thread)
            self.ready.set()
            if live_buses:
                stop.wait()
            for thread in replays:
                thread.join()
        finally:
            for notifier in notifiers:
                notifier.stop()
            for live in live_buses.values():
                live.shutdown()
            stop.set()  # ends replays still running after an error
            for thread in replays:
                thread.join()
            batcher.stop()
            delivered = uplink.drain(drain_timeout_s)
            client.loop_stop()
            client.disconnect()
        return AgentReport(
            vin=config.vin,
            buses={name: decoder.stats.as_dict() for name, decoder in self.decoders.items()},
            uplink=vars(uplink.stats).copy(),
            delivered=delivered,
            wall_time_s=time.monotonic() - started,
        )
