"""The ingest against a real Mosquitto and a real InfluxDB: writes, rejects, isolates."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from waiting import wait_for

from cloud.influx import InfluxClient, InfluxSettings, format_line
from cloud.ingest import IngestConfig, IngestService, IngestSettings
from roadwave.contract import Record, TelemetryBatch, encode_telemetry, telemetry_topic
from roadwave.mqtt import MqttSettings

pytestmark = pytest.mark.integration

VIN_A = "RWDEM000000000001"
VIN_B = "RWDEM000000000002"
T0 = 1_763_700_000_000_000_000


def ingest_config(broker, influx_url: str, database: str, workdir: Path, **settings) -> IngestConfig:
    """A test ingest: its own session, share group, buffer and dead letters."""
    return IngestConfig(
        mqtt=MqttSettings(host=broker.host, port=broker.port, client_id=f"ingest-{database}"),
        influx=InfluxSettings(url=influx_url, database=database, timeout_s=2.0),
        ingest=IngestSettings(
            dead_letter_dir=workdir / "dead",
            buffer_dir=workdir / "buffer",
            share_group=f"group-{database}",
            **settings,
        ),
    )


def run_service(config: IngestConfig) -> tuple[IngestService, threading.Event, threading.Thread]:
    service = IngestService(config)
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,))
    worker.start()
    assert service.ready.wait(15), "ingest did not subscribe"
    return service, stop, worker


@pytest.fixture
def ingest(mosquitto, influxdb, influx_database, tmp_path) -> Iterator[IngestService]:
    config = ingest_config(mosquitto, influxdb.url, influx_database, tmp_path, flush_interval_s=0.2)
    service, stop, worker = run_service(config)
    yield service
    stop.set()
    worker.join(30)
    assert not worker.is_alive()


@pytest.fixture
def publisher(mosquitto) -> Iterator[paho.Client]:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-publisher")
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def publish(client: paho.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(10)


def batch(vin: str, seq: int, start_ns: int, count: int) -> TelemetryBatch:
    records = [
        Record(
            start_ns + i * 100_000_000,
            "can0",
            {"Vehicle.Speed": 10.0 + i, "Vehicle.Powertrain.Transmission.CurrentGear": i % 5},
        )
        for i in range(count)
    ]
    return TelemetryBatch(vin, "demo", seq, records)


def test_valid_batches_are_written_with_frame_timestamps_and_types(
    ingest, publisher, influxdb, influx_database
) -> None:
    publish(publisher, telemetry_topic("demo", VIN_A), encode_telemetry(batch(VIN_A, 0, T0, 50)))
    publish(publisher, telemetry_topic("demo", VIN_B), encode_telemetry(batch(VIN_B, 0, T0, 30)))
    wait_for(lambda: ingest.stats.samples_written == 160)
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    rows = client.query(f"SELECT * FROM telemetry WHERE vin = '{VIN_A}' ORDER BY time")
    assert [row["time"] for row in rows] == [T0 + i * 100_000_000 for i in range(50)]
    assert [row["Vehicle.Speed"] for row in rows] == [10.0 + i for i in range(50)]
    assert all(row["fleet"] == "demo" and row["bus"] == "can0" for row in rows)
    fields = client.query("SHOW FIELD KEYS FROM telemetry")
    assert {row["fieldKey"]: row["fieldType"] for row in fields} == {
        "Vehicle.Speed": "float",
        "Vehicle.Powertrain.Transmission.CurrentGear": "integer",
    }
    assert ingest.stats.points_written == 80 and ingest.stats.messages_rejected == 0


def test_malformed_payloads_are_dead_lettered_and_counted_without_disturbing_others(
    ingest, publisher, influxdb, influx_database
) -> None:
    topic = telemetry_topic("demo", VIN_A)
    bad = {
        b"not json at all": "not UTF-8 JSON",
        encode_telemetry(batch(VIN_B, 0, T0, 2)): "was published on",
        encode_telemetry(batch(VIN_A, 1, T0, 2)).replace(b"10.0", b"NaN"): "NaN is not allowed",
        json.dumps({"v": 9}).encode(): "unsupported telemetry schema version 9",
    }
    publish(publisher, topic, encode_telemetry(batch(VIN_A, 0, T0, 10)))
    for payload in bad:
        publish(publisher, topic, payload)
    publish(publisher, "roadwave/v1/demo/not-a-vin/telemetry", b"{}")
    publish(publisher, topic, encode_telemetry(batch(VIN_A, 2, T0 + 10**9, 10)))
    wait_for(lambda: ingest.stats.samples_written == 40 and ingest.stats.messages_rejected == 5)
    letters = list(ingest.dead_letters)
    assert len(letters) == 5
    for payload, reason in bad.items():
        (letter,) = [letter for letter in letters if letter.payload == payload]
        assert reason in letter.reason and letter.topic == topic
    assert "not a VIN" in letters[-1].reason or "invalid VIN" in letters[-1].reason
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    assert client.query('SELECT COUNT("Vehicle.Speed") FROM telemetry')[0]["count"] == 20


def test_data_influxdb_refuses_is_isolated_to_its_message(
    ingest, publisher, influxdb, influx_database
) -> None:
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    # Field types are per measurement: once CurrentGear exists as a float, integer gears conflict.
    gear = "Vehicle.Powertrain.Transmission.CurrentGear"
    client.write_lines(
        [format_line("telemetry", {"vin": VIN_B, "fleet": "demo", "bus": "can0"}, {gear: 1.0}, T0 - 10**9)]
    )
    conflicting = encode_telemetry(batch(VIN_B, 0, T0, 5))
    speed_only = TelemetryBatch(
        VIN_A, "demo", 0, [Record(T0 + i, "can0", {"Vehicle.Speed": 1.5}) for i in range(5)]
    )
    publish(publisher, telemetry_topic("demo", VIN_B), conflicting)
    publish(publisher, telemetry_topic("demo", VIN_A), encode_telemetry(speed_only))
    wait_for(lambda: ingest.stats.messages_rejected == 1 and ingest.stats.messages_written == 1)
    (letter,) = list(ingest.dead_letters)
    assert letter.payload == conflicting and "InfluxDB refused" in letter.reason
    assert "field type conflict" in letter.reason
    assert (
        client.query(f"SELECT COUNT(\"Vehicle.Speed\") FROM telemetry WHERE vin = '{VIN_A}'")[0]["count"] == 5
    )


def test_ingest_reports_an_unreachable_broker(influxdb, influx_database, tmp_path: Path) -> None:
    from roadwave.mqtt import MqttConnectError
    from roadwave.services import free_port

    config = IngestConfig(
        mqtt=MqttSettings(port=free_port()),
        influx=InfluxSettings(url=influxdb.url, database=influx_database),
        ingest=IngestSettings(dead_letter_dir=tmp_path, buffer_dir=tmp_path),
    )
    with pytest.raises(MqttConnectError, match="cannot reach the MQTT broker"):
        IngestService(config).run(threading.Event())


def http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_probes_report_what_the_service_did(
    mosquitto, influxdb, influx_database, publisher, tmp_path
) -> None:
    config = ingest_config(
        mosquitto, influxdb.url, influx_database, tmp_path, flush_interval_s=0.1, metrics_port=0
    )
    service, stop, worker = run_service(config)
    try:
        port = service.metrics.port
        assert port
        publish(publisher, telemetry_topic("demo", VIN_A), encode_telemetry(batch(VIN_A, 0, T0, 20), True))
        publish(publisher, telemetry_topic("demo", VIN_A), b"broken")
        wait_for(lambda: service.stats.points_written == 20 and service.stats.messages_rejected == 1)
        status, text = http_get(port, "/metrics")
        assert status == 200
        assert "roadwave_ingest_points_written_total 20.0" in text
        assert "roadwave_ingest_messages_rejected_total 1.0" in text
        assert "roadwave_ingest_messages_acked_total 2.0" in text
        assert f'roadwave_ingest_vehicle_last_seen_seconds{{fleet="demo",vin="{VIN_A}"}}' in text
        assert "roadwave_ingest_frame_to_durable_seconds_count 1.0" in text
        assert http_get(port, "/ready") == (200, "ok\n")
        assert http_get(port, "/live") == (200, "ok\n")
        assert http_get(port, "/nothing")[0] == 404
    finally:
        stop.set()
        worker.join(30)


def test_an_influxdb_outage_is_buffered_on_disk_acknowledged_and_drained_in_order(
    mosquitto, start_server, publisher, tmp_path
) -> None:
    from roadwave.services import InfluxDB1

    influx = start_server(InfluxDB1(tmp_path / "influxdb"))
    config = ingest_config(mosquitto, influx.url, "outage", tmp_path, flush_interval_s=0.1)
    service, stop, worker = run_service(config)
    try:
        influx.stop()
        for seq in range(5):
            publish(
                publisher,
                telemetry_topic("demo", VIN_A),
                encode_telemetry(batch(VIN_A, seq, T0 + seq * 10**9, 10)),
            )
        wait_for(lambda: service.stats.messages_buffered == 5 and service.stats.messages_acked == 5)
        assert service.buffer is not None and len(service.buffer) == 5
        assert service.readiness() == (True, "ok (InfluxDB unreachable; buffering)")
        influx.start()
        # the points are written before their buffered copies are removed: wait for both
        wait_for(
            lambda: service.stats.points_written == 50 and not len(service.buffer),
            "the buffer to drain",
            timeout=60,
        )
        assert service.stats.messages_rejected == 0
        rows = InfluxClient(InfluxSettings(url=influx.url, database="outage")).query(
            f"SELECT \"Vehicle.Speed\" FROM telemetry WHERE vin = '{VIN_A}'"
        )
        assert [row["time"] for row in rows] == sorted(
            T0 + s * 10**9 + i * 100_000_000 for s in range(5) for i in range(10)
        )
    finally:
        stop.set()
        worker.join(30)
