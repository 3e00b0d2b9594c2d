"""Property-based fuzzing of every parser that takes bytes from outside (issue 6).

Each parser gets random and mutated input (valid seeds with bytes flipped, inserted and
deleted, or JSON/TOML/DBC values swapped for hostile ones) and must either return
something valid or raise its own error type: never another exception, never a hang,
never a value that breaks what comes after it (a bad point in InfluxDB).

Budget, shared by every test here (``budget()``):

* ``ROADWAVE_FUZZ_EXAMPLES`` examples per test (default 300; the DBC test, whose examples
  cost most, runs a fifth of that). With the default the file takes about 13 s on this
  project's 2-core machine.
* Runs are derandomized by default, so CI and every developer run the same inputs and a
  failure reproduces as is. ``ROADWAVE_FUZZ_RANDOM=1`` explores new inputs instead (and
  keeps failures in Hypothesis' local database): with ``ROADWAVE_FUZZ_EXAMPLES=2000`` the
  file takes a few minutes (pass ``--timeout`` beyond pytest's 300 s per test if needed).
* The deadline per example is 10 s: generous enough for a loaded machine, short enough
  to report a parser that stalls on some input; pytest-timeout catches one that hangs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cloud.influx import InfluxClient, InfluxSettings
from cloud.ingest import _accept
from cloud.schema import (
    DIAGNOSTICS_MEASUREMENT,
    DTCS_MEASUREMENT,
    EVENTS_MEASUREMENT,
    FLAGGED_MEASUREMENT,
    OBD_MEASUREMENT,
    PROBLEMS_PREFIX,
    SNAPSHOT_MEASUREMENT,
    TELEMETRY_MEASUREMENT,
)
from edge.config import EdgeConfig
from edge.dbcload import MAX_DBC_BYTES, DbcLoadError, load_dbc_files
from edge.decoder import BusDecoder, DecodeStats, FrameDecoder
from edge.mapping import SignalMapping, load_mapping
from edge.v2x.certificates import Validity, generate_authority, issue_ticket
from edge.v2x.codec import decode_cam, decode_denm, encode_cam, encode_denm
from edge.v2x.denm_service import its_time
from edge.v2x.errors import V2xDecodeError
from edge.v2x.geonet import GeoArea, GnAddress, LongPositionVector, build_gbc, build_shb
from edge.v2x.model import (
    ActionId,
    Cam,
    CamLowFrequency,
    Denm,
    DenmLocation,
    DenmManagement,
    DenmSituation,
    PathPoint,
    ReferencePosition,
    StationType,
)
from edge.v2x.quadkey import quadkey
from edge.v2x.security import CAM_PSID, DENM_PSID, SecurityConfig, Signer, Verifier
from edge.v2x.stack import V2xConfig, V2xStack, generation_location, its_microseconds
from edge.v2x.transport import PacketRoute, V2xTransport
from firmware_bridge.protocol import (
    Ack,
    AckStatus,
    BusStatus,
    CanFrame,
    ErrorState,
    Frame,
    GnssFrame,
    Heartbeat,
    StreamDecoder,
    encode_frame,
)
from roadwave.cli.v2x_relay import UploadRefused, check_upload
from roadwave.configfile import MAX_CONFIG_CHARS, ConfigError, Table
from roadwave.contract import (
    BUS_PATTERN,
    FLEET_PATTERN,
    INTEGER_RANGES,
    MAX_TIMESTAMP_NS,
    MIN_TIMESTAMP_NS,
    QUALITIES,
    VIN_PATTERN,
    VSS_CATALOG,
    AgentHealth,
    AgentStatus,
    PayloadError,
    Record,
    TelemetryBatch,
    TopicError,
    check_value,
    decode_health,
    decode_status,
    decode_telemetry,
    encode_health,
    encode_status,
    encode_telemetry,
    telemetry_topic,
    vehicle_topic,
)
from roadwave.contract import v2x as v2x_topics
from roadwave.contract.diagnostics import (
    DTC_CODE,
    DTC_STATUS_BITS,
    DiagnosticsReport,
    PidReading,
    ReportedDtc,
    decode_diagnostics,
    diagnostics_topic,
    encode_diagnostics,
)
from roadwave.contract.events import KIND_PATTERN, Event, decode_event, encode_event, events_topic

REPO = Path(__file__).resolve().parents[1]
DBC = REPO / "dbc" / "roadwave_car.dbc"
EXAMPLES = int(os.environ.get("ROADWAVE_FUZZ_EXAMPLES", "300"))
EXPLORE = os.environ.get("ROADWAVE_FUZZ_RANDOM") == "1"


def budget(share: float = 1.0) -> settings:
    """The shared Hypothesis settings: ``share`` of ``ROADWAVE_FUZZ_EXAMPLES`` examples."""
    return settings(
        max_examples=max(5, round(EXAMPLES * share)),
        deadline=timedelta(seconds=10),
        derandomize=not EXPLORE,
        database=settings().database if EXPLORE else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


# --------------------------------------------------------------------------- mutations


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_edits: int = 6) -> bytes:
    """``seed`` with 1 .. ``max_edits`` bytes flipped, set, inserted, deleted, repeated or cut."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        edit = draw(st.sampled_from(("flip", "set", "insert", "delete", "repeat", "truncate")))
        at = draw(st.integers(0, len(data)))
        size = draw(st.integers(1, 16))
        if edit == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set" and at < len(data):
            data[at] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=size))
        elif edit == "delete":
            del data[at : at + size]
        elif edit == "repeat":
            data[at:at] = data[at : at + size]
        elif edit == "truncate":
            del data[at:]
    return bytes(data)


#: Raw JSON tokens json.dumps cannot write: constants, overlong numbers, deep nesting.
_RAW_TOKENS = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" * 5000, "[" * 5000 + "]" * 5000)
_RAW = "\ue000raw\ue000"  # marks where a raw token replaces a value
_HOSTILE_TEXT = st.sampled_from(
    ("", "\\", 'a"b', "a b", "a,b=c", "x\\", "\n", "\x00", "é", "can0", "range", "stale", "ended", "ongoing")
) | st.text(max_size=12)
_NAMES = _HOSTILE_TEXT | st.sampled_from(sorted(VSS_CATALOG))
_INTEGERS = (
    st.integers()
    | st.sampled_from((2**63, 10**30, 10**400, -(10**400), MIN_TIMESTAMP_NS - 1, MAX_TIMESTAMP_NS))
    | st.sampled_from(
        [bound + step for low, high in INTEGER_RANGES.values() for bound in (low, high) for step in (-1, 1)]
    )
)
_SCALARS = (
    st.none() | st.booleans() | _INTEGERS | st.floats(allow_nan=False, allow_infinity=False) | _HOSTILE_TEXT
)
_JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_NAMES, children, max_size=4),
    max_leaves=8,
)


_HUGE = (10**400, -(10**400), 2**1024, 2**63)


def _hostile_sample(path: str) -> st.SearchStrategy[Any]:
    """Values that confuse ``path``'s datatype: other JSON kinds, its bounds, numbers beyond any float."""
    datatype = VSS_CATALOG[path].datatype
    if datatype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[datatype]
        edges = (low - 1, low, high, high + 1, 1.5, 1e308, True, *_HUGE)
        return st.sampled_from(edges) | st.integers()
    if datatype == "boolean":
        return st.sampled_from((0, 1, 1.0, "true", None)) | st.booleans()
    return st.sampled_from((*_HUGE, 1e308, -1e308, 5e-324, -0.0, 0, True)) | st.floats(allow_nan=False)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterable[tuple[Any, ...]]:
    """Every place in a JSON document, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _at(document: Any, place: tuple[Any, ...]) -> Any:
    for key in place:
        document = document[key]
    return document


def _samples(document: Any) -> list[dict[str, Any]]:
    """The objects mapping VSS paths to values (a record's ``s``)."""
    found = []
    for place in _paths(document):
        value = _at(document, place)
        if (
            isinstance(value, dict)
            and value
            and set(value) <= set(VSS_CATALOG)
            and all(isinstance(sample, bool | int | float) for sample in value.values())
        ):
            found.append(value)
    return found


def _like(value: Any) -> st.SearchStrategy[Any]:
    """Hostile values of the same JSON kind as ``value``: they pass a type check, not a range check."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-100, 100).map(lambda step: value + step) | _INTEGERS
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False) | _INTEGERS
    if isinstance(value, str):
        return _NAMES
    return _JSON_VALUES


@st.composite
def mutated_json(draw: st.DrawFn, document: dict[str, Any]) -> bytes:
    """A JSON payload: ``document`` with values changed, keys renamed, removed or added; maybe
    deflated; maybe with bytes mutated."""
    document = json.loads(json.dumps(document))
    raw_tokens = []
    for _ in range(draw(st.integers(1, 3))):
        places = list(_paths(document))[1:]
        leaves = [place for place in places if not isinstance(_at(document, place), dict | list)]
        *parents, last = draw(st.sampled_from(leaves or places) | st.sampled_from(places))
        parent = _at(document, tuple(parents))
        edit = draw(
            st.sampled_from(("like",) * 3 + ("sample",) * 4 + ("rename", "replace", "raw", "remove", "add"))
        )
        if edit == "sample" and _samples(document):
            path = draw(st.sampled_from(sorted(VSS_CATALOG)))
            draw(st.sampled_from(_samples(document)))[path] = draw(_hostile_sample(path))
        elif edit == "like":
            parent[last] = draw(_like(parent[last]))
        elif edit == "rename" and isinstance(parent, dict):
            parent[draw(_NAMES)] = parent.pop(last)
        elif edit == "replace":
            parent[last] = draw(_JSON_VALUES)
        elif edit == "raw":
            parent[last] = _RAW
            raw_tokens.append(draw(st.sampled_from(_RAW_TOKENS)))
        elif edit == "remove":
            del parent[last]
        elif edit == "add" and isinstance(parent[last], dict):
            parent[last][draw(_NAMES)] = draw(_JSON_VALUES)
        elif edit == "add" and isinstance(parent[last], list):
            parent[last].append(draw(_JSON_VALUES))
    text = json.dumps(document, separators=(",", ":"))
    for token in raw_tokens:
        text = text.replace(json.dumps(_RAW), token, 1)
    payload = text.encode()
    if draw(st.booleans()):
        payload = zlib.compress(payload)
    if draw(st.integers(0, 7)) == 0:
        payload = draw(mutated(payload, max_edits=3))
    return payload


# --------------------------------------------------------------------------- contract seeds

VIN, FLEET = "RWDEM000000000001", "demo"
T0 = 1_763_700_000_000_000_000
TELEMETRY_TOPIC = telemetry_topic(FLEET, VIN)
EVENTS_TOPIC = events_topic(FLEET, VIN)
SEED_BATCH = TelemetryBatch(
    VIN,
    FLEET,
    7,
    [
        Record(T0, "can0", {"Vehicle.Speed": 52.31, "Vehicle.ADAS.ABS.IsEngaged": False}),
        Record(
            T0 + 10_000_000,
            "can1",
            {"Vehicle.Powertrain.CombustionEngine.Speed": 2100, "Vehicle.Chassis.SteeringWheel.Angle": -35},
            {"Vehicle.Powertrain.CombustionEngine.Speed": "range"},
        ),
        Record(
            T0 + 20_000_000, "can0", {"Vehicle.CurrentLocation.Latitude": 48.1, "Vehicle.TraveledDistance": 9}
        ),
    ],
)
SEED_EVENT = Event(
    kind="harsh_braking",
    state="ended",
    severity=2,
    start_ns=T0,
    detected_ns=T0 + 100_000_000,
    end_ns=T0 + 900_000_000,
    peak={"deceleration_mps2": 5.5, "speed_kmh": 80.0},
    position=(48.1, 11.5),
    snapshot={
        "Vehicle.Speed": {"t": [T0, T0 + 10_000_000], "v": [80.0, 79.5], "q": [None, "range"]},
        "Vehicle.ADAS.ABS.IsEngaged": {"t": [T0], "v": [True]},
    },
)
TELEMETRY_SEEDS = [
    json.loads(encode_telemetry(SEED_BATCH)),
    {**json.loads(encode_telemetry(SEED_BATCH)), "v": 1},
]
EVENT_SEEDS = [
    json.loads(encode_event(FLEET, VIN, event))
    for event in (SEED_EVENT, dataclasses.replace(SEED_EVENT, state="ongoing", end_ns=None))
]
HEALTH_SEED = json.loads(
    encode_health(AgentHealth(VIN, FLEET, T0, 12.5, {"can0": {"frames_received": 10}}, {"samples_acked": 4}))
)
DIAGNOSTICS_SEED = json.loads(
    encode_diagnostics(
        FLEET,
        VIN,
        DiagnosticsReport(
            t_ns=T0,
            trigger="mil",
            mil_on=True,
            dtcs_complete=True,
            readings=(PidReading("7E8", 0x05, "coolant_temperature", 92.0, "degC"),),
            dtcs=(
                ReportedDtc("7E8", "P0301", ("pending", "confirmed"), "obd_mode_03", None, "Misfire"),
                ReportedDtc("7E9", "C0288", ("test_failed", "confirmed"), "uds_0x19_02", 0x1F, None),
            ),
            problems={"timeout": 1},
        ),
    )
)
STATUS_SEED = json.loads(encode_status(AgentStatus(VIN, FLEET, True, T0)))


def edited(document: dict[str, Any], place: tuple[Any, ...], value: Any = _RAW, raw: str = "") -> bytes:
    """``document`` as JSON with ``value`` at ``place``, or the ``raw`` JSON text there: how the
    inputs that found bugs are pinned as examples."""
    changed = json.loads(json.dumps(document))
    _at(changed, place[:-1])[place[-1]] = value
    return json.dumps(changed).replace(json.dumps(_RAW), raw).encode()


def topics_for(kind: str) -> st.SearchStrategy[str]:
    """Mostly the right topic, sometimes another kind's or a mutated one."""
    right = vehicle_topic(FLEET, VIN, kind)
    wrong = st.sampled_from((TELEMETRY_TOPIC, EVENTS_TOPIC, vehicle_topic(FLEET, "RWDEM000000000002", kind)))
    broken = mutated(right.encode(), max_edits=2).map(lambda b: b.decode("utf-8", "replace"))
    return st.one_of(st.just(right), st.just(right), st.just(right), wrong, broken)


def assert_valid_value(path: str, value: Any) -> None:
    """``value`` is what the catalog allows for ``path``, with the exact Python type."""
    assert check_value(path, value) == value
    datatype = VSS_CATALOG[path].datatype
    expected = bool if datatype == "boolean" else int if datatype in INTEGER_RANGES else float
    assert type(value) is expected


def assert_valid_batch(batch: TelemetryBatch) -> None:
    for record in batch.records:
        assert MIN_TIMESTAMP_NS <= record.t_ns < MAX_TIMESTAMP_NS
        assert BUS_PATTERN.fullmatch(record.bus) and record.signals
        for path, value in record.signals.items():
            assert_valid_value(path, value)
        assert set(record.quality) <= set(record.signals) and set(record.quality.values()) <= set(QUALITIES)
    assert decode_telemetry(telemetry_topic(batch.fleet, batch.vin), encode_telemetry(batch)) == batch


@budget()
@given(topic=topics_for("telemetry"), payload=st.one_of(*map(mutated_json, TELEMETRY_SEEDS)))
@example(
    topic=TELEMETRY_TOPIC, payload=edited(TELEMETRY_SEEDS[0], ("vin",), raw="1" * 5000)
)  # was ValueError
@example(
    topic=TELEMETRY_TOPIC, payload=edited(TELEMETRY_SEEDS[0], ("records", 0, "s", "Vehicle.Speed"), 10**400)
)
def test_telemetry_payloads_decode_to_valid_batches_or_raise_payload_error(
    topic: str, payload: bytes
) -> None:
    try:
        batch = decode_telemetry(topic, payload)
    except PayloadError:
        return
    assert_valid_batch(batch)


@budget()
@given(topic=topics_for("health"), payload=mutated_json(HEALTH_SEED))
@example(
    topic=vehicle_topic(FLEET, VIN, "health"), payload=edited(HEALTH_SEED, ("uptime_s",), raw="1e400")
)  # was accepted
@example(topic=vehicle_topic(FLEET, VIN, "health"), payload=edited(HEALTH_SEED, ("t",), 12))  # was accepted
def test_health_reports_decode_to_plausible_values_or_raise_payload_error(topic: str, payload: bytes) -> None:
    try:
        health = decode_health(topic, payload)
    except PayloadError:
        return
    assert MIN_TIMESTAMP_NS <= health.t_ns < MAX_TIMESTAMP_NS
    assert math.isfinite(health.uptime_s) and health.uptime_s >= 0
    for counters in (health.uplink, *health.buses.values()):
        assert all(type(count) is int and count >= 0 for count in counters.values())
    assert decode_health(topic, encode_health(health)) == health


@budget()
@given(topic=topics_for("status"), payload=mutated_json(STATUS_SEED))
@example(
    topic=vehicle_topic(FLEET, VIN, "status"), payload=edited(STATUS_SEED, ("since",), -1)
)  # was accepted
def test_status_messages_decode_to_plausible_values_or_raise_payload_error(
    topic: str, payload: bytes
) -> None:
    try:
        status = decode_status(topic, payload)
    except PayloadError:
        return
    assert MIN_TIMESTAMP_NS <= status.since_ns < MAX_TIMESTAMP_NS and type(status.online) is bool


def assert_valid_event(event: Event) -> None:
    assert KIND_PATTERN.fullmatch(event.kind)
    for time_ns in (event.start_ns, event.detected_ns, event.end_ns or event.start_ns):
        assert MIN_TIMESTAMP_NS <= time_ns < MAX_TIMESTAMP_NS
    assert all(KIND_PATTERN.fullmatch(name) and math.isfinite(value) for name, value in event.peak.items())
    for path, columns in event.snapshot.items():
        for value in columns["v"]:
            assert_valid_value(path, value)
    assert decode_event(EVENTS_TOPIC, encode_event(FLEET, VIN, event))[2] == event


@budget()
@given(topic=topics_for("events"), payload=st.one_of(*map(mutated_json, EVENT_SEEDS)))
@example(
    topic=EVENTS_TOPIC, payload=edited(EVENT_SEEDS[0], ("peak", "speed_kmh"), 10**400)
)  # was OverflowError
@example(
    topic=EVENTS_TOPIC, payload=edited(EVENT_SEEDS[0], ("peak", "x\\"), 1.0)
)  # InfluxDB refused its line
def test_event_payloads_decode_to_valid_events_or_raise_payload_error(topic: str, payload: bytes) -> None:
    try:
        _fleet, _vin, event = decode_event(topic, payload)
    except PayloadError:
        return
    assert_valid_event(event)


@budget()
@given(topic=topics_for("diagnostics"), payload=mutated_json(DIAGNOSTICS_SEED))
def test_diagnostic_reports_decode_to_valid_reports_or_raise_payload_error(
    topic: str, payload: bytes
) -> None:
    try:
        _fleet, _vin, report = decode_diagnostics(topic, payload)
    except PayloadError:
        return
    assert MIN_TIMESTAMP_NS <= report.t_ns < MAX_TIMESTAMP_NS
    assert all(math.isfinite(r.value) and 0 <= r.pid <= 0xFF for r in report.readings)
    for dtc in report.dtcs:
        assert DTC_CODE.fullmatch(dtc.code) and set(dtc.status) <= set(DTC_STATUS_BITS)
    assert all(type(count) is int and count >= 0 for count in report.problems.values())
    again = encode_diagnostics(FLEET, VIN, report)
    assert decode_diagnostics(diagnostics_topic(FLEET, VIN), again)[2] == report


UPLOAD_SEED = v2x_topics.upload_topic("car-1.a_b", "denm", "120210233")


@budget()
@given(
    topic=st.one_of(
        mutated(UPLOAD_SEED.encode(), max_edits=3).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=80),
    )
)
def test_upload_topics_parse_to_their_own_parts_or_raise_topic_error(topic: str) -> None:
    try:
        address = v2x_topics.parse_upload_topic(topic)
    except TopicError:
        return
    assert v2x_topics.upload_topic(address.sender, address.kind, address.quadkey) == topic


# --------------------------------------------------------------------------- ingest: line protocol

#: Tags and (for events) fields of every measurement the ingest writes.
_TAGS = {
    TELEMETRY_MEASUREMENT: {"fleet", "vin", "bus"},
    FLAGGED_MEASUREMENT: {"fleet", "vin", "bus", "quality"},
    EVENTS_MEASUREMENT: {"fleet", "vin", "type"},
    SNAPSHOT_MEASUREMENT: {"fleet", "vin", "type"},
    DIAGNOSTICS_MEASUREMENT: {"fleet", "vin", "trigger"},
    DTCS_MEASUREMENT: {"fleet", "vin", "ecu", "code", "source"},
    OBD_MEASUREMENT: {"fleet", "vin", "ecu"},
}
#: Tags a point may carry beyond those it always has.
_OPTIONAL_TAGS = {DTCS_MEASUREMENT: {"failure_type"}}
_TAG_VALUES = {
    "fleet": FLEET_PATTERN,
    "vin": VIN_PATTERN,
    "bus": BUS_PATTERN,
    "quality": re.compile("|".join(QUALITIES)),
    "type": KIND_PATTERN,
    "trigger": re.compile("start|periodic|mil|manual"),
    "ecu": re.compile("[0-9A-F]{3}|[0-9A-F]{8}"),
    "code": DTC_CODE,
    "source": re.compile("obd_mode_03|obd_mode_07|uds_0x19_02"),
    "failure_type": re.compile("[0-9A-F]{2}"),
}
_EVENT_FIELDS = {
    "id": "string",
    "state": "string",
    "severity": "int64",
    "detected_ns": "int64",
    "end_ns": "int64",
    "duration_s": "float",
    "latitude": "float",
    "longitude": "float",
}
_DIAGNOSTICS_FIELDS = {
    DIAGNOSTICS_MEASUREMENT: {"mil_on": "boolean", "dtcs_complete": "boolean"},
    DTCS_MEASUREMENT: {
        "pending": "boolean",
        "confirmed": "boolean",
        "status": "int64",
        "description": "string",
    },
}
_FLOAT = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_INTEGER = re.compile(r"-?\d+i")


def _scan(line: str, at: int, stops: str) -> tuple[str, int]:
    """The raw token from ``at`` to the next unescaped stop character (InfluxDB skips the
    character after any backslash when it looks for separators)."""
    start = at
    while at < len(line) and line[at] not in stops:
        at += 2 if line[at] == "\\" else 1
    return line[start:at], min(at, len(line))


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str], int]:
    """Measurement, tags, raw field values and timestamp of one line, as InfluxDB 1.x splits it."""
    assert "\n" not in line and "\r" not in line, line
    measurement, at = _scan(line, 0, ", ")
    tags: dict[str, str] = {}
    while line[at] == ",":
        key, at = _scan(line, at + 1, ",= ")
        assert line[at] == "=", line
        tags[key], at = _scan(line, at + 1, ",= ")
        assert line[at] in ", ", line
    assert line[at] == " ", line
    at += 1
    fields: dict[str, str] = {}
    while True:
        key, at = _scan(line, at, ",= ")
        assert line[at] == "=" and key not in fields, line
        at += 1
        if line[at] == '"':
            end = at + 1
            while line[end] != '"':
                end += 2 if line[end] == "\\" else 1
            fields[key], at = line[at : end + 1], end + 1
        else:
            fields[key], at = _scan(line, at, ", ")
        if line[at] == " ":
            break
        assert line[at] == ",", line
        at += 1
    timestamp = line[at + 1 :]
    assert re.fullmatch(r"\d+", timestamp), line
    return measurement, tags, fields, int(timestamp)


def _field_type(raw: str) -> str:
    if raw in ("true", "false"):
        return "boolean"
    if raw.startswith('"'):
        return "string"
    if _INTEGER.fullmatch(raw):
        assert -(2**63) <= int(raw[:-1]) < 2**63, raw
        return "int64"
    assert _FLOAT.fullmatch(raw) and math.isfinite(float(raw)), raw
    return "float"


def _vss_field_type(path: str) -> str:
    datatype = VSS_CATALOG[path].datatype
    return "boolean" if datatype == "boolean" else "int64" if datatype in INTEGER_RANGES else "float"


def assert_valid_line(line: str) -> None:
    """One line InfluxDB accepts, of our schema: known measurement and tags, typed finite fields,
    a timestamp in 2000-2099."""
    measurement, tags, fields, t_ns = parse_line(line)
    required = _TAGS[measurement]
    assert required <= set(tags) <= required | _OPTIONAL_TAGS.get(measurement, set()), line
    assert all(_TAG_VALUES[key].fullmatch(value) for key, value in tags.items()), line
    assert fields and MIN_TIMESTAMP_NS <= t_ns < MAX_TIMESTAMP_NS, line
    for key, raw in fields.items():
        kind = _field_type(raw)
        if measurement == OBD_MEASUREMENT:
            assert KIND_PATTERN.fullmatch(key) and kind == "float", line
        elif measurement == DIAGNOSTICS_MEASUREMENT and key not in _DIAGNOSTICS_FIELDS[measurement]:
            assert (key.endswith("_count") or key.startswith(PROBLEMS_PREFIX)) and kind == "int64", line
            assert int(raw[:-1]) >= 0, line
        elif measurement in _DIAGNOSTICS_FIELDS:
            assert _DIAGNOSTICS_FIELDS[measurement][key] == kind, line
        elif measurement != EVENTS_MEASUREMENT:
            assert key in VSS_CATALOG and kind == _vss_field_type(key), line
            if kind == "int64":
                low, high = INTEGER_RANGES[VSS_CATALOG[key].datatype]
                assert low <= int(raw[:-1]) <= high, line
        elif key.startswith("peak_"):
            assert KIND_PATTERN.fullmatch(key[len("peak_") :]) and kind == "float", line
        else:
            assert _EVENT_FIELDS[key] == kind, line


def accepted_lines(topic: str, payload: bytes) -> list[str]:
    """The lines the ingest would write for a message; [] when it rejects the message."""
    try:
        return _accept(topic, payload)[2].lines
    except PayloadError:
        return []


mutated_messages = st.one_of(
    st.tuples(st.just(TELEMETRY_TOPIC), st.one_of(*map(mutated_json, TELEMETRY_SEEDS))),
    st.tuples(st.just(EVENTS_TOPIC), st.one_of(*map(mutated_json, EVENT_SEEDS))),
    st.tuples(st.just(diagnostics_topic(FLEET, VIN)), mutated_json(DIAGNOSTICS_SEED)),
)


@budget()
@given(
    message=mutated_messages
    | st.tuples(st.sampled_from((TELEMETRY_TOPIC, EVENTS_TOPIC, "roadwave/v1/demo/x/telemetry")), st.binary())
)
@example(message=(EVENTS_TOPIC, edited(EVENT_SEEDS[0], ("peak", "x\\"), 1.0)))
@example(
    message=(diagnostics_topic(FLEET, VIN), edited(DIAGNOSTICS_SEED, ("problems", "timeout"), 10**300))
)  # InfluxDB refused its line
def test_the_ingest_never_produces_a_bad_point(message: tuple[str, bytes]) -> None:
    for line in accepted_lines(*message):
        assert_valid_line(line)


@pytest.mark.integration
def test_every_point_the_ingest_accepts_is_written_by_a_real_influxdb(influxdb, influx_database: str) -> None:
    lines: list[str] = []

    @settings(budget(), max_examples=max(400, EXAMPLES))
    @given(message=mutated_messages)
    def collect(message: tuple[str, bytes]) -> None:
        lines.extend(accepted_lines(*message))

    collect()
    assert len(lines) >= 100  # enough mutations were accepted for the write to mean something
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    try:
        client.write_lines(lines)  # one write: a single bad line would fail it with a 400
        rows = client.query(f'SELECT COUNT("Vehicle.Speed") FROM "{TELEMETRY_MEASUREMENT}"')
    finally:
        client.close()
    assert rows and rows[0]["count"] >= 1


# --------------------------------------------------------------------------- CAN frames

#: A DBC with IEEE float signals (which can carry NaN and infinities) and a 64-byte CAN FD
#: frame with an extended id, and its VSS overlay: integer and float leaves, transforms that
#: divide by zero and overflow.
FLOAT_DBC = """VERSION ""
NS_ :
BS_:
BU_: ECU
BO_ 256 FloatFrame: 8 ECU
 SG_ SpeedF : 0|32@1- (1,0) [0|300] "km/h" ECU
 SG_ AngleF : 32|32@1- (1,0) [-720|720] "deg" ECU
BO_ 2147484672 WideFd: 64 ECU
 SG_ LatD : 0|64@1- (1,0) [-90|90] "deg" ECU
 SG_ Dist : 64|32@1+ (1,0) [0|0] "km" ECU
SIG_VALTYPE_ 256 SpeedF : 1;
SIG_VALTYPE_ 256 AngleF : 1;
SIG_VALTYPE_ 2147484672 LatD : 2;
"""
FLOAT_OVERLAY = """
Vehicle.Speed:
  datatype: float
  unit: km/h
  dbc2vss: {signal: SpeedF}
Vehicle.Chassis.SteeringWheel.Angle:
  datatype: int16
  unit: degrees
  dbc2vss: {signal: AngleF, transform: {math: "100 / x"}}
Vehicle.CurrentLocation.Latitude:
  datatype: double
  unit: degrees
  dbc2vss: {signal: LatD, transform: {math: "x * 2"}}
Vehicle.TraveledDistance:
  datatype: uint32
  unit: m
  dbc2vss: {signal: Dist}
"""


Decoding = tuple[cantools.database.can.Database, list[SignalMapping]]


@pytest.fixture(scope="module")
def decodings(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Decoding]:
    """Database and mappings of the project DBC (False) and of the float DBC (True)."""
    folder = tmp_path_factory.mktemp("float-dbc")
    (folder / "float.dbc").write_text(FLOAT_DBC)
    (folder / "float.vss.yaml").write_text(FLOAT_OVERLAY)
    loaded = {}
    for float_side, dbc, overlay in (
        (False, DBC, REPO / "dbc" / "roadwave_car.vss.yaml"),
        (True, folder / "float.dbc", folder / "float.vss.yaml"),
    ):
        db = load_dbc_files([dbc]).database
        loaded[float_side] = db, load_mapping(overlay, db)
    return loaded


#: (frame id, extended, CAN FD, length) of the messages of each DBC.
_PROJECT_FRAMES = [
    (m.frame_id, m.is_extended_frame, m.is_fd, m.length) for m in load_dbc_files([DBC]).database.messages
]
_FLOAT_FRAMES = [(256, False, False, 8), (0x400, True, True, 64)]
_DRIVE_TIMES = st.floats(T0 / 1e9, T0 / 1e9 + 3600)
_ODD_TIMES = st.sampled_from((math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, 4_102_444_800.0)) | st.floats()


_SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, 0.0, 3.4e38, -1e308, 5e-324)
#: Chunks that decode to special values where an IEEE float signal sits: NaN, infinities, extremes.
_CHUNKS = [struct.pack("<f", x) for x in _SPECIAL_FLOATS[:5]] + [
    struct.pack("<d", x) for x in _SPECIAL_FLOATS
]


@st.composite
def frame_data(draw: st.DrawFn, length: int) -> bytes:
    """``length`` bytes: random, or special floats laid end to end."""
    if draw(st.booleans()):
        return draw(st.binary(min_size=length, max_size=length))
    chunks = draw(st.lists(st.sampled_from(_CHUNKS), min_size=length // 4 + 1, max_size=length // 4 + 1))
    return b"".join(chunks)[:length]


@st.composite
def can_frames(draw: st.DrawFn) -> can.Message:
    """A frame of a message of either DBC with random content, or anything python-can can hold."""
    if draw(st.booleans()):
        frame_id, extended, fd, length = draw(
            st.sampled_from(_PROJECT_FRAMES) | st.sampled_from(_FLOAT_FRAMES)
        )
        data = draw(frame_data(length)) if draw(st.integers(0, 3)) else draw(st.binary(max_size=64))
    else:
        extended, fd = draw(st.booleans()), draw(st.booleans())
        frame_id = draw(st.integers(0, 2**29 - 1 if extended else 2**11 - 1) | st.integers(0, 2**32))
        data = draw(st.binary(max_size=64))
    return can.Message(
        timestamp=draw(_DRIVE_TIMES if draw(st.integers(0, 4)) else _ODD_TIMES),
        arbitration_id=frame_id,
        is_extended_id=extended,
        is_fd=fd,
        is_remote_frame=draw(st.integers(0, 15)) == 0,
        is_error_frame=draw(st.integers(0, 15)) == 0,
        bitrate_switch=draw(st.booleans()),
        data=data,
        dlc=draw(st.none() | st.integers(0, 64)),
        check=False,
    )


def assert_reconciled(stats: DecodeStats) -> None:
    known = stats.frames_decoded + stats.frames_integrity_failed + stats.frames_malformed
    undecoded = stats.frames_unknown + stats.frames_diagnostic + stats.frames_ignored
    assert stats.frames_received == known + undecoded
    samples_in = stats.samples_decoded + stats.samples_stale
    assert samples_in == stats.samples_emitted + stats.samples_throttled + stats.samples_invalid


def float_frame(timestamp: float, speed: float, angle: float) -> can.Message:
    """A frame of the float DBC's ``FloatFrame``."""
    data = struct.pack("<ff", speed, angle)
    return can.Message(timestamp=timestamp, arbitration_id=256, is_extended_id=False, data=data)


@budget()
@given(float_side=st.booleans(), frames=st.lists(can_frames(), min_size=5, max_size=60))
@example(float_side=False, frames=[float_frame(math.nan, 0.0, 0.0)])  # was ValueError
@example(
    float_side=True, frames=[float_frame(T0 / 1e9, math.inf, math.nan)]
)  # became a sample; was ValueError
@example(
    float_side=True, frames=[float_frame(T0 / 1e9, 1.0, 0.0)]
)  # its transform divides by 0: was ZeroDivisionError
def test_any_can_frame_is_decoded_or_counted_and_records_follow_the_contract(
    decodings: dict[bool, Decoding], float_side: bool, frames: list[can.Message]
) -> None:
    decoder = FrameDecoder("can0", *decodings[float_side])
    records: list[Record] = []
    for frame in frames:
        decoder.decode(frame, records.append)
        assert_reconciled(decoder.stats)
    assert decoder.stats.frames_received == len(frames)
    if records:
        assert_valid_batch(TelemetryBatch(VIN, FLEET, 1, records))


# --------------------------------------------------------------------------- firmware bridge

_BRIDGE_FRAMES: list[Frame] = [
    CanFrame(timestamp_us=1000, arbitration_id=0x123, data=b"\x01\x02\x03"),
    CanFrame(timestamp_us=2000, channel=1, arbitration_id=0x1ABCDEF0, is_extended_id=True, data=bytes(8)),
    CanFrame(timestamp_us=3000, arbitration_id=0x400, is_fd=True, bitrate_switch=True, data=bytes(range(64))),
    CanFrame(timestamp_us=4000, arbitration_id=0x7DF, is_remote_frame=True, remote_length=8),
    Heartbeat(uptime_us=5_000_000, firmware_version=(1, 2, 3), channels=2),
    BusStatus(timestamp_us=6000, channel=0, state=ErrorState.WARNING, tec=97, rec=3),
    GnssFrame(
        timestamp_us=7000, sentence="$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
    ),
    Ack(seq=9, status=AckStatus.QUEUE_FULL),
]


@st.composite
def bridge_streams(draw: st.DrawFn) -> tuple[list[bytes], list[Frame]]:
    """Encoded frames, some corrupted, split into reads anywhere; and the frames left intact."""
    frames = draw(st.lists(st.sampled_from(_BRIDGE_FRAMES), min_size=1, max_size=12))
    pieces, intact = [], []
    for frame in frames:
        encoded = encode_frame(frame)
        if draw(st.integers(0, 2)) == 0:
            pieces.append(draw(mutated(encoded) | st.binary(max_size=300)))
        else:
            pieces.append(encoded)
            intact.append(frame)
    stream = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reads = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    return reads, intact


def is_subsequence(wanted: list[Frame], found: list[Frame]) -> bool:
    remaining = iter(found)
    return all(any(frame == candidate for candidate in remaining) for frame in wanted)


@budget()
@given(stream=bridge_streams())
def test_the_serial_stream_keeps_every_intact_frame_and_counts_the_rest(
    stream: tuple[list[bytes], list[Frame]],
) -> None:
    reads, intact = stream
    decoder = StreamDecoder()
    found = [frame for data in reads for frame in decoder.feed(data)]
    assert decoder.stats.frames_ok == len(found)
    assert is_subsequence(intact, found)


@budget()
@given(reads=st.lists(st.binary(max_size=700), max_size=10))
def test_random_serial_bytes_never_break_the_stream_decoder(reads: list[bytes]) -> None:
    decoder = StreamDecoder()
    found = [frame for data in reads for frame in decoder.feed(data)]
    stats = decoder.stats
    assert stats.frames_ok == len(found)
    assert stats.bytes_discarded <= sum(map(len, reads))
    frame = _BRIDGE_FRAMES[0]
    assert decoder.feed(b"\x00" + encode_frame(frame)) == [frame]  # and it still resynchronises


# --------------------------------------------------------------------------- V2X

STATION = 5
LAT0, LON0 = 48.1234567, 11.7654321
T_V2X = 1_763_700_000_000_000_000
POSITION = ReferencePosition(latitude_deg=LAT0, longitude_deg=LON0, altitude_m=520.0)
SEED_CAM = Cam(
    station_id=STATION,
    station_type=StationType.PASSENGER_CAR,
    generation_delta_time=4242,
    position=POSITION,
    speed_mps=13.89,
    heading_deg=123.4,
    low_frequency=CamLowFrequency(
        path_history=(PathPoint(delta_latitude_deg=0.0001, delta_longitude_deg=0.0),)
    ),
)
SEED_DENM = Denm(
    station_id=STATION,
    management=DenmManagement(
        action_id=ActionId(STATION, 7),
        detection_time=its_time(T_V2X) - 100,
        reference_time=its_time(T_V2X),
        event_position=POSITION,
        station_type=StationType.PASSENGER_CAR,
        validity_duration_s=60,
    ),
    situation=DenmSituation(information_quality=3, cause_code=99, sub_cause_code=1),
    location=DenmLocation(traces=((PathPoint(delta_latitude_deg=0.0001, delta_longitude_deg=0.0),),)),
)
UPER_SEEDS = (encode_cam(SEED_CAM), encode_denm(SEED_DENM))


@budget()
@given(data=st.one_of(*(mutated(seed) for seed in UPER_SEEDS)))
def test_mutated_cams_and_denms_decode_to_encodable_values_or_raise_decode_error(data: bytes) -> None:
    for decode in (decode_cam, decode_denm):
        try:
            message = decode(data)
        except V2xDecodeError:
            continue
        assert decode(encode_cam(message) if isinstance(message, Cam) else encode_denm(message)) == message


class _Radio(V2xTransport):
    """Hands packets to the stack as a radio would."""

    name = "radio"

    def _open(self) -> None:
        pass

    def _send(self, packet: bytes, route: PacketRoute) -> None:
        pass

    def hear(self, packet: bytes) -> None:
        self._deliver(packet)

    def close(self) -> None:
        pass


def _packets(signer: Signer | None) -> list[bytes]:
    """A CAM (single-hop broadcast) and a DENM (GeoBroadcast) as our encoders send them."""
    source = LongPositionVector(
        address=GnAddress.for_station(STATION, StationType.PASSENGER_CAR),
        timestamp_ms=123_456,
        latitude_deg=LAT0,
        longitude_deg=LON0,
        speed_mps=13.89,
        heading_deg=123.4,
    )
    generation_us = its_microseconds(T_V2X)
    location = generation_location(LAT0, LON0, 520.0)

    def secure(psid: int) -> Callable[[bytes], bytes] | None:
        return None if signer is None else lambda body: signer.sign(body, psid, generation_us, location)

    return [
        build_shb(encode_cam(SEED_CAM), source=source, secure=secure(CAM_PSID)),
        build_gbc(
            encode_denm(SEED_DENM),
            source=source,
            area=GeoArea.circle(LAT0, LON0, 500),
            sequence_number=3,
            secure=secure(DENM_PSID),
        ),
    ]


@pytest.fixture(scope="module")
def v2x_security() -> tuple[SecurityConfig, list[bytes]]:
    """A trusted root and the signed seed packets of a station it issued a ticket to."""
    start_s = its_time(T_V2X) // 1000 - 3600
    authority = generate_authority(Validity(start_s, 7 * 86400))
    key = ec.generate_private_key(ec.SECP256R1())
    ticket = issue_ticket(authority, key.public_key(), Validity(start_s, 86400), (CAM_PSID, DENM_PSID))
    return SecurityConfig([authority.certificate]), _packets(Signer(key, ticket))


_UNSIGNED_PACKETS = _packets(None)


@budget()
@given(choice=st.data(), signed=st.booleans())
def test_every_packet_the_v2x_stack_hears_is_counted_once_as_received_or_rejected(
    v2x_security: tuple[SecurityConfig, list[bytes]], choice: st.DataObject, signed: bool
) -> None:
    config, signed_packets = v2x_security
    seeds = signed_packets if signed else _UNSIGNED_PACKETS
    packets = choice.draw(
        st.lists(st.sampled_from(seeds) | mutated(seeds[0]) | mutated(seeds[1]), max_size=6)
    )
    radio = _Radio()
    verifier = Verifier(SecurityConfig(config.trusted_authorities, require_signed=signed))
    stack = V2xStack(V2xConfig(station_id=99), [radio], verifier=verifier, clock=lambda: T_V2X)
    for count, packet in enumerate(packets, 1):
        radio.hear(packet)
        counters = stack.counters()
        outcomes = sum(
            n for name, n in counters.items() if name.startswith(("received.cam", "denm.", "rejected."))
        )
        assert outcomes == count, counters  # a CAM, an accepted DENM update, or a rejection with its reason


_RELAY_UPLOADS = [
    (v2x_topics.upload_topic("car-5", kind, quadkey(LAT0, LON0, v2x_topics.PUBLISH_ZOOM)), packet)
    for kind, packet in zip(v2x_topics.KINDS, _UNSIGNED_PACKETS, strict=True)
]


@budget()
@given(
    upload=st.sampled_from(_RELAY_UPLOADS).flatmap(
        lambda upload: st.tuples(
            st.just(upload[0]) | mutated(upload[0].encode(), 2).map(lambda b: b.decode("utf-8", "replace")),
            mutated(upload[1]) | st.just(upload[1]),
        )
    )
)
def test_the_relay_forwards_uploads_to_their_tile_or_refuses_them_with_a_reason(
    upload: tuple[str, bytes],
) -> None:
    topic, packet = upload
    try:
        tile_topic = check_upload(topic, packet)
    except UploadRefused as exc:
        assert exc.reason in ("topic", "too_large", "geonetworking", "kind", "message", "tile")
        return
    address = v2x_topics.parse_upload_topic(topic)
    assert tile_topic == v2x_topics.tile_topic(address.kind, address.quadkey)


# --------------------------------------------------------------------------- configuration files


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the files the examples write, one after the other."""
    return tmp_path_factory.mktemp("fuzz")


EDGE_TOML = f"""
[vehicle]
vin = "RWDEM000000000001"
fleet = "demo"

[mqtt]
host = "127.0.0.1"
port = 1883
keepalive_s = 30

[batch]
max_records = 1000
max_age_s = 1.0

[health]
interval_s = 10.0

[uplink]
spool_max_mb = 256.0
spool_max_age_h = 168.0
compression = "zlib"
max_in_flight = 20
max_messages_per_s = 20.0

[events]
enabled = true
vehicle_class = "car"

[v2x]
station_id = 1001
station_type = "passenger_car"
length_m = 4.6
width_m = 1.8

[v2x.udp]
group = "239.255.0.47"
port = 47001

[v2x.relay]
via_relay = true
publish_zoom = 18

[[bus]]
name = "can0"
dbc = ["{DBC}"]
interface = "virtual"
channel = "vehicle-1"
timeout_factor = 3.0
options = {{ preserve_timestamps = true }}
"""
_TOML_VALUES = st.sampled_from(
    (
        "nan", "inf", "-inf", "+inf", "-1", "0", "1e308", "-1e308", "9223372036854775807", "true",
        '""', '"\\u0000"', '"can 0"', "[]", "{}", "[1, 2]", '"x"', "1979-05-27T07:32:00Z", "0.0",
    )
)  # fmt: skip


@st.composite
def mutated_toml(draw: st.DrawFn, text: str) -> bytes:
    """``text`` with values swapped for hostile ones, lines dropped or repeated, maybe bytes mutated."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(("value", "value", "drop", "repeat")))
        if edit == "value" and "=" in lines[at]:
            key = lines[at].split("=", 1)[0]
            lines[at] = f"{key}= {draw(_TOML_VALUES)}"
        elif edit == "drop":
            del lines[at]
        elif edit == "repeat":
            lines.insert(at, lines[at])
    data = "\n".join(lines).encode()
    return draw(mutated(data, max_edits=3)) if draw(st.integers(0, 3)) == 0 else data


@budget()
@given(text=mutated_toml(EDGE_TOML))
@example(text=EDGE_TOML.replace("spool_max_mb = 256.0", "spool_max_mb = inf").encode())  # was OverflowError
@example(text=EDGE_TOML.replace("max_age_s = 1.0", "max_age_s = nan").encode())  # was accepted
def test_mutated_edge_configs_load_with_valid_settings_or_raise_config_error(
    scratch: Path, text: bytes
) -> None:
    path = scratch / "edge.toml"
    path.write_bytes(text)
    try:
        config = EdgeConfig.load(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc  # names the file
        return
    numbers = (
        config.batch.max_age_s,
        config.health_interval_s,
        config.uplink.spool_max_age_s,
        config.uplink.max_messages_per_s,
        *(bus.timeout_factor for bus in config.buses),
    )
    assert all(math.isfinite(number) and number > 0 for number in numbers)
    assert 0 < config.uplink.spool_max_bytes < 2**63


@budget()
@given(data=st.one_of(mutated(EDGE_TOML.encode()), st.binary(max_size=200)))
def test_any_bytes_load_as_a_table_or_raise_config_error(scratch: Path, data: bytes) -> None:
    path = scratch / "any.toml"
    path.write_bytes(data)
    try:
        Table.load(path)
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc


# --------------------------------------------------------------------------- DBC files

_DBC_NUMBERS = st.sampled_from(("0", "-1", "65", "4294967295", "2147483648", "1e400", "-0.5", "99999999999"))


@st.composite
def mutated_dbc(draw: st.DrawFn, text: str) -> bytes:
    """``text`` with numbers swapped, lines dropped or repeated, maybe bytes mutated."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(("number", "number", "drop", "repeat")))
        numbers = list(re.finditer(r"-?\d+(?:\.\d+)?", lines[at]))
        if edit == "number" and numbers:
            number = draw(st.sampled_from(numbers))
            lines[at] = lines[at][: number.start()] + draw(_DBC_NUMBERS) + lines[at][number.end() :]
        elif edit == "drop":
            del lines[at]
        elif edit == "repeat":
            lines.insert(at, lines[at])
    data = "\n".join(lines).encode()
    return draw(mutated(data, max_edits=3)) if draw(st.booleans()) else data


DBC_TEXT = DBC.read_text()


@budget(0.2)
@given(text=mutated_dbc(DBC_TEXT), strict=st.booleans())
@example(text=DBC_TEXT.replace("16|16@1+ (0.01,0)", "16|4294967295@1+ (0.01,0)").encode(), strict=False)
@example(
    text=DBC_TEXT.replace("BO_ 160 ESP_Speed: 8", "BO_ 160 ESP_Speed: 4294967295").encode(), strict=False
)
@example(text=DBC_TEXT.replace("Counter : 8|4@1+ (1,0)", "Counter : 8|4@1+ (1e400,0)").encode(), strict=False)
@example(
    text=DBC_TEXT.replace("INT 0 65535;", f"INT 0 {'9' * 400};")
    .replace('"GenMsgCycleTime" BO_ 160 10;', f'"GenMsgCycleTime" BO_ 160 {"9" * 400};')
    .encode(),
    strict=False,
)
def test_mutated_dbc_files_load_and_decode_or_raise_dbc_load_error(
    scratch: Path, text: bytes, strict: bool
) -> None:
    path = scratch / "car.dbc"
    path.write_bytes(text)
    try:
        loaded = load_dbc_files([path], strict=strict)
    except DbcLoadError as exc:
        assert str(path) in str(exc)
        return
    try:
        decoder = BusDecoder("can0", loaded.database)
    except ValueError as exc:  # integrity attributes that do not fit the message; named
        assert str(exc).startswith(("message ", "checksum signal ")), exc
        return
    for message in loaded.database.messages:
        frame = can.Message(
            timestamp=T0 / 1e9,
            arbitration_id=message.frame_id,
            is_extended_id=message.is_extended_frame,
            is_fd=message.is_fd,
            data=bytes(range(message.length)),
        )
        decoder.decode(frame)
    assert_reconciled(decoder.stats)
    assert decoder.stats.frames_received == len(loaded.database.messages)


# --------------------------------------------------------------------------- size limits


def test_oversized_config_and_dbc_files_are_refused_before_parsing(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text("#" * (MAX_CONFIG_CHARS + 1))
    with pytest.raises(ConfigError, match=f"edge.toml: longer than {MAX_CONFIG_CHARS} characters"):
        Table.load(config)
    dbc = tmp_path / "car.dbc"
    with dbc.open("wb") as file:
        file.truncate(MAX_DBC_BYTES + 1)  # sparse: nothing written to the disk
    with pytest.raises(DbcLoadError, match=f"car.dbc: larger than {MAX_DBC_BYTES} bytes"):
        load_dbc_files([dbc])
