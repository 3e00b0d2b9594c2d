"""The ingest service: fleet telemetry from MQTT, validated, written to InfluxDB in batches.

The MQTT network thread validates each message (:func:`decode_telemetry`) and
queues its line protocol; a writer thread groups queued messages into writes
of up to ``batch_lines`` points. Invalid messages go to the dead-letter store
with the reason. When InfluxDB refuses a combined write as bad data, the
messages are retried one by one so only the offending one is dead-lettered;
outages are retried with backoff. The queue is bounded: when it is full, the
MQTT thread waits, which slows the broker down rather than dropping data.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from cloud.deadletter import DeadLetterStore
from cloud.influx import InfluxClient, InfluxError, InfluxSettings
from cloud.schema import telemetry_lines
from roadwave import mqtt
from roadwave.configfile import ConfigError, Table
from roadwave.contract import TELEMETRY_SUBSCRIPTION, PayloadError, decode_telemetry

LOGGER = logging.getLogger(__name__)

INFLUX_APIS = ("v1", "v2")
#: How long an InfluxDB outage is retried once the service is asked to stop.
SHUTDOWN_RETRY_S = 10.0


@dataclass(frozen=True)
class IngestSettings:
    """Batching and dead-letter settings of the ingest."""

    batch_lines: int = 5000
    flush_interval_s: float = 1.0
    queue_messages: int = 10_000
    dead_letter_dir: Path = Path("dead-letters")
    create_database: bool = True


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest service needs."""

    mqtt: mqtt.MqttSettings = field(default_factory=mqtt.MqttSettings)
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)

    @property
    def client_id(self) -> str:
        """The MQTT client id: configured, or a fixed default."""
        return self.mqtt.client_id or "roadwave-ingest"

    @classmethod
    def load(cls, path: Path) -> IngestConfig:
        """Read and validate an ingest configuration file.

        Raises:
            ConfigError: naming the file, the key and the problem.
        """
        table = Table.load(path)
        mqtt_settings = mqtt.MqttSettings.read(table.table("mqtt"))
        influx_table = table.table("influx")
        defaults = InfluxSettings()
        influx = InfluxSettings(
            url=influx_table.text("url", defaults.url),
            api=influx_table.choice("api", INFLUX_APIS, defaults.api),
            database=influx_table.text("database", defaults.database),
            username=influx_table.text("username", None),
            password=influx_table.text("password", None),
            token=influx_table.text("token", None),
            org=influx_table.text("org", None),
            timeout_s=influx_table.number("timeout_s", defaults.timeout_s, minimum=0.1),
        )
        influx_table.finish()
        if not influx.url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: [influx] url must start with http:// or https://")
        if influx.api == "v2" and not influx.token:
            raise ConfigError(f'{path}: [influx] api = "v2" needs a token')
        ingest_table = table.table("ingest")
        base = IngestSettings()
        ingest = IngestSettings(
            batch_lines=ingest_table.integer("batch_lines", base.batch_lines, minimum=1),
            flush_interval_s=ingest_table.number("flush_interval_s", base.flush_interval_s, minimum=0.01),
            queue_messages=ingest_table.integer("queue_messages", base.queue_messages, minimum=1),
            dead_letter_dir=ingest_table.path("dead_letter_dir", "dead-letters"),
            create_database=ingest_table.flag("create_database", base.create_database),
        )
        ingest_table.finish()
        table.finish()
        return cls(mqtt=mqtt_settings, influx=influx, ingest=ingest)


@dataclass
class IngestStats:
    """Counters of one ingest run."""

    messages_received: int = 0
    messages_rejected: int = 0
    messages_written: int = 0
    points_written: int = 0
    samples_written: int = 0
    messages_unwritten: int = 0
    writes: int = 0
    write_retries: int = 0


@dataclass(frozen=True)
class _Accepted:
    topic: str
    payload: bytes
    lines: list[str]
    samples: int


class IngestService:
    """Subscribes to the fleet's telemetry and writes it to InfluxDB until stopped."""

    def __init__(self, config: IngestConfig, influx: InfluxClient | None = None) -> None:
        self.config = config
        self.influx = influx or InfluxClient(config.influx)
        self.dead_letters = DeadLetterStore(config.ingest.dead_letter_dir)
        self.stats = IngestStats()
        self.ready = threading.Event()
        self._queue: queue.Queue[_Accepted] = queue.Queue(config.ingest.queue_messages)

    # --- MQTT side (paho's network thread) ---------------------------------------

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.messages_received += 1
        payload = bytes(message.payload)
        try:
            batch = decode_telemetry(message.topic, payload)
        except PayloadError as exc:
            self._reject(message.topic, payload, str(exc))
            return
        accepted = _Accepted(message.topic, payload, telemetry_lines(batch), batch.sample_count)
        self._queue.put(accepted)

    def _reject(self, topic: str, payload: bytes, reason: str) -> None:
        self.stats.messages_rejected += 1
        LOGGER.warning("rejected message on %s: %s", topic, reason)
        self.dead_letters.put(topic, payload, reason)

    # --- writer side -------------------------------------------------------------

    def _next_batch(self, stop: threading.Event) -> list[_Accepted]:
        """Collect messages until the batch is full, the interval passed, or stop."""
        settings = self.config.ingest
        batch: list[_Accepted] = []
        lines = 0
        deadline = time.monotonic() + settings.flush_interval_s
        while lines < settings.batch_lines:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                item = self._queue.get(timeout=min(timeout, 0.1))
            except queue.Empty:
                if stop.is_set():
                    break
                continue
            batch.append(item)
            lines += len(item.lines)
        return batch

    def _write(self, items: list[_Accepted], give_up: threading.Event) -> None:
        """Write items, retrying outages; isolate and dead-letter refused data.

        Once ``give_up`` is set, an outage is retried for ``SHUTDOWN_RETRY_S`` more.
        """
        delay = 0.5
        deadline: float | None = None
        while True:
            try:
                self.influx.write_lines(line for item in items for line in item.lines)
                break
            except InfluxError as exc:
                if not exc.retryable:
                    if len(items) == 1:
                        self._reject(items[0].topic, items[0].payload, f"InfluxDB refused: {exc}")
                    else:
                        for item in items:
                            self._write([item], give_up)
                    return
                if give_up.is_set():
                    deadline = deadline or time.monotonic() + SHUTDOWN_RETRY_S
                    if time.monotonic() > deadline:
                        self.stats.messages_unwritten += len(items)
                        LOGGER.error(
                            "InfluxDB unavailable at shutdown: %d message(s) not written", len(items)
                        )
                        return
                self.stats.write_retries += 1
                LOGGER.warning("InfluxDB write failed (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.stats.writes += 1
        self.stats.messages_written += len(items)
        self.stats.points_written += sum(len(item.lines) for item in items)
        self.stats.samples_written += sum(item.samples for item in items)

    def run(self, stop: threading.Event) -> IngestStats:
        """Ingest until ``stop`` is set, then write what was received and return the stats."""
        if self.config.ingest.create_database and self.config.influx.api == "v1":
            self.influx.create_database()
        client = mqtt.connect(
            self.config.mqtt,
            self.config.client_id,
            subscriptions=[(TELEMETRY_SUBSCRIPTION, 1)],
            on_message=self._on_message,
        )
        self.ready.set()
        try:
            while not stop.is_set():
                items = self._next_batch(stop)
                if items:
                    self._write(items, stop)
        finally:
            client.loop_stop()
            client.disconnect()
            stop.set()
            while items := self._next_batch(stop):
                self._write(items, stop)
            self.influx.close()
        return self.stats
