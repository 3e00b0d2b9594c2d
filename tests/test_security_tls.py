"""Fleet PKI, registry and ACL, and a real Mosquitto in TLS mode: who may connect, and who sees what.

The broker tests never wait for something *not* to arrive: after the messages that must
be dropped, a marker is published that must arrive, and the broker delivers a
subscriber's messages in the order it accepted them (each publish below is acknowledged,
QoS 1, before the next one is sent). Whatever arrived before the marker is all that will.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from waiting import WAIT_S, wait_for

from roadwave import acl, pki
from roadwave.cli import pki as pki_cli
from roadwave.configfile import ConfigError, Table
from roadwave.contract import TELEMETRY_SUBSCRIPTION, shared_subscription, telemetry_topic, vehicle_topic
from roadwave.contract.v2x import UPLOAD_SUBSCRIPTION, tile_filter, tile_topic, upload_topic
from roadwave.mqtt import MqttConnectError, MqttSettings, MqttTlsError, connect
from roadwave.registry import FleetRegistry, RegistryError
from roadwave.services import Mosquitto, MosquittoConfigError, MosquittoTls, free_port, write_broker_files

REPO = Path(__file__).resolve().parents[1]
N1, N2, S1 = "RWTLS0N0RTH000001", "RWTLS0N0RTH000002", "RWTLS0S0UTH000001"
BROKER = "broker.fleet.test"
QUADKEY = "120210233023103212"
REGISTRY = f"""
[[vehicle]]
vin = "{N1}"
fleet = "north"

[[vehicle]]
vin = "{N2}"
fleet = "north"

[[vehicle]]
vin = "{S1}"
fleet = "south"

[[partner]]
id = "acme"
fleets = ["north"]

[[partner]]
id = "bobco"
vins = ["{S1}"]

[[service]]
id = "ingest"
role = "ingest"

[[service]]
id = "relay"
role = "relay"

[[service]]
id = "alerts"
role = "alerts"
"""


def alert_topic(partner: str, fleet: str, vin: str, kind: str) -> str:
    return f"roadwave/v1/partners/{partner}/alerts/{fleet}/{vin}/{kind}"


# --- a fleet: PKI, registry, ACL and (optionally) a TLS broker ---------------------------------


@dataclass
class Fleet:
    """A PKI with a certificate for every registry identity, the ACL, and the broker's TLS files."""

    root: Path
    pki: pki.FleetPki
    registry: FleetRegistry
    tls: MosquittoTls
    broker: Mosquitto | None = None
    clients: list[paho.Client] = field(default_factory=list)

    def settings(self, identity: str | None, **changes: Any) -> MqttSettings:
        """TLS settings with the identity's certificate (none: no client certificate)."""
        assert self.broker is not None
        files: dict[str, Any] = {"ca_file": self.pki.ca_file}
        if identity is not None:
            bundle = self.pki.bundle(identity)
            files.update(cert_file=bundle.cert_file, key_file=bundle.key_file)
        return MqttSettings(host=self.broker.host, port=self.broker.port, **{**files, **changes})

    def reload(self, registry: FleetRegistry | None = None) -> None:
        """Write the broker's files again (CRL, ACL of ``registry``: default the fleet's) and reload it."""
        assert self.broker is not None
        write_broker_files(
            self.pki,
            registry or self.registry,
            BROKER,
            self.broker.workdir,
            client_id_from_identity=self.tls.client_id_from_identity,
        )
        self.broker.reload()

    def connect(
        self, identity: str | None, *filters: str, settings: MqttSettings | None = None, client_id: str = ""
    ) -> Inbox:
        """A connected client of ``identity`` subscribed to ``filters``, collecting what it receives."""
        inbox = Inbox()
        client = connect(
            settings or self.settings(identity),
            client_id or f"{identity or 'anonymous'}-{uuid.uuid4().hex[:8]}",
            subscriptions=[(topic_filter, 1) for topic_filter in filters],
            on_message=inbox.on_message,
            timeout_s=WAIT_S,
        )
        self.clients.append(client)
        inbox.client = client
        return inbox

    def close_clients(self) -> None:
        for client in self.clients:
            client.disconnect()
            client.loop_stop()
        self.clients.clear()


class Inbox(queue.Queue[tuple[str, bytes, bool]]):
    """Messages received by one client: (topic, payload, retained)."""

    client: paho.Client

    def on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.put((message.topic, bytes(message.payload), bool(message.retain)))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish with QoS 1 and wait for the broker's acknowledgement."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"no PUBACK for {topic}"

    def until(self, marker: bytes) -> list[tuple[str, bytes, bool]]:
        """Everything received up to and including the message whose payload is ``marker``."""
        received: list[tuple[str, bytes, bool]] = []
        deadline = time.monotonic() + WAIT_S
        while not received or received[-1][1] != marker:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"marker {marker!r} never arrived; received {received}")
            try:
                received.append(self.get(timeout=remaining))
            except queue.Empty:
                continue
        return received


def make_fleet(root: Path, *, client_id_from_identity: bool = False) -> Fleet:
    """A PKI in ``root`` with a certificate for every identity of :data:`REGISTRY`, and the broker's files.

    The files (certificates, CRL, ACL) go into ``root/broker``, the broker's working folder,
    written by the code behind ``roadwave pki broker-config``.
    """
    fleet_pki = pki.FleetPki.init(root / "pki", permitted_names=["fleet.test", "localhost", "127.0.0.0/8"])
    (root / "fleet.toml").write_text(REGISTRY, encoding="utf-8")
    registry = FleetRegistry.load(root / "fleet.toml")
    for identity, role in registry.roles().items():
        fleet_pki.issue(role, identity)
    fleet_pki.issue(pki.BROKER, BROKER)
    tls = write_broker_files(
        fleet_pki, registry, BROKER, root / "broker", client_id_from_identity=client_id_from_identity
    )
    return Fleet(root, fleet_pki, registry, tls)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One fleet and its TLS broker for the tests that do not change either."""
    from conftest import _start_or_skip

    shared = make_fleet(tmp_path_factory.mktemp("tls-fleet"))
    shared.broker = _start_or_skip(Mosquitto(shared.root / "broker", tls=shared.tls))
    try:
        yield shared
    finally:
        shared.close_clients()
        shared.broker.stop()


@pytest.fixture
def own_fleet(
    tmp_path: Path, start_server: Callable[[Mosquitto], Mosquitto]
) -> Iterator[Callable[..., Fleet]]:
    """A fresh fleet and broker for a test that revokes, reloads or configures differently."""
    made: list[Fleet] = []

    def make(**options: Any) -> Fleet:
        new = make_fleet(tmp_path / f"fleet{len(made)}", **options)
        new.broker = start_server(Mosquitto(new.root / "broker", tls=new.tls))
        made.append(new)
        return new

    yield make
    for each in made:
        each.close_clients()


@pytest.fixture
def clients(fleet: Fleet) -> Iterator[Fleet]:
    """The shared fleet; the test's clients are disconnected afterwards."""
    yield fleet
    fleet.close_clients()


# --- the broker: who may connect ------------------------------------------------------------


@pytest.mark.integration
def test_happy_path_every_role_gets_what_it_needs(clients: Fleet) -> None:
    marker = uuid.uuid4().hex.encode()
    ingest = clients.connect("ingest", shared_subscription("roadwave-ingest", TELEMETRY_SUBSCRIPTION))
    relay = clients.connect("relay", UPLOAD_SUBSCRIPTION)
    alerts = clients.connect("alerts", "roadwave/v1/partners/+/ack")
    partner = clients.connect("acme", "roadwave/v1/partners/acme/alerts/#")
    car = clients.connect(N1, vehicle_topic("north", N1, acl.COMMAND), tile_filter(QUADKEY[:14]))
    car.publish(telemetry_topic("north", N1), marker)
    car.publish(upload_topic(N1, "cam", QUADKEY), marker)
    assert ingest.until(marker) == [(telemetry_topic("north", N1), marker, False)]
    assert relay.until(marker) == [(upload_topic(N1, "cam", QUADKEY), marker, False)]
    relay.publish(tile_topic("cam", QUADKEY), marker)
    alerts.publish(vehicle_topic("north", N1, acl.COMMAND), marker)
    assert car.until(marker) == [(tile_topic("cam", QUADKEY), marker, False)]
    assert car.until(marker) == [(vehicle_topic("north", N1, acl.COMMAND), marker, False)]
    alerts.publish(alert_topic("acme", "north", N1, "happy"), marker)
    assert partner.until(marker) == [(alert_topic("acme", "north", N1, "happy"), marker, False)]
    partner.publish("roadwave/v1/partners/acme/ack", marker)
    assert alerts.until(marker) == [("roadwave/v1/partners/acme/ack", marker, False)]


@pytest.mark.integration
@pytest.mark.parametrize(
    "case",
    ["no client certificate", "plain TCP", "certificate of another CA", "the broker's own certificate"],
)
def test_connections_without_a_fleet_client_certificate_are_refused(
    clients: Fleet, tmp_path: Path, case: str
) -> None:
    # The client sees the TLS alert (unknown ca, unsupported certificate, ...) or, when the
    # broker's close overtakes it, only the end of the connection: the reason is not asserted.
    if case == "no client certificate":
        settings = clients.settings(None)
    elif case == "plain TCP":
        settings = MqttSettings(host=clients.settings(None).host, port=clients.settings(None).port)
    elif case == "certificate of another CA":
        foreign = pki.FleetPki.init(tmp_path / "foreign")
        foreign.issue(pki.VEHICLE, N1)  # the same identity, vouched for by the wrong CA
        bundle = foreign.bundle(N1)
        settings = clients.settings(N1, cert_file=bundle.cert_file, key_file=bundle.key_file)
    else:
        settings = clients.settings(BROKER)
    with pytest.raises(MqttConnectError, match="did not accept|TLS handshake"):
        clients.connect(None, settings=settings)
    clients.connect(N1)  # the broker still serves the fleet


def run_relay(config: Path) -> tuple[int | None, str, str]:
    """``roadwave v2x-relay --config config`` until its first line; then stopped with SIGTERM."""
    command = [sys.executable, "-m", "roadwave", "v2x-relay", "--config", str(config)]
    relay = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert relay.stdout is not None
    first = relay.stdout.readline()
    relay.terminate()
    rest, errors = relay.communicate(timeout=WAIT_S)
    return relay.returncode, first + rest, errors


@pytest.mark.integration
def test_the_v2x_relay_connects_with_its_service_certificate(clients: Fleet, tmp_path: Path) -> None:
    assert clients.broker is not None
    bundle = clients.pki.bundle("relay")
    address = f'[mqtt]\nhost = "{clients.broker.host}"\nport = {clients.broker.port}\n'
    files = f'ca_file = "{clients.pki.ca_file}"\ncert_file = "{bundle.cert_file}"\n'
    (tmp_path / "relay.toml").write_text(f'{address}{files}key_file = "{bundle.key_file}"\n')
    (tmp_path / "plain.toml").write_text(address)

    _code, out, errors = run_relay(tmp_path / "relay.toml")
    assert json.loads(out.splitlines()[0]) == {"event": "ready", "subscription": UPLOAD_SUBSCRIPTION}, errors
    code, out, errors = run_relay(tmp_path / "plain.toml")  # plain MQTT to the TLS listener
    assert code == 3 and "ready" not in out and "roadwave v2x-relay: " in errors


@pytest.mark.integration
def test_a_client_refuses_a_broker_its_ca_did_not_certify(clients: Fleet, tmp_path: Path) -> None:
    other_ca = pki.FleetPki.init(tmp_path / "other").ca_file  # a client configured for another fleet
    with pytest.raises(MqttConnectError, match="TLS handshake .* failed: .*certificate verify failed"):
        clients.connect(N1, settings=clients.settings(N1, ca_file=other_ca))


# --- the broker: who sees what --------------------------------------------------------------


@pytest.mark.integration
def test_a_vehicle_publishes_only_under_its_own_vin(clients: Fleet) -> None:
    marker = uuid.uuid4().hex.encode()
    ingest = clients.connect("ingest", *(f"roadwave/v1/+/+/{kind}" for kind in acl.INGESTED_KINDS))
    relay = clients.connect("relay", UPLOAD_SUBSCRIPTION)
    other_car = clients.connect(N2, tile_filter(QUADKEY[:14]), vehicle_topic("north", N2, acl.COMMAND))
    partner = clients.connect("acme", "#")
    car = clients.connect(N1)
    forged = [
        telemetry_topic("north", N2),  # another vehicle's telemetry
        vehicle_topic("south", S1, "status"),  # another vehicle's status
        telemetry_topic("south", N1),  # its own VIN in another fleet
        vehicle_topic("north", N1, acl.COMMAND),  # a command, even its own
        vehicle_topic("north", N2, acl.COMMAND),
        upload_topic(N2, "denm", QUADKEY),  # a V2X upload in another vehicle's name
        tile_topic("denm", QUADKEY),  # a tile, bypassing the relay's checks
        alert_topic("acme", "north", N2, "forged"),
    ]
    for topic in forged:
        car.publish(topic, b"forged")
    car.publish(telemetry_topic("north", N1), marker)
    car.publish(upload_topic(N1, "cam", QUADKEY), marker)
    assert ingest.until(marker) == [(telemetry_topic("north", N1), marker, False)]
    assert relay.until(marker) == [(upload_topic(N1, "cam", QUADKEY), marker, False)]
    alerts = clients.connect("alerts")
    alerts.publish(vehicle_topic("north", N2, acl.COMMAND), marker)
    alerts.publish(alert_topic("acme", "north", N1, "marker"), marker)
    assert [payload for _, payload, _ in other_car.until(marker)] == [marker]
    assert [payload for _, payload, retained in partner.until(marker) if not retained] == [marker]


@pytest.mark.integration
def test_a_vehicle_receives_only_its_own_commands(clients: Fleet) -> None:
    marker = uuid.uuid4().hex.encode()
    car = clients.connect(N2, "roadwave/v1/+/+/command", "roadwave/v1/+/+/telemetry")
    alerts = clients.connect("alerts")
    alerts.publish(vehicle_topic("north", N1, acl.COMMAND), b"for N1")
    alerts.publish(vehicle_topic("south", S1, acl.COMMAND), b"for S1")
    clients.connect(N1).publish(telemetry_topic("north", N1), b"N1 telemetry")
    alerts.publish(vehicle_topic("north", N2, acl.COMMAND), marker)
    assert car.until(marker) == [(vehicle_topic("north", N2, acl.COMMAND), marker, False)]


@pytest.mark.integration
def test_a_partner_sees_only_the_alerts_of_the_vehicles_it_serves(clients: Fleet) -> None:
    kind = f"test-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex.encode()
    alerts = clients.connect("alerts", "roadwave/v1/partners/+/ack")
    served = {  # acme serves fleet north, bobco the vehicle S1 only
        "acme": (alert_topic("acme", "north", N2, kind), alert_topic("acme", "north", N1, f"{kind}-marker")),
        "bobco": (
            alert_topic("bobco", "south", S1, kind),
            alert_topic("bobco", "south", S1, f"{kind}-marker"),
        ),
    }
    not_served = [alert_topic("acme", "south", S1, kind), alert_topic("bobco", "north", N1, kind)]
    retained = [own for own, _ in served.values()] + not_served
    for topic in retained:
        alerts.publish(topic, topic.encode(), retain=True)  # what a partner subscribing later gets first
    try:
        inboxes = {partner: clients.connect(partner, "#") for partner in served}
        clients.connect(N1).publish(telemetry_topic("north", N1), b"raw telemetry")
        clients.connect(S1).publish(telemetry_topic("south", S1), b"raw telemetry")
        for partner, (own, marker_topic) in served.items():
            alerts.publish(marker_topic, marker)
            received = inboxes[partner].until(marker)
            assert all(
                topic.startswith(f"roadwave/v1/partners/{partner}/alerts/") for topic, _, _ in received
            )
            assert {(topic, was_retained) for topic, _, was_retained in received if kind in topic} == {
                (own, True),
                (marker_topic, False),
            }
        forger = clients.connect("acme")
        forger.publish("roadwave/v1/partners/bobco/ack", b"acme pretending to be bobco")
        forger.publish("roadwave/v1/partners/acme/ack", marker)
        assert alerts.until(marker) == [("roadwave/v1/partners/acme/ack", marker, False)]
    finally:
        for topic in retained:
            alerts.publish(topic, b"", retain=True)  # an empty retained message clears it


@pytest.mark.integration
def test_a_client_id_takeover_disconnects_the_victim_but_reveals_nothing(clients: Fleet) -> None:
    victim_id = f"edge-{N1}-{uuid.uuid4().hex[:6]}"
    command, own_command = vehicle_topic("north", N1, acl.COMMAND), vehicle_topic("north", N2, acl.COMMAND)
    patient = clients.settings(N1, reconnect_min_s=60.0, reconnect_max_s=60.0)  # no reconnection fight
    victim = clients.connect(N1, command, settings=patient, client_id=victim_id)
    thief = clients.connect(N2, command, own_command, client_id=victim_id)  # same id, another certificate
    wait_for(lambda: not victim.client.is_connected(), "the broker to drop the victim's connection")
    marker = uuid.uuid4().hex.encode()
    alerts = clients.connect("alerts")
    alerts.publish(command, b"for N1 only")
    alerts.publish(own_command, marker)
    assert thief.until(marker) == [(own_command, marker, False)]


@pytest.mark.integration
def test_with_client_id_from_identity_no_session_can_be_taken_over(
    own_fleet: Callable[..., Fleet],
) -> None:
    strict = own_fleet(client_id_from_identity=True)
    patient = strict.settings(N1, reconnect_min_s=60.0, reconnect_max_s=60.0)
    victim = strict.connect(N1, settings=patient, client_id="edge-shared")
    strict.connect(N2, client_id="edge-shared")
    victim.publish(telemetry_topic("north", N1), b"still here")  # acknowledged: never disconnected
    assert strict.broker is not None and "already connected" not in strict.broker.log_path.read_text()


# --- revocation -----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_revoked_certificate_is_refused_once_the_broker_reloads_the_crl(
    own_fleet: Callable[..., Fleet],
) -> None:
    fleet = own_fleet()
    assert fleet.broker is not None
    connected = fleet.connect(N2)
    fleet.pki.revoke_identity(N2, "keyCompromise")
    fleet.connect(N2)  # documented limitation: the CRL is read at start and on SIGHUP only
    fleet.reload()
    with pytest.raises(MqttConnectError, match="closed the connection before accepting it"):
        fleet.connect(N2)  # the TLS alert says "certificate revoked" when it wins the race with the close
    fleet.connect(N1)  # everyone else is still welcome
    # A connection made before the revocation survives the reload: its handshake is over.
    assert connected.client.is_connected()
    marker = uuid.uuid4().hex.encode()
    ingest = fleet.connect("ingest", TELEMETRY_SUBSCRIPTION)
    connected.publish(telemetry_topic("north", N2), b"still allowed")
    connected.publish(telemetry_topic("north", N2), marker)
    assert [payload for _, payload, _ in ingest.until(marker)] == [b"still allowed", marker]
    # Cutting it off: an ACL without the identity, then SIGHUP.
    without = FleetRegistry(
        tuple(v for v in fleet.registry.vehicles if v.vin != N2),
        fleet.registry.partners,
        fleet.registry.services,
    )
    fleet.reload(without)
    connected.publish(telemetry_topic("north", N2), b"after the ACL reload")
    fleet.connect(N1).publish(telemetry_topic("north", N1), marker)
    assert [payload for _, payload, _ in ingest.until(marker)] == [marker]


@pytest.mark.integration
def test_an_expired_crl_locks_every_client_out(own_fleet: Callable[..., Fleet]) -> None:
    fleet = own_fleet()
    assert fleet.broker is not None
    ca_key = serialization.load_pem_private_key(fleet.pki.ca_key_file.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = dt.datetime.now(dt.UTC)
    expired = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(fleet.pki.ca_certificate.subject)
        .last_update(now - dt.timedelta(days=2))
        .next_update(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    fleet.pki.crl_file.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    fleet.reload()
    with pytest.raises(MqttConnectError):
        fleet.connect(N1)
    fleet.pki.write_crl()
    fleet.reload()
    fleet.connect(N1)


# --- roadwave pki on the command line -------------------------------------------------------


def run_pki(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="roadwave")
    pki_cli.add_subparser(parser.add_subparsers(required=True))
    args = parser.parse_args(["pki", *map(str, argv)])
    return int(args.func(args))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_cli_issues_from_a_request_revokes_and_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "pki"
    assert run_pki("init", "--dir", ca) == 0
    assert run_pki("request", "--role", "vehicle", "--out", tmp_path / "car", N1) == 0
    assert (
        run_pki(
            "issue-csr", "--dir", ca, "--role", "vehicle", "--identity", N1, tmp_path / "car" / "request.csr"
        )
        == 0
    )
    assert run_pki("issue", "--dir", ca, "--role", "partner", "acme") == 0
    issued = json_lines(capsys.readouterr().out)[-2:]
    assert [record["identity"] for record in issued] == [N1, "acme"]
    assert issued[0]["key_file"] is None and Path(issued[1]["key_file"]).is_file()
    assert run_pki("revoke", "--dir", ca, "--serial", issued[1]["serial"], "--reason", "keyCompromise") == 0
    assert run_pki("list", "--dir", ca) == 0
    *records, crl = json_lines(capsys.readouterr().out)[1:]
    assert [(r["identity"], r["status"]) for r in records] == [(N1, "valid"), ("acme", "revoked")]
    assert crl["revoked"] == 1 and pki.CRL_DAYS - 1 <= crl["days_left"] <= pki.CRL_DAYS
    assert (
        run_pki("issue", "--dir", ca, "--role", "vehicle", "RWTLS0N0RTH00000I") == 2
    )  # I is not a VIN letter
    assert "invalid VIN" in capsys.readouterr().err


class DeployedBroker(Mosquitto):
    """A broker run from a configuration file written by ``roadwave pki broker-config``."""

    def __init__(self, workdir: Path, port: int, config_text: str) -> None:
        super().__init__(workdir, port=port)
        self._config_text = config_text

    def _render_config(self) -> str:
        return self._config_text


@pytest.mark.integration
def test_cli_broker_config_runs_a_broker_that_enforces_the_acl(
    tmp_path: Path, start_server: Callable[[Mosquitto], Mosquitto]
) -> None:
    fleet = make_fleet(tmp_path)
    out, port = tmp_path / "deploy", free_port()
    argv: list[str | Path] = [
        "--dir",
        fleet.pki.directory,
        "--registry",
        tmp_path / "fleet.toml",
        "--broker",
        BROKER,
    ]
    argv += ["--out", out, "--bind", "127.0.0.1", "--port", str(port), "--data-dir", tmp_path / "data"]
    assert run_pki("broker-config", *argv) == 0
    assert (out / "acl").read_text() == acl.render_acl(fleet.registry)
    assert (out / "broker.key").stat().st_mode & 0o777 == 0o600
    config = (out / "mosquitto.conf").read_text()
    assert f"cafile {out.resolve()}/ca.pem" in config and "log_dest stderr" in config
    if os.geteuid() == 0:  # as root, Mosquitto would switch to a user that cannot read tmp_path
        config += "user root\n"
    fleet.broker = start_server(DeployedBroker(tmp_path / "broker", port, config))
    try:
        marker = uuid.uuid4().hex.encode()
        ingest = fleet.connect("ingest", TELEMETRY_SUBSCRIPTION)
        car = fleet.connect(N1)
        car.publish(telemetry_topic("north", N2), b"forged")
        car.publish(telemetry_topic("north", N1), marker)
        assert [payload for _, payload, _ in ingest.until(marker)] == [marker]
    finally:
        fleet.close_clients()


def test_a_broker_configuration_that_cannot_be_written_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = make_fleet(tmp_path)
    out = tmp_path / "deploy"
    argv: list[str | Path] = ["--dir", fleet.pki.directory, "--registry", tmp_path / "fleet.toml"]
    argv += ["--broker", BROKER, "--out", out, "--bind", " 0.0.0.0", "--data-dir", tmp_path / "data"]
    assert run_pki("broker-config", *argv) == 2
    assert "leading or trailing blanks" in capsys.readouterr().err
    assert not out.exists()  # no certificate or key copied before the refusal


def test_broker_files_need_a_valid_broker_certificate_with_its_key_here(tmp_path: Path) -> None:
    fleet_pki = pki.FleetPki.init(tmp_path / "pki")
    registry = _registry(tmp_path, VEHICLE_N1)
    out = tmp_path / "broker"
    fleet_pki.issue(pki.SERVICE, "ingest")
    for broker in ("mqtt.fleet.test", "ingest"):  # never issued; issued for another role
        with pytest.raises(pki.PkiError, match=f"no valid broker certificate for '{broker}'"):
            write_broker_files(fleet_pki, registry, broker, out)
    pki.create_request(pki.BROKER, "mqtt.fleet.test", tmp_path / "key.pem", tmp_path / "request.csr")
    fleet_pki.issue_from_request((tmp_path / "request.csr").read_bytes(), pki.BROKER)
    with pytest.raises(pki.PkiError, match="made elsewhere"):
        write_broker_files(fleet_pki, registry, "mqtt.fleet.test", out)
    fleet_pki.revoke_identity("mqtt.fleet.test")
    fleet_pki.issue(pki.BROKER, "mqtt.fleet.test")
    tls = write_broker_files(fleet_pki, registry, "mqtt.fleet.test", out)
    assert sorted(path.name for path in out.iterdir()) == [
        "acl",
        "broker.key",
        "broker.pem",
        "ca.pem",
        "crl.pem",
    ]
    assert tls.key_file == out.resolve() / "broker.key" and _mode(out / "broker.key") == 0o600
    assert (out / "crl.pem").read_bytes() == fleet_pki.crl_file.read_bytes()  # the revocation is in it


# --- the PKI on its own ---------------------------------------------------------------------


@pytest.fixture
def fleet_pki(tmp_path: Path) -> pki.FleetPki:
    return pki.FleetPki.init(tmp_path / "pki")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_issue_writes_a_bundle_with_the_identity_and_role_in_the_subject(fleet_pki: pki.FleetPki) -> None:
    issued = fleet_pki.issue(pki.VEHICLE, N1, days=30)
    bundle = fleet_pki.bundle(N1)
    assert bundle.key_file is not None
    certificate = x509.load_pem_x509_certificate(bundle.cert_file.read_bytes())
    certificate.verify_directly_issued_by(fleet_pki.ca_certificate)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == N1
    assert certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "vehicle"
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    key = serialization.load_pem_private_key(bundle.key_file.read_bytes(), None)
    assert key.public_key() == certificate.public_key()
    assert certificate.serial_number == issued.serial
    assert (certificate.not_valid_after_utc - certificate.not_valid_before_utc).days == 30
    assert _mode(bundle.key_file) == 0o600 and _mode(bundle.key_file.parent) == 0o700
    assert _mode(fleet_pki.ca_key_file) == 0o600 and _mode(fleet_pki.ca_key_file.parent) == 0o700
    assert bundle.ca_file.read_bytes() == fleet_pki.ca_file.read_bytes()
    assert (
        bundle.cert_file.parent / f"{issued.serial_hex}.pem"
    ).read_bytes() == bundle.cert_file.read_bytes()
    assert fleet_pki.certificates() == [issued]


def test_a_broker_certificate_names_loopback_and_serves_only(fleet_pki: pki.FleetPki) -> None:
    fleet_pki.issue(pki.BROKER, "mqtt.example.net", broker_names=["10.1.2.3", "mqtt-internal"])
    certificate = x509.load_pem_x509_certificate(fleet_pki.bundle("mqtt.example.net").cert_file.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"mqtt.example.net", "localhost", "mqtt-internal"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_a_revoked_certificate_appears_in_the_next_crl_with_its_reason(fleet_pki: pki.FleetPki) -> None:
    first_number = fleet_pki.crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    kept = fleet_pki.issue(pki.PARTNER, "acme")
    revoked = fleet_pki.issue(pki.SERVICE, "ingest")
    assert fleet_pki.revoke(revoked.serial, "keyCompromise").status() == "revoked"
    crl = fleet_pki.crl()
    ca_key = fleet_pki.ca_certificate.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(ca_key)
    entry = crl.get_revoked_certificate_by_serial_number(revoked.serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(kept.serial) is None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > first_number
    assert [record.status() for record in fleet_pki.certificates()] == ["valid", "revoked"]


def test_rotation_issues_a_new_certificate_then_revokes_the_old_one(fleet_pki: pki.FleetPki) -> None:
    old = fleet_pki.issue(pki.VEHICLE, N1)
    new = fleet_pki.issue(pki.VEHICLE, N1)
    assert new.serial != old.serial
    fleet_pki.revoke(old.serial, "superseded")
    assert (
        fleet_pki.bundle(N1).cert_file.read_bytes()
        == (fleet_pki.identity_dir(N1) / f"{new.serial_hex}.pem").read_bytes()
    )
    assert [record.status() for record in fleet_pki.certificates()] == ["revoked", "valid"]


def test_a_key_made_on_the_vehicle_never_reaches_the_ca(fleet_pki: pki.FleetPki, tmp_path: Path) -> None:
    fleet_pki.issue(pki.VEHICLE, N1)  # an earlier bundle made at the CA, with its key
    car = tmp_path / "car"
    pki.create_request(pki.VEHICLE, N1, car / "key.pem", car / "request.csr")
    assert _mode(car / "key.pem") == 0o600
    fleet_pki.issue_from_request((car / "request.csr").read_bytes(), pki.VEHICLE, identity=N1)
    bundle = fleet_pki.bundle(N1)
    assert bundle.key_file is None  # the old key went with the old certificate
    certificate = x509.load_pem_x509_certificate(bundle.cert_file.read_bytes())
    key = serialization.load_pem_private_key((car / "key.pem").read_bytes(), None)
    assert certificate.public_key() == key.public_key()
    assert not any(
        path.name.endswith(".key") or path.name == "key.pem"
        for path in fleet_pki.directory.rglob("*")
        if "ca" not in path.parts
    )
    with pytest.raises(pki.PkiError, match="exists"):
        pki.create_request(pki.VEHICLE, N1, car / "key.pem", car / "again.csr")


def test_an_encrypted_ca_key_needs_its_passphrase(tmp_path: Path) -> None:
    pki.FleetPki.init(tmp_path / "pki", passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / "pki" / "ca" / "ca.key").read_bytes()
    pki.FleetPki(tmp_path / "pki", passphrase=b"correct horse").issue(pki.PARTNER, "acme")
    with pytest.raises(pki.PkiError, match="encrypted"):
        pki.FleetPki(tmp_path / "pki").issue(pki.PARTNER, "bobco")
    with pytest.raises(pki.PkiError, match="wrong passphrase"):
        pki.FleetPki(tmp_path / "pki", passphrase=b"wrong").issue(pki.PARTNER, "bobco")


def _request(key: Any, common_names: list[str]) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name) for name in common_names])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def _tampered_request() -> bytes:
    text = _request(ec.generate_private_key(ec.SECP256R1()), [N1])
    der = bytearray(x509.load_pem_x509_csr(text).public_bytes(serialization.Encoding.DER))
    position = der.find(N1.encode())
    der[position : position + len(N2)] = N2.encode()  # another VIN under the original signature
    return x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)


REFUSED: list[tuple[str, Callable[[pki.FleetPki], object], str]] = [
    ("bad VIN", lambda p: p.issue(pki.VEHICLE, "RWTLS0N0RTH00000O"), "invalid VIN"),
    ("upper-case partner", lambda p: p.issue(pki.PARTNER, "Acme"), "invalid partner identity"),
    ("partner id that is a VIN", lambda p: p.issue(pki.PARTNER, N1), "starting with a letter"),
    ("unknown role", lambda p: p.issue("admin", "root"), "unknown role"),
    ("no days", lambda p: p.issue(pki.PARTNER, "acme", days=0), ">= 1"),
    ("outliving the CA", lambda p: p.issue(pki.PARTNER, "acme", days=99999), "outlive the CA"),
    (
        "names on a client",
        lambda p: p.issue(pki.SERVICE, "relay", broker_names=["x.test"]),
        "broker certificates only",
    ),
    (
        "bad broker name",
        lambda p: p.issue(pki.BROKER, "mqtt.test", broker_names=["not a host"]),
        "neither an IP",
    ),
    (
        "not a request",
        lambda p: p.issue_from_request(b"hello", pki.VEHICLE),
        "not a PEM certificate signing request",
    ),
    (
        "RSA request",
        lambda p: p.issue_from_request(_request(rsa.generate_private_key(65537, 2048), [N1]), pki.VEHICLE),
        "not an ECDSA P-256",
    ),
    (
        "two names",
        lambda p: p.issue_from_request(
            _request(ec.generate_private_key(ec.SECP256R1()), [N1, N2]), pki.VEHICLE
        ),
        "exactly one",
    ),
    ("tampered request", lambda p: p.issue_from_request(_tampered_request(), pki.VEHICLE), "does not verify"),
    (
        "other identity",
        lambda p: p.issue_from_request(
            _request(ec.generate_private_key(ec.SECP256R1()), [N1]), pki.VEHICLE, identity=N2
        ),
        "not 'RWTLS0N0RTH000002'",
    ),
    ("unknown serial", lambda p: p.revoke(12345), "no certificate with serial 3039"),
    ("unknown reason", lambda p: p.revoke(1, "because"), "not one of"),
    ("nobody to revoke", lambda p: p.revoke_identity("acme"), "no valid certificate of 'acme'"),
    ("second CA", lambda p: pki.FleetPki.init(p.directory), "already holds a CA"),
    ("CRL for no days", lambda p: p.write_crl(0), ">= 1"),
]


@pytest.mark.parametrize(
    ("action", "message"), [(a, m) for _, a, m in REFUSED], ids=[c for c, _, _ in REFUSED]
)
def test_refused_pki_input(
    fleet_pki: pki.FleetPki, action: Callable[[pki.FleetPki], object], message: str
) -> None:
    with pytest.raises(pki.PkiError, match=message):
        action(fleet_pki)
    assert fleet_pki.certificates() == []


def test_an_identity_cannot_hold_two_roles_and_a_revocation_is_final(fleet_pki: pki.FleetPki) -> None:
    issued = fleet_pki.issue(pki.PARTNER, "acme")
    with pytest.raises(pki.PkiError, match="already holds a valid partner certificate"):
        fleet_pki.issue(pki.SERVICE, "acme")
    fleet_pki.revoke(issued.serial)
    with pytest.raises(pki.PkiError, match="already revoked"):
        fleet_pki.revoke(issued.serial)
    fleet_pki.issue(pki.SERVICE, "acme")  # once revoked, the name may serve another role


def test_name_constraints_keep_brokers_inside_the_permitted_names(tmp_path: Path) -> None:
    constrained = pki.FleetPki.init(
        tmp_path / "pki", permitted_names=["fleet.test", "localhost", "127.0.0.0/8"]
    )
    with pytest.raises(pki.PkiError, match="outside the CA's permitted names"):
        constrained.issue(pki.BROKER, "mqtt.example.com")
    with pytest.raises(pki.PkiError, match="::1 is outside"):
        constrained.issue(pki.BROKER, "mqtt.fleet.test", broker_names=["::1"])
    constrained.issue(pki.BROKER, "mqtt.fleet.test", broker_names=["127.0.0.2"])


def test_a_damaged_pki_directory_is_reported_with_what_to_do(fleet_pki: pki.FleetPki, tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="is not a fleet PKI .*`roadwave pki init --dir"):
        pki.FleetPki(tmp_path / "nowhere")
    fleet_pki.index_file.write_text("{not json", encoding="utf-8")
    with pytest.raises(pki.PkiError, match="damaged index"):
        fleet_pki.certificates()


# --- the registry and the ACL ---------------------------------------------------------------


def _registry(tmp_path: Path, text: str) -> FleetRegistry:
    (tmp_path / "fleet.toml").write_text(text, encoding="utf-8")
    return FleetRegistry.load(tmp_path / "fleet.toml")


VEHICLE_N1 = f'[[vehicle]]\nvin = "{N1}"\nfleet = "north"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VEHICLE_N1 * 2, f"VIN registered more than once: {N1}"),
        ('[[vehicle]]\nvin = "SHORT"\nfleet = "north"\n', r"\[\[vehicle\]\] #1: invalid VIN 'SHORT'"),
        (f'[[vehicle]]\nvin = "{N1}"\nfleet = "partners"\n', "reserved"),
        (f'[[vehicle]]\nvin = "{N1}"\nfleet = "north"\ncolour = "red"\n', "unknown key.*colour"),
        (VEHICLE_N1 + '[[partner]]\nid = "acme"\n', "serves nothing"),
        (VEHICLE_N1 + '[[partner]]\nid = "acme"\nfleets = ["south"]\n', "fleet 'south', without vehicles"),
        (VEHICLE_N1 + f'[[partner]]\nid = "acme"\nvins = ["{N2}"]\n', f"VIN {N2}, which is not registered"),
        (VEHICLE_N1 + '[[partner]]\nid = "acme"\nvins = [7]\n', "vins must be a list of strings"),
        (
            '[[service]]\nid = "ingest"\nrole = "archive"\n',
            "role 'archive' is not one of ingest, relay, alerts",
        ),
        (
            '[[service]]\nid = "acme"\nrole = "relay"\n'
            + VEHICLE_N1
            + '[[partner]]\nid = "acme"\nfleets = ["north"]\n',
            "partner or service id registered more than once: acme",
        ),
        ("[vehicle]\n", "vehicle must be list"),
    ],
)
def test_refused_registries_name_the_file_and_the_entry(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        _registry(tmp_path, text)
    assert str(tmp_path / "fleet.toml") in str(caught.value)


def test_registry_errors_are_registry_errors(tmp_path: Path) -> None:
    with pytest.raises(RegistryError):
        _registry(tmp_path, VEHICLE_N1 * 2)


def test_the_acl_gives_each_identity_only_its_own_topics(tmp_path: Path) -> None:
    registry = _registry(tmp_path, REGISTRY)
    grants = {identity: {g.line() for g in lines} for identity, lines in acl.grants(registry).items()}
    assert set(grants) == set(registry.roles())
    for vehicle in registry.vehicles:
        others = {other.vin for other in registry.vehicles} - {vehicle.vin}
        assert not [line for line in grants[vehicle.vin] if others & set(line.split("/"))]
    for partner in registry.partners:
        assert all(
            line.split()[2].startswith(f"roadwave/v1/partners/{partner.id}/") for line in grants[partner.id]
        )
    assert grants["bobco"] == {
        f"topic read roadwave/v1/partners/bobco/alerts/south/{S1}/#",
        "topic write roadwave/v1/partners/bobco/ack",
    }
    assert not any(line.startswith("topic write") for line in grants["ingest"])
    lines = acl.render_acl(registry).splitlines()
    first = {
        keyword: next(i for i, line in enumerate(lines) if line.startswith(keyword))
        for keyword in ("user", "topic")
    }
    assert first["user"] < first["topic"], "topic lines before any user line would apply to anonymous clients"
    assert not any(line.startswith("pattern") for line in lines)


# --- settings: TLS files and Mosquitto configuration values ---------------------------------


def test_mqtt_settings_read_tls_files_relative_to_the_config_file(
    fleet_pki: pki.FleetPki, tmp_path: Path
) -> None:
    fleet_pki.issue(pki.VEHICLE, N1)
    table = Table(
        {
            "ca_file": f"pki/issued/{N1}/ca.pem",
            "cert_file": f"pki/issued/{N1}/cert.pem",
            "key_file": f"pki/issued/{N1}/key.pem",
        },
        "edge.toml [mqtt]",
        tmp_path,
    )
    settings = MqttSettings.read(table)
    assert settings.tls and settings.port == 8883
    assert settings.cert_file == fleet_pki.bundle(N1).cert_file.resolve()


def test_unusable_tls_files_are_refused_when_the_settings_are_made(
    fleet_pki: pki.FleetPki, tmp_path: Path
) -> None:
    fleet_pki.issue(pki.VEHICLE, N1)
    fleet_pki.issue(pki.VEHICLE, N2)
    one, two = fleet_pki.bundle(N1), fleet_pki.bundle(N2)
    ca = fleet_pki.ca_file
    with pytest.raises(MqttTlsError, match="go together"):
        MqttSettings(ca_file=ca, cert_file=one.cert_file)
    with pytest.raises(MqttTlsError, match="needs ca_file"):
        MqttSettings(cert_file=one.cert_file, key_file=one.key_file)
    with pytest.raises(MqttTlsError, match="no such file"):
        MqttSettings(ca_file=tmp_path / "missing.pem")
    with pytest.raises(MqttTlsError, match="not a readable PEM"):
        MqttSettings(ca_file=one.key_file)
    with pytest.raises(MqttTlsError, match="does not belong"):
        MqttSettings(ca_file=ca, cert_file=one.cert_file, key_file=two.key_file)
    assert one.key_file is not None
    key = serialization.load_pem_private_key(one.key_file.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"x"),
        )
    )
    with pytest.raises(MqttTlsError, match="encrypted"):
        MqttSettings(ca_file=ca, cert_file=one.cert_file, key_file=encrypted)
    table = Table({"ca_file": "missing.pem"}, "ingest.toml [mqtt]", tmp_path)
    with pytest.raises(ConfigError, match=r"ingest.toml \[mqtt\]: ca_file .*missing.pem: no such file"):
        MqttSettings.read(table)


def test_a_path_that_would_break_the_mosquitto_configuration_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "x.pem"
    with pytest.raises(MosquittoConfigError, match="crl_file"):
        MosquittoTls(good, good, good, tmp_path / "crl.pem\nallow_anonymous true", good)
    with pytest.raises(MosquittoConfigError, match="min_version"):
        MosquittoTls(good, good, good, good, good, min_version="sslv3")
