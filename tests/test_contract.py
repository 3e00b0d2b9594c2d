"""The wire contract: topics, payload encoding and validation."""

from __future__ import annotations

import json
import re
import zlib

import pytest

from roadwave.contract import (
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS,
    STATUS,
    TELEMETRY_SUBSCRIPTION,
    VSS_CATALOG,
    AgentStatus,
    PayloadError,
    Record,
    TelemetryBatch,
    TopicError,
    decode_status,
    decode_telemetry,
    encode_status,
    encode_telemetry,
    parse_topic,
    shared_subscription,
    telemetry_topic,
    vehicle_topic,
)
from roadwave.contract.diagnostics import (
    MAX_DIAGNOSTICS_BYTES,
    DiagnosticsReport,
    PidReading,
    ReportedDtc,
    decode_diagnostics,
    diagnostics_topic,
    encode_diagnostics,
)

VIN = "RWDEM000000000001"
FLEET = "demo"
TOPIC = telemetry_topic("demo", VIN)
T0 = 1_763_700_000_120_000_000


def batch(**signals: object) -> TelemetryBatch:
    values = signals or {"Vehicle.Speed": 52.31, "Vehicle.ADAS.ABS.IsEngaged": False}
    return TelemetryBatch(VIN, "demo", 7, [Record(T0, "can0", dict(values))])


def payload(document: dict) -> bytes:
    return json.dumps(document).encode()


def good_document() -> dict:
    return json.loads(encode_telemetry(batch()))


def test_topic_layout_round_trips() -> None:
    assert f"roadwave/v1/demo/{VIN}/telemetry" == TOPIC
    address = parse_topic(TOPIC)
    assert (address.fleet, address.vin, address.kind) == ("demo", VIN, "telemetry")
    assert TELEMETRY_SUBSCRIPTION == "roadwave/v1/+/+/telemetry"


@pytest.mark.parametrize(
    "topic",
    ["roadwave/v2/demo/RWDEM000000000001/telemetry", "roadwave/v1/demo/telemetry",
     "roadwave/v1/demo/RWDEM00000000000I/telemetry", "roadwave/v1/de mo/RWDEM000000000001/telemetry"],
)  # fmt: skip
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


def test_encode_decode_round_trip_keeps_types_and_values() -> None:
    original = TelemetryBatch(
        VIN,
        "demo",
        3,
        [
            Record(T0, "can0", {"Vehicle.Speed": 12.5, "Vehicle.Powertrain.Transmission.CurrentGear": 3}),
            Record(T0 + 10_000_000, "chassis", {"Vehicle.Body.Lights.Hazard.IsSignaling": True}),
        ],
    )
    decoded = decode_telemetry(TOPIC, encode_telemetry(original))
    assert decoded == original
    assert decoded.sample_count == 3
    gear = decoded.records[0].signals["Vehicle.Powertrain.Transmission.CurrentGear"]
    assert type(gear) is int


def test_quality_round_trips_and_is_omitted_when_all_good() -> None:
    flagged = Record(
        T0, "can0", {"Vehicle.Speed": 400.0, "Vehicle.ADAS.ABS.IsEngaged": True}, {"Vehicle.Speed": "range"}
    )
    good = Record(T0 + 1, "can0", {"Vehicle.Speed": 40.0})
    payload = encode_telemetry(TelemetryBatch(VIN, "demo", 0, [flagged, good]))
    assert [("q" in r) for r in json.loads(payload)["records"]] == [True, False]
    assert decode_telemetry(TOPIC, payload).records == [flagged, good]


def test_version_1_payloads_are_still_accepted_and_their_q_ignored() -> None:
    document = good_document()
    document["v"] = 1
    document["records"][0]["q"] = {"Vehicle.Speed": "whatever"}
    (record,) = decode_telemetry(TOPIC, payload(document)).records
    assert record.quality == {}


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    document = good_document()
    document["future"] = {"x": 1}
    document["records"][0]["q"] = {}
    assert decode_telemetry(TOPIC, payload(document)).sample_count == 2


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(v=3), "unsupported telemetry schema version 3"),
        (lambda d: d["records"][0].update(q=[]), "'q' must be dict"),
        (lambda d: d["records"][0].update(q={"Vehicle.Speed": "bad"}), "quality 'bad' of Vehicle.Speed"),
        (lambda d: d["records"][0].update(q={"Vehicle.TraveledDistance": "stale"}), "which has no sample"),
        (lambda d: d.pop("vin"), "missing 'vin'"),
        (lambda d: d.update(vin="RWDEM000000000002"), "was published on"),
        (lambda d: d.update(seq=-1), "negative seq"),
        (lambda d: d.update(seq=True), "'seq' must be int"),
        (lambda d: d.update(records={}), "'records' must be list"),
        (lambda d: d["records"][0].update(t=12), "outside years 2000-2099"),
        (lambda d: d["records"][0].update(t=1.5e18), "'t' must be int"),
        (lambda d: d["records"][0].update(bus="a b"), "invalid bus name"),
        (lambda d: d["records"][0].update(s={}), "no samples"),
        (lambda d: d["records"][0]["s"].update({"Vehicle.Nope": 1.0}), "unknown VSS path"),
        (lambda d: d["records"][0]["s"].update({"Vehicle.Speed": "fast"}), "is float"),
        (lambda d: d["records"][0]["s"].update({"Vehicle.ADAS.ABS.IsEngaged": 1}), "is boolean"),
        (
            lambda d: d["records"][0]["s"].update({"Vehicle.Chassis.Brake.PedalPosition": 300}),
            "outside [0, 255]",
        ),
        (lambda d: d["records"][0]["s"].update({"Vehicle.Chassis.Brake.PedalPosition": 3.5}), "non-integer"),
    ],
)
def test_invalid_payloads_name_the_problem(mutate, message: str) -> None:
    document = good_document()
    mutate(document)
    with pytest.raises(PayloadError, match=message.replace("[", r"\[")):
        decode_telemetry(TOPIC, payload(document))


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[1, 2]", b'{"v": 1', b"null"])
def test_non_json_or_non_object_payloads_are_refused(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_telemetry(TOPIC, raw)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(constant: str) -> None:
    text = encode_telemetry(batch()).decode().replace("52.31", constant)
    with pytest.raises(PayloadError, match=constant.lstrip("-")):
        decode_telemetry(TOPIC, text.encode())


def test_too_many_records_are_refused() -> None:
    document = good_document()
    document["records"] = [{"t": T0, "bus": "c", "s": {"Vehicle.Speed": 1}}] * (MAX_RECORDS + 1)
    with pytest.raises(PayloadError, match="more than"):
        decode_telemetry(TOPIC, payload(document))


def test_oversized_payloads_are_refused_before_parsing() -> None:
    with pytest.raises(PayloadError, match="exceeds"):
        decode_telemetry(TOPIC, b" " * (MAX_PAYLOAD_BYTES + 1))


def test_encoding_refuses_non_finite_values() -> None:
    with pytest.raises(ValueError):
        encode_telemetry(batch(**{"Vehicle.Speed": float("nan")}))


def test_catalog_uses_known_datatypes() -> None:
    from roadwave.contract import DATATYPES

    assert all(signal.datatype in DATATYPES for signal in VSS_CATALOG.values())


def health_document() -> dict:
    from roadwave.contract import AgentHealth, encode_health

    health = AgentHealth(VIN, "demo", T0, 12.5, {"can0": {"frames_received": 10}}, {"samples_acked": 4})
    return json.loads(encode_health(health))


def test_health_round_trips() -> None:
    from roadwave.contract import decode_health, vehicle_topic

    health = decode_health(vehicle_topic("demo", VIN, "health"), payload(health_document()))
    assert health.buses == {"can0": {"frames_received": 10}} and health.uplink == {"samples_acked": 4}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["buses"]["can0"].update(frames_received=-1), "must be an integer from 0 to 2\\^63-1"),
        (lambda d: d["buses"]["can0"].update({"Bad Name": 1}), "invalid counter name"),
        (lambda d: d["uplink"].update(samples_acked=1.5), "must be an integer from 0 to 2\\^63-1"),
        (lambda d: d["uplink"].update(samples_acked=2**63), "must be an integer from 0 to 2\\^63-1"),
        (lambda d: d.update(buses={"a b": {}}), "valid names"),
        (lambda d: d.update(v=2), "unsupported health schema version 2"),
    ],
)
def test_invalid_health_reports_name_the_problem(mutate, message: str) -> None:
    from roadwave.contract import decode_health, vehicle_topic

    document = health_document()
    mutate(document)
    with pytest.raises(PayloadError, match=message):
        decode_health(vehicle_topic("demo", VIN, "health"), payload(document))
    with pytest.raises(PayloadError, match="not a health topic"):
        decode_health(TOPIC, payload(health_document()))


def test_deflated_payloads_decode_to_the_same_batch_and_are_much_smaller() -> None:
    records = [
        Record(
            T0 + i * 10_000_000, "can0", {"Vehicle.Speed": 50.0 + i / 10, "Vehicle.Acceleration.Lateral": 0.1}
        )
        for i in range(100)
    ]
    original = TelemetryBatch(VIN, "demo", 1, records)
    plain, deflated = encode_telemetry(original), encode_telemetry(original, compress=True)
    assert deflated[0] == 0x78 and len(deflated) * 4 < len(plain)
    assert decode_telemetry(TOPIC, deflated) == decode_telemetry(TOPIC, plain) == original


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (zlib.compress(b"{" * 10) + b"extra", "bytes after its zlib stream"),
        (zlib.compress(json.dumps({"v": 2}).encode())[:-3], "truncated zlib stream"),
        (b"\x78\x9c not really deflate", "not valid zlib data"),
        (zlib.compress(b" " * (MAX_PAYLOAD_BYTES + 1), 9), f"inflates beyond {MAX_PAYLOAD_BYTES} bytes"),
    ],
)
def test_bad_deflated_payloads_are_refused_without_inflating_them_whole(raw: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_telemetry(TOPIC, raw)


def test_status_round_trips_and_is_checked() -> None:
    topic = vehicle_topic("demo", VIN, STATUS)
    status = AgentStatus(VIN, "demo", True, T0)
    assert decode_status(topic, encode_status(status)) == status
    with pytest.raises(PayloadError, match="'online' must be bool"):
        decode_status(
            topic, json.dumps({"v": 1, "vin": VIN, "fleet": "demo", "online": 1, "since": T0}).encode()
        )
    with pytest.raises(PayloadError, match="is not a status topic"):
        decode_status(TOPIC, encode_status(status))


def test_shared_subscriptions_name_a_valid_group() -> None:
    assert shared_subscription("ingest", TELEMETRY_SUBSCRIPTION) == f"$share/ingest/{TELEMETRY_SUBSCRIPTION}"
    with pytest.raises(ValueError, match="invalid subscription group 'a/b'"):
        shared_subscription("a/b", TELEMETRY_SUBSCRIPTION)


# --- diagnostic reports ----------------------------------------------------------------------

DIAGNOSTIC_REPORT = DiagnosticsReport(
    t_ns=T0,
    trigger="periodic",
    mil_on=True,
    dtcs_complete=True,
    readings=(PidReading("7E8", 0x0C, "engine_speed", 812.5, "rpm"),),
    dtcs=(
        ReportedDtc("7E8", "P0301", ("pending", "confirmed"), "obd_mode_03", None, "Cylinder 1 misfire"),
        ReportedDtc("7E9", "C0288", ("test_failed",), "uds_0x19_02", 0x1F),
    ),
    problems={"timeout": 2},
)


@pytest.mark.parametrize("compress", [False, True])
def test_diagnostic_reports_round_trip(compress: bool) -> None:
    payload = encode_diagnostics(FLEET, VIN, DIAGNOSTIC_REPORT, compress)
    fleet, vin, report = decode_diagnostics(diagnostics_topic(FLEET, VIN), payload)
    assert (fleet, vin, report) == (FLEET, VIN, DIAGNOSTIC_REPORT)
    assert [(d.pending, d.confirmed) for d in report.dtcs] == [(True, True), (False, False)]


def _diagnostics_document() -> dict:
    return json.loads(encode_diagnostics(FLEET, VIN, DIAGNOSTIC_REPORT))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(trigger="hourly"), "'trigger' must be one of"),
        (lambda d: d.update(mil_on="yes"), "'mil_on' must be bool or null"),
        (lambda d: d.pop("dtcs_complete"), "missing 'dtcs_complete'"),
        (lambda d: d["dtcs"][0].update(code="P9301"), "dtc 0: 'P9301' is not a DTC"),
        (lambda d: d["dtcs"][1].update(status=["broken"]), "dtc 1: status must list distinct bit names"),
        (lambda d: d["dtcs"][0].update(source="mode_09"), "dtc 0: source must be one of"),
        (lambda d: d["dtcs"][1].update(failure_type=256), "dtc 1: failure_type 256 is not a byte"),
        (lambda d: d["dtcs"][0].update(ecu="7e8"), "dtc 0: ecu '7e8' is not a CAN id"),
        (lambda d: d["readings"][0].update(pid=300), "reading 0: pid 300 is not 0-255"),
        (lambda d: d["readings"][0].update(value=True), "reading 0: 'value' must be int or float"),
        (lambda d: d["readings"][0].update(unit="\n"), "reading 0: 'unit' must be at most 200 printable"),
        (lambda d: d["problems"].update(timeout=-1), "problems: counter timeout must be an integer"),
        (lambda d: d["problems"].update(timeout=2**63), "problems: counter timeout must be an integer"),
        (lambda d: d.update(t=12), "'t': 12 ns is outside years 2000-2099"),
        (lambda d: d.update(vin="RWDEM000000000002"), "but was published on"),
    ],
)
def test_invalid_diagnostic_reports_name_the_problem(mutate, message: str) -> None:
    document = _diagnostics_document()
    mutate(document)
    with pytest.raises(PayloadError, match=re.escape(message)):
        decode_diagnostics(diagnostics_topic(FLEET, VIN), json.dumps(document).encode())


def test_oversized_diagnostic_reports_are_refused_before_parsing() -> None:
    with pytest.raises(PayloadError, match="exceeds"):
        decode_diagnostics(diagnostics_topic(FLEET, VIN), b"{" + b" " * MAX_DIAGNOSTICS_BYTES + b"}")
