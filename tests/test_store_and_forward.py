"""The edge's store-and-forward against a real Mosquitto that comes and goes.

Every test compares what an independent subscriber receives with what an
uninterrupted agent publishes (``replayed_samples``): nothing missing, nothing extra.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from samples import Samples, replayed_samples
from waiting import wait_for

from edge.agent import EdgeAgent
from edge.config import BusSettings, EdgeConfig, UplinkSettings
from roadwave import REFERENCE_DBC
from roadwave.contract import (
    STATUS_SUBSCRIPTION,
    TELEMETRY_SUBSCRIPTION,
    AgentStatus,
    decode_status,
    decode_telemetry,
)
from roadwave.mqtt import MqttSettings
from roadwave.services import Mosquitto
from roadwave.sim.fleet import FleetSimulator, SimConfig, write_candump_logs

pytestmark = pytest.mark.integration

FLEET = "saf"


class Tap:
    """An independent subscriber keeping every telemetry sample and status message."""

    def __init__(self, broker: Mosquitto) -> None:
        self.samples: Samples = {}
        self.batches = 0
        self.statuses: list[AgentStatus] = []
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="saf-tap")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe([(TELEMETRY_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _client, _userdata, message) -> None:
        if message.topic.endswith("/status"):
            self.statuses.append(decode_status(message.topic, message.payload))
            return
        batch = decode_telemetry(message.topic, message.payload)
        self.batches += 1
        for record in batch.records:
            for path, value in record.signals.items():
                self.samples[(batch.vin, record.bus, record.t_ns, path)] = (value, record.quality.get(path))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def drive(tmp_path: Path) -> tuple[str, Path, Samples]:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=8.0, seed=21))
    ((vin, log),) = write_candump_logs(sim, tmp_path / "logs").items()
    return vin, log, replayed_samples(vin, log, REFERENCE_DBC)


def config(broker: Mosquitto, vin: str, log: Path, spool: Path, **uplink) -> EdgeConfig:
    return EdgeConfig(
        vin=vin,
        fleet=FLEET,
        buses=(BusSettings(name="can0", dbc=(REFERENCE_DBC,), log=log),),
        uplink=UplinkSettings(spool=spool, **uplink),
        mqtt=MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5),
    )


def test_an_agent_without_a_broker_spools_and_the_next_run_delivers_without_resending(
    start_server, drive, tmp_path: Path
) -> None:
    vin, log, expected = drive
    broker = Mosquitto(tmp_path / "broker")
    start_server(broker)
    broker.stop()  # it has a port, and nobody listens there
    settings = config(broker, vin, log, tmp_path / "spool.sqlite")
    offline = EdgeAgent(settings).run(threading.Event(), drain_timeout_s=0.5)
    assert not offline.delivered
    assert offline.uplink["spool_depth"] == offline.uplink["batches_sent"] > 0
    assert offline.uplink["batches_acked"] == 0

    broker.start()
    tap = Tap(broker)
    try:
        online = EdgeAgent(settings).run(threading.Event())
        assert online.delivered and online.uplink["spool_depth"] == 0
        assert online.uplink["batches_recovered"] == offline.uplink["batches_sent"]
        assert online.uplink["batches_sent"] == 0, "the replay was decoded again but must not be re-sent"
        wait_for(lambda: tap.samples.keys() == expected.keys(), "every sample at the subscriber")
        assert tap.samples == expected and tap.batches == offline.uplink["batches_sent"]
    finally:
        tap.close()


def edge_process(settings_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "roadwave", "edge", "--config", str(settings_path), "--drain-timeout", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def write_config(path: Path, broker: Mosquitto, vin: str, log: Path, realtime: bool) -> Path:
    path.write_text(
        f'[vehicle]\nvin = "{vin}"\nfleet = "{FLEET}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n\n"
        "[batch]\nmax_age_s = 0.5\n\n"
        f'[[bus]]\nname = "can0"\ndbc = ["{REFERENCE_DBC}"]\nlog = "{log}"\n'
        f"realtime = {str(realtime).lower()}\n"
    )
    return path


def test_a_sigkilled_agent_loses_nothing_it_had_spooled_while_the_broker_was_away(
    start_server, drive, tmp_path: Path
) -> None:
    vin, log, expected = drive
    broker = start_server(Mosquitto(tmp_path / "broker"))
    tap = Tap(broker)
    try:
        agent = edge_process(write_config(tmp_path / "edge.toml", broker, vin, log, realtime=True))
        wait_for(lambda: tap.batches >= 2, "the first batches online")
        broker.stop()  # the vehicle drives into a tunnel...
        time.sleep(3.0)
        spool = tmp_path / "spool" / f"{vin}.sqlite"
        assert spool.exists()
        os.kill(agent.pid, signal.SIGKILL)  # ...and loses power there
        agent.wait()
        broker.start()
        wait_for(lambda: tap.client.is_connected(), "the tap to reconnect")
        tap.client.subscribe([(TELEMETRY_SUBSCRIPTION, 1), (STATUS_SUBSCRIPTION, 1)])
        restarted = edge_process(write_config(tmp_path / "edge.toml", broker, vin, log, realtime=False))
        out, _ = restarted.communicate(timeout=60)
        report = json.loads(out.strip().splitlines()[-1])
        assert report["delivered"] and report["uplink"]["batches_recovered"] > 0
        wait_for(lambda: tap.samples.keys() >= expected.keys(), "every sample at the subscriber")
        assert tap.samples == expected
    finally:
        tap.close()


def test_status_is_online_while_connected_and_the_broker_announces_a_vanished_agent(
    start_server, drive, tmp_path: Path
) -> None:
    vin, log, _ = drive
    broker = start_server(Mosquitto(tmp_path / "broker"))
    tap = Tap(broker)
    try:
        agent = edge_process(write_config(tmp_path / "edge.toml", broker, vin, log, realtime=True))
        wait_for(lambda: any(s.online for s in tap.statuses), "the birth message")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        wait_for(lambda: not tap.statuses[-1].online, "the last will")
        birth, will = tap.statuses[0], tap.statuses[-1]
        assert (birth.vin, will.vin) == (vin, vin) and will.since_ns == birth.since_ns

        clean = edge_process(write_config(tmp_path / "edge.toml", broker, vin, log, realtime=False))
        clean.communicate(timeout=60)
        wait_for(lambda: len(tap.statuses) >= 4, "birth and goodbye of the second run")
        second_birth, goodbye = tap.statuses[-2:]
        assert second_birth.online and not goodbye.online and goodbye.since_ns > second_birth.since_ns
    finally:
        tap.close()


def test_a_backlog_drains_in_order_at_the_configured_rate(start_server, drive, tmp_path: Path) -> None:
    vin, log, _ = drive
    broker = Mosquitto(tmp_path / "broker")
    start_server(broker)
    broker.stop()
    settings = config(broker, vin, log, tmp_path / "spool.sqlite", max_messages_per_s=4.0, max_in_flight=2)
    backlog = EdgeAgent(settings).run(threading.Event(), drain_timeout_s=0.1).uplink["batches_sent"]
    broker.start()
    tap = Tap(broker)
    sequence: list[int] = []

    def on_message(_client, _userdata, message) -> None:
        if message.topic.endswith("/telemetry"):
            sequence.append(decode_telemetry(message.topic, message.payload).seq)

    tap.client.on_message = on_message
    try:
        started = time.monotonic()
        report = EdgeAgent(settings).run(threading.Event())
        elapsed = time.monotonic() - started
        assert report.delivered
        wait_for(lambda: len(sequence) == backlog, "the whole backlog")
        assert sequence == sorted(sequence)
        # A lower bound only: the bucket starts with max_in_flight tokens, then 4 per second.
        assert elapsed >= (backlog - 2) / 4.0 * 0.9
    finally:
        tap.close()
