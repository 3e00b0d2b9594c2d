"""Diagnostic reports through real Mosquitto and InfluxDB: stored as documented, broken ones dead-lettered."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest import ingest_config, publish, run_service
from waiting import wait_for

from cloud.influx import InfluxClient, InfluxSettings
from cloud.ingest import IngestService
from cloud.schema import diagnostics_lines, dtc_status_byte
from roadwave import mqtt
from roadwave.contract.diagnostics import (
    DTC_CODE,
    DTC_STATUS_BITS,
    ECU_ID,
    MAX_DIAGNOSTICS_BYTES,
    MAX_TEXT,
    SOURCES,
    DiagnosticsReport,
    PidReading,
    ReportedDtc,
    diagnostics_topic,
    encode_diagnostics,
)

VIN_A = "RWDEM000000000001"
VIN_B = "RWDEM000000000002"
T0 = 1_763_700_000_000_000_000
FLEET = "demo"

MISFIRE = "Cylinder 1 misfire detected"
#: The report of the task: P0301 confirmed (and pending again, by mode 07), C0288 pending on the ABS ECU.
REPORT = DiagnosticsReport(
    t_ns=T0,
    trigger="periodic",
    mil_on=True,
    dtcs_complete=True,
    readings=(
        PidReading("7E8", 0x05, "coolant_temperature", 92.0, "celsius"),
        PidReading("7E8", 0x0C, "engine_speed", 812.5, "rpm"),
        PidReading("7E9", 0x0D, "vehicle_speed", 0.0, "km/h"),
    ),
    dtcs=(
        ReportedDtc("7E8", "P0301", ("confirmed",), "obd_mode_03", description=MISFIRE),
        ReportedDtc("7E8", "P0301", ("pending",), "obd_mode_07", description=MISFIRE),
        ReportedDtc(
            "18DAF128",
            "C0288",
            ("test_failed_this_operation_cycle", "pending"),
            "uds_0x19_02",
            failure_type=0x1F,
        ),
    ),
    problems={"timeout": 1},
)


def test_status_bytes_follow_iso_14229_bit_numbering() -> None:
    assert dtc_status_byte(["pending"]) == 1 << 2
    assert dtc_status_byte(["confirmed"]) == 1 << 3
    assert dtc_status_byte(["test_failed", "warning_indicator_requested"]) == 0x81
    assert dtc_status_byte([]) == 0


@pytest.fixture
def ingest(mosquitto, influxdb, influx_database, tmp_path) -> Iterator[IngestService]:
    service, stop, worker = run_service(
        ingest_config(mosquitto, influxdb.url, influx_database, tmp_path, flush_interval_s=0.2)
    )
    yield service
    stop.set()
    worker.join(30)
    assert not worker.is_alive()


@pytest.fixture
def publisher(mosquitto) -> Iterator[Any]:
    client = mqtt.connect(
        mqtt.MqttSettings(host=mosquitto.host, port=mosquitto.port), f"diag-pub-{uuid.uuid4().hex[:8]}"
    )
    yield client
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def influx(influxdb, influx_database) -> Iterator[InfluxClient]:
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    yield client
    client.close()


def by_tags(rows: list[dict[str, Any]], *tags: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row[tag] for tag in tags): row for row in rows}


@pytest.mark.integration
def test_a_report_is_stored_as_the_documented_points(ingest, publisher, influx) -> None:
    publish(publisher, diagnostics_topic(FLEET, VIN_A), encode_diagnostics(FLEET, VIN_A, REPORT))
    # An incomplete start-up report without the lamp, deflated, from another vehicle.
    quiet = DiagnosticsReport(T0 + 5 * 10**9, "start", None, False, problems={"timeout": 2, "negative": 1})
    deflated = encode_diagnostics(FLEET, VIN_B, quiet, compress=True)
    publish(publisher, diagnostics_topic(FLEET, VIN_B), deflated)
    wait_for(lambda: ingest.stats.diagnostics_written == 2, "both reports stored")
    assert ingest.stats.messages_rejected == 0
    assert ingest.stats.points_written == (1 + 3 + 2) + 1

    summaries = by_tags(influx.query('SELECT * FROM "diagnostics"'), "vin")
    assert summaries[(VIN_A,)] == {
        "time": T0,
        "fleet": FLEET,
        "vin": VIN_A,
        "trigger": "periodic",
        "mil_on": True,
        "dtcs_complete": True,
        "dtc_count": 2,
        "confirmed_count": 1,  # P0301
        "pending_count": 1,  # C0288 (P0301 is pending too, but confirmed counts first)
        "reading_count": 3,
        "problem_count": 1,
        "problems_timeout": 1,
        "problems_negative": None,
    }
    b = summaries[(VIN_B,)]
    assert (b["time"], b["trigger"], b["mil_on"], b["dtcs_complete"], b["dtc_count"]) == (
        T0 + 5 * 10**9,
        "start",
        None,
        False,
        0,
    )
    assert (b["problem_count"], b["problems_timeout"], b["problems_negative"]) == (3, 2, 1)

    dtcs = by_tags(influx.query("SELECT * FROM dtcs"), "ecu", "code", "source")
    assert dtcs == {
        ("7E8", "P0301", "obd_mode_03"): {
            "time": T0,
            "fleet": FLEET,
            "vin": VIN_A,
            "ecu": "7E8",
            "code": "P0301",
            "source": "obd_mode_03",
            "failure_type": None,
            "pending": False,
            "confirmed": True,
            "status": 8,
            "description": MISFIRE,
        },
        ("7E8", "P0301", "obd_mode_07"): {
            "time": T0,
            "fleet": FLEET,
            "vin": VIN_A,
            "ecu": "7E8",
            "code": "P0301",
            "source": "obd_mode_07",
            "failure_type": None,
            "pending": True,
            "confirmed": False,
            "status": 4,
            "description": MISFIRE,
        },
        ("18DAF128", "C0288", "uds_0x19_02"): {
            "time": T0,
            "fleet": FLEET,
            "vin": VIN_A,
            "ecu": "18DAF128",
            "code": "C0288",
            "source": "uds_0x19_02",
            "failure_type": "1F",
            "pending": True,
            "confirmed": False,
            "status": 0b110,
            "description": None,
        },
    }

    obd = by_tags(influx.query("SELECT * FROM obd"), "ecu")
    assert obd == {
        ("7E8",): {
            "time": T0,
            "fleet": FLEET,
            "vin": VIN_A,
            "ecu": "7E8",
            "coolant_temperature": 92.0,
            "engine_speed": 812.5,
            "vehicle_speed": None,
        },
        ("7E9",): {
            "time": T0,
            "fleet": FLEET,
            "vin": VIN_A,
            "ecu": "7E9",
            "coolant_temperature": None,
            "engine_speed": None,
            "vehicle_speed": 0.0,
        },
    }
    types = {
        (row["fieldKey"], row["fieldType"])
        for measurement in ("diagnostics", "dtcs", "obd")
        for row in influx.query(f'SHOW FIELD KEYS FROM "{measurement}"')
    }
    assert {
        ("mil_on", "boolean"),
        ("dtc_count", "integer"),
        ("problems_timeout", "integer"),
        ("status", "integer"),
        ("description", "string"),
        ("engine_speed", "float"),
    } <= types


def broken_reports() -> dict[bytes, str]:
    """Payloads for VIN_A's topic, each with the part of the reason that names what is wrong."""
    good = json.loads(encode_diagnostics(FLEET, VIN_A, REPORT))

    def edited(**changes: Any) -> bytes:
        return json.dumps({**good, **changes}).encode()

    hotter = PidReading("7E8", 0x05, "coolant_temperature", 93.0, "celsius")
    twice = replace(REPORT, readings=(*REPORT.readings, hotter))
    return {
        edited(dtcs=[{**good["dtcs"][0], "code": "P0G01"}]): "dtc 0: 'P0G01' is not a DTC",
        edited(mil_on="yes"): "'mil_on' must be bool or null, got str",
        edited(trigger="sometimes"): "'trigger' must be one of start, periodic, mil, manual",
        b" " * MAX_DIAGNOSTICS_BYTES + encode_diagnostics(FLEET, VIN_A, REPORT): "exceeds 524288",
        encode_diagnostics(FLEET, VIN_B, REPORT): "but was published on",
        encode_diagnostics(FLEET, VIN_A, twice): "ECU 7E8 reports reading 'coolant_temperature' twice",
        encode_diagnostics(
            FLEET, VIN_A, replace(REPORT, readings=(PidReading("7E8", 0x1F, "time", 60.0, "s"),))
        ): "reading name 'time' is reserved",
    }


@pytest.mark.integration
def test_broken_reports_are_rejected_dead_lettered_and_counted_and_the_ingest_goes_on(
    ingest, publisher, influx
) -> None:
    topic = diagnostics_topic(FLEET, VIN_A)
    bad = broken_reports()
    publish(publisher, topic, encode_diagnostics(FLEET, VIN_A, REPORT))
    for payload in bad:
        publish(publisher, topic, payload)
    later = replace(REPORT, t_ns=T0 + 60 * 10**9)
    publish(publisher, topic, encode_diagnostics(FLEET, VIN_A, later))
    wait_for(
        lambda: ingest.stats.diagnostics_written == 2 and ingest.stats.messages_rejected == len(bad),
        "the good reports stored and the broken ones rejected",
    )
    letters = list(ingest.dead_letters)
    assert len(letters) == len(bad)
    for payload, reason in bad.items():
        (letter,) = [letter for letter in letters if letter.payload == payload]
        assert reason in letter.reason and letter.topic == topic, (reason, letter.reason)
    rows = influx.query(f'SELECT "dtc_count" FROM "diagnostics" WHERE vin = \'{VIN_A}\'')
    assert [row["time"] for row in rows] == [T0, T0 + 60 * 10**9]
    assert ingest.stats.messages_acked == len(bad) + 2


#: Descriptions the contract accepts: printable, at most MAX_TEXT characters (quotes, backslashes...).
DESCRIPTIONS = st.text(max_size=MAX_TEXT).filter(str.isprintable)
DTCS = st.builds(
    ReportedDtc,
    ecu=st.from_regex(ECU_ID, fullmatch=True),
    code=st.from_regex(DTC_CODE, fullmatch=True),
    status=st.lists(st.sampled_from(DTC_STATUS_BITS), unique=True).map(tuple),
    source=st.sampled_from(SOURCES),
    failure_type=st.none() | st.integers(0, 255),
    description=st.none() | DESCRIPTIONS,
)


@pytest.mark.integration
def test_whatever_descriptions_and_codes_a_report_carries_influxdb_stores_them(influx) -> None:
    """Line protocol escaping: every valid report's points are written, descriptions read back unchanged."""
    written: dict[int, ReportedDtc] = {}

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(dtc=DTCS)
    def collect(dtc: ReportedDtc) -> None:
        t_ns = T0 + len(written)  # one report per time, so that no point overwrites another
        written[t_ns] = dtc
        influx.write_lines(
            diagnostics_lines(FLEET, VIN_A, DiagnosticsReport(t_ns, "manual", None, True, dtcs=(dtc,)))
        )

    collect()
    rows = influx.query(f'SELECT "code", "description", "status" FROM dtcs WHERE vin = \'{VIN_A}\'')
    assert {row["time"]: (row["code"], row["description"], row["status"]) for row in rows} == {
        t_ns: (dtc.code, dtc.description, dtc_status_byte(dtc.status)) for t_ns, dtc in written.items()
    }
