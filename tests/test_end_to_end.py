"""End to end through real processes: simulator -> edge agents -> Mosquitto -> ingest -> InfluxDB.

The pipeline runs its own broker as a fleet deploys it (TLS only, a client certificate
per vehicle and service, the ACL of the fleet registry). The simulator's ground truth is
compared with what InfluxDB holds afterwards, and an independent MQTT subscriber records
what the agents actually published.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import cantools
import paho.mqtt.client as paho
import pytest
import yaml
from samples import Key, stored_samples
from waiting import WAIT_S

from cloud.deadletter import DeadLetterStore
from roadwave.acl import render_acl
from roadwave.contract import (
    INTEGER_RANGES,
    TELEMETRY_SUBSCRIPTION,
    PayloadError,
    decode_telemetry,
    telemetry_topic,
)
from roadwave.mqtt import MqttConnectError, MqttSettings, connect
from roadwave.pipeline import ALERTS_SERVICE, DEFAULT_DBC, IsolationReport, Pipeline
from roadwave.registry import FleetRegistry
from roadwave.sim.fleet import make_vin

pytestmark = pytest.mark.integration

VEHICLES = 3
DURATION_S = 20.0
START = 1_763_700_000.0
UNKNOWN_ID = 0x7AB


class Tap:
    """An independent subscriber that keeps every telemetry sample it sees, with its quality."""

    def __init__(self, settings: MqttSettings) -> None:
        self.samples: dict[Key, tuple[object, str | None]] = {}
        self.sample_count = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self.client = connect(
            settings,
            "e2e-tap",
            subscriptions=[(TELEMETRY_SUBSCRIPTION, 1)],
            on_message=self._on_message,
            timeout_s=WAIT_S,
        )

    def _on_message(self, _client, _userdata, message: paho.MQTTMessage) -> None:
        try:
            batch = decode_telemetry(message.topic, message.payload)
        except PayloadError:
            self.rejected += 1
            return
        with self._lock:
            for record in batch.records:
                for path, value in record.signals.items():
                    key = (batch.vin, record.bus, record.t_ns, path)
                    self.samples[key] = (value, record.quality.get(path))
                    self.sample_count += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def inject_bad_frames(log: Path) -> int:
    """Append frames the agent must count and flag or skip, after a gap that times out messages.

    A second later: unknown IDs, a truncated ESP_Speed, a BRK_Status with a wrong
    checksum, and one good ENG_Status whose frame time reveals that every other
    message went silent.
    """
    last_line = log.read_text().splitlines()[-1]
    t = float(last_line.split()[0].strip("()")) + 1.0
    lines = [
        f"({t:.6f}) can0 {UNKNOWN_ID:03X}#0102030405060708",
        f"({t + 0.0001:.6f}) can0 {UNKNOWN_ID:03X}#01",
        f"({t + 0.0002:.6f}) can0 0A0#0102",
        f"({t + 0.0003:.6f}) can0 0C0#00012A2A2A000000",  # checksum 0x00 is wrong for this payload
        f"({t + 0.0004:.6f}) can0 100#840D002300000000",  # 865 rpm, D, 2nd gear
    ]
    with log.open("a") as file:
        file.write("\n".join(lines) + "\n")
    return len(lines)


@pytest.fixture
def pipeline(mosquitto, influxdb, influx_database, tmp_path) -> Iterator[Pipeline]:
    # ``mosquitto`` is not used: asking for it skips (or fails) the test when no broker is installed.
    with Pipeline.with_own_broker(tmp_path, influxdb.url, influx_database, fleet="e2e") as pipeline:
        yield pipeline


def publish_as(pipeline: Pipeline, identity: str, topic: str, payload: bytes) -> None:
    """Publish one message with ``identity``'s certificate, acknowledged by the broker."""
    client = connect(pipeline.endpoints.mqtt_settings(identity), f"e2e-{identity}-once", timeout_s=WAIT_S)
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)
    finally:
        client.disconnect()
        client.loop_stop()


def test_every_published_sample_lands_once_with_frame_time_and_true_value(pipeline) -> None:
    sim = pipeline.simulate(VEHICLES, DURATION_S, seed=11, start_time=START)
    first_vin = next(iter(sim.logs))
    bad_frames = inject_bad_frames(sim.logs[first_vin])
    pipeline.start_ingest()
    tap = Tap(pipeline.endpoints.mqtt_settings(ALERTS_SERVICE))  # the alerts service reads all telemetry
    try:
        # A malformed payload in the middle of the traffic must not disturb anything else.
        poison = b'{"v": 1, "vin": "' + first_vin.encode() + b'", "records": "oops"}'
        publish_as(pipeline, first_vin, telemetry_topic("e2e", first_vin), poison)
        reports = pipeline.run_agents(sim.logs)
        published = sum(report["uplink"]["samples_acked"] for report in reports)
        assert pipeline.wait_stored(published) == published
        ingest = pipeline.stop_ingest()
    finally:
        tap.close()

    # The agents: every frame accounted for; the injected ones skipped or flagged.
    assert sim.frames == VEHICLES * DURATION_S * 480
    by_vin = {report["vin"]: report for report in reports}
    assert set(by_vin) == set(sim.logs)
    for vin, report in by_vin.items():
        bus = report["buses"]["can0"]
        injected = vin == first_vin
        assert bus["frames_received"] == DURATION_S * 480 + (bad_frames if injected else 0)
        assert bus["frames_unknown"] == (2 if injected else 0)
        assert bus["frames_malformed"] == (1 if injected else 0)
        assert bus["frames_integrity_failed"] == (1 if injected else 0)
        assert bus["frames_decoded"] == DURATION_S * 480 + (1 if injected else 0)
        assert bus["timeouts"] == (11 if injected else 0)  # every message, after the gap
        assert (
            bus["samples_decoded"] + bus["samples_stale"]
            == bus["samples_emitted"] + bus["samples_throttled"] + bus["samples_invalid"]
        )
        assert bus["samples_invalid"] == 0
        assert report["uplink"]["samples_acked"] == report["uplink"]["samples_sent"] == bus["samples_emitted"]
        assert report["delivered"]

    # The ingest: one rejection (kept aside), everything else written.
    assert ingest["messages_rejected"] == 1
    (letter,) = list(DeadLetterStore(pipeline.workdir / "dead-letters"))
    assert letter.payload == poison and "missing 'fleet'" in letter.reason
    assert ingest["samples_written"] == published

    # What was published is exactly what is stored, with its quality: once, nothing extra.
    stored = stored_samples(pipeline.influx, "e2e")
    assert tap.rejected == 1
    assert tap.sample_count == published == len(tap.samples)  # no two samples share a key
    assert stored == tap.samples

    # Good samples are the simulator's physical values at the frames' own timestamps;
    # flagged ones are only the injected vehicle's, each for its reason.
    end_ns = round((START + DURATION_S) * 1e9)
    good = {key: value for key, (value, quality) in stored.items() if quality is None and key[2] < end_ns}
    expectations = compare_with_ground_truth(good, sim.truth)
    after_gap = {
        key[3]: value for key, (value, quality) in stored.items() if quality is None and key[2] >= end_ns
    }
    assert after_gap == {
        "Vehicle.Powertrain.CombustionEngine.Speed": 865,
        "Vehicle.Chassis.Accelerator.PedalPosition": 0,
        "Vehicle.Powertrain.Transmission.SelectedGear": 127,
        "Vehicle.Powertrain.Transmission.CurrentGear": 2,
    }
    flagged = {key: pair for key, pair in stored.items() if pair[1] is not None}
    assert {key[0] for key in flagged} == {first_vin}
    assert {key[3] for key, (_, q) in flagged.items() if q == "integrity"} == {
        "Vehicle.Chassis.Brake.PedalPosition",
        "Vehicle.Chassis.Brake.Pressure",
        "Vehicle.ADAS.ABS.IsEngaged",
    }
    stale = {key: value for key, (value, quality) in flagged.items() if quality == "stale"}
    assert sorted(key[3] for key in stale) == sorted(expectations.paths)  # each path once
    for key, value in stale.items():
        expectations.check_stale(key, value)


# Independent of edge.mapping/edge.units on purpose: the expected values are computed here.
UNIT_FACTORS = {("km", "m"): 1000.0, ("bar", "kPa"): 100.0}


class Expectation:
    """How the test itself expects one DBC signal to appear in VSS."""

    def __init__(self, path: str, entry: dict, signal) -> None:
        self.path = path
        self.datatype = entry["datatype"]
        self.signal = signal
        table = entry["dbc2vss"].get("transform", {}).get("mapping", [])
        self.labels = {str(item["from"]): item["to"] for item in table}
        self.factor = UNIT_FACTORS.get((signal.unit, entry.get("unit")), 1.0)

    def value(self, truth):
        if self.labels:
            return self.labels[truth]
        if self.datatype == "boolean":
            return bool(truth)
        value = truth * self.factor
        return round(value) if self.datatype in INTEGER_RANGES else value

    def tolerance(self) -> float:
        """The DBC's scaling resolution in VSS units, plus one for integer rounding."""
        if self.labels or self.datatype == "boolean":
            return 0.0
        rounding = 1.0 if self.datatype in INTEGER_RANGES else 0.0
        return abs(self.signal.scale * self.factor) + rounding + 1e-9


class GroundTruth:
    """The simulator's frames, turned into the VSS samples the test expects."""

    def __init__(self, truth_path: Path) -> None:
        db = cantools.database.load_file(DEFAULT_DBC)
        overlay = yaml.safe_load(DEFAULT_DBC.with_suffix(".vss.yaml").read_text())
        self.paths = set(overlay)
        by_signal: dict[str, list[Expectation]] = {}
        self.cycle_ns: dict[str, int] = {}
        self.message_of: dict[str, str] = {}
        for path, entry in overlay.items():
            name = entry["dbc2vss"]["signal"]
            ((message, signal),) = [(m, s) for m in db.messages for s in m.signals if s.name == name]
            by_signal.setdefault(name, []).append(Expectation(path, entry, signal))
            self.cycle_ns[path] = message.cycle_time * 1_000_000
            self.message_of[path] = message.name
        self.samples: dict[Key, tuple[Expectation, object]] = {}
        self.last: dict[tuple[str, str], tuple[Expectation, object]] = {}
        self.last_frame_ns: dict[tuple[str, str], int] = {}
        with truth_path.open() as file:
            for line in file:
                frame = json.loads(line)
                t_ns = round(frame["t"] * 1_000_000) * 1000
                self.last_frame_ns[(frame["vin"], frame["message"])] = t_ns
                for name, value in frame["values"].items():
                    for expectation in by_signal.get(name, []):
                        key = (frame["vin"], frame["bus"], t_ns, expectation.path)
                        self.samples[key] = (expectation, value)
                        self.last[(frame["vin"], expectation.path)] = (expectation, value)

    def check(self, key: Key, value: object, expectation: Expectation, truth: object) -> None:
        expected = expectation.value(truth)
        assert abs(value - expected) <= expectation.tolerance(), (key, value, expected)
        assert type(value) is type(expected) or {type(value), type(expected)} <= {int, float}, (key, value)

    def check_stale(self, key: Key, value: object) -> None:
        """A stale sample: the last value sent, at the message's last frame time + 3 cycle times."""
        vin, _, t_ns, path = key
        expectation, truth = self.last[(vin, path)]
        last_t_ns = self.last_frame_ns[(vin, self.message_of[path])]
        assert t_ns == last_t_ns + 3 * self.cycle_ns[path], (key, last_t_ns)
        self.check(key, value, expectation, truth)


def compare_with_ground_truth(stored: dict[Key, object], truth_path: Path) -> GroundTruth:
    truth = GroundTruth(truth_path)
    assert stored, "nothing stored"
    missing = [key for key in stored if key not in truth.samples]
    assert not missing, f"{len(missing)} stored samples have no frame at that time, e.g. {missing[:3]}"
    for key, value in stored.items():
        truth.check(key, value, *truth.samples[key])
    assert {key[3] for key in stored} == truth.paths
    return truth


def test_the_pipeline_broker_takes_only_fleet_certificates_and_keeps_vehicles_apart(pipeline) -> None:
    endpoints = pipeline.endpoints
    assert endpoints.tls and pipeline.broker is not None
    intruder, victim = make_vin(7, 0), make_vin(7, 1)
    pipeline.broker.register([intruder, victim])
    assert pipeline.check_isolation(intruder, victim) == IsolationReport(intruder, victim, 0, 0, control=True)
    plain = MqttSettings(host=endpoints.mqtt_host, port=endpoints.mqtt_port)
    anonymous = MqttSettings(
        host=endpoints.mqtt_host, port=endpoints.mqtt_port, ca_file=endpoints.mqtt_settings(victim).ca_file
    )
    for settings in (plain, anonymous):
        with pytest.raises(MqttConnectError):
            connect(settings, "e2e-without-certificate", timeout_s=WAIT_S)
    # The check sees a breach: an ACL that lets the intruder read and write every vehicle topic.
    registry = FleetRegistry.load(pipeline.broker.registry_file)
    tls = pipeline.broker.server.tls
    assert tls is not None
    tls.acl_file.write_text(
        render_acl(registry).replace(
            f"user {intruder}\n", f"user {intruder}\ntopic readwrite roadwave/v1/#\n"
        )
    )
    pipeline.broker.server.reload()
    breach = pipeline.check_isolation(intruder, victim)
    assert (breach.read, breach.forged, breach.isolated) == (1, 1, False)
