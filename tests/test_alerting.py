"""The alerting service against a real Mosquitto and InfluxDB, the alert contract, ``roadwave partner``."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from waiting import wait_for

from cloud.alerting import AlertingConfig, AlertingService, AlertingSettings, AlertingStats, partners_serving
from cloud.influx import InfluxClient, InfluxSettings
from cloud.maintenance.rules import (
    COOLANT,
    ENGINE_SPEED,
    VOLTAGE,
    CoolantSettings,
    DtcSettings,
    DtcStatus,
    MaintenanceConfig,
    MaintenanceInputError,
    MaintenanceMonitor,
)
from cloud.maintenance.store import read_active, read_history
from roadwave import mqtt
from roadwave.cli import partner as partner_cli
from roadwave.configfile import ConfigError
from roadwave.contract import (
    PayloadError,
    Record,
    TelemetryBatch,
    TopicError,
    encode_telemetry,
    telemetry_topic,
)
from roadwave.contract.alerts import (
    ACKNOWLEDGED,
    ACTIVE,
    CLEARED,
    Acknowledgement,
    Alert,
    AlertFormatError,
    ack_topic,
    alert_topic,
    decode_ack,
    decode_alert,
    encode_ack,
    encode_alert,
    parse_alert_id,
    partner_alerts_filter,
)
from roadwave.contract.diagnostics import (
    DiagnosticsReport,
    ReportedDtc,
    diagnostics_topic,
    encode_diagnostics,
)
from roadwave.registry import FleetRegistry, Partner, Vehicle

VIN_A = "RWDEM000000000001"
VIN_B = "RWDEM000000000002"
SECOND = 10**9
HOLD_S = 60.0  # coolant and DTC clear hold of the tests' configuration

# --- the contract, without servers --------------------------------------------------------------

T = 1_763_700_000_000_000_000
ALERT = Alert("demo", VIN_A, "coolant_overtemp", 2, ACTIVE, T, T, 1, {"ect_c": 110.0}, "Stop the engine.")


def test_an_alert_travels_as_its_document_on_the_topic_of_its_vehicle_and_type() -> None:
    topic = alert_topic("acme-garage", ALERT)
    assert topic == f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp"
    address, alert = decode_alert(topic, encode_alert(ALERT))
    assert alert == ALERT and (address.partner, address.fleet, address.vin, address.type) == (
        "acme-garage",
        "demo",
        VIN_A,
        "coolant_overtemp",
    )
    assert json.loads(encode_alert(ALERT))["v"] == 1
    assert partner_alerts_filter("acme-garage") == "roadwave/v1/partners/acme-garage/alerts/#"
    assert (
        partner_alerts_filter("acme-garage", "demo", VIN_A)
        == f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/#"
    )
    assert parse_alert_id(ALERT.id) == ("coolant_overtemp", VIN_A, T)
    assert parse_alert_id(f"dtc_P0301-{VIN_A}-{T}") == ("dtc_P0301", VIN_A, T)


@pytest.mark.parametrize(
    ("topic", "payload", "message"),
    [
        (f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_B}/coolant_overtemp", None, "another vehicle"),
        (f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/battery", None, "another vehicle or type"),
        (f"roadwave/v1/partners/Acme/alerts/demo/{VIN_A}/battery", None, "invalid partner identity"),
        (f"roadwave/v1/partners/acme-garage/alert/demo/{VIN_A}/battery", None, "is not roadwave/v1/partners"),
        (f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp", b"{", "not UTF-8 JSON"),
        (
            f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp",
            encode_alert(ALERT).replace(b'"v":1', b'"v":2'),
            "alert schema version 2 is not 1",
        ),
        (
            f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp",
            encode_alert(ALERT).replace(b"110.0", b"NaN"),
            "NaN is not allowed",
        ),
        (
            f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp",
            b" " * 20_000,
            "exceeds 16384",
        ),
        (
            f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp",
            encode_alert(ALERT).replace(b"110.0", b"9" * 400),
            "ect_c must be a finite number",
        ),
        (
            f"roadwave/v1/partners/acme-garage/alerts/demo/{VIN_A}/coolant_overtemp",
            encode_alert(ALERT).replace(b"110.0", b"9" * 5000),
            "not UTF-8 JSON",
        ),
    ],
)
def test_alert_messages_that_break_the_contract_are_refused(
    topic: str, payload: bytes | None, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_alert(topic, encode_alert(ALERT) if payload is None else payload)


def test_an_acknowledgement_names_the_alert_and_who_and_the_topic_names_the_partner() -> None:
    ack = Acknowledgement("acme-garage", ALERT.id, "alice@garage.example")
    assert decode_ack(ack_topic("acme-garage"), encode_ack(ack)) == ack
    assert json.loads(encode_ack(ack)) == {"v": 1, "id": ALERT.id, "by": "alice@garage.example"}
    assert ack.actor == "acme-garage:alice@garage.example"
    # The longest partner id and the longest name still make a valid alert.
    longest = Acknowledgement("a" * 64, ALERT.id, "b" * 63)
    assert (
        replace(ALERT, state=ACKNOWLEDGED, acknowledged_by=longest.actor, acknowledged_at_ns=T).state
        == ACKNOWLEDGED
    )


@pytest.mark.parametrize(
    ("topic", "document", "message"),
    [
        ("roadwave/v1/partners/acme-garage/ack", {"v": 2, "id": ALERT.id, "by": "a"}, "schema version 2"),
        (
            "roadwave/v1/partners/acme-garage/ack",
            {"v": 1, "id": "nope", "by": "a"},
            "not TYPE-VIN-FIRST_SEEN_NS",
        ),
        ("roadwave/v1/partners/acme-garage/ack", {"v": 1, "id": ALERT.id}, "missing 'by'"),
        ("roadwave/v1/partners/acme-garage/ack", {"v": 1, "id": ALERT.id, "by": "b" * 64}, "1-63 printable"),
        ("roadwave/v1/partners/acme-garage/ack", {"v": 1, "id": ALERT.id, "by": "a\nb"}, "printable"),
        ("roadwave/v1/partners/acme-garage/acks", {"v": 1, "id": ALERT.id, "by": "a"}, "is not roadwave"),
        ("roadwave/v1/partners/acme-garage/ack", [1], "must be a JSON object"),
    ],
)
def test_acknowledgements_that_break_the_contract_are_refused(
    topic: str, document: Any, message: str
) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_ack(topic, json.dumps(document).encode())


def test_topics_refuse_what_would_escape_the_partner_subtree() -> None:
    for partner in ("acme/garage", "+", "#", ""):
        with pytest.raises(TopicError):
            ack_topic(partner)
    with pytest.raises(TopicError, match="needs its fleet"):
        partner_alerts_filter("acme-garage", vin=VIN_A)
    with pytest.raises(AlertFormatError, match="invalid VIN"):
        parse_alert_id(f"battery-RWDEM00000000000I-{T}")


@pytest.mark.parametrize(
    ("flags", "message"), [({"complete": 1}, "complete must be a boolean"), ({"mil_on": 0}, "mil_on")]
)
def test_the_flags_of_a_dtc_report_must_be_booleans(flags: dict[str, Any], message: str) -> None:
    dtcs = [DtcStatus("P0301", pending=False, confirmed=True, ecu="7E8")]
    with pytest.raises(MaintenanceInputError, match=message):
        MaintenanceMonitor().feed_dtcs(VIN_A, T, dtcs, **flags)


def test_a_partner_serves_the_vehicles_of_its_fleets_and_its_single_vins() -> None:
    registry = FleetRegistry(
        vehicles=(Vehicle(VIN_A, "north"), Vehicle(VIN_B, "south")),
        partners=(Partner("garage", fleets=("north",)), Partner("insurer", vins=(VIN_B,))),
    )
    assert partners_serving(registry, "north", VIN_A) == ["garage"]
    assert partners_serving(registry, "south", VIN_B) == ["insurer"]
    assert partners_serving(registry, "north", VIN_B) == ["garage"]  # VIN_B's alerts are filed under south
    assert partners_serving(registry, "east", VIN_A) == []


REGISTRY_TOML = f"""
[[vehicle]]
vin = "{VIN_A}"
fleet = "demo"
[[partner]]
id = "garage"
fleets = ["demo"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "alerting is required"),
        ("[alerting]\n", r"\[alerting\]: registry is required"),
        ('[alerting]\nregistry = "missing.toml"\n', "missing.toml: configuration file not found"),
        ('[alerting]\nregistry = "fleet.toml"\ntick_s = 1\n', r"unknown key\(s\) tick_s"),
        ('[alerting]\nregistry = "fleet.toml"\ncleared_retain_s = -1\n', "cleared_retain_s must be >= 0"),
        ('[alerting]\nregistry = "fleet.toml"\n[influx]\nurl = "localhost"\n', "url must start with http"),
        (
            '[alerting]\nregistry = "fleet.toml"\n[maintenance.coolant_overtemp]\nclear_c = 110\n',
            r"\[coolant_overtemp\]: .*clear_c",
        ),
    ],
)
def test_invalid_alerting_configurations_name_the_table_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "fleet.toml").write_text(REGISTRY_TOML)
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        AlertingConfig.load(path)


def test_an_alerting_configuration_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "fleet.toml").write_text(REGISTRY_TOML)
    path = tmp_path / "alerts.toml"
    path.write_text('[alerting]\nregistry = "fleet.toml"\n[maintenance]\nnotify_interval_s = 60\n')
    config = AlertingConfig.load(path)
    assert [p.id for p in config.alerting.registry.partners] == ["garage"]
    assert (config.alerting.tick_interval_s, config.alerting.cleared_retain_s) == (60.0, 7 * 86_400.0)
    assert (config.maintenance.notify_interval_s, config.client_id) == (60.0, "roadwave-alerts")


# --- through the real broker and database -------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A test's own fleet and partners (the broker and its retained messages outlive tests)."""

    fleet: str
    garage: str  # serves the whole fleet
    insurer: str  # serves VIN_B only
    registry: FleetRegistry
    #: Frame time of the scenarios' start: four hours ago, so everything happens in the past.
    t0: int

    def at(self, seconds: float) -> int:
        return self.t0 + round(seconds * SECOND)


@pytest.fixture
def scene() -> Scene:
    tag = uuid.uuid4().hex[:8]
    fleet = f"fleet-{tag}"
    garage, insurer = f"garage-{tag}", f"insurer-{tag}"
    registry = FleetRegistry(
        vehicles=(Vehicle(VIN_A, fleet), Vehicle(VIN_B, fleet)),
        partners=(Partner(garage, fleets=(fleet,)), Partner(insurer, vins=(VIN_B,))),
    )
    return Scene(fleet, garage, insurer, registry, (time.time_ns() // SECOND - 4 * 3600) * SECOND)


@pytest.fixture
def make_config(mosquitto, influxdb, influx_database, scene: Scene) -> Callable[..., AlertingConfig]:
    def make(**settings: Any) -> AlertingConfig:
        settings.setdefault("tick_interval_s", 3600.0)  # no wall-clock ticks unless a test wants them
        return AlertingConfig(
            alerting=AlertingSettings(registry=scene.registry, **settings),
            mqtt=mqtt.MqttSettings(
                host=mosquitto.host, port=mosquitto.port, client_id=f"alerts-{influx_database}"
            ),
            influx=InfluxSettings(url=influxdb.url, database=influx_database, timeout_s=5.0),
            maintenance=MaintenanceConfig(
                coolant_overtemp=CoolantSettings(clear_hold_s=HOLD_S), dtc=DtcSettings(clear_hold_s=HOLD_S)
            ),
        )

    return make


@contextmanager
def running(config: AlertingConfig) -> Iterator[AlertingService]:
    service = AlertingService(config)
    stop = threading.Event()
    result: list[AlertingStats] = []
    worker = threading.Thread(target=lambda: result.append(service.run(stop)))
    worker.start()
    try:
        assert service.ready.wait(20), "the alerting service did not start"
        yield service
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive() and result == [service.stats]


@pytest.fixture
def influx(influxdb, influx_database) -> Iterator[InfluxClient]:
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    yield client
    client.close()


class Inbox:
    """An MQTT client collecting what arrives on its subscriptions, like a partner's system."""

    def __init__(self, broker: Any, *filters: str) -> None:
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.connect(
            mqtt.MqttSettings(host=broker.host, port=broker.port),
            f"inbox-{uuid.uuid4().hex[:8]}",
            subscriptions=[(filters[0], 1)],
            on_message=self._on_message,
        )
        for topic_filter in filters[1:]:  # one SUBSCRIBE each: retained messages arrive in this order
            self.client.subscribe(topic_filter, qos=1)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    @property
    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self._messages)

    def alerts(self) -> list[Alert]:
        """Every alert received, validated by the contract, oldest first."""
        return [decode_alert(topic, payload)[1] for topic, payload, _ in self.messages if payload]

    def wait(self, condition: Callable[[list[Alert]], bool], what: str) -> list[Alert]:
        wait_for(lambda: condition(self.alerts()), what)
        return self.alerts()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def inboxes(mosquitto) -> Iterator[Callable[..., Inbox]]:
    opened: list[Inbox] = []

    def open_inbox(*filters: str) -> Inbox:
        opened.append(Inbox(mosquitto, *filters))
        return opened[-1]

    yield open_inbox
    for inbox in opened:
        inbox.close()


@pytest.fixture
def vehicles(mosquitto) -> Iterator[Callable[..., None]]:
    """Publish a vehicle's telemetry batch: (seconds after t0, signals) pairs, or a raw payload."""
    client = mqtt.connect(
        mqtt.MqttSettings(host=mosquitto.host, port=mosquitto.port), f"cars-{uuid.uuid4().hex[:8]}"
    )
    sequence = iter(range(10**6))

    def send(
        scene: Scene, vin: str, samples: list[tuple[float, dict[str, Any]]] | bytes, topic: str = ""
    ) -> None:
        if isinstance(samples, bytes):
            payload = samples
        else:
            records = [Record(scene.at(seconds), "can0", signals) for seconds, signals in samples]
            payload = encode_telemetry(TelemetryBatch(vin, scene.fleet, next(sequence), records))
        client.publish(topic or telemetry_topic(scene.fleet, vin), payload, qos=1).wait_for_publish(10)

    yield send
    client.disconnect()
    client.loop_stop()


def publish(broker: Any, topic: str, payload: bytes, retain: bool = False) -> None:
    client = mqtt.connect(
        mqtt.MqttSettings(host=broker.host, port=broker.port), f"pub-{uuid.uuid4().hex[:8]}"
    )
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def parked_with_a_low_battery(start_s: float) -> list[tuple[float, dict[str, Any]]]:
    """The engine runs, then after more than an hour off the battery rests at 11.9 V (about 25 %)."""
    return [(start_s, {ENGINE_SPEED: 800, VOLTAGE: 14.1}), (start_s + 3700, {ENGINE_SPEED: 0, VOLTAGE: 11.9})]


def overheating(start_s: float) -> list[tuple[float, dict[str, Any]]]:
    """Coolant at 110 degC for 41 s: above the normal range for longer than 30 s."""
    return [(start_s + i, {COOLANT: 110}) for i in range(41)]


def cooled_down(start_s: float) -> list[tuple[float, dict[str, Any]]]:
    """Coolant back at 95 degC, and still a minute later: the hold runs out."""
    return [(start_s, {COOLANT: 95}), (start_s + HOLD_S + 1, {COOLANT: 95})]


def topic_of(scene: Scene, partner: str, vin: str, kind: str) -> str:
    """The topic of a partner's alert about a vehicle of the scene."""
    return alert_topic(partner, replace(ALERT, fleet=scene.fleet, vin=vin, type=kind))


def of(alerts: list[Alert], vin: str, kind: str) -> list[Alert]:
    return [alert for alert in alerts if (alert.vin, alert.type) == (vin, kind)]


@pytest.mark.integration
def test_the_serving_partner_receives_the_alerts_and_one_that_does_not_serve_the_vehicle_does_not(
    scene, make_config, inboxes, vehicles, mosquitto, influx
) -> None:
    garage = inboxes(partner_alerts_filter(scene.garage))
    insurer = inboxes(partner_alerts_filter(scene.insurer))
    with running(make_config()) as service:
        vehicles(scene, VIN_A, parked_with_a_low_battery(0))
        vehicles(scene, VIN_A, overheating(4000))
        received = garage.wait(lambda alerts: len(alerts) == 2, "the garage's two alerts")
        vehicles(scene, VIN_B, overheating(4000))  # VIN_B's alert goes to both partners, after VIN_A's
        insurer.wait(lambda alerts: len(alerts) == 1, "the insurer's alert about VIN_B")
        garage.wait(lambda alerts: len(alerts) == 3, "the garage's alert about VIN_B")

    (battery,) = of(received, VIN_A, "battery")
    assert (battery.state, battery.severity, battery.count, battery.value) == (
        ACTIVE,
        2,
        1,
        {"resting_voltage_v": 11.9},
    )
    assert battery.first_seen_ns == scene.at(3700) and "25 %" in battery.recommendation
    (coolant,) = of(received, VIN_A, "coolant_overtemp")
    assert (coolant.state, coolant.severity, coolant.value) == (ACTIVE, 2, {"ect_c": 110.0, "above_s": 30.0})
    assert coolant.first_seen_ns == scene.at(4030)
    assert [alert.vin for alert in insurer.alerts()] == [VIN_B]
    topics = {topic for topic, _, _ in garage.messages}
    assert topics == {alert_topic(scene.garage, alert) for alert in garage.alerts()}
    assert all(json.loads(payload)["v"] == 1 for _, payload, _ in garage.messages)
    assert (service.stats.alerts_published, service.stats.transitions_stored) == (4, 3)
    assert service.stats.telemetry_received == 3 and service.stats.telemetry_rejected == 0
    assert {(alert.vin, alert.type) for alert in read_active(influx)} == {
        (VIN_A, "battery"),
        (VIN_A, "coolant_overtemp"),
        (VIN_B, "coolant_overtemp"),
    }

    # A partner's system that connects later gets the current state: the retained messages.
    later = inboxes(partner_alerts_filter(scene.garage))
    retained = later.wait(lambda alerts: len(alerts) == 3, "the retained state")
    assert sorted(retained, key=lambda a: a.id) == sorted(garage.alerts(), key=lambda a: a.id)
    assert all(retain for _, _, retain in later.messages)

    # The example of docs/alerts.md: an alert as a partner receives it.
    topic, payload, _ = next(m for m in garage.messages if m[0].endswith(f"{VIN_A}/coolant_overtemp"))
    print(f"\n{topic}\n{json.dumps(json.loads(payload), indent=2)}")


def partner_command(*argv: str) -> int:
    """Run ``roadwave partner ...`` in this process (the command is not registered in roadwave.cli yet)."""
    parser = argparse.ArgumentParser(prog="roadwave")
    partner_cli.add_subparser(parser.add_subparsers(required=True))
    args = parser.parse_args(["partner", *argv])
    return int(args.func(args))


def stdout_alerts(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.integration
def test_an_acknowledgement_over_mqtt_reaches_every_serving_partner_and_influxdb(
    scene, make_config, inboxes, vehicles, mosquitto, influx, capsys
) -> None:
    broker = ["--mqtt-host", mosquitto.host, "--mqtt-port", str(mosquitto.port)]
    garage = inboxes(partner_alerts_filter(scene.garage))
    insurer = inboxes(partner_alerts_filter(scene.insurer))
    with running(make_config()) as service:
        vehicles(scene, VIN_B, overheating(0))
        vehicles(scene, VIN_A, parked_with_a_low_battery(0))
        (opened,) = insurer.wait(lambda alerts: len(alerts) == 1, "the insurer's alert")
        garage.wait(lambda alerts: len(alerts) == 2, "the garage's alerts")
        battery = of(garage.alerts(), VIN_A, "battery")[0]

        assert partner_command("ack", opened.id, "--partner", scene.garage, "--by", "alice", *broker) == 0
        assert json.loads(capsys.readouterr().out) == {
            "event": "sent",
            "id": opened.id,
            "by": f"{scene.garage}:alice",
        }
        for inbox in (garage, insurer):
            acknowledged = inbox.wait(
                lambda alerts: alerts[-1].state == ACKNOWLEDGED, "the acknowledged state"
            )[-1]
            assert (acknowledged.id, acknowledged.acknowledged_by) == (opened.id, f"{scene.garage}:alice")
        history = read_history(influx, VIN_B)
        assert [(note.transition, note.alert.state) for note in history] == [
            ("opened", ACTIVE),
            ("acknowledged", ACKNOWLEDGED),
        ]
        assert history[-1].alert == acknowledged

        # The insurer does not serve VIN_A: refused. An unknown id and a repeat change nothing.
        assert partner_command("ack", battery.id, "--partner", scene.insurer, "--by", "mallory", *broker) == 0
        assert (
            partner_command(
                "ack",
                battery.id.replace("battery", "oil_life"),
                "--partner",
                scene.garage,
                "--by",
                "bob",
                *broker,
            )
            == 0
        )
        assert partner_command("ack", opened.id, "--partner", scene.insurer, "--by", "carol", *broker) == 0
        wait_for(lambda: service.stats.acks_received == 4, "the acknowledgements")
        stats = service.stats
        assert (stats.acks_applied, stats.acks_refused, stats.acks_unknown, stats.acks_rejected) == (
            2,
            1,
            1,
            0,
        )
    assert [alert.state for alert in read_active(influx) if alert.vin == VIN_A] == [ACTIVE]
    assert len(read_history(influx, VIN_B)) == 2
    assert len(insurer.alerts()) == 2


@pytest.mark.integration
def test_a_cleared_alert_is_published_as_cleared_then_its_retained_state_is_removed(
    scene, make_config, inboxes, vehicles, influx
) -> None:
    garage = inboxes(partner_alerts_filter(scene.garage))
    with running(make_config(tick_interval_s=0.1, cleared_retain_s=0.0)) as service:
        vehicles(scene, VIN_A, parked_with_a_low_battery(0))
        vehicles(scene, VIN_A, overheating(4000))
        vehicles(scene, VIN_A, cooled_down(4100))
        wait_for(lambda: service.stats.cleared_removed == 1, "the removal of the cleared state")
    coolant_topic = topic_of(scene, scene.garage, VIN_A, "coolant_overtemp")
    states = [
        json.loads(payload)["state"] if payload else "removed"
        for topic, payload, _ in garage.messages
        if topic == coolant_topic
    ]
    assert states == [ACTIVE, CLEARED, "removed"]
    (cleared,) = [alert for alert in garage.alerts() if alert.state == CLEARED]
    assert cleared.cleared_at_ns == scene.at(4100 + HOLD_S)
    assert [
        note.transition for note in read_history(influx, VIN_A) if note.alert.type == "coolant_overtemp"
    ] == [
        "opened",
        "cleared",
    ]
    # Later, only the open alert is retained: the coolant's retained state would come before the battery's.
    battery_topic = topic_of(scene, scene.garage, VIN_A, "battery")
    later = inboxes(coolant_topic, battery_topic)
    later.wait(lambda alerts: len(alerts) == 1, "the battery's retained state")
    assert [topic for topic, _, _ in later.messages] == [battery_topic]


@pytest.mark.integration
def test_a_restarted_service_restores_open_alerts_and_republishes_their_state(
    scene, make_config, inboxes, vehicles, influx, mosquitto
) -> None:
    config = make_config()
    with running(config) as first:
        vehicles(scene, VIN_A, parked_with_a_low_battery(0))
        vehicles(scene, VIN_A, overheating(4000))
        vehicles(scene, VIN_A, cooled_down(4100))
        wait_for(lambda: first.stats.transitions_stored == 3, "opened, opened, cleared")
    (battery,) = read_active(influx)
    # While the service is down, the car parks again with a low battery; the broker keeps the batch.
    vehicles(scene, VIN_A, parked_with_a_low_battery(7400))
    garage = inboxes(partner_alerts_filter(scene.garage))
    garage.wait(lambda alerts: len(alerts) == 2, "the retained states")
    with running(config) as second:
        assert second.stats.alerts_restored == 1
        updated = garage.wait(lambda alerts: alerts[-1].count == 2, "the update of the restored alert")[-1]
        assert (updated.id, updated.state, updated.last_seen_ns) == (battery.id, ACTIVE, scene.at(11100))
        publish(
            mosquitto, ack_topic(scene.garage), encode_ack(Acknowledgement(scene.garage, battery.id, "dave"))
        )
        garage.wait(lambda alerts: alerts[-1].state == ACKNOWLEDGED, "the acknowledgement after the restart")
    # At start the service published the restored alert and the recently cleared one again.
    republished = [alert for alert in garage.alerts()[2:] if alert.count == 1]
    assert sorted((alert.type, alert.state) for alert in republished) == [
        ("battery", ACTIVE),
        ("coolant_overtemp", CLEARED),
    ]
    assert (second.stats.alerts_published, second.stats.acks_applied) == (4, 1)


@pytest.mark.integration
def test_malformed_telemetry_and_acknowledgements_are_counted_and_the_service_goes_on(
    scene, make_config, inboxes, vehicles, mosquitto
) -> None:
    replayed = ack_topic(scene.garage)
    publish(mosquitto, replayed, encode_ack(Acknowledgement(scene.garage, ALERT.id, "eve")), retain=True)
    garage = inboxes(partner_alerts_filter(scene.garage))
    try:
        with running(make_config()) as service:
            wait_for(lambda: service.stats.acks_rejected == 1, "the retained acknowledgement, refused")
            good = encode_telemetry(
                TelemetryBatch(VIN_A, scene.fleet, 0, [Record(scene.t0, "can0", {COOLANT: 77})])
            )
            for payload in (
                b"not json",
                good.replace(b'"v":2', b'"v":7'),
                good.replace(b'ECT":77', b'ECT":1e99'),
            ):
                vehicles(scene, VIN_A, payload)
            vehicles(scene, VIN_A, good, topic=telemetry_topic(scene.fleet, VIN_B))  # names another VIN
            for payload in (b"{", b'{"v": 1, "id": "battery", "by": "x"}', b'{"v": 1}'):
                publish(mosquitto, ack_topic(scene.garage), payload)
            vehicles(scene, VIN_A, parked_with_a_low_battery(0))
            garage.wait(lambda alerts: len(alerts) == 1, "an alert after all that")
            wait_for(lambda: service.stats.acks_rejected == 4, "the malformed acknowledgements")
            assert (service.stats.telemetry_received, service.stats.telemetry_rejected) == (5, 4)
    finally:
        publish(mosquitto, replayed, b"", retain=True)  # other tests' services subscribe to every ack topic


@pytest.mark.integration
def test_roadwave_cloud_alerts_and_partner_watch(
    scene, vehicles, mosquitto, influxdb, influx_database, tmp_path, capsys
) -> None:
    registry = "".join(f'[[vehicle]]\nvin = "{vin}"\nfleet = "{scene.fleet}"\n' for vin in (VIN_A, VIN_B))
    (tmp_path / "fleet.toml").write_text(
        registry + f'[[partner]]\nid = "{scene.garage}"\nfleets = ["{scene.fleet}"]\n'
    )
    config = tmp_path / "alerts.toml"
    config.write_text(
        f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
        f'client_id = "alerts-cli-{influx_database}"\n'
        f'[influx]\nurl = "{influxdb.url}"\ndatabase = "{influx_database}"\n'
        '[alerting]\nregistry = "fleet.toml"\n'
    )
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "roadwave", "cloud", "alerts", "--config", str(config)]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready == {"event": "ready", "client_id": f"alerts-cli-{influx_database}", "alerts_restored": 0}
        vehicles(scene, VIN_A, parked_with_a_low_battery(0))
        broker = [
            "--partner",
            scene.garage,
            "--mqtt-host",
            mosquitto.host,
            "--mqtt-port",
            str(mosquitto.port),
        ]
        assert partner_command("watch", *broker, "--count", "1", "--timeout", "20") == 0
        (alert,) = stdout_alerts(capsys.readouterr().out)
        assert (alert["v"], alert["vin"], alert["type"], alert["state"]) == (1, VIN_A, "battery", ACTIVE)
        # Acknowledge while watching: the current state first, then the acknowledged one.
        assert (
            partner_command(
                "watch", *broker, "--ack", alert["id"], "--by", "erin", "--count", "2", "--timeout", "20"
            )
            == 0
        )
        current, change = stdout_alerts(capsys.readouterr().out)
        assert (current, change["state"], change["acknowledged_by"]) == (
            alert,
            ACKNOWLEDGED,
            f"{scene.garage}:erin",
        )
        assert partner_command("watch", *broker, "--count", "2", "--timeout", "0.5") == 1
        assert "1 of 2 alerts" in capsys.readouterr().err
        assert partner_command("watch", *broker, "--ack", alert["id"]) == 2
        assert "--ack needs --by" in capsys.readouterr().err
        process.send_signal(signal.SIGINT)
        stopped = json.loads(process.stdout.readline())
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert stopped["event"] == "stopped"
    stats = stopped["stats"]
    assert (stats["transitions_stored"], stats["acks_applied"], stats["alerts_published"]) == (2, 1, 2)


MISFIRE = ReportedDtc(
    "7E8", "P0301", ("confirmed",), "obd_mode_03", description="Cylinder 1 misfire detected"
)
ABS_SENSOR = ReportedDtc("7E9", "C0288", ("pending",), "obd_mode_07")
CATALYST = ReportedDtc("7E8", "P0420", ("pending",), "obd_mode_07")


@pytest.mark.integration
def test_dtc_alerts_follow_complete_diagnostic_reports_and_incomplete_ones_clear_nothing(
    scene, make_config, inboxes, vehicles, influx
) -> None:
    garage = inboxes(partner_alerts_filter(scene.garage))
    topic = diagnostics_topic(scene.fleet, VIN_A)

    def report(seconds: float, *dtcs: ReportedDtc, complete: bool = True, mil_on: bool | None = None) -> None:
        document = DiagnosticsReport(scene.at(seconds), "periodic", mil_on, complete, dtcs=dtcs)
        vehicles(scene, VIN_A, encode_diagnostics(scene.fleet, VIN_A, document), topic=topic)

    with running(make_config()) as service:
        report(0, MISFIRE, ABS_SENSOR, mil_on=True)
        garage.wait(lambda alerts: len(alerts) == 2, "the two DTC alerts")
        report(60, complete=False)  # the reads went unanswered: P0301 is not gone
        vehicles(
            scene,
            VIN_A,
            encode_diagnostics(scene.fleet, VIN_B, DiagnosticsReport(scene.t0, "start", None, True)),
            topic=topic,
        )
        # Still incomplete, past the hold after the first one: a new code is raised all the same.
        report(60 + HOLD_S + 10, CATALYST, complete=False)
        garage.wait(lambda alerts: bool(of(alerts, VIN_A, "dtc_P0420")), "the new code's alert")
        report(300, ABS_SENSOR, CATALYST, mil_on=False)  # complete, without P0301: its hold starts
        report(300 + HOLD_S + 1, ABS_SENSOR, CATALYST, mil_on=False)  # the hold ran out
        garage.wait(lambda alerts: alerts[-1].state == CLEARED, "the clear of dtc_P0301")
        wait_for(lambda: service.stats.diagnostics_received == 6, "every report")
    stats = service.stats
    counts = (stats.diagnostics_received, stats.diagnostics_incomplete, stats.diagnostics_rejected)
    assert counts == (6, 2, 1)

    misfire = of(garage.alerts(), VIN_A, "dtc_P0301")
    assert [(alert.state, alert.severity) for alert in misfire] == [(ACTIVE, 2), (CLEARED, 2)]
    assert misfire[0].value == {"confirmed": 1.0, "pending": 0.0, "mil_on": 1.0}
    assert "confirmed by ECU 7E8" in misfire[0].recommendation
    # The hold started with the complete report at 300 s, not with the incomplete one at 60 s.
    assert misfire[-1].cleared_at_ns == scene.at(300 + HOLD_S)
    (abs_sensor,) = of(garage.alerts(), VIN_A, "dtc_C0288")
    assert (abs_sensor.state, abs_sensor.severity, abs_sensor.value) == (
        ACTIVE,
        1,
        {"confirmed": 0.0, "pending": 1.0, "mil_on": 1.0},
    )
    (catalyst,) = of(garage.alerts(), VIN_A, "dtc_P0420")
    assert (catalyst.state, catalyst.first_seen_ns, catalyst.value) == (
        ACTIVE,
        scene.at(60 + HOLD_S + 10),
        {"confirmed": 0.0, "pending": 1.0},  # that report did not know the lamp
    )
    assert {alert.type for alert in read_active(influx)} == {"dtc_C0288", "dtc_P0420"}
    assert [note.transition for note in read_history(influx, VIN_A) if note.alert.type == "dtc_P0301"] == [
        "opened",
        "cleared",
    ]
