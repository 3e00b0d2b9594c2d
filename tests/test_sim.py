"""Fleet simulator: IDM ring traffic, vehicle signals, CAN framing and outputs (roadwave.sim)."""

from __future__ import annotations

import argparse
import json
import math
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import cantools.database
import numpy as np
import pytest

from edge.integrity import crc8_sae_j1850, integrity_specs
from roadwave.cli import sim as sim_cli
from roadwave.sim import (
    DEFAULT_DBC,
    FleetSimulator,
    IDMParameters,
    Kinematics,
    RingParameters,
    RingSite,
    RingTraffic,
    SimConfig,
    SimFrame,
    VehicleModel,
    ground_truth_jsonl,
    make_vin,
    stream_to_buses,
    write_candump_logs,
)
from roadwave.sim.fleet import VIN_ALPHABET, vin_check_digit

START = 1_700_000_000.0
DURATION_S = 2.0

# --- traffic -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RingRun:
    """Summary of a 5-minute ring run."""

    min_gap: float
    min_speed: float
    final_speed_std: float
    final_min_speed: float
    clamped: int


def _run_ring(time_headway: float, seconds: float = 300.0, seed: int = 1) -> RingRun:
    traffic = RingTraffic(IDMParameters(time_headway=time_headway), RingParameters(), seed)
    min_gap = min_speed = math.inf
    for _ in range(round(seconds / traffic.ring.dt_s)):
        traffic.step()
        min_gap = min(min_gap, float(traffic.gaps.min()))
        min_speed = min(min_speed, float(traffic.speeds.min()))
    return RingRun(
        min_gap,
        min_speed,
        float(traffic.speeds.std()),
        float(traffic.speeds.min()),
        traffic.clamped_collisions,
    )


@pytest.fixture(scope="module")
def sugiyama_run() -> RingRun:
    return _run_ring(time_headway=1.0)


def test_traffic_deterministic_per_seed() -> None:
    def speeds(seed: int) -> np.ndarray:
        traffic = RingTraffic(seed=seed)
        for _ in range(500):
            traffic.step()
        return traffic.speeds.copy()

    assert np.array_equal(speeds(3), speeds(3))
    assert not np.array_equal(speeds(3), speeds(4))


def test_traffic_starts_evenly_spaced_at_equilibrium() -> None:
    traffic = RingTraffic()
    assert np.allclose(traffic.gaps, 230.0 / 22 - 5.0)
    assert np.ptp(traffic.speeds) == 0.0
    idm = traffic.idm
    v, gap = float(traffic.speeds[0]), float(traffic.gaps[0])
    accel = 1 - (v / idm.desired_speed) ** 4 - ((idm.min_gap + v * idm.time_headway) / gap) ** 2
    assert abs(accel) < 1e-9


def test_no_collisions_and_no_reversing_over_five_minutes(sugiyama_run: RingRun) -> None:
    assert sugiyama_run.min_gap > 0.0
    assert sugiyama_run.min_speed >= 0.0
    assert sugiyama_run.clamped == 0  # the IDM itself keeps its distance at a 10 ms step


def test_clamp_keeps_cars_apart_under_extreme_noise() -> None:
    ring = RingParameters(accel_noise=300.0, max_decel=0.5)
    traffic = RingTraffic(IDMParameters(), ring, seed=0)
    for _ in range(3000):
        traffic.step()
        assert traffic.gaps.min() >= 0.0
        assert traffic.speeds.min() >= 0.0
    assert traffic.clamped_collisions > 0


def test_sugiyama_ring_develops_stop_and_go(sugiyama_run: RingRun) -> None:
    # noise alone keeps the speed spread near 0.02 m/s; the wave makes it metres per second
    assert sugiyama_run.final_speed_std > 1.0
    assert sugiyama_run.final_min_speed < 0.5


def test_longer_headway_stays_smooth() -> None:
    run = _run_ring(time_headway=1.5)
    assert run.final_speed_std < 0.1
    assert run.min_speed > 2.0


def test_parameter_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"IDMParameters.max_accel must be a finite number > 0, got -1"):
        IDMParameters(max_accel=-1)
    with pytest.raises(ValueError, match=r"IDMParameters.time_headway must be .* >= 0, got nan"):
        IDMParameters(time_headway=math.nan)
    with pytest.raises(ValueError, match=r"RingParameters.cars must be an integer >= 2, got 1"):
        RingParameters(cars=1)
    with pytest.raises(ValueError, match=r"a ring of 100 m cannot hold 22 cars of 5 m"):
        RingTraffic(ring=RingParameters(circumference_m=100.0))


def test_sugiyama_scaling() -> None:
    ring = RingParameters.sugiyama(44)
    assert (ring.cars, ring.circumference_m) == (44, 460.0)


# --- vehicle signals -----------------------------------------------------------------------


def _model(seed: int = 0) -> VehicleModel:
    return VehicleModel(RingParameters().radius_m, np.random.default_rng(seed))


def _signals(model: VehicleModel, **changes: float) -> dict[str, Any]:
    """Signals of a car at 10 m/s, 20 m behind an equally fast leader, with ``changes``."""
    state = dict(
        time_s=10.0,
        position_m=0.0,
        travelled_m=100.0,
        speed=10.0,
        accel=0.0,
        gap=20.0,
        lead_speed=10.0,
    )
    return model.signals(Kinematics(**(state | changes)))


def test_vehicle_ring_dynamics() -> None:
    model = _model()
    radius = model.radius_m
    values = _signals(model)
    assert set(values) == VehicleModel.SIGNALS
    assert values["VehicleSpeed"] == pytest.approx(36.0)
    assert values["LateralAccel"] == pytest.approx(100.0 / radius)
    assert values["YawRate"] == pytest.approx(math.degrees(10.0 / radius))
    assert values["SteeringAngle"] == pytest.approx(15 * math.degrees(math.atan(2.7 / radius)))
    assert values["LeadRange"] == 20.0 and values["LeadValid"] == 1
    assert 0 < values["LeadAzimuth"] < 60
    assert values["GearSelected"] == "D"


def test_vehicle_position_and_heading_follow_the_ring() -> None:
    model, site = _model(), RingSite()
    quarter = 2 * math.pi * model.radius_m / 4
    east = _signals(model, position_m=0.0)
    north = _signals(model, position_m=quarter)
    assert east["Heading"] == pytest.approx(0.0)  # east of the centre, driving north
    assert north["Heading"] == pytest.approx(270.0)  # north of the centre, driving west
    for values in (east, north):
        d_north = (values["Latitude"] - site.centre_lat) * math.pi / 180 * 6_371_008.8
        d_east = (
            (values["Longitude"] - site.centre_lon)
            * math.pi
            / 180
            * 6_371_008.8
            * math.cos(math.radians(site.centre_lat))
        )
        assert math.hypot(d_north, d_east) == pytest.approx(model.radius_m, rel=1e-6)


def test_vehicle_pedals_gears_and_abs() -> None:
    standstill = _signals(_model(), speed=0.0, accel=0.0)
    assert standstill["GearCurrent"] == 1
    assert standstill["EngineSpeed"] == 750.0
    assert standstill["BrakePressure"] > 0 and standstill["AcceleratorPedal"] == 0

    accelerating = _signals(_model(), speed=5.0, accel=1.0)
    assert accelerating["AcceleratorPedal"] > 0 and accelerating["BrakePressure"] == 0

    braking = _signals(_model(), speed=20.0, accel=-3.0)
    assert braking["BrakePressure"] > 0 and braking["AcceleratorPedal"] == 0
    assert braking["ABSActive"] == 0
    assert braking["GearCurrent"] == 5  # 72 km/h

    emergency = _signals(_model(), speed=20.0, accel=-8.5)
    assert emergency["ABSActive"] == 1


def test_vehicle_slow_variables() -> None:
    model = _model(5)
    cold = _signals(model, time_s=0.0, travelled_m=0.0)
    warm = _signals(model, time_s=600.0, travelled_m=6000.0)
    assert cold["CoolantTemp"] == pytest.approx(18.0)
    assert 85.0 < warm["CoolantTemp"] <= 90.0
    assert warm["Odometer"] == pytest.approx(cold["Odometer"] + 6.0)
    assert warm["FuelLevel"] < cold["FuelLevel"]
    assert cold["Odometer"] != _signals(_model(6), time_s=0.0, travelled_m=0.0)["Odometer"]


# --- fleet framing -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database() -> cantools.database.can.Database:
    db = cantools.database.load_file(DEFAULT_DBC)
    assert isinstance(db, cantools.database.can.Database)
    return db


@pytest.fixture(scope="module")
def sim() -> FleetSimulator:
    return FleetSimulator(
        SimConfig(vehicles=2, duration_s=DURATION_S, seed=4, start_time=START, warmup_s=240.0)
    )


@pytest.fixture(scope="module")
def frames(sim: FleetSimulator) -> list[SimFrame]:
    return list(sim)


def _ms(timestamp: float) -> float:
    return (timestamp - START) * 1000.0


def test_frames_in_timestamp_order_on_whole_milliseconds(frames: list[SimFrame]) -> None:
    times = [f.timestamp for f in frames]
    assert times == sorted(times)
    for frame in frames:
        assert frame.message.timestamp == frame.timestamp
        assert abs(_ms(frame.timestamp) - round(_ms(frame.timestamp))) < 1e-3
        assert 0 <= _ms(frame.timestamp) < DURATION_S * 1000
    assert {f.message_name for f in frames if f.timestamp == START} != {f.message_name for f in frames}


def test_every_message_at_its_cycle_time(
    sim: FleetSimulator, frames: list[SimFrame], database: cantools.database.can.Database
) -> None:
    assert set(sim.message_names) == {m.name for m in database.messages}
    assert sim.frames_per_vehicle_second == 480.0
    times: dict[tuple[int, str], list[int]] = defaultdict(list)
    for frame in frames:
        times[frame.vehicle, frame.message_name].append(round(_ms(frame.timestamp)))
    assert len(times) == 2 * len(database.messages)
    for (_, name), stamps in times.items():
        cycle = sim.cycle_times_ms[name]
        assert cycle == database.get_message_by_name(name).cycle_time
        assert stamps[0] == sim.phase_offsets_ms[name] < cycle
        assert set(np.diff(stamps)) == {cycle}
        assert len(stamps) == DURATION_S * 1000 // cycle
    assert len(frames) == 2 * 480 * DURATION_S


def test_frames_decode_to_ground_truth(
    frames: list[SimFrame], database: cantools.database.can.Database
) -> None:
    for frame in frames:
        message = database.get_message_by_frame_id(frame.message.arbitration_id)
        assert message.name == frame.message_name
        decoded = message.decode(bytes(frame.message.data))
        assert isinstance(decoded, dict)
        assert set(decoded) == set(frame.values)
        for signal in message.signals:
            if signal.name not in decoded:
                continue  # the other page of a multiplexed message
            value, got = frame.values[signal.name], decoded[signal.name]
            if isinstance(value, str):
                assert str(got) == value
                continue
            assert got == pytest.approx(value, abs=signal.scale / 2)
            assert got == value  # values are pre-rounded to the resolution: exact ground truth
            assert signal.minimum is not None and signal.maximum is not None
            assert signal.minimum <= value <= signal.maximum


def test_counters_and_checksums(frames: list[SimFrame], database: cantools.database.can.Database) -> None:
    specs = integrity_specs(database)
    counters: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for frame in frames:
        spec = specs.get(frame.message_name)
        if spec is None:
            continue
        data = bytes(frame.message.data)
        assert spec.verify(data)
        assert data[0] == crc8_sae_j1850(data[1:]) == frame.values[spec.checksum_signal]
        counters[frame.vehicle, frame.message_name].append(frame.values[spec.counter_signal])
    assert len(counters) == 2 * len(specs)
    for sequence in counters.values():
        assert sequence == [i % 16 for i in range(len(sequence))]
        assert set(sequence) == set(range(16))


def test_fd_extended_and_multiplexed_frames(frames: list[SimFrame]) -> None:
    for frame in frames:
        msg = frame.message
        assert msg.channel == frame.bus == "can0"
        assert msg.dlc == len(msg.data)
        assert msg.is_fd == (frame.message_name == "RDR_LeadObject")
        assert msg.is_extended_id == (frame.message_name == "BDY_Status")
        if msg.is_fd:
            assert len(msg.data) == 32 and msg.bitrate_switch
        elif msg.is_extended_id:
            assert msg.arbitration_id == 0x18FF1017
        else:
            assert len(msg.data) == 8 and msg.arbitration_id < 0x800
    pages = [f.values["PWR_Mux"] for f in frames if f.message_name == "PWR_Energy" and f.vehicle == 0]
    assert pages == [i % 2 for i in range(len(pages))]


def test_simulation_is_repeatable(sim: FleetSimulator, frames: list[SimFrame]) -> None:
    again = list(FleetSimulator(sim.config))
    assert [(f.timestamp, f.vin, bytes(f.message.data)) for f in again] == [
        (f.timestamp, f.vin, bytes(f.message.data)) for f in frames
    ]
    other_seed = FleetSimulator(SimConfig(vehicles=2, duration_s=0.5, seed=5, start_time=START))
    assert other_seed.vins != sim.vins


def test_vins_are_valid_and_deterministic() -> None:
    vins = [make_vin(seed, index) for seed in (0, 1, 99) for index in range(50)]
    assert len(set(vins)) == len(vins)
    for vin in vins:
        assert len(vin) == 17 and set(vin) <= set(VIN_ALPHABET)
        assert not set(vin) & set("IOQ")
        assert vin[8] == vin_check_digit(vin)
    assert make_vin(7, 3) == make_vin(7, 3)
    assert vin_check_digit("1M8GDM9AXKP042788") == "X"  # the worked example of 49 CFR 565


def test_sim_config_ring_and_validation() -> None:
    assert SimConfig(vehicles=3).ring.cars == 22
    big = SimConfig(vehicles=30).ring
    assert big.cars == 30 and big.circumference_m == pytest.approx(230.0 * 30 / 22)
    assert SimConfig().start_time == int(SimConfig().start_time)
    with pytest.raises(ValueError, match=r"SimConfig.ring_cars must be an integer >= vehicles \(5\)"):
        SimConfig(vehicles=5, ring_cars=4)
    with pytest.raises(ValueError, match=r"SimConfig.vehicles must be an integer >= 1, got 0"):
        SimConfig(vehicles=0)
    with pytest.raises(ValueError, match=r"SimConfig.duration_s must be finite and > 0"):
        SimConfig(duration_s=math.inf)
    with pytest.raises(ValueError, match=r"SimConfig.bus must be a non-empty string"):
        SimConfig(bus=" ")


def test_more_vehicles_than_sugiyama_cars() -> None:
    sim = FleetSimulator(SimConfig(vehicles=25, duration_s=0.05, start_time=START))
    assert sim.ring.cars == 25 and len(set(sim.cars)) == 25
    assert {f.vehicle for f in sim} == set(range(25))


# --- outputs -------------------------------------------------------------------------------


def test_candump_log_round_trip(sim: FleetSimulator, frames: list[SimFrame], tmp_path: Path) -> None:
    paths = write_candump_logs(sim, tmp_path)
    assert set(paths) == set(sim.vins)
    text = paths[sim.vins[0]].read_text()
    assert " 200##1" in text and " 18FF1017#" in text
    for vin, path in paths.items():
        expected = [f.message for f in frames if f.vin == vin]
        read = list(can.LogReader(path))
        assert len(read) == len(expected)
        for got, want in zip(read, expected, strict=True):
            assert got.arbitration_id == want.arbitration_id
            assert got.data == want.data
            assert (got.is_fd, got.bitrate_switch, got.is_extended_id) == (
                want.is_fd,
                want.bitrate_switch,
                want.is_extended_id,
            )
            assert round(got.timestamp * 1e6) == round(want.timestamp * 1e6)


def test_ground_truth_jsonl(sim: FleetSimulator, frames: list[SimFrame], tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    assert ground_truth_jsonl(sim, path) == len(frames)
    lines = path.read_text().splitlines()
    assert len(lines) == len(frames)
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert first == {
        "t": frames[0].timestamp,
        "vin": frames[0].vin,
        "bus": "can0",
        "message": frames[0].message_name,
        "id": frames[0].message.arbitration_id,
        "data": frames[0].message.data.hex(),
        "values": frames[0].values,
    }
    assert last["values"] == frames[-1].values


def test_stream_to_virtual_buses(sim: FleetSimulator, frames: list[SimFrame]) -> None:
    channels = [f"roadwave-test-{uuid.uuid4().hex}-{i}" for i in range(2)]
    receivers = [can.Bus(interface="virtual", channel=channel) for channel in channels]
    try:
        sent = stream_to_buses(sim, "virtual", channels, preserve_timestamps=True)
        assert sent == len(frames)
        for vehicle, receiver in enumerate(receivers):
            expected = [f.message for f in frames if f.vehicle == vehicle]
            received = []
            while (msg := receiver.recv(timeout=0)) is not None:
                received.append(msg)
            assert len(received) == len(expected)
            for got, want in zip(received, expected, strict=True):
                assert (got.arbitration_id, got.data, got.timestamp, got.is_fd) == (
                    want.arbitration_id,
                    want.data,
                    want.timestamp,
                    want.is_fd,
                )
    finally:
        for receiver in receivers:
            receiver.shutdown()


def test_stream_needs_one_channel_per_vehicle(sim: FleetSimulator) -> None:
    with pytest.raises(ValueError, match=r"2 vehicle\(s\) need as many channels, got 1"):
        stream_to_buses(sim, "virtual", ["only-one"])


# --- command line --------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="roadwave")
    sim_cli.add_subparser(parser.add_subparsers(required=True))
    args = parser.parse_args(["sim", *argv])
    return int(args.func(args))


def test_cli_writes_logs_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--vehicles", "2", "--duration", "0.5", "--seed", "3", "--start-time", str(START)]
    argv += ["--log-dir", str(tmp_path / "logs"), "--truth", str(tmp_path / "truth.jsonl")]
    assert _cli(argv) == 0
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        f"{make_vin(3, i)}.log" for i in range(2)
    )
    assert len((tmp_path / "truth.jsonl").read_text().splitlines()) == 480
    summary = capsys.readouterr().err
    assert "2 vehicle(s), 480 frames, 0.5 simulated s" in summary


def test_cli_streams_to_channel_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    pattern = f"roadwave-cli-{uuid.uuid4().hex}-{{i}}"
    receiver = can.Bus(interface="virtual", channel=pattern.replace("{i}", "1"))
    try:
        argv = [
            "--vehicles",
            "2",
            "--duration",
            "0.1",
            "--interface",
            "virtual",
            "--channel",
            pattern,
        ]
        assert _cli([*argv, "--realtime", "10"]) == 0
        count = 0
        while receiver.recv(timeout=0) is not None:
            count += 1
        assert count == 48
    finally:
        receiver.shutdown()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--vehicles", "2", "--interface", "virtual", "--channel", "a"],
            "--channel given 1 time(s) for 2",
        ),
        (["--channel", "vcan0"], "--channel and --realtime need --interface"),
        (["--interface", "virtual"], "--interface needs --channel"),
        (["--dbc", "/nonexistent/car.dbc"], "DBC file not found: /nonexistent/car.dbc"),
        (["--ecus"], "--ecus needs --interface: the ECUs answer on the vehicles' buses"),
        (["--fault", "0:brakes"], "--fault and --drive-cycle need --ecus"),
        (["--drive-cycle", "30"], "--fault and --drive-cycle need --ecus"),
        (
            [
                "--vehicles",
                "2",
                "--interface",
                "virtual",
                "--channel",
                "c{i}",
                "--ecus",
                "--fault",
                "2:brakes",
            ],
            "--fault for vehicle 2: the vehicles are numbered 0 to 1",
        ),
    ],
)
def test_cli_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli(["--duration", "-1"])
    assert "argument --duration: must be a number > 0, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("misfire=2", "expected VEHICLE:KIND[=VALUE][@SECONDS] with a vehicle index, e.g. 0:misfire=2"),
        ("x:brakes", "expected VEHICLE:KIND[=VALUE][@SECONDS]"),
        ("0:misfire=12", "fault 'misfire=12': cylinder must be an integer 1-8, got 12"),
        (
            "0:wipers",
            "fault 'wipers': unknown kind 'wipers'; kinds: misfire=CYL, battery=DROP_V, overheat[=C], brakes",
        ),
    ],
)
def test_cli_rejects_bad_faults(fault: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli(["--interface", "virtual", "--channel", "c", "--ecus", "--fault", fault])
    assert f"argument --fault: {message}" in capsys.readouterr().err
