"""The alerting service: maintenance rules over the fleet's telemetry and DTCs, alerts delivered to partners.

It subscribes to every vehicle's telemetry and diagnostic reports and every partner's
acknowledgements (QoS 1, persistent session, manual acknowledgement), feeds validated
batches and the trouble codes of reports to the maintenance rules
(:class:`~cloud.maintenance.MaintenanceMonitor`) and the alert lifecycle
(:class:`~cloud.maintenance.AlertBook`), and for every transition:

1. stores it in InfluxDB (``cloud.maintenance.store``), retrying while InfluxDB is unreachable;
2. publishes the alert's new state, retained, to every partner that serves the vehicle
   according to the fleet registry (``roadwave.contract.alerts`` topics);
3. only then acknowledges the MQTT message that caused it, so that a crash in between
   means the broker delivers it again.

An acknowledgement counts only from a partner that serves the alert's vehicle (the topic
names the partner; the broker's ACL makes sure it is that partner). A cleared alert's
state stays retained for ``cleared_retain_s``, then an empty retained message removes it.
At start the service restores the open alerts from InfluxDB and publishes the state of
those and of the recently cleared ones again, so that the retained messages agree with
the store after any crash. Malformed telemetry, reports and acknowledgements are counted
and logged, never fatal. See docs/alerts.md.

A diagnostic report whose trouble-code reads were not all answered (``dtcs_complete``
false) may miss codes: its codes are raised or updated, but a code it does not list is
not taken as gone, so no DTC alert starts to clear on it.

Time: rules and alerts run on frame time (a report's time for DTCs); what happens without
input (clearing a quiet vehicle's alert, a coalesced update, removing a cleared state)
runs every ``tick_interval_s`` on the service's clock, which must roughly agree with the
vehicles'.
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

from cloud.influx import InfluxClient, InfluxError, InfluxSettings
from cloud.ingest import RETRY_DELAYS_S, read_influx_settings
from cloud.maintenance import (
    AlertBook,
    AlertError,
    DtcStatus,
    MaintenanceConfig,
    MaintenanceInputError,
    MaintenanceMonitor,
    Notification,
    parse_maintenance_config,
)
from cloud.maintenance.rules import SECOND_NS, Observation
from cloud.maintenance.store import alert_lines, read_active, read_cleared
from roadwave import mqtt
from roadwave.configfile import Table
from roadwave.contract import TELEMETRY_SUBSCRIPTION, PayloadError, decode_telemetry
from roadwave.contract.alerts import (
    ACK_SUBSCRIPTION,
    CLEARED,
    PARTNER_ROOT,
    Alert,
    alert_topic,
    decode_ack,
    encode_alert,
    parse_alert_id,
)
from roadwave.contract.diagnostics import DIAGNOSTICS, DIAGNOSTICS_SUBSCRIPTION, decode_diagnostics
from roadwave.registry import FleetRegistry

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertingSettings:
    """Who receives which vehicle's alerts, and the service's housekeeping."""

    registry: FleetRegistry
    #: How often time passes for quiet vehicles (clears, coalesced updates, removals).
    tick_interval_s: float = 60.0
    #: How long a cleared alert's state stays retained for partners that were away.
    cleared_retain_s: float = 7 * 86_400.0
    queue_messages: int = 10_000
    create_database: bool = True

    @classmethod
    def read(cls, table: Table) -> AlertingSettings:
        """Read an ``[alerting]`` table; ``registry`` (a path) is required and loaded now."""
        settings = cls(
            registry=FleetRegistry.load(table.path("registry")),
            tick_interval_s=table.number("tick_interval_s", cls.tick_interval_s, minimum=0.01),
            cleared_retain_s=table.number("cleared_retain_s", cls.cleared_retain_s, minimum=0.0),
            queue_messages=table.integer("queue_messages", cls.queue_messages, minimum=1),
            create_database=table.flag("create_database", cls.create_database),
        )
        table.finish()
        return settings


@dataclass(frozen=True)
class AlertingConfig:
    """Everything the alerting service needs."""

    alerting: AlertingSettings
    mqtt: mqtt.MqttSettings = field(default_factory=mqtt.MqttSettings)
    influx: InfluxSettings = field(default_factory=InfluxSettings)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)

    @property
    def client_id(self) -> str:
        """The MQTT client id, which names the persistent session."""
        return self.mqtt.client_id or "roadwave-alerts"

    @classmethod
    def load(cls, path: Path) -> AlertingConfig:
        """Read and validate a file of ``[mqtt]``, ``[influx]``, ``[alerting]`` and ``[maintenance]``.

        Raises:
            ConfigError: naming the file, the table, the key and the problem.
        """
        table = Table.load(path)
        config = cls(
            mqtt=mqtt.MqttSettings.read(table.table("mqtt")),
            influx=read_influx_settings(table.table("influx")),
            alerting=AlertingSettings.read(table.table("alerting", required=True)),
            maintenance=parse_maintenance_config(table.table("maintenance")),
        )
        table.finish()
        return config


def partners_serving(registry: FleetRegistry, fleet: str, vin: str) -> list[str]:
    """The partners that receive a vehicle's alerts: those serving its fleet, or it by VIN."""
    return [
        partner.id
        for partner in registry.partners
        if fleet in partner.fleets or vin in partner.vins and registry.fleet_of(vin) == fleet
    ]


@dataclass
class AlertingStats:
    """Counters of one alerting run."""

    telemetry_received: int = 0
    telemetry_rejected: int = 0
    diagnostics_received: int = 0
    diagnostics_rejected: int = 0
    #: Reports that may miss codes (``dtcs_complete`` false): no code was taken as gone.
    diagnostics_incomplete: int = 0
    acks_received: int = 0
    #: Malformed, or retained (a replay, not an acknowledgement).
    acks_rejected: int = 0
    #: From a partner that does not serve the alert's vehicle.
    acks_refused: int = 0
    #: For an alert that is not open (unknown, or cleared meanwhile).
    acks_unknown: int = 0
    acks_applied: int = 0
    alerts_restored: int = 0
    transitions_stored: int = 0
    store_retries: int = 0
    #: Transitions InfluxDB refused as data: delivered, not stored.
    store_failures: int = 0
    alerts_published: int = 0
    #: Transitions of vehicles no partner serves.
    alerts_unrouted: int = 0
    cleared_removed: int = 0


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool


class AlertingService:
    """Runs the maintenance rules over the fleet's telemetry and DTCs and delivers alerts until stopped."""

    def __init__(self, config: AlertingConfig, influx: InfluxClient | None = None) -> None:
        self.config = config
        self.influx = influx or InfluxClient(config.influx)
        self.monitor = MaintenanceMonitor(config.maintenance)
        self.book = AlertBook(config.maintenance.notify_interval_s)
        self.stats = AlertingStats()
        self.ready = threading.Event()
        self._queue: queue.Queue[_Message] = queue.Queue(config.alerting.queue_messages)
        self._client: paho.Client | None = None
        self._stop = threading.Event()
        #: Retained topics of cleared alerts, and when (ns) to remove them.
        self._removals: dict[str, int] = {}

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        received = _Message(message.topic, bytes(message.payload), message.mid, message.qos, message.retain)
        while not self._stop.is_set():  # a full queue slows the broker down; stopping drops it unacknowledged
            try:
                self._queue.put(received, timeout=0.1)
                return
            except queue.Full:
                continue

    def run(self, stop: threading.Event) -> AlertingStats:
        """Restore, connect, then serve until ``stop`` is set; return the counters.

        Raises:
            InfluxError: InfluxDB is unreachable at start (the open alerts cannot be restored).
            AlertFormatError: a stored alert document is invalid.
            MqttConnectError: the broker did not accept the connection.
        """
        self._stop = stop
        settings = self.config.alerting
        try:
            if settings.create_database and self.config.influx.api == "v1":
                self.influx.create_database()
            active = read_active(self.influx)
            since = time.time_ns() - round(settings.cleared_retain_s * SECOND_NS)
            cleared = read_cleared(self.influx, since)
            self.book = AlertBook(self.config.maintenance.notify_interval_s, alerts=active)
            self.stats.alerts_restored = len(active)
            self._client = mqtt.connect(
                self.config.mqtt,
                self.config.client_id,
                subscriptions=[
                    (TELEMETRY_SUBSCRIPTION, 1),
                    (DIAGNOSTICS_SUBSCRIPTION, 1),
                    (ACK_SUBSCRIPTION, 1),
                ],
                on_message=self._on_message,
                persistent=True,
                manual_ack=True,
            )
            for alert in [*active, *cleared]:
                self._publish(alert)
            self.ready.set()
            self._serve()
        finally:
            stop.set()
            if self._client is not None:
                self._client.disconnect()
                self._client.loop_stop()
            self.influx.close()
        return self.stats

    def _serve(self) -> None:
        interval = self.config.alerting.tick_interval_s
        next_tick = time.monotonic() + interval
        while not self._stop.is_set():
            try:
                message = self._queue.get(timeout=min(max(next_tick - time.monotonic(), 0.0), 0.2))
            except queue.Empty:
                pass
            else:
                if self._deliver(self._handle(message)) and message.qos and self._client is not None:
                    self._client.ack(message.mid, message.qos)
            if time.monotonic() >= next_tick:
                self._tick(time.time_ns())
                next_tick = time.monotonic() + interval

    def _tick(self, now_ns: int) -> None:
        """Let time pass to ``now_ns``: due clears and coalesced updates, then due removals."""
        self._deliver(self.book.tick(now_ns))
        assert self._client is not None
        for topic, due_ns in list(self._removals.items()):
            if due_ns <= now_ns:
                self._client.publish(topic, b"", qos=1, retain=True)
                del self._removals[topic]
                self.stats.cleared_removed += 1

    # --- inputs ------------------------------------------------------------------------

    def _handle(self, message: _Message) -> list[Notification]:
        if message.topic.startswith(f"{PARTNER_ROOT}/"):
            return self._acknowledge(message)
        return self._observe(message)

    def _observe(self, message: _Message) -> list[Notification]:
        """A vehicle's telemetry batch or diagnostic report through the rules, then time to its latest."""
        diagnostics = message.topic.endswith(f"/{DIAGNOSTICS}")
        if diagnostics:
            self.stats.diagnostics_received += 1
        else:
            self.stats.telemetry_received += 1
        read = self._read_report if diagnostics else self._read_batch
        try:
            fleet, vin, observations, latest_ns = read(message)
            notes = self.book.observe(fleet, observations)
            if latest_ns is not None:
                notes += self.book.tick(latest_ns, vin=vin)
        except (PayloadError, MaintenanceInputError, AlertError) as exc:
            if diagnostics:
                self.stats.diagnostics_rejected += 1
            else:
                self.stats.telemetry_rejected += 1
            what = "diagnostic report" if diagnostics else "telemetry"
            LOGGER.warning("rejected %s on %s: %s", what, message.topic, exc)
            return []
        return notes

    def _read_batch(self, message: _Message) -> tuple[str, str, list[Observation], int | None]:
        """Fleet, VIN, the rules' observations and the latest frame time of a telemetry batch."""
        batch = decode_telemetry(message.topic, message.payload)
        latest_ns = max((record.t_ns for record in batch.records), default=None)
        return batch.fleet, batch.vin, self.monitor.feed_batch(batch), latest_ns

    def _read_report(self, message: _Message) -> tuple[str, str, list[Observation], int | None]:
        """Fleet, VIN, the DTC rule's observations and the time of a diagnostic report."""
        fleet, vin, report = decode_diagnostics(message.topic, message.payload)
        dtcs = [DtcStatus(dtc.code, dtc.pending, dtc.confirmed, dtc.ecu) for dtc in report.dtcs]
        observations = self.monitor.feed_dtcs(
            vin, report.t_ns, dtcs, complete=report.dtcs_complete, mil_on=report.mil_on
        )
        if not report.dtcs_complete:
            self.stats.diagnostics_incomplete += 1
        return fleet, vin, observations, report.t_ns

    def _acknowledge(self, message: _Message) -> list[Notification]:
        self.stats.acks_received += 1
        try:
            if message.retain:
                raise PayloadError("a retained acknowledgement is replayed to every subscriber; not taken")
            ack = decode_ack(message.topic, message.payload)
        except PayloadError as exc:
            self.stats.acks_rejected += 1
            LOGGER.warning("rejected acknowledgement on %s: %s", message.topic, exc)
            return []
        vin = parse_alert_id(ack.alert_id)[1]
        alert = next((alert for alert in self.book.open_alerts(vin) if alert.id == ack.alert_id), None)
        if alert is None:
            self.stats.acks_unknown += 1
            LOGGER.info("%s acknowledged %s, which is not open", ack.partner, ack.alert_id)
            return []
        if ack.partner not in partners_serving(self.config.alerting.registry, alert.fleet, alert.vin):
            self.stats.acks_refused += 1
            LOGGER.warning(
                "refused acknowledgement of %s by %s: it does not serve %s", alert.id, ack.partner, vin
            )
            return []
        self.stats.acks_applied += 1
        return self.book.acknowledge(ack.alert_id, ack.actor, time.time_ns())

    # --- outputs -----------------------------------------------------------------------

    def _deliver(self, notes: list[Notification]) -> bool:
        """Store the transitions, then publish them; False if stopped while InfluxDB was unreachable."""
        if not notes:
            return True
        if not self._store(notes):
            return False
        for note in notes:
            self._publish(note.alert)
        return True

    def _store(self, notes: list[Notification]) -> bool:
        delay = RETRY_DELAYS_S[0]
        while True:
            try:
                self.influx.write_lines(alert_lines(notes))
            except InfluxError as exc:
                if not exc.retryable:
                    self.stats.store_failures += len(notes)
                    LOGGER.error(
                        "InfluxDB refused %d alert transition(s), delivered unstored: %s", len(notes), exc
                    )
                    return True
                self.stats.store_retries += 1
                LOGGER.warning("InfluxDB unreachable (%s); retrying in %.1f s", exc, delay)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, RETRY_DELAYS_S[1])
            else:
                self.stats.transitions_stored += len(notes)
                return True

    def _publish(self, alert: Alert) -> None:
        """Publish an alert's state, retained, to every partner serving its vehicle."""
        assert self._client is not None
        partners = partners_serving(self.config.alerting.registry, alert.fleet, alert.vin)
        if not partners:
            self.stats.alerts_unrouted += 1
        payload = encode_alert(alert)
        for partner in partners:
            topic = alert_topic(partner, alert)
            self._client.publish(topic, payload, qos=1, retain=True)
            self.stats.alerts_published += 1
            if alert.state == CLEARED and alert.cleared_at_ns is not None:
                retain_ns = round(self.config.alerting.cleared_retain_s * SECOND_NS)
                self._removals[topic] = alert.cleared_at_ns + retain_ns
            else:
                self._removals.pop(topic, None)
