"""Store-and-forward of telemetry batches, event updates and diagnostic reports to the broker (MQTT QoS 1).

Every batch is encoded and stored in the on-disk spool (:class:`DiskQueue`)
before it is offered to MQTT, and deleted only once the broker acknowledged
it. A sender thread publishes the spool in order, at most ``max_in_flight``
unacknowledged batches and ``max_messages_per_s`` at a time, only while
connected: after an outage the backlog drains at that rate instead of hitting
the broker all at once. Batches left in the spool when the agent stops (or is
killed) are sent by the next run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import paho.mqtt.client as paho

from edge.config import UplinkSettings
from roadwave.contract import (
    HEALTH,
    STATUS,
    AgentHealth,
    AgentStatus,
    Record,
    TelemetryBatch,
    encode_health,
    encode_status,
    encode_telemetry,
    telemetry_topic,
    vehicle_topic,
)
from roadwave.contract.diagnostics import DiagnosticsReport, diagnostics_topic, encode_diagnostics
from roadwave.contract.events import Event, encode_event, events_topic
from roadwave.mqtt import Will
from roadwave.spool import DiskQueue

LOGGER = logging.getLogger(__name__)


@dataclass
class UplinkStats:
    """Batches and samples stored in the spool, and how many the broker acknowledged.

    ``samples_acked`` counts samples of this run's batches; ``batches_recovered``
    are batches an earlier run left in the spool (sent and acknowledged by this run).
    """

    batches_sent: int = 0
    batches_acked: int = 0
    samples_sent: int = 0
    samples_acked: int = 0
    payload_bytes: int = 0
    batches_recovered: int = 0
    batches_published: int = 0
    spool_dropped: int = 0
    spool_depth: int = 0
    events_sent: int = 0
    diagnostics_sent: int = 0


class _RateLimit:
    """A token bucket: at most ``rate`` events per second, in bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens = burst
        self._last = time.monotonic()

    def take(self, wanted: int) -> int:
        """Take up to ``wanted`` tokens; return how many were available."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted


class TelemetryUplink:
    """Spools record lists as numbered telemetry batches and forwards them to the broker."""

    def __init__(
        self, client: paho.Client, spool: DiskQueue, vin: str, fleet: str, settings: UplinkSettings
    ) -> None:
        self._client = client
        self._spool = spool
        self._vin, self._fleet = vin, fleet
        self._settings = settings
        self._topic = telemetry_topic(fleet, vin)
        self._events_topic = events_topic(fleet, vin)
        self._diagnostics_topic = diagnostics_topic(fleet, vin)
        self._compress = settings.compression == "zlib"
        self._rate = _RateLimit(settings.max_messages_per_s, max(1.0, settings.max_in_flight))
        self._in_flight: deque[tuple[paho.MQTTMessageInfo, int]] = deque()
        self._samples: dict[int, int] = {}
        self._offered = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sender = threading.Thread(target=self._send_loop, name="uplink", daemon=True)
        self.stats = UplinkStats(batches_recovered=len(spool), spool_depth=len(spool))

    def start(self) -> None:
        """Start forwarding the spool (including what an earlier run left in it)."""
        self._sender.start()

    def send(self, records: list[Record], progress: Mapping[str, int] | None = None) -> None:
        """Store one batch durably (with ``progress`` positions) and wake the sender."""

        def payload(seq: int) -> bytes:
            return encode_telemetry(TelemetryBatch(self._vin, self._fleet, seq, records), self._compress)

        samples = sum(len(record.signals) for record in records)
        with self._lock:
            message_id = self._spool.put(self._topic, payload, progress)
            self._samples[message_id] = samples
        self.stats.batches_sent += 1
        self.stats.samples_sent += samples
        self._wake.set()

    def send_event(self, event: Event) -> None:
        """Store one event update durably and send it without waiting for a telemetry batch."""
        self._send_now(self._events_topic, encode_event(self._fleet, self._vin, event, self._compress))
        self.stats.events_sent += 1

    def send_diagnostics(self, report: DiagnosticsReport) -> None:
        """Store one diagnostic report durably and send it without waiting for a telemetry batch."""
        payload = encode_diagnostics(self._fleet, self._vin, report, self._compress)
        self._send_now(self._diagnostics_topic, payload)
        self.stats.diagnostics_sent += 1

    def _send_now(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self._spool.put(topic, payload)
        self._wake.set()

    def publish_health(self, health: AgentHealth) -> paho.MQTTMessageInfo:
        """Publish the agent's health report, retained, so a late subscriber sees the latest."""
        topic = vehicle_topic(self._fleet, self._vin, HEALTH)
        return self._client.publish(topic, encode_health(health), qos=1, retain=True)

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            try:
                self._collect_acks()
                self._offer()
            except Exception:  # the sender must outlive any one failure; the spool keeps the data
                LOGGER.exception("uplink sender failed; retrying")
                time.sleep(0.5)

    def _offer(self) -> None:
        """Publish the next spooled batches, within the window and the rate limit."""
        if not self._client.is_connected():
            return
        room = self._settings.max_in_flight - len(self._in_flight)
        if room <= 0:
            return
        messages = self._spool.head(room, after_id=self._offered)
        for message in messages[: self._rate.take(len(messages))]:
            info = self._client.publish(message.topic, message.payload, qos=1)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):  # NO_CONN: paho queues it
                LOGGER.warning(
                    "publish of batch %d refused by the client (%s); will retry", message.id, info.rc
                )
                return
            self._in_flight.append((info, message.id))
            self._offered = message.id
            self.stats.batches_published += 1
            self.stats.payload_bytes += len(message.payload)

    def _collect_acks(self) -> None:
        acked = [message_id for info, message_id in self._in_flight if info.is_published()]
        if not acked:
            return
        self._spool.remove(acked)
        done = set(acked)
        self._in_flight = deque(item for item in self._in_flight if item[1] not in done)
        with self._lock:
            samples = sum(self._samples.pop(message_id, 0) for message_id in acked)
        self.stats.batches_acked += len(acked)
        self.stats.samples_acked += samples
        self._update_spool_stats()

    def _update_spool_stats(self) -> None:
        spool = self._spool.stats
        self.stats.spool_dropped = spool.dropped_full + spool.dropped_expired + spool.dropped_tampered
        self.stats.spool_depth = len(self._spool)

    def drain(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (everything acknowledged); stop the sender.

        Returns False if time ran out; what is left stays in the spool for the next run.
        """
        deadline = time.monotonic() + timeout_s
        while len(self._spool) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stopping.set()
        if self._sender.is_alive():
            self._sender.join()
        self._collect_acks()
        self._update_spool_stats()
        if len(self._spool):
            LOGGER.warning("%d batch(es) left in the spool for the next run", len(self._spool))
        return not len(self._spool)

    def publish_status(self, online: bool, since_ns: int) -> paho.MQTTMessageInfo:
        """Publish the agent's online/offline status, retained."""
        status = status_message(self._vin, self._fleet, online, since_ns)
        return self._client.publish(status.topic, status.payload, status.qos, status.retain)


def status_message(vin: str, fleet: str, online: bool, since_ns: int) -> Will:
    """An agent's retained status message: the birth message, the last will, the goodbye."""
    return Will(vehicle_topic(fleet, vin, STATUS), encode_status(AgentStatus(vin, fleet, online, since_ns)))
