"""The DBC-to-VSS overlay: the shipped mapping, unit conversions and precise errors."""

from __future__ import annotations

import math
from pathlib import Path

import cantools
import pytest

from edge.mapping import MappingError, SampleValueError, compile_math, load_mapping
from edge.units import canonical_unit, conversion
from roadwave.contract import VSS_CATALOG

REPO = Path(__file__).resolve().parents[1]
DBC = REPO / "dbc" / "roadwave_car.dbc"
MAPPING = REPO / "dbc" / "roadwave_car.vss.yaml"


@pytest.fixture(scope="module")
def db() -> cantools.database.can.Database:
    return cantools.database.load_file(DBC, strict=True)


@pytest.fixture(scope="module")
def mappings(db) -> dict:
    return {m.vss_path: m for m in load_mapping(MAPPING, db)}


def test_every_mapped_signal_exists_in_the_dbc(db, mappings) -> None:
    assert len(mappings) == 30
    for mapping in mappings.values():
        message = db.get_message_by_name(mapping.message)
        assert mapping.signal in {s.name for s in message.signals}
        assert VSS_CATALOG[mapping.vss_path].datatype == mapping.datatype


def test_every_non_integrity_signal_is_mapped(db, mappings) -> None:
    mapped = {(m.message, m.signal) for m in mappings.values()}
    integrity_suffixes = ("_Counter", "_Checksum", "_Mux")
    unmapped = [
        (message.name, signal.name)
        for message in db.messages
        for signal in message.signals
        if not signal.name.endswith(integrity_suffixes) and (message.name, signal.name) not in mapped
    ]
    assert unmapped == [("RDR_LeadObject", "LeadWidth")]


@pytest.mark.parametrize(
    ("path", "raw", "expected"),
    [
        ("Vehicle.TraveledDistance", 12345.6, 12_345_600),  # km -> m, uint32
        ("Vehicle.Chassis.Brake.Pressure", 2.5, 250.0),  # bar -> kPa
        ("Vehicle.Speed", 87.25, 87.25),  # same unit
        ("Vehicle.Powertrain.CombustionEngine.Speed", 812.25, 812),  # rounded to uint16
        ("Vehicle.Powertrain.CombustionEngine.ECT", -12.0, -12),
        ("Vehicle.Powertrain.Transmission.SelectedGear", 3, 127),  # "D"
        ("Vehicle.Powertrain.Transmission.SelectedGear", 0, 126),  # "P"
        ("Vehicle.Powertrain.Transmission.SelectedGear", 1, -1),  # "R"
        ("Vehicle.ADAS.ABS.IsEngaged", 1, True),
        ("Vehicle.ADAS.ABS.IsEngaged", 0, False),
    ],
)
def test_values_convert_to_vss_units_and_types(mappings, path: str, raw: float, expected) -> None:
    value = mappings[path].convert(raw)
    assert value == pytest.approx(expected)
    assert type(value) is type(expected)


def test_publishing_rules_come_from_the_overlay(mappings) -> None:
    assert mappings["Vehicle.Speed"].interval_ns == 100_000_000
    assert mappings["Vehicle.Body.Lights.Hazard.IsSignaling"].on_change
    assert mappings["Vehicle.LowVoltageBattery.CurrentVoltage"].interval_ns == 1_000_000_000


def test_out_of_range_integer_is_a_sample_error(mappings) -> None:
    with pytest.raises(SampleValueError, match="outside uint8"):
        mappings["Vehicle.Chassis.Brake.PedalPosition"].convert(300)


def test_unmapped_label_value_is_a_sample_error(mappings) -> None:
    with pytest.raises(SampleValueError, match="no mapping"):
        mappings["Vehicle.Powertrain.Transmission.SelectedGear"].convert(7)


def _overlay(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overlay.vss.yaml"
    path.write_text(text)
    return path


SPEED = "Vehicle.Speed:\n  datatype: float\n  unit: km/h\n  dbc2vss:\n    signal: VehicleSpeed\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Vehicle.Nope:\n  datatype: float\n  dbc2vss: {signal: VehicleSpeed}\n",
            "not in the roadwave VSS catalog",
        ),
        (SPEED.replace("float", "uint8"), "the catalog says 'float'"),
        (SPEED.replace("km/h", "m/s"), "the catalog says 'km/h'"),
        (SPEED.replace("VehicleSpeed", "NoSuchSignal"), "no signal 'NoSuchSignal'"),
        (SPEED + "    message: ENG_Status\n", "no signal 'VehicleSpeed'"),
        (SPEED + "    transform: {math: \"__import__('os')\"}\n", "names unknown '__import__'"),
        (SPEED + '    transform: {math: "x.real"}\n', "uses Attribute"),
        (SPEED + '    transform: {math: "x *"}\n', "is not an expression"),
        (SPEED + "    transform: {mapping: [{from: Z, to: 1}]}\n", "not a value label"),
        (SPEED + "    transform: {scale: 2}\n", "transform must be"),
        (SPEED + "    interval_ms: 10\n    on_change: true\n", "not both"),
        (SPEED + "    interval_ms: -1\n", "non-negative integer"),
        (SPEED + "    every: 1\n", "unknown dbc2vss key"),
        (SPEED + "  colour: red\n", "unknown key"),
        ("Vehicle.Speed: 3\n", "entry must be a mapping"),
        ("- a\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
        (
            "Vehicle.Chassis.Brake.Pressure:\n  datatype: float\n  unit: kPa\n"
            "  dbc2vss: {signal: BrakePressure}\n",
            "is a roadwave overlay leaf",
        ),
    ],
)
def test_bad_overlays_are_refused_with_the_reason(tmp_path, db, text: str, message: str) -> None:
    with pytest.raises(MappingError, match=message.replace("(", r"\(")) as info:
        load_mapping(_overlay(tmp_path, text), db)
    assert "overlay.vss.yaml" in str(info.value)


def test_unconvertible_units_need_a_transform(tmp_path, db) -> None:
    text = (
        "Vehicle.Exterior.AirTemperature:\n  datatype: float\n  unit: celsius\n"
        "  dbc2vss: {signal: LeadRange}\n"
    )
    with pytest.raises(MappingError, match="DBC unit 'm' of LeadRange does not convert"):
        load_mapping(_overlay(tmp_path, text), db)


def test_a_math_transform_replaces_the_unit_conversion(tmp_path, db) -> None:
    text = SPEED + '    transform: {math: "max(0, x - 40) / 2"}\n'
    (mapping,) = load_mapping(_overlay(tmp_path, text), db)
    assert mapping.convert(100.0) == 30.0
    assert mapping.convert(10.0) == 0.0


def test_compiled_math_supports_functions_and_powers() -> None:
    assert compile_math("sqrt(x) ** 2 + abs(-1)", "t")(9.0) == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("source", "target", "value", "expected"),
    [
        ("m/s", "km/h", 10.0, 36.0),
        ("kph", "km/h", 10.0, 10.0),
        ("degF", "celsius", 212.0, 100.0),
        ("rad/s", "degrees/s", math.pi, 180.0),
        ("%", "percent", 5.0, 5.0),
        ("", "m", 3.0, 3.0),
    ],
)
def test_unit_conversions(source: str, target: str, value: float, expected: float) -> None:
    factor, offset = conversion(source, target)
    assert value * factor + offset == pytest.approx(expected)


def test_unknown_unit_pairs_have_no_conversion() -> None:
    assert conversion("m", "celsius") is None
    assert canonical_unit(" deg ") == "degrees"
