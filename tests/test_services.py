"""Integration tests for roadwave.services against real Mosquitto and InfluxDB 1.x."""

from __future__ import annotations

import os
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
import urllib3
from paho.mqtt.enums import CallbackAPIVersion

from cloud.influx import InfluxClient, InfluxSettings
from roadwave import services
from roadwave.services import ExecutableNotFoundError, InfluxDB1, Mosquitto, PortInUseError

if TYPE_CHECKING:
    from conftest import StartServer

SERVER_CLASSES = [Mosquitto, InfluxDB1]


def _mqtt_client(broker: Mosquitto, received: queue.Queue[mqtt.MQTTMessage]) -> mqtt.Client:
    """Connected paho client (callback API v2) that queues every message it receives."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _client, _userdata, message: received.put(message)
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    return client


def _subscribe(client: mqtt.Client, topic: str) -> None:
    """Subscribe with QoS 1 and wait for the broker's SUBACK."""
    acked = threading.Event()
    client.on_subscribe = lambda *_args: acked.set()
    result, _mid = client.subscribe(topic, qos=1)
    assert result == mqtt.MQTT_ERR_SUCCESS
    assert acked.wait(10), "no SUBACK from broker"


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    """A socket listening on a loopback port, i.e. a port taken by someone else."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


@pytest.mark.integration
def test_mosquitto_delivers_qos1_message(mosquitto: Mosquitto) -> None:
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = _mqtt_client(mosquitto, received)
    try:
        _subscribe(client, "roadwave/test/qos1")
        info = client.publish("roadwave/test/qos1", b"hello fleet", qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
        message = received.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert message.topic == "roadwave/test/qos1"
    assert (message.payload, message.qos) == (b"hello fleet", 1)


@pytest.mark.integration
def test_mosquitto_restart_keeps_port_and_retained_messages(
    tmp_path: Path, start_server: StartServer
) -> None:
    broker = start_server(Mosquitto(tmp_path))
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    publisher.publish("roadwave/test/retained", b"kept", qos=1, retain=True).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()
    port = broker.port

    broker.stop()
    broker.start()

    assert broker.port == port
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    client = _mqtt_client(broker, received)
    try:
        _subscribe(client, "roadwave/test/retained")
        message = received.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert (message.payload, message.retain) == (b"kept", True)


@pytest.mark.integration
def test_influxdb_write_then_query(influxdb: InfluxDB1, influx_database: str) -> None:
    http = urllib3.PoolManager()
    line = "vehicle_speed,vin=RW0000000000001 value=42.5 1700000000000000000"
    response = http.request(
        "POST",
        f"{influxdb.url}/write?db={influx_database}&precision=ns",
        body=line.encode(),
    )
    assert response.status == 204, response.data

    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    rows = client.query('SELECT "value" FROM "vehicle_speed" WHERE "vin" = \'RW0000000000001\'')
    assert rows == [{"time": 1700000000000000000, "value": 42.5}]
    assert influxdb.version.startswith("1.")


@pytest.mark.integration
def test_influx_database_fixture_is_dropped(influxdb: InfluxDB1) -> None:
    rows = InfluxClient(InfluxSettings(url=influxdb.url)).query("SHOW DATABASES")
    assert not [row["name"] for row in rows if row["name"].startswith("test_")]


@pytest.mark.integration
@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_stop_ends_process_and_closes_port(
    server_class: type[Mosquitto | InfluxDB1], tmp_path: Path, start_server: StartServer
) -> None:
    server = start_server(server_class(tmp_path))
    pid, port = server.pid, server.port
    assert pid is not None and server.running

    server.stop()
    server.stop()  # idempotent

    assert not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, port), timeout=2).close()


@pytest.mark.integration
@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_fixed_port_in_use_is_reported(
    server_class: type[Mosquitto | InfluxDB1],
    tmp_path: Path,
    start_server: StartServer,
    listening_socket: socket.socket,
) -> None:
    taken = listening_socket.getsockname()[1]
    expected = f"127.0.0.1:{taken}: address already in use"
    with pytest.raises(PortInUseError, match=expected) as excinfo:
        start_server(server_class(tmp_path, port=taken))
    assert str(tmp_path) in str(excinfo.value)  # names the log file


@pytest.mark.integration
@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_port_race_is_retried_on_a_new_port(
    server_class: type[Mosquitto | InfluxDB1],
    tmp_path: Path,
    start_server: StartServer,
    listening_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = listening_socket.getsockname()[1]
    ports = iter([taken])
    real_free_port = services.free_port
    monkeypatch.setattr(services, "free_port", lambda host: next(ports, 0) or real_free_port(host))

    server = start_server(server_class(tmp_path))

    assert server.running and server.port != taken


@pytest.mark.parametrize(
    ("server_class", "executable", "package"),
    [(Mosquitto, "no-such-mosquitto", "mosquitto"), (InfluxDB1, "no-such-influxd", "influxdb")],
)
def test_missing_executable_says_how_to_install(
    server_class: type[Mosquitto | InfluxDB1], executable: str, package: str, tmp_path: Path
) -> None:
    server = server_class(tmp_path, executable=executable)
    with pytest.raises(ExecutableNotFoundError) as excinfo:
        server.start()
    message = str(excinfo.value)
    assert f"{executable} not found on PATH" in message
    assert f"sudo apt-get install {package}" in message and "make setup" in message
    assert not server.running
