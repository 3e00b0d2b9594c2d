"""The ingest service: fleet telemetry, events and diagnostic reports from MQTT, validated, written to
InfluxDB in batches.

A message is acknowledged to the broker (QoS 1, manual acknowledgement) only
once its points are durable: written to InfluxDB, kept in the ingest's own
on-disk buffer while InfluxDB is unreachable, or set aside as a dead letter.
Until then the broker keeps it in the ingest's persistent session and sends
it again after a crash. Several workers share the load through an MQTT
shared subscription (``$share/{group}/...``), each with its own session,
buffer and dead-letter file.

The MQTT network thread validates each message (:func:`decode_telemetry`,
:func:`decode_event`, :func:`decode_diagnostics`) and queues its line protocol; the
writer thread groups queued messages into writes of up to ``batch_lines`` points.
When InfluxDB refuses a combined write as bad data, the messages are retried one
by one so only the offending one is dead-lettered. When it is unreachable, the
batch goes to the buffer, and so does everything after it until the buffer is
drained, oldest first, with backoff between attempts. The queue is bounded: when
it is full, the MQTT thread waits, which slows the broker down rather than
dropping data.

Instead of a shared subscription, workers can split the fleet by VIN
(``partition = "k/N"``): each subscribes to all of it and acknowledges
the messages of other partitions unread. It costs N times the broker's
outgoing traffic, but plain persistent subscriptions survive a broker restart,
which Mosquitto 2.0's shared subscriptions do not (see ``docs/scaling.md``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from cloud.deadletter import DeadLetterStore
from cloud.influx import InfluxClient, InfluxError, InfluxSettings
from cloud.metrics import IngestMetrics
from cloud.schema import diagnostics_lines, event_lines, telemetry_lines
from roadwave import mqtt
from roadwave.configfile import ConfigError, Table
from roadwave.contract import (
    FLEET_PATTERN,
    TELEMETRY,
    TELEMETRY_SUBSCRIPTION,
    PayloadError,
    decode_telemetry,
    shared_subscription,
)
from roadwave.contract.diagnostics import DIAGNOSTICS, DIAGNOSTICS_SUBSCRIPTION, decode_diagnostics
from roadwave.contract.events import EVENTS, EVENTS_SUBSCRIPTION, decode_event
from roadwave.spool import MAX_SIZE_MB, DiskQueue, SpoolFull

LOGGER = logging.getLogger(__name__)

INFLUX_APIS = ("v1", "v2")
#: Backoff between attempts to reach InfluxDB again: first and longest delay.
RETRY_DELAYS_S = (0.5, 30.0)
#: Buffered messages written back to InfluxDB per attempt.
DRAIN_MESSAGES = 500


@dataclass(frozen=True)
class IngestSettings:
    """Batching, durability and observability settings of one ingest worker."""

    batch_lines: int = 5000
    flush_interval_s: float = 1.0
    queue_messages: int = 10_000
    dead_letter_dir: Path = Path("dead-letters")
    create_database: bool = True
    share_group: str | None = "roadwave-ingest"
    #: (index, count): this worker takes the VINs whose partition is ``index`` of ``count``.
    partition: tuple[int, int] | None = None
    buffer_dir: Path = Path("ingest-buffer")
    buffer_max_bytes: int = 1024 * 2**20
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest service needs."""

    mqtt: mqtt.MqttSettings = field(default_factory=mqtt.MqttSettings)
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)

    @property
    def client_id(self) -> str:
        """The MQTT client id, which also names the worker's buffer and dead-letter file."""
        return self.mqtt.client_id or "roadwave-ingest"

    @property
    def subscriptions(self) -> list[str]:
        """The telemetry, events and diagnostics filters, shared with the group's other workers if any."""
        filters = [TELEMETRY_SUBSCRIPTION, EVENTS_SUBSCRIPTION, DIAGNOSTICS_SUBSCRIPTION]
        group = self.ingest.share_group
        if group and self.ingest.partition is None:
            return [shared_subscription(group, topic_filter) for topic_filter in filters]
        return filters

    @classmethod
    def load(cls, path: Path) -> IngestConfig:
        """Read and validate an ingest configuration file.

        Raises:
            ConfigError: naming the file, the key and the problem.
        """
        table = Table.load(path)
        mqtt_settings = mqtt.MqttSettings.read(table.table("mqtt"))
        influx = read_influx_settings(table.table("influx"))
        ingest_table = table.table("ingest")
        base = IngestSettings()
        ingest = IngestSettings(
            batch_lines=ingest_table.integer("batch_lines", base.batch_lines, minimum=1),
            flush_interval_s=ingest_table.number("flush_interval_s", base.flush_interval_s, minimum=0.01),
            queue_messages=ingest_table.integer("queue_messages", base.queue_messages, minimum=1),
            dead_letter_dir=ingest_table.path("dead_letter_dir", str(base.dead_letter_dir)),
            create_database=ingest_table.flag("create_database", base.create_database),
            share_group=ingest_table.text("share_group", base.share_group) or None,
            partition=parse_partition(ingest_table.text("partition", None), path),
            buffer_dir=ingest_table.path("buffer_dir", str(base.buffer_dir)),
            buffer_max_bytes=int(
                ingest_table.number(
                    "buffer_max_mb", base.buffer_max_bytes / 2**20, minimum=1.0, maximum=MAX_SIZE_MB
                )
                * 2**20
            ),
            metrics_host=ingest_table.text("metrics_host", base.metrics_host),
            metrics_port=ingest_table.integer("metrics_port", None, minimum=0, maximum=65535),
        )
        ingest_table.finish()
        table.finish()
        if ingest.share_group is not None and not FLEET_PATTERN.fullmatch(ingest.share_group):
            raise ConfigError(
                f"{path}: [ingest] share_group {ingest.share_group!r}: use 1-64 of A-Z a-z 0-9 _ -"
            )
        return cls(mqtt=mqtt_settings, influx=influx, ingest=ingest)


def read_influx_settings(table: Table) -> InfluxSettings:
    """Read an ``[influx]`` table (shared by the cloud services' configuration files).

    Raises:
        ConfigError: naming the file, the table, the key and the problem.
    """
    defaults = InfluxSettings()
    influx = InfluxSettings(
        url=table.text("url", defaults.url),
        api=table.choice("api", INFLUX_APIS, defaults.api),
        database=table.text("database", defaults.database),
        username=table.text("username", None),
        password=table.text("password", None),
        token=table.text("token", None),
        org=table.text("org", None),
        timeout_s=table.number("timeout_s", defaults.timeout_s, minimum=0.1),
    )
    table.finish()
    if not influx.url.startswith(("http://", "https://")):
        raise table.error("url must start with http:// or https://")
    if influx.api == "v2" and not influx.token:
        raise table.error('api = "v2" needs a token')
    return influx


def parse_partition(text: str | None, where: Path | str) -> tuple[int, int] | None:
    """Parse ``"k/N"`` (0 <= k < N)."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ConfigError(
            f'{where}: partition must look like "0/2" (index/count, index < count), not {text!r}'
        )
    return int(index), int(count)


def partition_of(topic: str, count: int) -> int:
    """The partition of a message: by the VIN in its topic (stable across processes and runs)."""
    parts = topic.split("/")
    vin = parts[3] if len(parts) == 5 else ""
    return zlib.crc32(vin.encode()) % count


@dataclass
class IngestStats:
    """Counters of one ingest run."""

    messages_received: int = 0
    messages_skipped: int = 0
    messages_rejected: int = 0
    messages_written: int = 0
    messages_buffered: int = 0
    messages_acked: int = 0
    points_written: int = 0
    samples_written: int = 0
    writes: int = 0
    write_retries: int = 0
    events_written: int = 0
    diagnostics_written: int = 0


@dataclass(frozen=True)
class _Accepted:
    topic: str
    payload: bytes
    lines: list[str]
    samples: int
    #: TELEMETRY, EVENTS or DIAGNOSTICS.
    kind: str
    mid: int
    qos: int
    oldest_ns: int


def _accept(topic: str, payload: bytes, mid: int = 0, qos: int = 0) -> tuple[str, str, _Accepted]:
    """Fleet, VIN and points of a telemetry, event or diagnostics message.

    Raises:
        PayloadError: the message breaks the contract.
    """
    kind = topic.rsplit("/", 1)[-1]
    if kind == EVENTS:
        fleet, vin, event = decode_event(topic, payload)
        lines = event_lines(fleet, vin, event)
        return fleet, vin, _Accepted(topic, payload, lines, 0, kind, mid, qos, event.detected_ns)
    if kind == DIAGNOSTICS:
        fleet, vin, report = decode_diagnostics(topic, payload)
        lines = diagnostics_lines(fleet, vin, report)
        return fleet, vin, _Accepted(topic, payload, lines, 0, kind, mid, qos, report.t_ns)
    if kind != TELEMETRY:
        raise PayloadError(f"topic {topic!r} is not one of telemetry, events, diagnostics")
    batch = decode_telemetry(topic, payload)
    oldest = min(record.t_ns for record in batch.records) if batch.records else time.time_ns()
    accepted = _Accepted(topic, payload, telemetry_lines(batch), batch.sample_count, kind, mid, qos, oldest)
    return batch.fleet, batch.vin, accepted


class IngestService:
    """Subscribes to the fleet's telemetry, events and diagnostics and makes them durable in InfluxDB."""

    def __init__(self, config: IngestConfig, influx: InfluxClient | None = None) -> None:
        self.config = config
        self.influx = influx or InfluxClient(config.influx)
        self.dead_letters = DeadLetterStore(config.ingest.dead_letter_dir, writer=config.client_id)
        self.stats = IngestStats()
        self.ready = threading.Event()
        self.metrics = IngestMetrics(self)
        self.buffer: DiskQueue | None = None
        #: (fleet, VIN) -> wall-clock time its last valid message arrived, in seconds.
        self.last_seen: dict[tuple[str, str], float] = {}
        self._queue: queue.Queue[_Accepted] = queue.Queue(config.ingest.queue_messages)
        self._client: paho.Client | None = None
        self._influx_ok = True
        self._next_drain = 0.0
        self._delay = RETRY_DELAYS_S[0]

    # --- MQTT side (paho's network thread) ---------------------------------------

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        partition = self.config.ingest.partition
        if partition is not None and partition_of(message.topic, partition[1]) != partition[0]:
            self.stats.messages_skipped += 1
            self._ack([(message.mid, message.qos)])
            return
        self.stats.messages_received += 1
        payload = bytes(message.payload)
        try:
            fleet, vin, accepted = _accept(message.topic, payload, message.mid, message.qos)
        except PayloadError as exc:
            self._reject(message.topic, payload, str(exc))
            self._ack([(message.mid, message.qos)])
            return
        self.last_seen[(fleet, vin)] = time.time()
        self._queue.put(accepted)

    def _reject(self, topic: str, payload: bytes, reason: str) -> None:
        self.stats.messages_rejected += 1
        LOGGER.warning("rejected message on %s: %s", topic, reason)
        self.dead_letters.put(topic, payload, reason)

    def _ack(self, deliveries: Iterable[tuple[int, int]]) -> None:
        """Acknowledge messages now durable (QoS 0 messages need none)."""
        client = self._client
        for mid, qos in deliveries:
            if qos and client is not None:
                client.ack(mid, qos)
                self.stats.messages_acked += 1

    # --- writer side -------------------------------------------------------------

    def _next_batch(self, stop: threading.Event, wait_s: float) -> list[_Accepted]:
        """Collect messages until the batch is full, ``wait_s`` passed, or stop."""
        batch: list[_Accepted] = []
        lines = 0
        deadline = time.monotonic() + wait_s
        while lines < self.config.ingest.batch_lines:
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

    def _write(self, items: Sequence[_Accepted]) -> bool:
        """Write items' points; dead-letter what InfluxDB refuses as data. False if unreachable."""
        started = time.monotonic()
        try:
            self.influx.write_lines(line for item in items for line in item.lines)
        except InfluxError as exc:
            if exc.retryable:
                self._influx_down(exc)
                return False
            if len(items) == 1:
                self._reject(items[0].topic, items[0].payload, f"InfluxDB refused: {exc}")
                return True
            return all([self._write([item]) for item in items])
        self._influx_ok, self._delay = True, RETRY_DELAYS_S[0]
        self.metrics.observe_write(time.monotonic() - started, [item.oldest_ns for item in items])
        self.stats.writes += 1
        self.stats.messages_written += len(items)
        self.stats.points_written += sum(len(item.lines) for item in items)
        self.stats.samples_written += sum(item.samples for item in items)
        self.stats.events_written += sum(item.kind == EVENTS for item in items)
        self.stats.diagnostics_written += sum(item.kind == DIAGNOSTICS for item in items)
        return True

    def _influx_down(self, exc: InfluxError) -> None:
        if self._influx_ok:
            LOGGER.warning("InfluxDB unreachable (%s); buffering on disk", exc)
        self._influx_ok = False
        self.stats.write_retries += 1
        self._next_drain = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, RETRY_DELAYS_S[1])

    def _make_durable(self, items: list[_Accepted]) -> None:
        """Write or buffer a batch, then acknowledge it; wait while neither is possible."""
        buffer = self.buffer
        assert buffer is not None
        while True:
            if not len(buffer) and self._write(items):
                break
            try:
                buffer.put_many([(item.topic, item.payload) for item in items])
                self.stats.messages_buffered += len(items)
                break
            except SpoolFull as exc:
                LOGGER.error("%s; holding messages unacknowledged until InfluxDB returns", exc)
                self._drain_buffer(wait=True)
        self._ack((item.mid, item.qos) for item in items)

    def _drain_buffer(self, wait: bool = False) -> None:
        """Write the oldest buffered messages back to InfluxDB, if an attempt is due."""
        buffer = self.buffer
        assert buffer is not None
        if not len(buffer):
            return
        pause = self._next_drain - time.monotonic()
        if pause > 0:
            if not wait:
                return
            time.sleep(pause)
        messages = buffer.head(DRAIN_MESSAGES)
        items = []
        for message in messages:
            try:
                items.append(_accept(message.topic, message.payload)[2])
            except PayloadError as exc:  # only if the contract changed under a stored message
                self._reject(message.topic, message.payload, f"buffered message no longer valid: {exc}")
        if not items or self._write(items):
            buffer.remove(message.id for message in messages)
            if not len(buffer):
                LOGGER.info("ingest buffer drained into InfluxDB")

    def run(self, stop: threading.Event) -> IngestStats:
        """Ingest until ``stop`` is set, then make what was received durable and return the stats."""
        settings = self.config.ingest
        if settings.create_database and self.config.influx.api == "v1":
            try:
                self.influx.create_database()
            except InfluxError as exc:
                if not exc.retryable:
                    raise
                LOGGER.warning("InfluxDB unreachable at start (%s); buffering until it returns", exc)
        self.buffer = DiskQueue(
            settings.buffer_dir / f"{self.config.client_id}.sqlite",
            max_bytes=settings.buffer_max_bytes,
            when_full="refuse",
        )
        if len(self.buffer):
            LOGGER.info("%d message(s) buffered by an earlier run wait for InfluxDB", len(self.buffer))
        self.metrics.start()
        try:
            self._client = mqtt.connect(
                self.config.mqtt,
                self.config.client_id,
                subscriptions=[(topic_filter, 1) for topic_filter in self.config.subscriptions],
                on_message=self._on_message,
                persistent=True,
                manual_ack=True,
            )
            self.ready.set()
            while not stop.is_set():
                wait = self.config.ingest.flush_interval_s if not len(self.buffer) else 0.1
                items = self._next_batch(stop, wait)
                if items:
                    self._make_durable(items)
                self._drain_buffer()
            while items := self._next_batch(stop, 0.1):  # what arrived before stop
                self._make_durable(items)
        finally:
            stop.set()
            if self._client is not None:
                self._client.disconnect()
                self._client.loop_stop()
            self.metrics.stop()
            self.buffer.close()
            self.influx.close()
        return self.stats

    @property
    def queue_depth(self) -> int:
        """Validated messages waiting for the writer."""
        return self._queue.qsize()

    def readiness(self) -> tuple[bool, str]:
        """Whether this worker takes traffic: subscribed, and InfluxDB or the buffer can take it."""
        if not self.ready.is_set() or self._client is None or not self._client.is_connected():
            return False, "not connected to the MQTT broker"
        if (
            not self._influx_ok
            and self.buffer is not None
            and self.buffer.size_bytes >= self.buffer.max_bytes
        ):
            return False, "InfluxDB unreachable and the buffer is full"
        return True, "ok" if self._influx_ok else "ok (InfluxDB unreachable; buffering)"
