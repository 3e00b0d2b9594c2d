"""The whole path as real processes: simulator -> edge agents -> Mosquitto -> ingest -> InfluxDB.

:class:`Pipeline` is what ``roadwave demo`` runs and what the end-to-end tests
drive. It writes every configuration file a deployment would have into its
working folder, runs ``roadwave edge`` (one process per vehicle, replaying the
vehicle's simulated CAN log) and ``roadwave cloud ingest`` as child processes,
and stops all of them when closed, also on Ctrl-C.

:meth:`Pipeline.with_own_broker` also runs the broker (:class:`FleetBroker`), by
default as a fleet deploys it: TLS only, client certificates of the fleet CA required,
the certificate's Common Name as the identity, the CRL honoured, no anonymous access and
the ACL generated from the fleet registry (docs/security.md). Every party then connects
with a certificate of its own and checks the broker's. A broker given by
:class:`Endpoints` without ``pki_dir`` is spoken to in plain MQTT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import selectors
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Self

from cloud.influx import InfluxClient, InfluxSettings
from cloud.schema import FLAGGED_MEASUREMENT, TELEMETRY_MEASUREMENT
from roadwave import pki
from roadwave.acl import COMMAND
from roadwave.contract import telemetry_topic, vehicle_topic
from roadwave.mqtt import MqttSettings, connect
from roadwave.registry import ALERTS, INGEST, FleetRegistry
from roadwave.services import Mosquitto, MosquittoTls, write_broker_files
from roadwave.sim.fleet import DEFAULT_DBC, CandumpLogSink, FleetSimulator, SimConfig, TruthJsonlSink, run

#: The identity of the pipeline's own broker: the loopback name its clients reach it by
#: (its certificate also names 127.0.0.1, see :data:`roadwave.pki.BROKER_LOCAL_NAMES`).
BROKER_NAME: Final = "localhost"
#: The service identities (certificate Common Names) of the pipeline's registry.
INGEST_SERVICE: Final = "ingest"
ALERTS_SERVICE: Final = "alerts"
_SERVICE_ROLES: Final = {INGEST_SERVICE: INGEST, ALERTS_SERVICE: ALERTS}


class PipelineError(RuntimeError):
    """A stage of the pipeline failed; the message says which and why."""


@dataclass(frozen=True)
class Endpoints:
    """Where the broker and the database are, and how a party proves to the broker who it is."""

    mqtt_host: str
    mqtt_port: int
    influx_url: str
    database: str = "roadwave"
    #: The fleet PKI of a TLS-only broker that requires client certificates; None: plain MQTT.
    pki_dir: Path | None = None

    @property
    def tls(self) -> bool:
        """Whether the broker is spoken to over TLS, with client certificates."""
        return self.pki_dir is not None

    def mqtt_settings(self, identity: str) -> MqttSettings:
        """How ``identity`` (a VIN or a service id) connects, with its own certificate under TLS."""
        files = self._tls_files(identity)
        return MqttSettings(
            host=self.mqtt_host,
            port=self.mqtt_port,
            ca_file=files.get("ca_file"),
            cert_file=files.get("cert_file"),
            key_file=files.get("key_file"),
        )

    def mqtt_table(self, identity: str) -> str:
        """The body of ``identity``'s ``[mqtt]`` table: host, port and, under TLS, its files."""
        lines = [f"host = {_quote(self.mqtt_host)}", f"port = {self.mqtt_port}"]
        lines += [f"{key} = {_quote(str(path))}" for key, path in self._tls_files(identity).items()]
        return "\n".join(lines) + "\n"

    def _tls_files(self, identity: str) -> dict[str, Path]:
        if self.pki_dir is None:
            return {}
        bundle = pki.FleetPki(self.pki_dir).bundle(identity)
        if bundle.key_file is None:
            raise pki.PkiError(f"{identity!r} was certified from a request: no key in {self.pki_dir}")
        return {
            "ca_file": bundle.ca_file.resolve(),
            "cert_file": bundle.cert_file.resolve(),
            "key_file": bundle.key_file.resolve(),
        }


@dataclass(frozen=True)
class SimulationResult:
    """What the simulator produced: one candump log per VIN, and the ground truth."""

    logs: dict[str, Path]
    truth: Path
    frames: int


def _quote(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string


def ingest_config_text(endpoints: Endpoints, share_group: str) -> str:
    """An ``ingest.toml`` for workers sharing ``share_group``; buffers and dead letters beside it.

    Under TLS the workers connect as :data:`INGEST_SERVICE`.
    """
    return (
        "[mqtt]\n"
        f"{endpoints.mqtt_table(INGEST_SERVICE)}\n"
        "[influx]\n"
        'api = "v1"\n'
        f"url = {_quote(endpoints.influx_url)}\n"
        f"database = {_quote(endpoints.database)}\n\n"
        "[ingest]\n"
        f"share_group = {_quote(share_group)}\n"
        'dead_letter_dir = "dead-letters"\n'
        'buffer_dir = "ingest-buffer"\n'
    )


class FleetBroker:
    """The pipeline's own Mosquitto on a free loopback port, kept in ``workdir/mosquitto``.

    With ``tls`` it runs a deployment's configuration, written by the code behind
    ``roadwave pki broker-config``: a fleet PKI in ``workdir/pki`` (the CA, the broker's
    certificate for :data:`BROKER_NAME`, one per service and one per registered vehicle),
    the fleet registry ``workdir/fleet.toml`` and the ACL made from it. A folder that
    already holds them is reused. Without ``tls`` the broker is plain MQTT with
    anonymous access (loopback only).
    """

    def __init__(self, workdir: Path, fleet: str, *, tls: bool = True) -> None:
        self.fleet = fleet
        self.pki_dir = workdir / "pki" if tls else None
        self.registry_file = workdir / "fleet.toml"
        self.vins: list[str] = []
        self.server = Mosquitto(workdir / "mosquitto")
        if tls:
            self.server.tls = self._deploy()

    def start(self) -> Self:
        """Start the broker and wait until it serves."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop the broker; idempotent."""
        self.server.stop()

    def endpoints(self, influx_url: str, database: str) -> Endpoints:
        """How to reach this broker (and the given database)."""
        return Endpoints(self.server.host, self.server.port, influx_url, database, self.pki_dir)

    def register(self, vins: Iterable[str]) -> None:
        """Issue certificates to these vehicles and grant them their topics (the running broker reloads)."""
        new = [vin for vin in dict.fromkeys(vins) if vin not in self.vins]
        if self.pki_dir is None or not new:
            return
        self.vins += new
        self.server.tls = self._deploy()
        if self.server.running:
            self.server.reload()

    def _deploy(self) -> MosquittoTls:
        """Certificates for whoever lacks a valid one, then the registry, the ACL and the broker's files."""
        assert self.pki_dir is not None
        ca = self.pki_dir / "ca"
        fleet_pki = pki.FleetPki(self.pki_dir) if ca.exists() else pki.FleetPki.init(self.pki_dir)
        parties = {
            BROKER_NAME: pki.BROKER,
            **dict.fromkeys(_SERVICE_ROLES, pki.SERVICE),
            **dict.fromkeys(self.vins, pki.VEHICLE),
        }
        valid = {record.identity for record in fleet_pki.certificates() if record.status() == "valid"}
        for identity, role in parties.items():
            if identity not in valid:
                fleet_pki.issue(role, identity)
        self.registry_file.write_text(self._registry_text(), encoding="utf-8")
        registry = FleetRegistry.load(self.registry_file)
        return write_broker_files(fleet_pki, registry, BROKER_NAME, self.server.workdir)

    def _registry_text(self) -> str:
        entries = [f"[[vehicle]]\nvin = {_quote(vin)}\nfleet = {_quote(self.fleet)}\n" for vin in self.vins]
        entries += [
            f"[[service]]\nid = {_quote(service)}\nrole = {_quote(role)}\n"
            for service, role in _SERVICE_ROLES.items()
        ]
        header = "# Who may use the broker (format: roadwave/registry.py); its ACL is made from this.\n"
        return header + "\n" + "\n".join(entries)


@dataclass(frozen=True)
class IsolationReport:
    """What one vehicle's certificate got when it reached for another vehicle's telemetry."""

    intruder: str
    victim: str
    #: Messages of the victim the intruder received through its subscription to the victim's topic.
    read: int
    #: Messages the intruder published under the victim's VIN that reached a reader of that topic.
    forged: int
    #: The victim's own message reached that reader: the check watched a path that works.
    control: bool

    @property
    def isolated(self) -> bool:
        """Nothing crossed, and the control message did."""
        return self.control and self.read == 0 and self.forged == 0


class _Inbox:
    """A client connected with one identity's settings, keeping the payloads it receives."""

    def __init__(self, settings: MqttSettings, client_id: str, filters: list[str], timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._received: queue.Queue[bytes] = queue.Queue()
        self.client = connect(
            settings,
            client_id,
            subscriptions=[(topic_filter, 1) for topic_filter in filters],
            on_message=lambda _client, _userdata, message: self._received.put(bytes(message.payload)),
            timeout_s=timeout_s,
        )

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement (also of a dropped message)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(self.timeout_s)
        if not info.is_published():
            raise PipelineError(f"the broker did not acknowledge a message to {topic}")

    def until(self, marker: bytes) -> list[bytes]:
        """Every payload received up to and including ``marker``."""
        received: list[bytes] = []
        deadline = time.monotonic() + self.timeout_s
        while marker not in received:
            try:
                received.append(self._received.get(timeout=max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                raise PipelineError(f"a permitted message never arrived; received {received}") from None
        return received

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Pipeline:
    """Runs the simulated fleet's traffic through the real services (a context manager)."""

    def __init__(
        self,
        workdir: Path,
        endpoints: Endpoints,
        *,
        fleet: str = "demo",
        dbc: Path = DEFAULT_DBC,
    ) -> None:
        self.workdir = workdir
        self.endpoints = endpoints
        self.fleet = fleet
        self.dbc = dbc
        #: Names the ingest workers' shared subscription and sessions, unique to this pipeline.
        self.group = f"ingest-{uuid.uuid4().hex[:8]}"
        self._ingests: dict[str, subprocess.Popen[str]] = {}
        self._worker_args: dict[str, list[str]] = {}
        self._agents: dict[str, subprocess.Popen[str]] = {}
        #: The broker this pipeline runs itself, if any (see :meth:`with_own_broker`).
        self.broker: FleetBroker | None = None
        self.influx = InfluxClient(InfluxSettings(url=endpoints.influx_url, database=endpoints.database))
        workdir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def with_own_broker(
        cls,
        workdir: Path,
        influx_url: str,
        database: str = "roadwave",
        *,
        tls: bool = True,
        fleet: str = "demo",
        dbc: Path = DEFAULT_DBC,
    ) -> Pipeline:
        """A pipeline that runs its own :class:`FleetBroker` (TLS unless ``tls`` is False).

        :meth:`simulate` registers the simulated vehicles with the broker; :meth:`close`
        stops it.
        """
        broker = FleetBroker(workdir, fleet, tls=tls).start()
        try:
            pipeline = cls(workdir, broker.endpoints(influx_url, database), fleet=fleet, dbc=dbc)
        except BaseException:
            broker.stop()
            raise
        pipeline.broker = broker
        return pipeline

    # --- stages -------------------------------------------------------------------

    def simulate(
        self,
        vehicles: int,
        duration_s: float,
        seed: int,
        *,
        warmup_s: float = 0.0,
        start_time: float | None = None,
    ) -> SimulationResult:
        """Simulate the fleet once, writing each vehicle's CAN log and the ground truth.

        New logs start a new drive: the agents' spools (and the resume points of
        earlier replays in them) are removed. The pipeline's own broker learns the VINs.
        """
        config = SimConfig(
            dbc=self.dbc,
            vehicles=vehicles,
            duration_s=duration_s,
            seed=seed,
            fleet=self.fleet,
            warmup_s=warmup_s,
        )
        if start_time is not None:
            config = dataclasses.replace(config, start_time=start_time)
        sim = FleetSimulator(config)
        if self.broker is not None:
            self.broker.register(sim.vins)
        shutil.rmtree(self.workdir / "spool", ignore_errors=True)
        truth = self.workdir / "ground-truth.jsonl"
        with CandumpLogSink(self.workdir / "logs", sim.vins) as logs, TruthJsonlSink(truth) as truths:
            stats = run(sim, [logs, truths])
        return SimulationResult(logs=dict(logs.paths), truth=truth, frames=stats.frames)

    def start_ingest(self, workers: int = 1, partitioned: bool = False, timeout_s: float = 30.0) -> list[str]:
        """Write ``ingest.toml`` and start ``workers`` ingest processes sharing the load.

        The workers share a subscription, or split the fleet by VIN if ``partitioned``.
        Returns the worker names; each worker is subscribed when this returns.
        """
        config = self.workdir / "ingest.toml"
        config.write_text(ingest_config_text(self.endpoints, self.group))
        self._worker_args = {}
        for index in range(workers):
            name = f"{self.group}-{index}"
            self._worker_args[name] = ["--partition", f"{index}/{workers}"] if partitioned else []
            self.start_ingest_worker(name, timeout_s)
        return list(self._worker_args)

    def start_ingest_worker(self, name: str, timeout_s: float = 30.0) -> None:
        """Start (or restart) one ingest worker and wait until it is subscribed."""
        config = self.workdir / "ingest.toml"
        args = ["cloud", "ingest", "--config", str(config), "--worker", name, *self._worker_args[name]]
        process = self._spawn(args, f"ingest-{name}")
        self._ingests[name] = process
        line = _read_json_line(process.stdout, timeout_s)
        if not line or line.get("event") != "ready":
            raise PipelineError(
                f"ingest worker {name} did not start; see {self.workdir / f'ingest-{name}.err'}"
            )

    def kill_ingest_worker(self, name: str) -> None:
        """SIGKILL one ingest worker (no chance to finish anything)."""
        _kill(self._ingests.pop(name))

    def edge_config(self, vin: str, log: Path, realtime: bool = False) -> Path:
        """Write the edge agent configuration of one vehicle replaying ``log``."""
        path = self.workdir / f"edge-{vin}.toml"
        path.write_text(
            "[vehicle]\n"
            f"vin = {_quote(vin)}\n"
            f"fleet = {_quote(self.fleet)}\n\n"
            "[mqtt]\n"
            f"{self.endpoints.mqtt_table(vin)}"
            "reconnect_min_s = 0.2\n"
            "reconnect_max_s = 2.0\n\n"
            "[batch]\n"
            "max_records = 1000\n"
            "max_age_s = 1.0\n\n"
            "[uplink]\n"
            "max_messages_per_s = 200.0\n\n"
            "[[bus]]\n"
            'name = "can0"\n'
            f"dbc = [{_quote(str(self.dbc))}]\n"
            f"log = {_quote(str(log))}\n"
            f"realtime = {'true' if realtime else 'false'}\n"
        )
        return path

    def start_agent(self, vin: str, log: Path, realtime: bool = False) -> None:
        """Start (or restart) the edge agent of one vehicle replaying ``log``."""
        config = self.edge_config(vin, log, realtime)
        self._agents[vin] = self._spawn(["edge", "--config", str(config)], f"edge-{vin}")

    def kill_agent(self, vin: str) -> None:
        """SIGKILL one edge agent."""
        _kill(self._agents.pop(vin))

    def wait_agents(self, timeout_s: float = 300.0) -> list[dict[str, Any]]:
        """Wait for every running agent to finish its log; return their reports."""
        reports = []
        deadline = time.monotonic() + timeout_s
        for vin, agent in list(self._agents.items()):
            try:
                out, _ = agent.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                raise PipelineError(f"edge agent {vin} did not finish in {timeout_s:.0f} s") from None
            if agent.returncode != 0 or not out.strip():
                raise PipelineError(
                    f"edge agent {vin} failed (exit {agent.returncode}); "
                    f"see {self.workdir / f'edge-{vin}.err'}"
                )
            reports.append(json.loads(out.strip().splitlines()[-1]))
            del self._agents[vin]
        return reports

    def run_agents(self, logs: dict[str, Path], timeout_s: float = 300.0) -> list[dict[str, Any]]:
        """Run one edge agent per vehicle to the end of its log; return their reports."""
        for vin, log in logs.items():
            self.start_agent(vin, log)
        return self.wait_agents(timeout_s)

    def stored_samples(self) -> int:
        """Number of field values stored, good and flagged."""
        measurements = f'"{TELEMETRY_MEASUREMENT}", "{FLAGGED_MEASUREMENT}"'
        rows = self.influx.query(f"SELECT COUNT(*) FROM {measurements}")
        return sum(v for row in rows for k, v in row.items() if k.startswith("count_") and v)

    def wait_stored(self, expected: int, timeout_s: float = 120.0) -> int:
        """Wait until InfluxDB holds ``expected`` samples; return what it holds."""
        deadline = time.monotonic() + timeout_s
        stored = self.stored_samples()
        while stored < expected and time.monotonic() < deadline:
            time.sleep(0.25)
            stored = self.stored_samples()
        return stored

    def stop_ingest(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop every ingest worker (SIGTERM) and return their counters, summed."""
        if not self._ingests:
            raise PipelineError("the ingest is not running")
        workers, self._ingests = self._ingests, {}
        for process in workers.values():
            process.terminate()
        totals: dict[str, Any] = {}
        for name, process in workers.items():
            try:
                out, _ = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                raise PipelineError(f"ingest worker {name} did not stop in time") from None
            lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            stopped = [line for line in lines if line.get("event") == "stopped"]
            if not stopped:
                log = self.workdir / f"ingest-{name}.err"
                raise PipelineError(f"ingest worker {name} ended without its report; see {log}")
            for key, value in stopped[-1]["stats"].items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def check_isolation(self, intruder: str, victim: str, timeout_s: float = 10.0) -> IsolationReport:
        """With ``intruder``'s certificate, read ``victim``'s telemetry and publish as ``victim``.

        A reader with the alerts service's certificate, which may read every vehicle's
        telemetry, watches both vehicles' topics; the victim publishes one message of its
        own as a control. Nothing is awaited *not* to arrive: after each attempt a marker
        that must arrive follows, and the broker delivers a subscriber's messages in the
        order it accepted them (each publish here is acknowledged before the next).
        """
        if not self.endpoints.tls:
            raise PipelineError("the isolation check needs a TLS broker: on plain MQTT anyone reads anything")
        tag = uuid.uuid4().hex[:8]
        genuine, forged, marker = (f"{word} {tag}".encode() for word in ("genuine", "forged", "marker"))
        victim_topic = telemetry_topic(self.fleet, victim)
        intruder_topic = telemetry_topic(self.fleet, intruder)
        command = vehicle_topic(self.fleet, intruder, COMMAND)
        with contextlib.ExitStack() as stack:

            def inbox(identity: str, *filters: str) -> _Inbox:
                settings = self.endpoints.mqtt_settings(identity)
                made = _Inbox(settings, f"isolation-{identity}-{tag}", list(filters), timeout_s)
                stack.callback(made.close)
                return made

            reader = inbox(ALERTS_SERVICE, victim_topic, intruder_topic)
            thief = inbox(intruder, victim_topic, command)
            inbox(victim).publish(victim_topic, genuine)
            thief.publish(victim_topic, forged)
            thief.publish(intruder_topic, marker)
            seen_by_reader = reader.until(marker)
            reader.publish(command, marker)  # the alerts service may command any vehicle
            seen_by_thief = thief.until(marker)
        return IsolationReport(
            intruder,
            victim,
            read=seen_by_thief.count(genuine),
            forged=seen_by_reader.count(forged),
            control=genuine in seen_by_reader,
        )

    # --- processes ----------------------------------------------------------------

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[str]:
        stderr = (self.workdir / f"{name}.err").open("a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "roadwave", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.workdir,
            env=env,
        )

    def close(self) -> None:
        """Stop every child process still running, and the broker of :meth:`with_own_broker`."""
        for process in [*self._agents.values(), *self._ingests.values()]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    _kill(process)
        self._agents, self._ingests = {}, {}
        if self.broker is not None:
            self.broker.stop()
        self.influx.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _kill(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _read_json_line(stream: IO[str] | None, timeout_s: float) -> dict[str, Any] | None:
    """Read the next JSON line of a child's stdout, or None at its end or after ``timeout_s``."""
    if stream is None:
        return None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                break
            line = stream.readline()
            if not line:
                return None
            if line.startswith("{"):
                return json.loads(line)
    return None
