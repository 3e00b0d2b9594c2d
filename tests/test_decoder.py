"""Frame decoding into VSS records, with every outcome counted."""

from __future__ import annotations

from pathlib import Path

import can
import cantools
import pytest

from edge.decoder import DbcLoadError, FrameDecoder, load_dbc

REPO = Path(__file__).resolve().parents[1]
DBC = REPO / "dbc" / "roadwave_car.dbc"
T0 = 1_763_700_000.0


@pytest.fixture(scope="module")
def db() -> cantools.database.can.Database:
    return cantools.database.load_file(DBC)


@pytest.fixture
def decoder() -> FrameDecoder:
    return FrameDecoder.from_files("can0", [DBC], None)


def frame(db, name: str, values: dict, t: float = T0) -> can.Message:
    message = db.get_message_by_name(name)
    return can.Message(
        arbitration_id=message.frame_id,
        is_extended_id=message.is_extended_frame,
        is_fd=message.is_fd,
        data=message.encode(values, strict=False),
        timestamp=t,
    )


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
    assert s.frames_received == s.frames_decoded + s.frames_unknown + s.frames_malformed + s.frames_ignored
    assert s.samples_decoded == s.samples_emitted + s.samples_throttled + s.samples_invalid
    assert s.samples_decoded == 90


def test_missing_or_broken_dbc_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DbcLoadError, match="DBC file not found"):
        load_dbc([tmp_path / "absent.dbc"])
    broken = tmp_path / "broken.dbc"
    broken.write_text('VERSION ""\nBO_ 100 M: 8 X\n SG_ S : 0|8@1+ (1,0) [0|1] "" Y\nBO_ oops\n')
    with pytest.raises(DbcLoadError, match="broken.dbc"):
        load_dbc([broken])
