"""The edge agent on a live python-can bus, publishing to a real Mosquitto; its CLI errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import can
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from waiting import wait_for

from edge.agent import AgentReport, BusOpenError, EdgeAgent
from edge.config import BatchSettings, BusSettings, EdgeConfig, UplinkSettings
from roadwave import REFERENCE_DBC
from roadwave.contract import AgentHealth, decode_health, decode_telemetry, telemetry_topic, vehicle_topic
from roadwave.mqtt import MqttSettings
from roadwave.sim.fleet import FleetSimulator, SimConfig, stream_to_buses


def live_config(broker, spool: Path, vin: str, interface: str, channel: str, **options) -> EdgeConfig:
    return EdgeConfig(
        vin=vin,
        fleet="live",
        buses=(
            BusSettings(
                name="can0", dbc=(REFERENCE_DBC,), interface=interface, channel=channel, options=options
            ),
        ),
        uplink=UplinkSettings(spool=spool),
        mqtt=MqttSettings(host=broker.host, port=broker.port),
        batch=BatchSettings(max_records=100, max_age_s=0.1),
    )


@pytest.mark.integration
def test_live_virtual_bus_frames_are_decoded_and_published(mosquitto, tmp_path) -> None:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=2.0, seed=3))
    (vin,) = sim.vins
    received: list[int] = []
    tap = paho.Client(CallbackAPIVersion.VERSION2, client_id="live-tap")
    tap.on_message = lambda _c, _u, m: received.append(decode_telemetry(m.topic, m.payload).sample_count)
    tap.connect(mosquitto.host, mosquitto.port)
    tap.subscribe(telemetry_topic("live", vin), qos=1)
    tap.loop_start()

    agent = EdgeAgent(
        live_config(
            mosquitto, tmp_path / "spool.sqlite", vin, "virtual", "live-test-bus", preserve_timestamps=True
        )
    )
    stop = threading.Event()
    reports = []
    worker = threading.Thread(target=lambda: reports.append(agent.run(stop)))
    worker.start()
    decoder = agent.decoders["can0"]
    try:
        # Wait until the agent's notifier listens, then stream the drive on the shared channel.
        assert agent.ready.wait(20)
        sent = stream_to_buses(sim, "virtual", ["live-test-bus"], preserve_timestamps=True)
        wait_for(lambda: decoder.stats.frames_received == sent, "every frame to be decoded")
    finally:
        stop.set()
        worker.join(30)
    (report,) = reports
    bus = report.buses["can0"]
    assert sent == 2 * 480
    assert bus["frames_decoded"] == sent and bus["frames_unknown"] == 0
    assert report.delivered and report.uplink["samples_acked"] == bus["samples_emitted"] > 0
    wait_for(lambda: sum(received) == bus["samples_emitted"], "every sample at the subscriber")
    tap.loop_stop()
    tap.disconnect()


def test_a_bus_that_cannot_open_fails_before_connecting(tmp_path) -> None:
    nowhere = MqttSettings(port=1)  # never contacted: the bus fails first
    config = dataclasses.replace(
        live_config(nowhere, tmp_path / "spool.sqlite", "RWDEM000000000001", "no_such_interface", "x"),
        mqtt=nowhere,
    )
    with pytest.raises(BusOpenError, match="bus 'can0': cannot open no_such_interface channel 'x'"):
        EdgeAgent(config).run(threading.Event())


def test_cli_reports_config_errors_with_exit_status_2(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('[vehicle]\nvin = "SHORT"\nfleet = "demo"\n')
    result = subprocess.run(
        [sys.executable, "-m", "roadwave", "edge", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid VIN 'SHORT'" in result.stderr and str(config) in result.stderr


@pytest.mark.integration
def test_replay_reports_reconciled_counters_and_leaves_retained_health(mosquitto, tmp_path) -> None:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=3.0, seed=8))
    (vin,) = sim.vins
    log = tmp_path / "drive.log"
    with can.Logger(log) as writer:
        for frame in sim:
            writer.on_message_received(frame.message)
    config = EdgeConfig(
        vin=vin,
        fleet="health",
        buses=(BusSettings(name="can0", dbc=(REFERENCE_DBC,), log=log),),
        uplink=UplinkSettings(spool=tmp_path / "spool.sqlite"),
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        health_interval_s=0.1,
    )
    report = EdgeAgent(config).run(threading.Event())
    bus = report.buses["can0"]
    assert bus["frames_received"] == bus["frames_decoded"] == 3 * 480
    assert bus["samples_decoded"] + bus["samples_stale"] == (
        bus["samples_emitted"] + bus["samples_throttled"] + bus["samples_invalid"]
    )
    assert report.uplink["samples_sent"] == bus["samples_emitted"] == report.uplink["samples_acked"]

    received: list[AgentHealth] = []
    got = threading.Event()

    def on_message(_client, _userdata, message) -> None:
        received.append(decode_health(message.topic, message.payload))
        got.set()

    late = paho.Client(CallbackAPIVersion.VERSION2, client_id="late-subscriber")
    late.on_message = on_message
    late.connect(mosquitto.host, mosquitto.port)
    late.subscribe(vehicle_topic("health", vin, "health"), qos=1)
    late.loop_start()
    try:
        assert got.wait(10), "no retained health report"
    finally:
        late.loop_stop()
        late.disconnect()
    (health,) = received
    assert health.vin == vin and health.buses == report.buses
    assert health.uplink["samples_acked"] == report.uplink["samples_acked"]


def _run_live(agent: EdgeAgent, feed, expected_frames: int) -> AgentReport:
    """Run ``agent`` in a thread, call ``feed()`` once it listens, stop when all frames are in."""
    stop = threading.Event()
    reports: list[AgentReport] = []
    worker = threading.Thread(target=lambda: reports.append(agent.run(stop)))
    worker.start()
    try:
        assert agent.ready.wait(20), "the agent never started listening"
        feed()
        wait_for(
            lambda: sum(d.stats.frames_received for d in agent.decoders.values()) >= expected_frames,
            "every frame at the agent",
        )
    finally:
        stop.set()
        worker.join(30)
    (report,) = reports
    return report


@pytest.mark.integration
def test_the_firmware_bridge_is_an_ordinary_input(mosquitto, tmp_path) -> None:
    from firmware_bridge.simulator import FirmwareSimulator

    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=1.0, seed=4))
    (vin,) = sim.vins
    frames = [frame.message for frame in sim]
    with FirmwareSimulator(tmp_path / "ttyRW0", heartbeat_interval=0.1) as mcu:
        agent = EdgeAgent(live_config(mosquitto, tmp_path / "spool.sqlite", vin, "roadwave", str(mcu.path)))

        def feed() -> None:
            for frame in frames:
                mcu.send_message(frame)

        report = _run_live(agent, feed, len(frames))
    bus = report.buses["can0"]
    assert bus["frames_received"] == bus["frames_decoded"] == len(frames)
    assert bus["frames_integrity_failed"] == 0 and report.delivered


@pytest.mark.integration
def test_several_buses_at_once_each_with_its_name(mosquitto, tmp_path) -> None:
    sim = FleetSimulator(SimConfig(vehicles=2, duration_s=1.0, seed=6))
    vin = sim.vins[0]
    by_vehicle: dict[int, list[can.Message]] = {0: [], 1: []}
    for frame in sim:
        by_vehicle[frame.vehicle].append(frame.message)
    log = tmp_path / "chassis.log"
    with can.Logger(log) as writer:
        for frame in by_vehicle[1]:
            writer.on_message_received(frame)
    channel = f"239.74.{os.getpid() % 250}.{threading.get_ident() % 250}"
    config = EdgeConfig(
        vin=vin,
        fleet="multi",
        buses=(
            BusSettings(name="body", dbc=(REFERENCE_DBC,), interface="udp_multicast", channel=channel),
            BusSettings(name="chassis", dbc=(REFERENCE_DBC,), log=log),
        ),
        uplink=UplinkSettings(spool=tmp_path / "spool.sqlite"),
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
    )
    agent = EdgeAgent(config)

    def feed() -> None:
        with can.Bus(interface="udp_multicast", channel=channel) as sender:
            for frame in by_vehicle[0]:
                sender.send(frame)
                time.sleep(0.0002)  # multicast on loopback drops what a socket buffer cannot hold

    report = _run_live(agent, feed, 2 * 480)
    assert report.buses["body"]["frames_decoded"] == 480
    assert report.buses["chassis"]["frames_decoded"] == 480
    assert report.uplink["samples_acked"] == sum(b["samples_emitted"] for b in report.buses.values())


@pytest.mark.integration
def test_replay_at_recorded_timing_takes_the_log_duration(mosquitto, tmp_path) -> None:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=1.0, seed=9))
    log = tmp_path / "drive.log"
    with can.Logger(log) as writer:
        for frame in sim:
            writer.on_message_received(frame.message)
    config = EdgeConfig(
        vin=sim.vins[0],
        fleet="paced",
        buses=(BusSettings(name="can0", dbc=(REFERENCE_DBC,), log=log, realtime=True),),
        uplink=UplinkSettings(spool=tmp_path / "spool.sqlite"),
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
    )
    report = EdgeAgent(config).run(threading.Event())
    assert report.buses["can0"]["frames_decoded"] == 480
    # A lower bound only: a slow machine can take longer, never shorter, than the recording.
    assert report.wall_time_s >= 0.99 * (sim.config.duration_s - 0.01)


VCAN = Path("/sys/class/net/vcan0")
NO_VCAN = "no vcan0: needs the vcan kernel module (ip link add vcan0 type vcan)"


@pytest.mark.integration
@pytest.mark.skipif(not VCAN.exists(), reason=NO_VCAN)
def test_socketcan_vcan_is_an_ordinary_input(mosquitto, tmp_path) -> None:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=1.0, seed=12))
    frames = [frame.message for frame in sim]
    agent = EdgeAgent(
        live_config(mosquitto, tmp_path / "spool.sqlite", sim.vins[0], "socketcan", "vcan0", fd=True)
    )

    def feed() -> None:
        with can.Bus(interface="socketcan", channel="vcan0", fd=True) as sender:
            for frame in frames:
                sender.send(frame)

    report = _run_live(agent, feed, len(frames))
    assert report.buses["can0"]["frames_decoded"] == len(frames)
