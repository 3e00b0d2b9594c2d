"""Diagnostics in the edge agent: OBD-II/UDS reports through the real Mosquitto, the
``[diagnostics]`` section, the decoder's ``diagnostic`` frames, and ``roadwave sim --ecus``.

The agent reads a python-can ``virtual`` bus on which :class:`SimulatedEcus` answer. Waits
are bounded by generous timeouts that only matter when something hangs; assertions are on
values and counts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import can
import pytest
from waiting import wait_for

from edge.agent import AgentReport, EdgeAgent
from edge.config import BusSettings, EdgeConfig, UplinkSettings
from edge.dbcload import load_dbc_files
from edge.decoder import FrameDecoder
from edge.diagnostics.agent import DiagnosticsSettings, contract_report
from edge.diagnostics.client import (
    DiagnosticClient,
    DiagnosticReport,
    DtcSource,
    EcuDtc,
    EcuPids,
    PollerConfig,
    Problem,
    ProblemKind,
    Reading,
)
from edge.diagnostics.dtc import DESCRIPTIONS, Dtc, DtcStatus
from roadwave import REFERENCE_DBC
from roadwave.cli import sim as sim_cli
from roadwave.configfile import ConfigError
from roadwave.contract import HEALTH_SUBSCRIPTION, AgentHealth, decode_health
from roadwave.contract.diagnostics import (
    DIAGNOSTICS_SUBSCRIPTION,
    DiagnosticsReport,
    PidReading,
    ReportedDtc,
    decode_diagnostics,
    diagnostics_topic,
    encode_diagnostics,
)
from roadwave.mqtt import MqttSettings, connect
from roadwave.services import Mosquitto
from roadwave.sim.ecu import BRAKES, ENGINE, EcuBehaviour, SimulatedEcus

FLEET = "diag"
VIN = "RWDEM0SM0SR000042"
#: Stands in for a MIL signal, which the reference DBC does not have: a boolean the
#: reference mapping publishes on change.
LAMP = "Vehicle.Body.Lights.Hazard.IsSignaling"
SAFETY_S = 20.0  # only reached when something hangs
DATABASE = load_dbc_files([REFERENCE_DBC]).database
ENGINE_RX, BRAKES_RX = f"{ENGINE.response_id:03X}", f"{BRAKES.response_id:03X}"


def _channel() -> str:
    return f"diag-{uuid.uuid4().hex}"


class Tap:
    """Every diagnostic report of the fleet, decoded with the contract."""

    def __init__(self, broker: Mosquitto) -> None:
        self.reports: queue.Queue[DiagnosticsReport] = queue.Queue()
        self.received: list[DiagnosticsReport] = []
        self.topics: set[str] = set()
        self.health: list[AgentHealth] = []
        self._client = connect(
            MqttSettings(host=broker.host, port=broker.port),
            f"diag-tap-{uuid.uuid4().hex[:6]}",
            subscriptions=[(DIAGNOSTICS_SUBSCRIPTION, 1), (HEALTH_SUBSCRIPTION, 1)],
            on_message=self._on_message,
        )

    def _on_message(self, _client: object, _userdata: object, message) -> None:
        if message.topic.endswith("/health"):
            self.health.append(decode_health(message.topic, message.payload))
            return
        fleet, vin, report = decode_diagnostics(message.topic, message.payload)
        if (fleet, vin) == (FLEET, VIN):
            self.topics.add(message.topic)
            self.received.append(report)
            self.reports.put(report)

    def next(self) -> DiagnosticsReport:
        return self.reports.get(timeout=SAFETY_S)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def tap(mosquitto: Mosquitto) -> Iterator[Tap]:
    tap = Tap(mosquitto)
    yield tap
    tap.close()


def agent_config(
    broker: Mosquitto, tmp_path: Path, channel: str, settings: DiagnosticsSettings
) -> EdgeConfig:
    return EdgeConfig(
        vin=VIN,
        fleet=FLEET,
        buses=(BusSettings(name="can0", dbc=(REFERENCE_DBC,), interface="virtual", channel=channel),),
        uplink=UplinkSettings(spool=tmp_path / "spool.sqlite"),
        mqtt=MqttSettings(host=broker.host, port=broker.port, client_id=f"agent-{uuid.uuid4().hex[:6]}"),
        diagnostics=settings,
    )


@contextlib.contextmanager
def running(agent: EdgeAgent) -> Iterator[list[AgentReport]]:
    """The agent in a thread; its report in the yielded list once the block ends."""
    stop = threading.Event()
    reports: list[AgentReport] = []
    worker = threading.Thread(target=lambda: reports.append(agent.run(stop)))
    worker.start()
    try:
        assert agent.ready.wait(SAFETY_S)
        yield reports
    finally:
        stop.set()
        worker.join(60)
    assert len(reports) == 1


def lamp_frame(on: bool) -> can.Message:
    message = DATABASE.get_message_by_name("BDY_Status")
    data = message.encode({"Odometer": 12_345.6, "HazardLights": int(on)})
    return can.Message(arbitration_id=message.frame_id, is_extended_id=True, data=data)


def by_source(report: DiagnosticsReport) -> dict[tuple[str, str, str], tuple[str, ...]]:
    return {(d.ecu, d.code, d.source): d.status for d in report.dtcs}


@pytest.mark.integration
def test_agent_publishes_codes_and_reads_at_once_when_the_lamp_comes_on(
    mosquitto: Mosquitto, tap: Tap, tmp_path: Path
) -> None:
    channel = _channel()
    settings = DiagnosticsSettings(
        bus="can0", poller=PollerConfig(interval_s=3600.0), mil_signal=LAMP, response_timeout_s=0.5
    )
    with SimulatedEcus.open("virtual", channel) as ecus:
        ecus.state.inject_misfire(1)
        ecus.state.wear_brakes()
        dashboard = can.Bus(interface="virtual", channel=channel)
        agent = EdgeAgent(agent_config(mosquitto, tmp_path, channel, settings))
        decoded = agent.decoders["can0"].stats
        try:
            with running(agent) as reports:
                first = tap.next()
                ecus.state.next_drive_cycle()  # the misfire is still there: confirmed, MIL on
                dashboard.send(lamp_frame(True))
                second = tap.next()
                dashboard.send(lamp_frame(True))  # still on: no further cycle
                wait_for(lambda: decoded.frames_decoded == 2, "the second lamp frame to be decoded")
        finally:
            dashboard.shutdown()

    assert tap.topics == {diagnostics_topic(FLEET, VIN)}
    assert (first.trigger, first.mil_on, first.dtcs_complete, first.problems) == ("start", False, True, {})
    codes = by_source(first)
    assert codes[(ENGINE_RX, "P0301", DtcSource.PENDING.value)] == ("pending",)
    assert (ENGINE_RX, "P0301", DtcSource.STORED.value) not in codes
    uds = codes[(ENGINE_RX, "P0301", DtcSource.UDS.value)]
    assert "pending" in uds and "confirmed" not in uds
    brake = codes[(BRAKES_RX, "C0288", DtcSource.UDS.value)]  # chassis code: UDS only
    assert "test_failed" in brake
    assert {(r.ecu, r.name) for r in first.readings} >= {
        (ENGINE_RX, "coolant_temperature"),
        (ENGINE_RX, "control_module_voltage"),
        (BRAKES_RX, "vehicle_speed"),
    }

    assert (second.trigger, second.mil_on, second.dtcs_complete) == ("mil", True, True)
    codes = by_source(second)
    assert codes[(ENGINE_RX, "P0301", DtcSource.STORED.value)] == ("confirmed",)
    uds = codes[(ENGINE_RX, "P0301", DtcSource.UDS.value)]
    assert {"confirmed", "warning_indicator_requested"} <= set(uds)
    assert tap.reports.empty()

    (run,) = reports
    assert run.delivered and run.uplink["diagnostics_sent"] == 2
    assert run.diagnostics == {
        "cycles": 2,
        "mil_triggers": 1,
        "cycle_errors": 0,
        "publish_errors": 0,
        "reports_sent": 2,
    }
    bus = run.buses["can0"]
    assert bus["frames_diagnostic"] > 0 and bus["frames_unknown"] == 0  # the ECUs' answers
    assert bus["frames_decoded"] == 2  # the two lamp frames
    wait_for(lambda: tap.health, "the agent's last health report")
    assert tap.health[-1].diagnostics == run.diagnostics  # published with the other counters


@pytest.mark.integration
def test_silent_ecus_make_incomplete_reports_and_the_agent_carries_on(
    mosquitto: Mosquitto, tap: Tap, tmp_path: Path
) -> None:
    channel = _channel()
    settings = DiagnosticsSettings(bus="can0", poller=PollerConfig(interval_s=1.0), response_timeout_s=0.2)
    with SimulatedEcus.open("virtual", channel) as ecus:
        for ecu in (ENGINE, BRAKES):
            ecus.set_behaviour(ecu.name, EcuBehaviour(silent=True))
        with running(EdgeAgent(agent_config(mosquitto, tmp_path, channel, settings))) as reports:
            silent = [tap.next(), tap.next()]
            for ecu in (ENGINE, BRAKES):
                ecus.set_behaviour(ecu.name, EcuBehaviour())
            while (answered := tap.next()).problems:  # a cycle under way may still miss answers
                pass

    assert silent[0].problems == {"timeout": 3}  # no OBD ECU, no answer from UDS 0x7E0 and 0x7E1
    for report in silent:
        assert report.dtcs_complete is False and report.mil_on is None and report.readings == ()
        assert report.problems["timeout"] >= 2
    assert answered.dtcs_complete is True and answered.mil_on is False and answered.readings != ()
    (run,) = reports
    counters = run.diagnostics
    assert counters is not None and run.delivered
    wait_for(lambda: len(tap.received) == counters["reports_sent"], "every report at the subscriber")
    assert counters["cycles"] == counters["reports_sent"] == run.uplink["diagnostics_sent"]
    assert counters["problems_timeout"] == sum(r.problems.get("timeout", 0) for r in tap.received)
    assert counters["cycle_errors"] == 0


def test_wire_report_counts_problems_and_tells_whether_the_codes_are_complete() -> None:
    misfire = EcuDtc(0x7E8, Dtc("P0301"), DtcStatus.PENDING | DtcStatus.TEST_FAILED, DtcSource.UDS)
    report = DiagnosticReport(
        t_ns=1_763_700_000_000_000_000,
        trigger="periodic",
        ecus=(EcuPids(0x7E8, frozenset({0x05})),),
        readings=(Reading(0x7E8, 0x05, "coolant_temperature", 92.0, "celsius"),),
        monitors=(),
        dtcs=(misfire,),
        problems=(
            Problem(0x7E9, 0x19, ProblemKind.NEGATIVE_RESPONSE, "0x11 serviceNotSupported"),
            Problem(0x7E9, 0x01, ProblemKind.TIMEOUT, "no answer"),
        ),
    )
    wire = contract_report(report)
    assert wire == DiagnosticsReport(
        t_ns=report.t_ns,
        trigger="periodic",
        mil_on=None,
        dtcs_complete=True,  # a refusal is an answer; a missing value is no missing code
        readings=(PidReading("7E8", 0x05, "coolant_temperature", 92.0, "celsius"),),
        dtcs=(
            ReportedDtc(
                "7E8", "P0301", ("test_failed", "pending"), "uds_0x19_02", None, DESCRIPTIONS["P0301"]
            ),
        ),
        problems={"negative_response": 1, "timeout": 1},
    )
    assert decode_diagnostics(diagnostics_topic(FLEET, VIN), encode_diagnostics(FLEET, VIN, wire))[2] == wire
    for service in (0x03, 0x07, 0x19):
        for kind in (ProblemKind.TIMEOUT, ProblemKind.MALFORMED, ProblemKind.SEND_FAILED):
            broken = dataclasses.replace(report, problems=(Problem(None, service, kind, ""),))
            assert contract_report(broken).dtcs_complete is False
    never_found = dataclasses.replace(report, ecus=(), problems=())
    assert contract_report(never_found).dtcs_complete is False
    assert contract_report(never_found, obd_dtcs=False).dtcs_complete is True


# --- configuration -------------------------------------------------------------------------


def write_config(tmp_path: Path, diagnostics: str, bus: str = 'interface = "virtual"\nchannel = "x"') -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(
        f"""
[vehicle]
vin = "{VIN}"
fleet = "{FLEET}"

[[bus]]
name = "can0"
dbc = ["{REFERENCE_DBC}"]
{bus}

{diagnostics}
""",
        encoding="utf-8",
    )
    return path


def test_diagnostics_are_off_without_the_section_and_on_with_defaults_when_present(tmp_path: Path) -> None:
    assert EdgeConfig.load(write_config(tmp_path, "")).diagnostics is None
    settings = EdgeConfig.load(write_config(tmp_path, "[diagnostics]")).diagnostics
    assert settings == DiagnosticsSettings(bus="can0")
    assert settings.poller.uds_targets == (0x7E0, 0x7E1) and settings.poller.interval_s == 60.0
    assert settings.mil_signal is None
    text = '[diagnostics]\nbus = "can0"\ninterval_s = 5\npids = [5, "0x0C", "0d"]\nuds_targets = ["7E1"]\n'
    text += f'obd_dtcs = false\nmil_signal = "{LAMP}"\nresponse_timeout_s = 0.25\n'
    settings = EdgeConfig.load(write_config(tmp_path, text)).diagnostics
    assert settings == DiagnosticsSettings(
        bus="can0",
        poller=PollerConfig(interval_s=5.0, pids=(0x05, 0x0C, 0x0D), obd_dtcs=False, uds_targets=(0x7E1,)),
        mil_signal=LAMP,
        response_timeout_s=0.25,
    )
    replay = f'log = "{tmp_path / "drive.log"}"'
    (tmp_path / "drive.log").write_text("")
    off = "[diagnostics]\nenabled = false\nbus = 'can0'\n"
    assert EdgeConfig.load(write_config(tmp_path, off, bus=replay)).diagnostics is None


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('bus = "can9"', "bus 'can9' is not a configured [[bus]]; live buses: can0"),
        ("pids = [0x99]", "pids: 0x99 not among the PIDs roadwave decodes (0x04, 0x05"),
        ('pids = ["zz"]', "pids[0]: 'zz' is neither an integer nor a hex string"),
        ("pids = [true]", "pids[0]: True is neither an integer nor a hex string"),
        ("pids = [5, 5]", "pids: 0x05 given more than once"),
        ("uds_targets = [0x7DF]", "uds_targets: 0x7DF not among the physical request IDs 0x7E0-0x7E7"),
        ("interval_s = 0", "interval_s must be >= 1.0, got 0"),
        ("interval_s = 1e6", "interval_s must be a number of seconds in (0, 86400], got 1000000.0"),
        ('interval_s = "60"', "interval_s must be int or float, got '60'"),
        ('mil_signal = "Vehicle.Speed"', "mil_signal 'Vehicle.Speed' is a float signal"),
        ('mil_signal = "Vehicle.OBD.IsMILOn"', "'Vehicle.OBD.IsMILOn' is not in the roadwave VSS catalog"),
        ("response_timeout_s = 30", "response_timeout_s must be <= 10.0"),
        ("poll = 1", "unknown key(s) poll"),
    ],
)
def test_invalid_diagnostics_sections(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError, match="edge.toml \\[diagnostics\\]") as error:
        EdgeConfig.load(write_config(tmp_path, f"[diagnostics]\n{section}\n"))
    assert message in str(error.value)


def test_diagnostics_need_a_live_bus(tmp_path: Path) -> None:
    (tmp_path / "drive.log").write_text("")
    replay = f'log = "{tmp_path / "drive.log"}"'
    with pytest.raises(ConfigError) as error:
        EdgeConfig.load(write_config(tmp_path, '[diagnostics]\nbus = "can0"', bus=replay))
    assert "bus 'can0' replays a log, which cannot answer diagnostic requests" in str(error.value)
    with pytest.raises(ConfigError) as error:
        EdgeConfig.load(write_config(tmp_path, "[diagnostics]", bus=replay))
    assert "bus is required: name the live [[bus]] the ECUs answer on (none is configured)" in str(
        error.value
    )


def test_agent_refuses_diagnostics_its_buses_cannot_serve(tmp_path: Path) -> None:
    mapping = tmp_path / "speed.vss.yaml"
    mapping.write_text(
        "Vehicle.Speed:\n  datatype: float\n  unit: km/h\n  dbc2vss:\n    signal: VehicleSpeed\n"
        "    interval_ms: 100\n"
    )
    bus = BusSettings(name="can0", dbc=(REFERENCE_DBC,), mapping=mapping, interface="virtual", channel="x")
    config = EdgeConfig(
        vin=VIN, fleet=FLEET, buses=(bus,), uplink=UplinkSettings(spool=tmp_path / "spool.sqlite")
    )
    with pytest.raises(ValueError, match=f"mil_signal '{LAMP}': no \\[\\[bus\\]\\] mapping produces it"):
        EdgeAgent(EdgeConfig(**{**vars(config), "diagnostics": DiagnosticsSettings("can0", mil_signal=LAMP)}))
    with pytest.raises(ValueError, match="bus 'can1' is not a configured"):
        EdgeAgent(EdgeConfig(**{**vars(config), "diagnostics": DiagnosticsSettings("can1")}))


# --- decoder -------------------------------------------------------------------------------


def test_decoder_counts_diagnostic_ids_apart_from_unknown_ones() -> None:
    decoder = FrameDecoder.from_files("can0", [REFERENCE_DBC], None)
    diagnostic = [(0x7DF, False), (0x7E0, False), (0x7E8, False), (0x7EF, False)]
    diagnostic += [(0x18DAF110, True), (0x18DB33F1, True), (0x18DA10F1, True)]
    unknown = [(0x7DE, False), (0x7F0, False), (0x7E8, True), (0x18DC10F1, True)]
    records: list[object] = []
    for can_id, extended in diagnostic + unknown:
        frame = can.Message(arbitration_id=can_id, is_extended_id=extended, data=bytes(8), timestamp=1.8e9)
        decoder.decode(frame, records.append)
    assert records == []
    stats = decoder.stats
    assert (stats.frames_received, stats.frames_diagnostic, stats.frames_unknown) == (11, 7, 4)
    assert stats.unknown_ids == {0x7DE, 0x7F0, 0x7E8, 0x18DC10F1}
    assert decoder.stats.as_dict()["frames_diagnostic"] == 7


# --- roadwave sim --ecus --fault ------------------------------------------------------------


def run_sim(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="roadwave")
    sim_cli.add_subparser(parser.add_subparsers(required=True))
    args = parser.parse_args(["sim", *argv])
    return int(args.func(args))


class SpeedWatch(can.Listener):
    """The vehicle speed the simulated car last sent on its bus."""

    def __init__(self) -> None:
        self.message = DATABASE.get_message_by_name("ESP_Speed")
        self.kmh: float | None = None

    def on_message_received(self, msg: can.Message) -> None:
        if msg.arbitration_id == self.message.frame_id and not msg.is_extended_id:
            value = self.message.decode_simple(bytes(msg.data))["VehicleSpeed"]
            if isinstance(value, int | float):
                self.kmh = float(value)


def test_sim_with_ecus_and_faults_answers_a_diagnostic_client() -> None:
    channel = _channel()
    bus = can.Bus(interface="virtual", channel=channel)
    speed = SpeedWatch()
    notifier = can.Notifier(bus, [speed])
    client = DiagnosticClient(bus, notifier, p2_s=0.5)
    argv = ["--vehicles", "1", "--duration", "12", "--realtime", "2", "--interface", "virtual"]
    argv += ["--channel", channel, "--ecus", "--drive-cycle", "2"]
    argv += ["--fault", "0:misfire=2", "--fault", "0:overheat=125", "--fault", "0:brakes@3"]
    result: list[int] = []
    sim = threading.Thread(target=lambda: result.append(run_sim(argv)))
    sim.start()
    try:
        wait_for(lambda: len(client.read_supported_pids().items) == 2, "both simulated ECUs to answer")
        ecus = client.read_supported_pids().items
        pending = client.read_obd_dtcs(0x07, ecus)
        assert {(d.ecu, d.dtc.code) for d in pending.items} >= {(0x7E8, "P0302"), (0x7E8, "P0217")}

        def confirmed() -> set[str]:
            return {d.dtc.code for d in client.read_obd_dtcs(0x03, ecus).items}

        wait_for(lambda: confirmed() == {"P0217", "P0302"}, "a drive cycle to confirm the faults")
        wait_for(
            lambda: [d.dtc.code for d in client.read_uds_dtcs(BRAKES.request_id).items] == ["C0288"],
            "the brakes to wear out 3 simulated s after the start",
        )
        (coolant,) = client.read_pids([0x05], ecus).items
        assert coolant.value >= 125.0
        (monitor,) = [m for m in client.read_monitor_status(ecus).items if m.ecu == ENGINE.response_id]
        assert monitor.status.mil_on and monitor.status.dtc_count == 2
        sent = speed.kmh
        readings = [r for r in client.read_pids([0x0D], ecus).items if r.ecu == ENGINE.response_id]
        assert sent is not None and abs(readings[0].value - sent) <= 3.0  # live values follow the car
    finally:
        sim.join(60)
        client.close()
        notifier.stop()
        bus.shutdown()
    assert result == [0]
