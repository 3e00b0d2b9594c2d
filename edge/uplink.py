"""Publishing telemetry batches to the broker (MQTT QoS 1) and counting acknowledgements."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import paho.mqtt.client as paho

from roadwave.contract import (
    HEALTH,
    AgentHealth,
    Record,
    TelemetryBatch,
    encode_health,
    encode_telemetry,
    telemetry_topic,
    vehicle_topic,
)

LOGGER = logging.getLogger(__name__)


@dataclass
class UplinkStats:
    """Batches and samples handed to MQTT, and how many the broker acknowledged."""

    batches_sent: int = 0
    batches_acked: int = 0
    samples_sent: int = 0
    samples_acked: int = 0
    payload_bytes: int = 0


class TelemetryUplink:
    """Encodes record lists as numbered telemetry batches and publishes them."""

    def __init__(self, client: paho.Client, vin: str, fleet: str) -> None:
        self._client = client
        self._vin, self._fleet = vin, fleet
        self._topic = telemetry_topic(fleet, vin)
        self._seq = 0
        self._pending: deque[tuple[paho.MQTTMessageInfo, int]] = deque()
        self.stats = UplinkStats()

    def send(self, records: list[Record]) -> None:
        """Publish one batch with QoS 1 (paho queues it while the link is down)."""
        batch = TelemetryBatch(self._vin, self._fleet, self._seq, records)
        payload = encode_telemetry(batch)
        info = self._client.publish(self._topic, payload, qos=1)
        self._seq += 1
        samples = batch.sample_count
        self._pending.append((info, samples))
        self.stats.batches_sent += 1
        self.stats.samples_sent += samples
        self.stats.payload_bytes += len(payload)
        self._collect_acks()

    def publish_health(self, health: AgentHealth) -> paho.MQTTMessageInfo:
        """Publish the agent's health report, retained, so a late subscriber sees the latest."""
        topic = vehicle_topic(self._fleet, self._vin, HEALTH)
        return self._client.publish(topic, encode_health(health), qos=1, retain=True)

    def _collect_acks(self) -> None:
        while self._pending and self._pending[0][0].is_published():
            _, samples = self._pending.popleft()
            self.stats.batches_acked += 1
            self.stats.samples_acked += samples

    def drain(self, timeout_s: float) -> bool:
        """Wait until the broker acknowledged every batch; False if time ran out."""
        deadline = time.monotonic() + timeout_s
        while self._pending:
            info, _ = self._pending[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(min(remaining, 1.0))
            except RuntimeError as exc:  # paho: the message was dropped (e.g. queue full)
                LOGGER.error("batch not delivered: %s", exc)
                break
            self._collect_acks()
        self._collect_acks()
        if self._pending:
            LOGGER.warning("%d batch(es) not acknowledged by the broker", len(self._pending))
        return not self._pending
