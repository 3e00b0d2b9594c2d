"""Two vehicles: a hard brake in car A raises a warning in car B, over UDP multicast and over MQTT.

Car A drives north at about 43 km/h and brakes hard (8 m/s^2 for 0.7 s) every 3 s of
simulated time; its records go through the real ``EventEngine`` (without a snapshot
window, so that an event ends when the brake is released), whose EEBL events go into A's
``V2xStack``. Car B follows 150 m behind and must raise one warning per brake. In one
test car C keeps 100 m ahead of A heading the other way (as if in the oncoming lane): it
receives the same DENMs and must raise none, since they concern upstream traffic. The
latency is measured from the moment A starts handling the record that completes the
brake to B's warning callback; it is printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from test_v2x_facilities import T0, Fleet, motion_record, offset
from waiting import WAIT_S, wait_for

from edge.events import ONGOING, EventEngine, EventsConfig
from edge.v2x.denm_service import HazardWarning, WarningState
from edge.v2x.quadkey import quadkey
from edge.v2x.security import Verifier
from edge.v2x.stack import V2xConfig, V2xStack, warning_publisher
from edge.v2x.transport import MqttRelayTransport, UdpMulticastTransport, V2xTransport
from roadwave.cli import v2x_relay
from roadwave.contract import v2x as topics
from roadwave.mqtt import MqttSettings, connect
from roadwave.services import Mosquitto

MS = 1_000_000
CYCLE_STEPS = 30  # 3 s at 10 Hz
BRAKE_STEPS = 7  # -8 m/s^2 for 0.7 s ...
RECOVERY = 8.0 * 0.7 / 2.3  # ... then back to the cruising speed over 2.3 s
GAP_M = 150.0


class Road:
    """Cars A (braking), B (behind A) and C (oncoming, ahead of A), all on one simulated clock."""

    def __init__(
        self,
        transport: Callable[[str], V2xTransport],
        on_warning_b: Callable[[HazardWarning], None],
        oncoming: bool = False,
        fleet: Fleet | None = None,
    ) -> None:
        self.now_ns = T0
        self.raised: dict[int, float] = {}
        self.warnings_b: list[HazardWarning] = []
        self.warnings_c: list[HazardWarning] = []
        self._arrived = threading.Condition()
        self._forward_b = on_warning_b
        self._transport, self._fleet = transport, fleet
        self.a = self._car(101, "car-a")
        self.b = self._car(202, "car-b", self._warned)
        self.c = None
        #: The cars that follow A's drive: stack, offset north of A (m), heading.
        self.others = [(self.b, -GAP_M, 0.0)]
        if oncoming:
            self.c = self._car(303, "car-c", self.warnings_c.append)
            self.others.append((self.c, 100.0, 180.0))
        self.engine = EventEngine(dataclasses.replace(EventsConfig.for_class(), pre_s=0.0, post_s=0.0))
        self.north_m, self.speed_mps = 0.0, 12.0
        #: Transports whose subscriptions must be in place before A sends (MQTT: after a tile change).
        self.listeners: list[MqttRelayTransport] = []

    def _car(
        self, station_id: int, name: str, on_warning: Callable[[HazardWarning], None] | None = None
    ) -> V2xStack:
        fleet = self._fleet
        return V2xStack(
            V2xConfig(station_id=station_id),
            [self._transport(name)],
            on_warning=on_warning,
            signer=None if fleet is None else fleet.signer(),
            verifier=None if fleet is None else Verifier(fleet.config),
            clock=self.clock,
        )

    def clock(self) -> int:
        return self.now_ns

    def _warned(self, warning: HazardWarning) -> None:
        arrived = time.perf_counter()
        with self._arrived:
            self.warnings_b.append(warning)
            if warning.state == WarningState.RAISED:
                self.raised[warning.action_id.sequence_number] = arrived
            self._arrived.notify_all()
        self._forward_b(warning)

    def step(self, acceleration: float) -> float | None:
        """100 ms of driving; the start time of A's handling if this record completed an EEBL."""
        self.now_ns += 100 * MS
        self.speed_mps += acceleration * 0.1
        self.north_m += self.speed_mps * 0.1
        for stack, north, heading in self.others:
            stack.on_record(motion_record(self.now_ns, 0.0, self.north_m + north, heading, self.speed_mps))
            stack.tick(self.now_ns)
        for listener in self.listeners:
            assert listener.wait_subscribed(WAIT_S), "the broker did not acknowledge the tile subscriptions"
        record = motion_record(self.now_ns, 0.0, self.north_m, 0.0, self.speed_mps, acceleration)
        started = time.perf_counter()
        self.a.on_record(record)
        braked = False
        for event in self.engine.feed(record):
            braked |= event.kind == "emergency_braking" and event.state == ONGOING
            self.a.on_event(event, self.now_ns)
        self.a.tick(self.now_ns)
        return started if braked else None

    def brake_cycles(self, cycles: int) -> list[float]:
        """Drive ``cycles`` brake cycles; B's warning latency of each, in seconds."""
        latencies: list[float] = []
        for cycle in range(cycles):

            def warned(cycle: int = cycle) -> bool:
                return cycle in self.raised

            for step in range(CYCLE_STEPS):
                started = self.step(-8.0 if step < BRAKE_STEPS else RECOVERY)
                if started is not None:
                    with self._arrived:
                        arrived = self._arrived.wait_for(warned, WAIT_S)
                    assert arrived, f"no warning in car B for brake {cycle}"
                    latencies.append(self.raised[cycle] - started)
        with self._arrived:  # the last cancellation may still be on its way
            self._arrived.wait_for(lambda: len(self.warnings_b) >= 2 * cycles, WAIT_S)
        return latencies

    def close(self) -> None:
        self.a.close()
        for stack, _north, _heading in self.others:
            stack.close()

    def check(self, cycles: int) -> None:
        """What must hold after ``cycles`` brake cycles, whatever the transport."""
        raised = [w for w in self.warnings_b if w.state == WarningState.RAISED]
        assert [w.action_id.sequence_number for w in raised] == list(range(cycles))
        assert all(w.action_id.originating_station_id == 101 for w in raised)
        assert {w.hazard for w in raised} == {"dangerous_situation/1"}
        assert all(w.distance_m is not None and abs(w.distance_m - GAP_M) < 10.0 for w in raised)
        # Each brake is cancelled when it ends.
        cleared = [w for w in self.warnings_b if w.state == WarningState.CLEARED]
        assert [w.action_id.sequence_number for w in cleared] == list(range(cycles))
        assert {w.reason for w in cleared} == {"cancelled"}
        counters_b = self.b.counters()
        assert counters_b["denm.new"] == cycles and counters_b["rejected.denm_repetition"] >= cycles
        assert self.a.counters()["received.cam"] > 0
        if self.c is not None:  # oncoming: the DENMs arrive but do not concern it
            assert self.c.counters()["denm.new"] == cycles and self.warnings_c == []


def report(name: str, latencies: list[float]) -> None:
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"\n{name}: brake record in A -> warning in B over {len(latencies)} brakes: "
        f"p50 {cuts[49] * 1e3:.2f} ms, p99 {cuts[98] * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms"
    )


def test_a_hard_brake_warns_the_car_behind_over_udp_multicast_signed() -> None:
    rng = random.Random()
    group = f"239.255.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    port = rng.randrange(20_000, 60_000)
    road = Road(lambda _name: UdpMulticastTransport(group, port), lambda _warning: None, fleet=Fleet())
    try:
        latencies = road.brake_cycles(200)
    finally:
        road.close()
    road.check(200)
    assert len(latencies) == 200
    assert not any(
        name.startswith("rejected.security") for name in road.b.counters()
    )  # all signed, all verified
    report(f"UDP multicast {group}:{port}, signed", latencies)


@pytest.mark.integration
def test_a_hard_brake_warns_the_car_behind_through_the_mqtt_relay(
    mosquitto: Mosquitto, relay: subprocess.Popen[str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port)
    fleet, vin = "v2xtest", "WVWZZZ1JZXW000001"
    published: list[dict[str, object]] = []
    tap = connect(
        settings,
        f"tap-{tag}",
        subscriptions=[(topics.warning_topic(fleet, vin), 1)],
        on_message=lambda _c, _u, message: published.append(json.loads(message.payload)),
    )
    owner = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"car-b-owner-{tag}")
    owner.connect(mosquitto.host, mosquitto.port)
    owner.loop_start()
    transports: dict[str, MqttRelayTransport] = {}

    def transport(name: str) -> MqttRelayTransport:
        transports[name] = MqttRelayTransport(settings, f"{name}-{tag}")
        return transports[name]

    road = Road(transport, warning_publisher(owner, fleet, vin))
    road.listeners = [transports["car-b"]]
    try:
        latencies = road.brake_cycles(200)
    finally:
        road.close()
        owner.loop_stop()
        owner.disconnect()
    relay.send_signal(signal.SIGTERM)
    stopped_line, _ = relay.communicate(timeout=WAIT_S)
    road.check(200)
    report("MQTT relay", latencies)
    stopped = json.loads(stopped_line.strip().splitlines()[-1])
    assert stopped["event"] == "stopped" and relay.returncode == 0
    counters = stopped["counters"]
    assert counters["forwarded"] >= 400 and not any(name.startswith("refused") for name in counters)
    # B's warnings also went to its own topic.
    wait_for(lambda: sum(doc["state"] == "raised" for doc in published) == 200, "B's warnings on its topic")
    tap.loop_stop()
    tap.disconnect()
    # B followed A over several kilometres, moving its subscriptions from tile to tile.
    start = quadkey(*offset(0.0, -GAP_M), topics.SUBSCRIBE_ZOOM)
    tiles = transports["car-b"].tiles
    assert road.north_m > 5_000 and len(tiles) == 9 and start not in tiles


@pytest.mark.integration
def test_vehicles_can_publish_to_the_tiles_directly(mosquitto: Mosquitto) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port)
    transports: list[MqttRelayTransport] = []

    def transport(name: str) -> MqttRelayTransport:
        transports.append(MqttRelayTransport(settings, f"{name}-{tag}", via_relay=False))
        return transports[-1]

    road = Road(transport, lambda _warning: None, oncoming=True)
    road.listeners = transports[1:]
    try:
        road.brake_cycles(3)
    finally:
        road.close()
    road.check(3)


@pytest.mark.integration
def test_a_tile_packet_larger_than_the_relay_forwards_is_dropped_unread(mosquitto: Mosquitto) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port)
    received: list[bytes] = []
    car = MqttRelayTransport(settings, f"car-{tag}")
    car.open(received.append)
    sender = connect(settings, f"bypass-{tag}")  # publishes to the tile itself, as only the relay should
    try:
        latitude, longitude = offset(0.0, 0.0)
        car.on_position(latitude, longitude)
        assert car.wait_subscribed(WAIT_S)
        tile = topics.tile_topic(topics.CAM, quadkey(latitude, longitude, topics.PUBLISH_ZOOM))
        largest = bytes(topics.MAX_PACKET_BYTES)
        for packet in (largest + b"\x00", largest):  # one over the cap, then the largest allowed
            sender.publish(tile, packet, qos=1).wait_for_publish(WAIT_S)
        wait_for(lambda: largest in received, "the packet of the largest allowed size")
    finally:
        car.close()
        sender.loop_stop()
        sender.disconnect()
    # Messages from one publisher arrive in order: the larger one came first and never reached the stack.
    assert received == [largest] and car.oversize == 1


def test_the_relay_refuses_a_cap_above_what_vehicles_accept(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="roadwave")
    v2x_relay.add_subparser(parser.add_subparsers(required=True))
    args = parser.parse_args(["v2x-relay", "--max-packet-bytes", str(topics.MAX_PACKET_BYTES + 1)])
    assert args.func(args) == 2
    assert f"--max-packet-bytes must be 1-{topics.MAX_PACKET_BYTES}" in capsys.readouterr().err
