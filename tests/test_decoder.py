"""Frame decoding into VSS records, with every outcome counted."""

from __future__ import annotations

from pathlib import Path

import can
import cantools
import pytest

from edge.dbcload import DbcLoadError, load_dbc_files
from edge.decoder import BusDecoder, FrameDecoder
from edge.integrity import IntegrityOverride, integrity_specs, resolve_integrity
from roadwave.contract import Record

REPO = Path(__file__).resolve().parents[1]
DBC = REPO / "dbc" / "roadwave_car.dbc"
T0 = 1_763_700_000.0


@pytest.fixture(scope="module")
def db() -> cantools.database.can.Database:
    return cantools.database.load_file(DBC)


class Collecting:
    """A FrameDecoder plus the records it emitted."""

    def __init__(self, **options) -> None:
        self.decoder = FrameDecoder.from_files("can0", [DBC], None, **options)
        self.stats = self.decoder.stats
        self.records: list[Record] = []

    def decode(self, msg: can.Message) -> Record | None:
        """Decode one frame; return the record of that frame (stale records stay in .records)."""
        before = len(self.records)
        self.decoder.decode(msg, self.records.append)
        own = [r for r in self.records[before:] if r.t_ns == round(msg.timestamp * 1e6) * 1000]
        return own[0] if own else None


@pytest.fixture
def decoder() -> Collecting:
    return Collecting()


def frame(db, name: str, values: dict, t: float = T0, *, corrupt: bool = False) -> can.Message:
    """A frame of message ``name``; protected messages get a correct checksum unless ``corrupt``."""
    message = db.get_message_by_name(name)
    data = bytearray(message.encode(values, strict=False))
    spec = integrity_specs(db).get(name)
    if spec is not None:
        data[spec.checksum_byte] = spec.checksum(bytes(data)) ^ (0x5A if corrupt else 0)
    return can.Message(
        arbitration_id=message.frame_id,
        is_extended_id=message.is_extended_frame,
        is_fd=message.is_fd,
        data=bytes(data),
        timestamp=t,
    )


def speed(db, i: int, t: float, value: float = 50.0, counter: int | None = None, **kw) -> can.Message:
    values = {
        "VehicleSpeed": value,
        "ESP_Speed_Counter": i % 16 if counter is None else counter,
        "ESP_Speed_Checksum": 0,
    }
    return frame(db, "ESP_Speed", values, t, **kw)


def test_standard_frame_becomes_a_record_with_frame_time(db, decoder) -> None:
    record = decoder.decode(
        frame(
            db,
            "ESP_Speed",
            {"VehicleSpeed": 87.65, "ESP_Speed_Counter": 1, "ESP_Speed_Checksum": 0},
            T0 + 0.123456,
        )
    )
    assert record is not None
    assert record.t_ns == 1_763_700_000_123_456_000
    assert record.bus == "can0"
    assert record.signals == {"Vehicle.Speed": pytest.approx(87.65)}


def test_extended_id_frame_decodes_with_unit_conversion(db, decoder) -> None:
    record = decoder.decode(frame(db, "BDY_Status", {"Odometer": 42_000.3, "HazardLights": 1}))
    assert record.signals == {
        "Vehicle.TraveledDistance": 42_000_300,
        "Vehicle.Body.Lights.Hazard.IsSignaling": True,
    }


def test_can_fd_frame_decodes(db, decoder) -> None:
    values = {"LeadValid": 1, "LeadRange": 42.5, "LeadRangeRate": -3.25, "LeadAzimuth": 1.5, "LeadWidth": 1.8,
              "RDR_LeadObject_Counter": 0, "RDR_LeadObject_Checksum": 0}  # fmt: skip
    msg = frame(db, "RDR_LeadObject", values)
    assert msg.is_fd and len(msg.data) == 32
    record = decoder.decode(msg)
    assert record.signals["Vehicle.ADAS.LeadVehicle.Distance"] == pytest.approx(42.5)
    assert record.signals["Vehicle.ADAS.LeadVehicle.RelativeSpeed"] == pytest.approx(-3.25)
    assert record.signals["Vehicle.ADAS.LeadVehicle.IsDetected"] is True


def test_multiplexed_pages_each_give_their_own_signals(db, decoder) -> None:
    page0 = decoder.decode(
        frame(db, "PWR_Energy", {"PWR_Mux": 0, "BatteryVoltage": 14.123, "CoolantTemp": 88})
    )
    page1 = decoder.decode(
        frame(db, "PWR_Energy", {"PWR_Mux": 1, "FuelLevel": 64, "AmbientTemp": 21.5}, T0 + 0.1)
    )
    assert page0.signals == {
        "Vehicle.LowVoltageBattery.CurrentVoltage": pytest.approx(14.123),
        "Vehicle.Powertrain.CombustionEngine.ECT": 88,
    }
    assert page1.signals == {
        "Vehicle.Powertrain.FuelSystem.RelativeLevel": 64,
        "Vehicle.Exterior.AirTemperature": pytest.approx(21.5),
    }


def test_big_endian_signed_gnss_position(db, decoder) -> None:
    record = decoder.decode(frame(db, "GNSS_Position", {"Latitude": -33.8688197, "Longitude": 151.2092955}))
    assert record.signals["Vehicle.CurrentLocation.Latitude"] == pytest.approx(-33.8688197, abs=1e-7)
    assert record.signals["Vehicle.CurrentLocation.Longitude"] == pytest.approx(151.2092955, abs=1e-7)


def test_unknown_malformed_and_error_frames_are_counted_not_published(db, decoder) -> None:
    good = frame(
        db, "ENG_Status", {"EngineSpeed": 900, "AcceleratorPedal": 0, "GearSelected": 3, "GearCurrent": 1}
    )
    unknown = can.Message(arbitration_id=0x7FF, is_extended_id=False, data=bytes(8), timestamp=T0)
    unknown_ext = can.Message(arbitration_id=0x0A0, is_extended_id=True, data=bytes(8), timestamp=T0)
    short = can.Message(arbitration_id=good.arbitration_id, is_extended_id=False, data=bytes(3), timestamp=T0)
    error = can.Message(is_error_frame=True, timestamp=T0)
    results = [decoder.decode(m) for m in (unknown, unknown_ext, short, error, good)]
    assert results[:4] == [None, None, None, None]
    assert results[4] is not None
    stats = decoder.stats
    assert (stats.frames_received, stats.frames_unknown, stats.frames_malformed, stats.frames_ignored,
            stats.frames_decoded) == (5, 2, 1, 1, 1)  # fmt: skip
    assert stats.unknown_ids == {0x7FF, 0x0A0}


def test_interval_throttles_by_frame_time(db, decoder) -> None:
    records = [
        decoder.decode(
            frame(
                db,
                "ESP_Speed",
                {"VehicleSpeed": 50 + i, "ESP_Speed_Counter": i % 16, "ESP_Speed_Checksum": 0},
                T0 + i * 0.01,
            )
        )
        for i in range(100)
    ]
    published = [r for r in records if r is not None]
    assert [r.t_ns for r in published] == [round((T0 + i * 0.01) * 1e6) * 1000 for i in range(0, 100, 10)]
    stats = decoder.stats
    assert (stats.samples_decoded, stats.samples_emitted, stats.samples_throttled) == (100, 10, 90)


def test_on_change_publishes_first_value_and_changes_only(db, decoder) -> None:
    hazards = [0, 0, 1, 1, 1, 0]
    values = [
        r.signals.get("Vehicle.Body.Lights.Hazard.IsSignaling")
        for i, h in enumerate(hazards)
        if (
            r := decoder.decode(frame(db, "BDY_Status", {"Odometer": 100.0, "HazardLights": h}, T0 + i * 0.1))
        )
    ]
    assert [v for v in values if v is not None] == [False, True, False]


def test_stats_reconcile(db, decoder) -> None:
    for i in range(30):
        values = {"ABSActive": i % 7 == 0, "BrakePedalPosition": i, "BrakePressure": i / 3}
        counters = {"BRK_Status_Counter": i % 16, "BRK_Status_Checksum": 0}
        decoder.decode(frame(db, "BRK_Status", values | counters, T0 + i * 0.02))
    decoder.decode(can.Message(arbitration_id=0x123, data=b"", timestamp=T0))
    s = decoder.stats
    assert s.frames_received == (
        s.frames_decoded
        + s.frames_unknown
        + s.frames_diagnostic
        + s.frames_integrity_failed
        + s.frames_malformed
        + s.frames_ignored
    )
    assert s.samples_decoded + s.samples_stale == s.samples_emitted + s.samples_throttled + s.samples_invalid
    assert s.samples_decoded == 90


def test_missing_or_broken_dbc_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DbcLoadError, match="absent.dbc"):
        load_dbc_files([tmp_path / "absent.dbc"])
    broken = tmp_path / "broken.dbc"
    broken.write_text('VERSION ""\nBO_ 100 M: 8 X\n SG_ S : 0|8@1+ (1,0) [0|1] "" Y\nBO_ oops\n')
    with pytest.raises(DbcLoadError, match="broken.dbc"):
        load_dbc_files([broken])


def test_checksum_failure_is_counted_and_flags_every_sample(db, decoder) -> None:
    decoder.decode(speed(db, 0, T0))
    record = decoder.decode(speed(db, 1, T0 + 0.2, value=80.0, corrupt=True))
    assert record.signals == {"Vehicle.Speed": pytest.approx(80.0)}
    assert record.quality == {"Vehicle.Speed": "integrity"}
    assert (decoder.stats.frames_decoded, decoder.stats.frames_integrity_failed) == (1, 1)
    assert decoder.stats.samples_flagged == 1


def test_repeated_counter_fails_single_jumps_are_tolerated_three_in_a_row_fail(db, decoder) -> None:
    counters = [0, 1, 1, 3, 4, 6, 8, 10, 11]
    records = [decoder.decode(speed(db, 0, T0 + i * 0.2, counter=c)) for i, c in enumerate(counters)]
    flags = [r.quality.get("Vehicle.Speed") for r in records]
    # 1->1 repeats; 1->3 jumps once (tolerated); 4->6, 6->8, 8->10 is the third jump in a row.
    assert flags == [None, None, "integrity", None, None, None, None, "integrity", None]
    assert decoder.stats.counter_jumps == 4
    assert decoder.stats.frames_integrity_failed == 2


def test_values_outside_the_dbc_range_are_flagged(db, decoder) -> None:
    values = {"LongitudinalAccel": 1.0, "LateralAccel": 25.0, "YawRate": 3.0, "ESP_Dynamics_Counter": 0,
              "ESP_Dynamics_Checksum": 0}  # fmt: skip
    record = decoder.decode(frame(db, "ESP_Dynamics", values))
    assert record.quality == {"Vehicle.Acceleration.Lateral": "range"}
    assert record.signals["Vehicle.Acceleration.Lateral"] == pytest.approx(25.0)
    assert decoder.stats.frames_decoded == 1


def test_timeout_emits_stale_last_values_once_and_the_next_value_at_once(db, decoder) -> None:
    for i in range(5):  # ESP_Speed every 10 ms: timeout 30 ms
        decoder.decode(speed(db, i, T0 + i * 0.01, value=60.0 + i))
    engine = {"EngineSpeed": 900, "AcceleratorPedal": 0, "GearSelected": 3, "GearCurrent": 1}
    decoder.decode(frame(db, "ENG_Status", engine, T0 + 0.5))
    decoder.decode(frame(db, "ENG_Status", engine, T0 + 0.6))
    stale = [r for r in decoder.records if r.quality.get("Vehicle.Speed") == "stale"]
    assert len(stale) == 1 and decoder.stats.timeouts >= 1
    (record,) = stale
    assert record.t_ns == round((T0 + 0.04) * 1e6) * 1000 + 30_000_000
    assert record.signals["Vehicle.Speed"] == pytest.approx(64.0)
    resumed = decoder.decode(speed(db, 5, T0 + 0.605, value=70.0))  # within 100 ms of the last sample
    assert resumed.signals == {"Vehicle.Speed": pytest.approx(70.0)} and resumed.quality == {}
    s = decoder.stats
    assert s.samples_decoded + s.samples_stale == s.samples_emitted + s.samples_throttled + s.samples_invalid


def test_a_cycle_time_missing_from_the_dbc_is_learned(tmp_path) -> None:
    dbc = tmp_path / "plain.dbc"
    dbc.write_text('VERSION ""\nBU_: A\nBO_ 256 Plain: 2 A\n SG_ Level : 0|8@1+ (1,0) [0|255] "" A\n')
    bus = BusDecoder("can0", load_dbc_files([dbc]).database)
    message = bus._states[(256, False)].message
    for i in range(9):  # eight 20 ms intervals
        bus.decode(
            can.Message(arbitration_id=256, is_extended_id=False, data=b"\x01\x00", timestamp=T0 + i * 0.02)
        )
    assert bus.expire(round((T0 + 0.16 + 0.05) * 1e9)) == []  # 50 ms < 3 x 20 ms
    assert bus.expire(round((T0 + 0.16 + 0.5) * 1e9)) == [
        (message, round((T0 + 0.16) * 1e6) * 1000 + 60_000_000)
    ]


def test_labels_are_kept_beside_the_raw_value(db) -> None:
    bus = BusDecoder("can0", db)
    engine = {"EngineSpeed": 900, "AcceleratorPedal": 0, "GearSelected": "R", "GearCurrent": -1}
    decoded = bus.decode(frame(db, "ENG_Status", engine))
    assert decoded.values["GearSelected"] == 1 and decoded.labels == {"GearSelected": "R"}


def test_integrity_overrides_switch_off_or_change_algorithms(db) -> None:
    off = resolve_integrity(db, [IntegrityOverride("ESP_Speed", "none")])
    assert "ESP_Speed" not in off and "BRK_Status" in off
    assert BusDecoder("can0", db, integrity=off).decode(speed(db, 0, T0, corrupt=True)).problem is None
    xor = resolve_integrity(
        db, [IntegrityOverride("ESP_Speed", "xor8", "ESP_Speed_Counter", "ESP_Speed_Checksum")]
    )
    assert xor["ESP_Speed"].algorithm == "xor8"
    assert BusDecoder("can0", db, integrity=xor).decode(speed(db, 0, T0)).problem == "checksum mismatch"
    with pytest.raises(ValueError, match="must be 8 bits on a byte boundary"):
        resolve_integrity(db, [IntegrityOverride("ENG_Status", "xor8", "GearCurrent", "EngineSpeed")])
    with pytest.raises(ValueError, match="no message 'Nope'"):
        resolve_integrity(db, [IntegrityOverride("Nope", "none")])


FEATURES_DBC = """VERSION ""
BU_: ECU
BO_ 1024 FloatFrame: 8 ECU
 SG_ Torque : 0|32@1- (1,0) [-1000|1000] "Nm" ECU
 SG_ Pressure : 39|32@0- (1,0) [0|5000] "kPa" ECU
BO_ 2365587456 BigFd: 64 ECU
 SG_ First : 0|16@1+ (0.1,0) [0|6553.5] "" ECU
 SG_ Last : 496|16@1- (1,0) [-32768|32767] "" ECU
BO_ 1280 Nested: 8 ECU
 SG_ Mode M : 0|8@1+ (1,0) [0|255] "" ECU
 SG_ Sub m1M : 8|8@1+ (1,0) [0|255] "" ECU
 SG_ Deep m3 : 16|16@1+ (0.5,0) [0|1000] "" ECU
 SG_ Flat m2 : 8|16@1- (1,0) [-500|500] "" ECU
BA_DEF_ BO_ "VFrameFormat" ENUM "StandardCAN","ExtendedCAN","reserved","reserved","reserved","reserved",
 "reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved",
 "StandardCAN_FD","ExtendedCAN_FD";
BA_ "VFrameFormat" BO_ 2365587456 15;
SIG_VALTYPE_ 1024 Torque : 1;
SIG_VALTYPE_ 1024 Pressure : 1;
SG_MUL_VAL_ 1280 Sub Mode 1-1;
SG_MUL_VAL_ 1280 Deep Sub 3-3;
SG_MUL_VAL_ 1280 Flat Mode 2-2;
"""


@pytest.fixture(scope="module")
def features_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("dbc") / "features.dbc"
    path.write_text(FEATURES_DBC)
    return load_dbc_files([path]).database


def test_float_big_endian_signals_decode(features_db) -> None:
    bus = BusDecoder("can0", features_db)
    message = features_db.get_message_by_name("FloatFrame")
    data = message.encode({"Torque": -123.25, "Pressure": 2500.5})
    decoded = bus.decode(can.Message(arbitration_id=1024, is_extended_id=False, data=data, timestamp=T0))
    assert decoded.values == {"Torque": -123.25, "Pressure": 2500.5}


def test_64_byte_fd_frame_with_extended_id_decodes_to_the_last_byte(features_db) -> None:
    bus = BusDecoder("can0", features_db)
    message = features_db.get_message_by_name("BigFd")
    assert message.is_fd and message.is_extended_frame and message.length == 64
    data = message.encode({"First": 12.3, "Last": -2})
    frame = can.Message(
        arbitration_id=message.frame_id, is_extended_id=True, is_fd=True, data=data, timestamp=T0
    )
    assert bus.decode(frame).values == {"First": pytest.approx(12.3), "Last": -2}


def test_extended_multiplexing_selects_nested_pages(features_db) -> None:
    bus = BusDecoder("can0", features_db)

    def decode(data: bytes) -> dict | None:
        decoded = bus.decode(can.Message(arbitration_id=1280, is_extended_id=False, data=data, timestamp=T0))
        return None if decoded is None else dict(decoded.values)

    assert decode(bytes([1, 3, 0x10, 0x00, 0, 0, 0, 0])) == {"Mode": 1, "Sub": 3, "Deep": 8.0}
    assert decode(bytes([2, 0xFE, 0xFF, 0, 0, 0, 0, 0])) == {"Mode": 2, "Flat": -2}
    # A page the DBC does not describe cannot be decoded: counted as malformed.
    assert decode(bytes([1, 4, 0x10, 0x00, 0, 0, 0, 0])) is None
    assert (bus.stats.frames_decoded, bus.stats.frames_malformed) == (2, 1)
