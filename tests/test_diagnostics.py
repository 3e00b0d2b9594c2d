"""Diagnostics: DTC and PID codecs, ISO-TP, and the client against simulated ECUs on a virtual bus.

Bus tests run the client and :class:`roadwave.sim.ecu.SimulatedEcus` on their own python-can
virtual channel. Waits are bounded by generous timeouts that only matter when something
hangs; assertions are on values and counts.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import can
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.diagnostics import (
    DiagnosticConfigError,
    DiagnosticTimeout,
    DtcError,
    EncodeError,
    IsoTpFrameError,
    NegativeResponseError,
    ResponseFormatError,
    obd,
)
from edge.diagnostics.agent import contract_report
from edge.diagnostics.client import (
    DiagnosticClient,
    DiagnosticPoller,
    DiagnosticReport,
    DtcSource,
    EcuPids,
    IsoTpConfig,
    PollerConfig,
    ProblemKind,
    Reassembler,
    ResponseCollector,
    parse_flow_control,
    segment,
)
from edge.diagnostics.dtc import (
    DESCRIPTIONS,
    Dtc,
    DtcRecord,
    DtcStatus,
    encode_dtc_report,
    parse_dtc_count,
    parse_dtc_report,
    read_dtc_request,
)
from roadwave.sim.ecu import (
    BRAKE_WEAR_DTC,
    BRAKES,
    ENGINE,
    LOW_VOLTAGE_V,
    OVERHEAT_C,
    DiagnosticState,
    EcuBehaviour,
    EcuDriver,
    Fault,
    SimulatedEcus,
)
from roadwave.sim.vehicle import Kinematics, VehicleModel

ENGINE_RX, BRAKES_RX = ENGINE.response_id, BRAKES.response_id
SAFETY_S = 10.0  # only reached when something hangs

# --- DTCs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("0301", "P0301"),  # the example of the domain facts
        ("0420", "P0420"),
        ("4123", "C0123"),  # 01 -> C, 00 -> 0
        ("9234", "B1234"),  # 10 -> B, 01 -> 1
        ("C100", "U0100"),  # 11 -> U
        ("F0FF", "U30FF"),  # digit 3 and hex nibbles
    ],
)
def test_obd_dtc_bytes_decode_to_letter_digit_and_nibbles(raw: str, code: str) -> None:
    dtc = Dtc.from_obd_bytes(bytes.fromhex(raw))
    assert str(dtc) == code
    assert dtc.obd_bytes().hex().upper() == raw


def test_every_two_byte_value_round_trips() -> None:
    for word in range(0x10000):
        data = word.to_bytes(2, "big")
        assert Dtc.from_obd_bytes(data).obd_bytes() == data


def test_uds_dtc_carries_the_failure_type() -> None:
    dtc = Dtc.from_uds_bytes(bytes.fromhex("03011F"))
    assert (dtc.code, dtc.failure_type, str(dtc)) == ("P0301", 0x1F, "P0301-1F")
    assert Dtc.parse(" p0301-1f ") == dtc
    assert dtc.uds_bytes() == bytes.fromhex("03011F")
    assert Dtc("P0301").uds_bytes() == bytes.fromhex("030100")


@pytest.mark.parametrize("text", ["X0301", "P4301", "P030", "P03011", "P0301-1", "P0301-XY", ""])
def test_malformed_dtc_text_is_rejected(text: str) -> None:
    with pytest.raises(DtcError, match="DTC"):
        Dtc.parse(text)


def test_malformed_dtc_bytes_and_fields_are_rejected() -> None:
    with pytest.raises(DtcError, match="2 bytes"):
        Dtc.from_obd_bytes(b"\x03")
    with pytest.raises(DtcError, match="3 bytes"):
        Dtc.from_uds_bytes(b"\x03\x01")
    with pytest.raises(DtcError, match="failure type"):
        Dtc("P0301", 256)
    with pytest.raises(DtcError, match="upper case"):
        Dtc("p0301")


def test_status_bits_follow_iso_14229() -> None:
    assert DtcStatus.PENDING == 1 << 2  # domain facts: bit 2 pending, bit 3 confirmed
    assert DtcStatus.CONFIRMED == 1 << 3
    assert DtcStatus.WARNING_INDICATOR_REQUESTED == 1 << 7
    assert DtcStatus(0x0C).labels() == ("pending", "confirmed")
    assert DtcStatus(0x81).labels() == ("test_failed", "warning_indicator_requested")


def test_descriptions_cover_the_common_generic_codes() -> None:
    for code in DESCRIPTIONS:
        assert str(Dtc.parse(code)) == code
    for cylinder in range(1, 9):
        assert f"cylinder {cylinder}" in (Dtc(f"P030{cylinder}").description or "")
    for code in ("P0300", "P0420", "P0171", "P0172", "P0128", "P0217", "P0562", "P0563", "P0500", "U0100"):
        assert Dtc(code).description
    assert Dtc("P1234").description is None  # manufacturer-specific: no generic meaning


def test_the_documented_descriptions_are_the_ones_in_the_code() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md"
    section = docs.read_text(encoding="utf-8").split("### Descriptions", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ", 1) for line in section.splitlines() if line.startswith("| ")]
    assert {code: text for code, text in rows[1:]} == DESCRIPTIONS  # after the header row


def test_uds_dtc_report_round_trips_and_rejects_bad_layouts() -> None:
    records = [
        DtcRecord(Dtc("P0301", 0), DtcStatus(0x2F)),
        DtcRecord(Dtc("C0288", 0x11), DtcStatus.TEST_FAILED | DtcStatus.PENDING),
    ]
    payload = encode_dtc_report(DtcStatus(0xAF), records)
    assert payload[:3] == bytes([0x59, 0x02, 0xAF])
    assert parse_dtc_report(payload) == (DtcStatus(0xAF), records)
    with pytest.raises(ResponseFormatError) as short:
        parse_dtc_report(payload[:-1])
    assert short.value.reason == "length"
    with pytest.raises(ResponseFormatError) as other:
        parse_dtc_report(bytes([0x59, 0x01, 0xFF]))
    assert other.value.reason == "service"
    count = parse_dtc_count(bytes.fromhex("5901AF000003"))
    assert (count.availability, count.format_id, count.count) == (DtcStatus(0xAF), 0, 3)
    with pytest.raises(EncodeError, match="subfunction"):
        read_dtc_request(0x0A, 0xFF)


# --- OBD-II PIDs ------------------------------------------------------------------------------

# The formulas of the domain facts file, written out independently of edge.diagnostics.obd.
FACT_FORMULAS = {
    0x05: lambda d: d[0] - 40,
    0x0C: lambda d: (256 * d[0] + d[1]) / 4,
    0x0D: lambda d: d[0],
    0x42: lambda d: (256 * d[0] + d[1]) / 1000,
    0x31: lambda d: 256 * d[0] + d[1],
    0xA6: lambda d: int.from_bytes(d, "big") / 10,
}


@given(data=st.binary(min_size=4, max_size=4))
def test_pid_formulas_match_the_domain_facts(data: bytes) -> None:
    for number, formula in FACT_FORMULAS.items():
        pid = obd.PIDS[number]
        raw = data[: pid.size]
        assert pid.decode(raw) == pytest.approx(formula(raw))
        assert pid.encode(pid.decode(raw)) == raw


def test_pid_encoding_refuses_values_out_of_range() -> None:
    with pytest.raises(EncodeError, match=r"PID 0x05 .* -40 to 215"):
        obd.PIDS[0x05].encode(216)
    with pytest.raises(ResponseFormatError, match="2 data bytes"):
        obd.PIDS[0x0C].decode(b"\x01")


def test_supported_pid_bitmap() -> None:
    # BE 1F A8 13 read bit by bit, most significant first, from PID 0x01.
    expected = {
        0x01,
        0x03,
        0x04,
        0x05,
        0x06,
        0x07,
        0x0C,
        0x0D,
        0x0E,
        0x0F,
        0x10,
        0x11,
        0x13,
        0x15,
        0x1C,
        0x1F,
        0x20,
    }
    assert obd.decode_supported(0x00, bytes.fromhex("BE1FA813")) == expected
    assert obd.encode_supported(0x00, expected) == bytes.fromhex("BE1FA813")
    assert obd.decode_supported(0xA0, obd.encode_supported(0xA0, {0xA6})) == {0xA6}
    assert obd.with_bitmaps({0x0D, 0xA6}) == {0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0x0D, 0xA6}


def test_monitor_status_has_mil_and_dtc_count() -> None:
    status = obd.MonitorStatus.decode(bytes([0x83, 0x08, 0x00, 0x00]))
    assert (status.mil_on, status.dtc_count, status.compression_ignition) == (True, 3, True)
    assert obd.MonitorStatus(False, 5).encode()[0] == 5


def test_pid_request_and_response_validation() -> None:
    assert obd.pid_request([0x05, 0x0C]) == bytes([0x01, 0x05, 0x0C])
    with pytest.raises(EncodeError, match="1 to 6"):
        obd.pid_request([0x04, 0x05, 0x0C, 0x0D, 0x1F, 0x2F, 0x31])
    with pytest.raises(EncodeError, match="separate requests"):
        obd.pid_request([0x00, 0x05])
    with pytest.raises(EncodeError, match="unknown"):
        obd.pid_request([0x99])
    data = obd.parse_pid_response(bytes.fromhex("41057B0C1AF8"), [0x05, 0x0C])
    assert data == {0x05: b"\x7b", 0x0C: b"\x1a\xf8"}
    for payload, reason in [
        ("41057B0C1A", "length"),  # truncated
        ("41057B0D10", "unrequested pid"),
        ("41057B057B", "duplicate pid"),
        ("42057B", "service"),
    ]:
        with pytest.raises(ResponseFormatError) as error:
            obd.parse_pid_response(bytes.fromhex(payload), [0x05, 0x0C])
        assert error.value.reason == reason


def test_dtc_list_response_checks_the_count() -> None:
    assert obd.parse_dtc_response(bytes.fromhex("430203010420"), 0x03) == [Dtc("P0301"), Dtc("P0420")]
    assert obd.parse_dtc_response(bytes.fromhex("470103010000")[:4], 0x07) == [Dtc("P0301")]
    assert obd.parse_dtc_response(bytes.fromhex("4302030100 00".replace(" ", "")), 0x03) == [Dtc("P0301")]
    with pytest.raises(ResponseFormatError) as error:
        obd.parse_dtc_response(bytes.fromhex("43050301"), 0x03)
    assert error.value.reason == "dtc count"
    with pytest.raises(ResponseFormatError) as error:
        obd.parse_dtc_response(bytes.fromhex("43"), 0x03)
    assert error.value.reason == "service"


# --- ISO-TP -----------------------------------------------------------------------------------


def _reassemble(frames: Sequence[bytes], reassembler: Reassembler) -> tuple[bytes | None, int]:
    payload, flow_controls = None, 0
    for frame in frames:
        fed = reassembler.feed(frame, 0.0)
        flow_controls += fed.flow_control is not None
        payload = fed.payload or payload
    return payload, flow_controls


@pytest.mark.parametrize("size", [1, 7, 8, 13, 14, 62, 63, 200, 4095])
def test_segment_and_reassemble(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frames = segment(payload)
    assert all(len(frame) == 8 for frame in frames)
    consecutive = max(0, -(-(size - 6) // 7)) if size > 7 else 0
    assert len(frames) == 1 + consecutive
    if consecutive:
        assert [f[0] & 0x0F for f in frames[1:]] == [n % 16 for n in range(1, consecutive + 1)]
    got, flow_controls = _reassemble(frames, Reassembler(block_size=2, st_min_ms=0, n_cr_s=1.0))
    assert got == payload
    # one flow control after the first frame, then one after every full block of 2
    assert flow_controls == (1 + (consecutive - 1) // 2 if consecutive else 0)


def test_segment_refuses_empty_and_oversized_messages() -> None:
    with pytest.raises(EncodeError, match="1 to 4095"):
        segment(b"")
    with pytest.raises(EncodeError, match="1 to 4095"):
        segment(bytes(4096))


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (["00AAAAAAAAAAAAAA"], "single frame length"),
        (["0701"], "single frame length"),  # announces 7 bytes, carries 1
        (["2101020304050607"], "unexpected consecutive frame"),
        (["1005010203040506"], "first frame length"),
        (["10140102030405"], "short frame"),
        (["1014010203040506", "2201020304050607"], "sequence number"),
        (["1014010203040506", "21010203"], "short frame"),
        (["4000000000000000"], "reserved frame type"),
        ([""], "empty frame"),
    ],
)
def test_reassembler_rejects_broken_frames_with_a_reason(frames: list[str], reason: str) -> None:
    reassembler = Reassembler(block_size=0, st_min_ms=0, n_cr_s=1.0)
    *good, bad = (bytes.fromhex(frame) for frame in frames)
    for frame in good:
        reassembler.feed(frame, 0.0)
    with pytest.raises(IsoTpFrameError) as error:
        reassembler.feed(bad, 0.0)
    assert error.value.reason == reason


def test_reassembler_lapses_after_n_cr_and_reports_interrupted_transfers() -> None:
    first = bytes.fromhex("1014010203040506")
    reassembler = Reassembler(block_size=0, st_min_ms=0, n_cr_s=1.0)
    reassembler.feed(first, 10.0)
    assert reassembler.deadline == 11.0
    assert reassembler.expire(10.9) is None
    assert reassembler.expire(11.1) == "consecutive frame timeout"
    with pytest.raises(IsoTpFrameError, match="no transfer in progress"):
        reassembler.feed(bytes.fromhex("2107080910111213"), 11.2)
    reassembler.feed(first, 12.0)
    fed = reassembler.feed(bytes.fromhex("03AABBCC"), 12.1)
    assert (fed.payload, fed.abandoned) == (bytes.fromhex("AABBCC"), "interrupted transfer")


def test_flow_control_separation_times() -> None:
    assert parse_flow_control(bytes.fromhex("30020A")).separation_s == pytest.approx(0.010)
    assert parse_flow_control(bytes.fromhex("3000F3")).separation_s == pytest.approx(0.0003)
    assert parse_flow_control(bytes.fromhex("300080")).separation_s == pytest.approx(0.127)  # reserved
    with pytest.raises(IsoTpFrameError) as error:
        parse_flow_control(bytes.fromhex("330000"))
    assert error.value.reason == "flow status"


def test_isotp_config_is_validated() -> None:
    with pytest.raises(DiagnosticConfigError, match="st_min_ms must be an integer 0-127"):
        IsoTpConfig(st_min_ms=200)
    with pytest.raises(DiagnosticConfigError, match="n_cr_s"):
        IsoTpConfig(n_cr_s=0)
    with pytest.raises(DiagnosticConfigError, match="uds_targets"):
        PollerConfig(uds_targets=(0x7DF,))
    with pytest.raises(DiagnosticConfigError, match="0x33"):
        PollerConfig(pids=(0x05, 0x33))


def test_response_collector_follows_response_pending() -> None:
    request = read_dtc_request(0x02, 0xFF)
    collector = ResponseCollector(request, [ENGINE_RX], [ENGINE_RX], now=0.0, p2_s=0.1, p2_star_s=2.0)
    assert collector.offer(ENGINE_RX, bytes([0x7F, 0x19, 0x78]), 0.05) is None
    assert not collector.done(1.0, {})  # past P2, but within P2* of the 0x78
    assert collector.wake_at(1.0, {}) == pytest.approx(2.05)
    assert collector.offer(ENGINE_RX, bytes([0x59, 0x01, 0xFF, 0, 0, 0]), 1.1) == "unrelated response"
    assert collector.offer(ENGINE_RX, bytes([0x7F, 0x22, 0x11]), 1.2) == "unrelated response"
    assert collector.offer(ENGINE_RX, bytes([0x7F, 0x19]), 1.2) == "negative response length"
    assert collector.offer(BRAKES_RX, bytes([0x59, 0x02, 0xFF]), 1.2) == "unexpected source"
    assert collector.offer(ENGINE_RX, bytes([0x59, 0x02, 0xFF]), 1.3) is None
    assert collector.done(1.3, {})
    assert collector.result().positive == {ENGINE_RX: bytes([0x59, 0x02, 0xFF])}


def test_response_collector_waits_for_transfers_and_reports_missing_ecus() -> None:
    collector = ResponseCollector(b"\x03", range(0x7E8, 0x7F0), None, now=0.0, p2_s=0.1, p2_star_s=5.0)
    assert collector.offer(ENGINE_RX, bytes.fromhex("4300"), 0.01) is None
    assert not collector.done(0.05, {})  # the whole window: more ECUs may answer
    assert not collector.done(0.2, {BRAKES_RX: 1.0})  # an answer still being reassembled
    assert collector.done(0.2, {})
    silent = ResponseCollector(b"\x03", range(0x7E8, 0x7F0), [ENGINE_RX, BRAKES_RX], 0.0, 0.1, 5.0)
    silent.offer(ENGINE_RX, bytes.fromhex("4300"), 0.01)
    assert not silent.done(0.05, {})
    assert silent.done(0.1, {})
    assert silent.result().missing == {BRAKES_RX}


# --- client and simulated ECUs on a virtual bus ------------------------------------------------


@dataclass
class Car:
    channel: str
    state: DiagnosticState
    ecus: SimulatedEcus
    bus: can.BusABC
    notifier: can.Notifier
    client: DiagnosticClient
    extra: list[DiagnosticClient]

    def client_with(self, **kwargs: Any) -> DiagnosticClient:
        """Another client on the same bus and notifier, closed with the fixture."""
        client = DiagnosticClient(self.bus, self.notifier, **kwargs)
        self.extra.append(client)
        return client


def _notifier(bus: can.BusABC, *listeners: can.Listener) -> can.Notifier:
    """A notifier that looks up from the bus every 0.1 s, so stopping it is quick."""
    return can.Notifier(bus, list(listeners), timeout=0.1)


def _channel() -> str:
    return f"diag-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def car() -> Iterator[Car]:
    channel = _channel()
    state = DiagnosticState()
    ecus = SimulatedEcus.open("virtual", channel, state)
    bus = can.Bus(interface="virtual", channel=channel)
    notifier = _notifier(bus)
    client = DiagnosticClient(bus, notifier, p2_s=0.5)
    car = Car(channel, state, ecus, bus, notifier, client, [])
    try:
        yield car
    finally:
        for extra in car.extra:
            extra.close()
        client.close()
        notifier.stop()
        bus.shutdown()
        ecus.stop()


BOTH = (EcuPids(ENGINE_RX, ENGINE.pids), EcuPids(BRAKES_RX, BRAKES.pids))


def test_single_frame_request_and_response(car: Car) -> None:
    car.state.update(coolant_c=97.0)
    response = car.client.request(ENGINE.request_id, bytes([0x01, 0x05]))
    assert response == bytes([0x41, 0x05, 97 + 40])
    assert car.client.counts() == {}


def test_two_ecus_answer_a_functional_request(car: Car) -> None:
    found = car.client.read_supported_pids()
    assert {e.ecu: e.supported for e in found.items} == {
        ENGINE_RX: obd.with_bitmaps(ENGINE.pids),
        BRAKES_RX: obd.with_bitmaps(BRAKES.pids),
    }
    car.state.update(speed_kmh=57.0, engine_rpm=2210.5)
    readings = car.client.read_pids([0x0D, 0x0C], found.items)
    assert not readings.problems
    assert sorted((r.ecu, r.name, r.value) for r in readings.items) == [
        (ENGINE_RX, "engine_speed", 2210.5),
        (ENGINE_RX, "vehicle_speed", 57.0),
        (BRAKES_RX, "vehicle_speed", 57.0),
    ]


def test_multi_frame_responses_with_more_than_ten_dtcs(car: Car) -> None:
    for cylinder in range(1, 9):
        car.state.inject_misfire(cylinder)
    car.state.overheat(125.0)
    car.state.weaken_battery(4.0)
    expected = {f"P030{n}" for n in range(9)} | {"P0217", "P0562"}
    uds = car.client.read_uds_dtcs(ENGINE.request_id)
    assert not uds.problems
    assert {e.dtc.code for e in uds.items} == expected  # 3 + 11 * 4 bytes: a first frame and 6 CFs
    assert all(e.source is DtcSource.UDS and DtcStatus.PENDING in e.status for e in uds.items)
    car.state.next_drive_cycle()
    stored = car.client.read_obd_dtcs(0x03, BOTH)
    assert {e.dtc.code for e in stored.items if e.ecu == ENGINE_RX} == expected
    assert not [e for e in stored.items if e.ecu == BRAKES_RX]
    status = car.client.read_monitor_status(BOTH)
    assert {(m.ecu, m.status.mil_on, m.status.dtc_count) for m in status.items} == {
        (ENGINE_RX, True, 11),
        (BRAKES_RX, False, 0),
    }


def _drain(bus: can.BusABC) -> list[can.Message]:
    frames = []
    while (msg := bus.recv(timeout=0)) is not None:
        frames.append(msg)
    return frames


def test_flow_control_block_size_and_separation_are_honoured(car: Car) -> None:
    recorder = can.Bus(interface="virtual", channel=car.channel)
    try:
        client = car.client_with(isotp=IsoTpConfig(block_size=2, st_min_ms=5), p2_s=0.5)
        for cylinder in (1, 2, 3, 4, 5):
            car.state.inject_misfire(cylinder)
        uds = client.read_uds_dtcs(ENGINE.request_id)
        assert len(uds.items) == 6  # P0300-P0305: 27 bytes, a first frame and 3 CFs
        frames = [m for m in _drain(recorder) if m.arbitration_id in (ENGINE.request_id, ENGINE_RX)]
    finally:
        recorder.shutdown()
    kinds = [
        ("FC" if m.arbitration_id == ENGINE.request_id and m.data[0] >> 4 == 3 else f"{m.data[0] >> 4}")
        for m in frames
        if not (m.arbitration_id == ENGINE.request_id and m.data[0] >> 4 == 0)  # the request
    ]
    assert kinds == ["1", "FC", "2", "2", "FC", "2"]
    fc = next(m for m in frames if m.arbitration_id == ENGINE.request_id and m.data[0] >> 4 == 3)
    assert bytes(fc.data[:3]) == bytes([0x30, 2, 5])
    cfs = [m for m in frames if m.arbitration_id == ENGINE_RX and m.data[0] >> 4 == 2]
    assert cfs[1].timestamp - cfs[0].timestamp >= 0.005 - 0.0005  # STmin within a block


def test_negative_response_and_response_pending(car: Car) -> None:
    car.state.inject_misfire(4)
    # The ECU answers 0x78 twice, 0.3 s apart: longer than P2 = 0.2 s, within P2*.
    car.ecus.set_behaviour("engine", EcuBehaviour(pending=2, pending_delay_s=0.3))
    client = car.client_with(p2_s=0.2, p2_star_s=5.0)
    outcome = client.read_uds_dtcs(ENGINE.request_id)
    assert not outcome.problems
    assert [str(e.dtc) for e in outcome.items] == ["P0304-00"]
    car.ecus.set_behaviour("engine", EcuBehaviour(refuse_with=0x22))
    with pytest.raises(NegativeResponseError) as error:
        client.request(ENGINE.request_id, read_dtc_request(0x02, 0xFF))
    assert (error.value.ecu, error.value.service, error.value.code) == (ENGINE_RX, 0x19, 0x22)
    assert error.value.name == "conditionsNotCorrect"
    refused = client.read_uds_dtcs(ENGINE.request_id)
    assert [(p.ecu, p.kind) for p in refused.problems] == [(ENGINE_RX, ProblemKind.NEGATIVE_RESPONSE)]


def test_unsupported_requests_get_the_right_negative_response(car: Car) -> None:
    for payload, code in [
        (b"\x22\xf1\x90", 0x11),
        (b"\x19\x0a\xff", 0x12),
        (b"\x19\x02", 0x13),
        (b"\x01\x33", 0x31),
    ]:
        with pytest.raises(NegativeResponseError) as error:
            car.client.request(ENGINE.request_id, payload)
        assert error.value.code == code


def test_a_silent_ecu_times_out(car: Car) -> None:
    with pytest.raises(DiagnosticTimeout, match="0x7EA"):
        car.client.request(0x7E2, bytes([0x01, 0x0D]))  # nobody at 0x7E2
    car.ecus.set_behaviour("brakes", EcuBehaviour(silent=True))
    outcome = car.client.read_uds_dtcs(BRAKES.request_id)
    assert [(p.ecu, p.kind) for p in outcome.problems] == [(BRAKES_RX, ProblemKind.TIMEOUT)]
    assert car.ecus.counts()["requests ignored"] == 1


def _recv_from(bus: can.BusABC, arbitration_id: int, timeout_s: float = SAFETY_S) -> can.Message | None:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        msg = bus.recv(timeout=left)
        if msg is not None and msg.arbitration_id == arbitration_id:
            return msg
    return None


def test_ecu_sender_honours_wait_overflow_and_missing_flow_control() -> None:
    channel = _channel()
    state = DiagnosticState()
    for cylinder in range(1, 9):
        state.inject_misfire(cylinder)
    ecus = SimulatedEcus(can.Bus(interface="virtual", channel=channel), state, isotp=IsoTpConfig(n_bs_s=0.3))
    ecus.start()
    tester = can.Bus(interface="virtual", channel=channel)

    def send(hex_data: str) -> None:
        tester.send(
            can.Message(arbitration_id=ENGINE.request_id, data=bytes.fromhex(hex_data), is_extended_id=False)
        )

    def failures(expected: int) -> int:
        deadline = time.monotonic() + SAFETY_S
        while ecus.counts().get("responses failed", 0) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return ecus.counts().get("responses failed", 0)

    try:
        send("031902FF")
        first = _recv_from(tester, ENGINE_RX)
        assert first is not None and first.data[0] >> 4 == 1
        send("310000")  # wait ...
        send("300000")  # ... then everything, no gap
        reassembler = Reassembler(block_size=0, st_min_ms=0, n_cr_s=SAFETY_S)
        reassembler.feed(bytes(first.data), 0.0)
        payload = None
        while payload is None and (frame := _recv_from(tester, ENGINE_RX)) is not None:
            payload = reassembler.feed(bytes(frame.data), 0.0).payload
        assert payload is not None
        assert len(parse_dtc_report(payload)[1]) == 9
        send("031902FF")
        assert _recv_from(tester, ENGINE_RX) is not None
        send("320000")  # overflow: the ECU gives up
        assert failures(1) == 1
        send("031902FF")
        assert _recv_from(tester, ENGINE_RX) is not None  # and no flow control at all
        assert failures(2) == 2
        assert ecus.counts().get("responses sent", 0) == 1
    finally:
        tester.shutdown()
        ecus.stop()
        ecus.bus.shutdown()


def test_state_takes_live_values_from_the_vehicle_model() -> None:
    model = VehicleModel(40.0, np.random.default_rng(1))
    kinematics = Kinematics(
        time_s=30.0, position_m=10.0, travelled_m=300.0, speed=12.5, accel=0.2, gap=20.0, lead_speed=12.0
    )
    signals = model.signals(kinematics)
    state = DiagnosticState()
    state.update_from_signals(signals)
    assert state.values.speed_kmh == pytest.approx(45.0)
    speed = state.answer(ENGINE, bytes([0x01, 0x0D, 0x0C]), functional=False)
    assert speed is not None
    data = obd.parse_pid_response(speed, [0x0D, 0x0C])
    assert obd.PIDS[0x0D].decode(data[0x0D]) == 45.0
    assert obd.PIDS[0x0C].decode(data[0x0C]) == pytest.approx(signals["EngineSpeed"], abs=0.125)


class RawResponder(can.Listener):
    """An ECU that breaks the rules: answers any single-frame request with fixed raw frames."""

    def __init__(self, bus: can.BusABC, reply_id: int, frames: list[bytes]) -> None:
        self.bus, self.reply_id, self.frames = bus, reply_id, frames

    def on_message_received(self, msg: can.Message) -> None:
        if msg.arbitration_id in (0x7DF, self.reply_id - 8) and msg.data[0] >> 4 == 0:
            for frame in self.frames:
                self.bus.send(can.Message(arbitration_id=self.reply_id, data=frame, is_extended_id=False))


@pytest.mark.parametrize(
    ("frames", "problem", "count"),
    [
        (["0443050301"], ProblemKind.MALFORMED, "malformed dtc count"),  # 5 DTCs announced, 1 sent
        (["0143"], ProblemKind.MALFORMED, "malformed service"),  # no count byte
        (["054301"], ProblemKind.TIMEOUT, "single frame length"),  # frame shorter than announced
        (["100A430403010302", "2203040305"], ProblemKind.TIMEOUT, "sequence number"),
        (["100A430403010302"], ProblemKind.TIMEOUT, "consecutive frame timeout"),  # CFs never come
    ],
)
def test_malformed_responses_are_rejected_and_counted(
    frames: list[str], problem: ProblemKind, count: str
) -> None:
    channel = _channel()
    rogue_bus = can.Bus(interface="virtual", channel=channel)
    rogue_notifier = _notifier(rogue_bus, RawResponder(rogue_bus, 0x7EB, [bytes.fromhex(f) for f in frames]))
    bus = can.Bus(interface="virtual", channel=channel)
    notifier = _notifier(bus)
    client = DiagnosticClient(bus, notifier, p2_s=0.3, isotp=IsoTpConfig(n_cr_s=0.2))
    try:
        outcome = client.read_obd_dtcs(0x03, [EcuPids(0x7EB, frozenset())])
        assert outcome.items == ()
        assert [(p.ecu, p.kind) for p in outcome.problems] == [(0x7EB, problem)]
        assert client.counts().get(count) == 1
    finally:
        client.close()
        notifier.stop()
        rogue_notifier.stop()
        bus.shutdown()
        rogue_bus.shutdown()


def test_client_shares_the_bus_with_a_running_notifier(car: Car) -> None:
    seen: Counter[int] = Counter()

    class Counting(can.Listener):  # stands for the agent's decoding BusListener
        def on_message_received(self, msg: can.Message) -> None:
            seen[msg.arbitration_id] += 1

    car.notifier.add_listener(Counting())
    traffic = can.Bus(interface="virtual", channel=car.channel)

    def chatter() -> None:  # other ECUs' traffic while the client reads
        for n in range(2000):
            traffic.send(can.Message(arbitration_id=0x100, data=n.to_bytes(8, "big"), is_extended_id=False))
            if n % 50 == 0:
                time.sleep(0.001)

    sender = threading.Thread(target=chatter)
    sender.start()
    try:
        car.state.update(fuel_pct=40.0)
        for cylinder in range(1, 9):
            car.state.inject_misfire(cylinder)
        readings = car.client.read_pids([0x2F], BOTH)
        uds = car.client.read_uds_dtcs(ENGINE.request_id)
    finally:
        sender.join()
        traffic.shutdown()
    assert [r.value for r in readings.items] == [pytest.approx(40.0, abs=100 / 255)]
    assert len(uds.items) == 9 and not uds.problems
    deadline = time.monotonic() + SAFETY_S
    while seen[0x100] < 2000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen[0x100] == 2000  # the other listener missed nothing
    assert seen[ENGINE_RX] >= 2  # and saw the diagnostic frames too
    assert car.client.counts() == {}


# --- faults ------------------------------------------------------------------------------------


def test_misfire_goes_pending_then_confirmed_with_the_mil(car: Car) -> None:
    car.state.inject_misfire(2)
    pending = car.client.read_obd_dtcs(0x07, BOTH)
    stored = car.client.read_obd_dtcs(0x03, BOTH)
    assert [(e.ecu, e.dtc.code) for e in pending.items] == [(ENGINE_RX, "P0302")]
    assert stored.items == ()
    assert {m.status.mil_on for m in car.client.read_monitor_status(BOTH).items} == {False}
    car.state.next_drive_cycle()  # the misfire is still there
    stored = car.client.read_obd_dtcs(0x03, BOTH)
    assert [(e.ecu, e.dtc.code, e.status) for e in stored.items] == [
        (ENGINE_RX, "P0302", DtcStatus.CONFIRMED)
    ]
    engine = {m.ecu: m.status for m in car.client.read_monitor_status(BOTH).items}[ENGINE_RX]
    assert (engine.mil_on, engine.dtc_count) == (True, 1)
    (uds,) = car.client.read_uds_dtcs(ENGINE.request_id).items
    assert {DtcStatus.CONFIRMED, DtcStatus.WARNING_INDICATOR_REQUESTED} <= set(uds.status)
    # Repaired, the failing cycle closed, then three clean drive cycles: PENDING goes after
    # the first, the MIL after the third.
    car.state.repair()
    car.state.next_drive_cycle()
    (uds,) = car.client.read_uds_dtcs(ENGINE.request_id, status_mask=0xFF).items
    assert DtcStatus.PENDING in uds.status
    for cycles in range(1, 4):
        car.state.next_drive_cycle()
        (uds,) = car.client.read_uds_dtcs(ENGINE.request_id, status_mask=0xFF).items
        assert DtcStatus.PENDING not in uds.status
        assert (DtcStatus.WARNING_INDICATOR_REQUESTED in uds.status) == (cycles < 3)


def test_weak_battery_lowers_the_voltage_pid_and_sets_p0562(car: Car) -> None:
    car.state.update(battery_v=13.9)
    car.state.weaken_battery(3.2)
    (voltage,) = car.client.read_pids([0x42], BOTH).items
    assert voltage.value == pytest.approx(10.7) and voltage.value < LOW_VOLTAGE_V
    assert [e.dtc.code for e in car.client.read_obd_dtcs(0x07, BOTH).items] == ["P0562"]


def test_overheating_raises_the_coolant_pid_and_sets_p0217(car: Car) -> None:
    car.state.overheat(122.0)
    (coolant,) = car.client.read_pids([0x05], BOTH).items
    assert coolant.value == 122.0 > OVERHEAT_C
    (entry,) = car.client.read_obd_dtcs(0x07, BOTH).items
    assert (entry.dtc.code, entry.dtc.description) == ("P0217", DESCRIPTIONS["P0217"])


def test_worn_brakes_set_a_brake_ecu_dtc_seen_over_uds_only(car: Car) -> None:
    car.state.wear_brakes()
    (entry,) = car.client.read_uds_dtcs(BRAKES.request_id).items
    assert (entry.ecu, entry.dtc.code) == (BRAKES_RX, BRAKE_WEAR_DTC.code)
    assert DtcStatus.TEST_FAILED in entry.status
    assert car.client.read_obd_dtcs(0x07, BOTH).items == ()  # not emission-related
    assert car.client.read_uds_dtcs(ENGINE.request_id).items == ()


def test_mode_04_clears_codes_mil_and_distance(car: Car) -> None:
    car.state.inject_misfire(1)
    car.state.next_drive_cycle()
    car.state.repair()
    car.state.update(odometer_km=10_040.0)
    result = car.client.exchange(bytes([0x04]), expect=[ENGINE_RX, BRAKES_RX])
    assert result.positive == {ENGINE_RX: b"\x44", BRAKES_RX: b"\x44"}
    assert car.client.read_obd_dtcs(0x03, BOTH).items == ()
    assert {m.status.mil_on for m in car.client.read_monitor_status(BOTH).items} == {False}
    car.state.update(odometer_km=10_052.0)
    (distance,) = car.client.read_pids([0x31], BOTH).items
    assert distance.value == 12.0


def test_state_rejects_bad_faults_and_values() -> None:
    state = DiagnosticState()
    with pytest.raises(ValueError, match="cylinder must be an integer 1-8"):
        state.inject_misfire(9)
    with pytest.raises(ValueError, match=r"coolant_c must be within \[-40, 215\]"):
        state.update(coolant_c=300.0)
    with pytest.raises(ValueError, match="no live value named"):
        state.update(boost_kpa=1.0)
    with pytest.raises(ValueError, match="drop_v"):
        state.weaken_battery(-1.0)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("misfire=3", Fault("misfire", 3.0)),
        ("overheat@30", Fault("overheat", None, 30.0)),
        ("battery=2.5@600", Fault("battery", 2.5, 600.0)),
        ("brakes", Fault("brakes")),
    ],
)
def test_faults_parse(text: str, fault: Fault) -> None:
    assert Fault.parse(text) == fault


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "misfire",
            "fault 'misfire': misfire needs a value (misfire=CYL, battery=DROP_V, overheat[=C], brakes)",
        ),
        ("brakes=1", "brakes takes no value"),
        ("misfire=9", "cylinder must be an integer 1-8, got 9"),
        ("misfire=2.5", "misfire needs a cylinder number 1-8, got 2.5"),
        ("overheat=300", "coolant_c must be within [-40, 215], got 300.0"),
        ("battery=x", "the value 'x' is not a number"),
        ("tyres", "fault 'tyres': unknown kind 'tyres'; kinds: misfire=CYL"),
        ("brakes@-1", "a fault's time must be a finite number of seconds >= 0, got -1.0"),
        ("brakes@inf", "the time 'inf' is not a finite number"),
    ],
)
def test_bad_faults_are_refused_when_parsed(text: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        Fault.parse(text)
    assert message in str(error.value)


def test_ecu_driver_follows_the_vehicle_injects_faults_and_ends_drive_cycles() -> None:
    state = DiagnosticState()
    driver = EcuDriver(state, [Fault("brakes", at_s=5.0), Fault("misfire", 4.0)], drive_cycle_s=10.0)
    driver.advance(0.0, {"VehicleSpeed": 42.0, "CoolantTemp": 88.0, "HazardLights": 1})
    assert (state.values.speed_kmh, state.values.coolant_c) == (42.0, 88.0)
    assert DtcStatus.PENDING in (state.dtc_status(ENGINE.name, Dtc("P0304")) or DtcStatus(0))
    assert state.dtc_status(BRAKES.name, BRAKE_WEAR_DTC) is None
    driver.advance(0.5, {"VehicleSpeed": 50.0})  # within VALUE_UPDATE_S of the last update: kept for later
    assert state.values.speed_kmh == 42.0
    driver.advance(5.0, {"EngineSpeed": 2000.0})
    assert (state.values.speed_kmh, state.values.engine_rpm, state.values.run_time_s) == (50.0, 2000.0, 5.0)
    assert state.dtc_status(BRAKES.name, BRAKE_WEAR_DTC) is not None
    driver.advance(10.0, {})
    assert driver.drive_cycles == 1 and state.values.run_time_s == 0.0
    confirmed = state.dtc_status(ENGINE.name, Dtc("P0304"))
    assert confirmed is not None and DtcStatus.CONFIRMED in confirmed
    driver.advance(35.0, {})  # a gap in the frames: every cycle it spans ends
    assert driver.drive_cycles == 3 and state.values.run_time_s == 5.0
    with pytest.raises(ValueError, match="drive_cycle_s must be a finite number of seconds > 0"):
        EcuDriver(state, drive_cycle_s=0)


# --- the poller --------------------------------------------------------------------------------


def test_poller_reads_periodically_and_at_once_when_the_mil_comes_on(car: Car) -> None:
    reports: queue.Queue[DiagnosticReport] = queue.Queue()
    config = PollerConfig(interval_s=3600.0, uds_targets=(ENGINE.request_id, BRAKES.request_id))
    poller = DiagnosticPoller(car.client, config, reports.put)
    car.state.inject_misfire(6)
    with poller:
        first = reports.get(timeout=SAFETY_S)
        car.state.next_drive_cycle()
        car.state.wear_brakes()
        poller.report_mil(True)
        poller.report_mil(True)  # still on: no second trigger
        second = reports.get(timeout=SAFETY_S)
    assert (first.trigger, second.trigger) == ("start", "mil")
    assert poller.stats.mil_triggers == 1 and poller.stats.cycles == 2
    assert first.mil_on is False and second.mil_on is True
    assert first.codes() == ("P0306",) and second.codes() == ("C0288", "P0306")
    assert {e.ecu for e in first.ecus} == {ENGINE_RX, BRAKES_RX}
    assert {r.name for r in second.readings} >= {"coolant_temperature", "control_module_voltage", "odometer"}
    assert second.count(ProblemKind.TIMEOUT) == 0 and not second.problems
    wire = contract_report(second)
    brake = next(d for d in wire.dtcs if d.code == "C0288")
    assert (brake.ecu, brake.source, brake.description) == ("7E9", "uds_0x19_02", DESCRIPTIONS["C0288"])
    assert "test_failed" in brake.status and wire.mil_on is True and wire.dtcs_complete
    assert reports.empty()


def test_poller_counts_problems_when_no_ecu_answers() -> None:
    channel = _channel()
    bus = can.Bus(interface="virtual", channel=channel)
    notifier = _notifier(bus)
    client = DiagnosticClient(bus, notifier, p2_s=0.2)
    try:
        report = DiagnosticPoller(client, PollerConfig(), lambda report: None).run_cycle()
    finally:
        client.close()
        notifier.stop()
        bus.shutdown()
    assert report.mil_on is None and report.readings == () and report.dtcs == ()
    assert report.count(ProblemKind.TIMEOUT) == 3  # no OBD ECU, and the UDS targets 0x7E0 and 0x7E1


# --- interoperability with can-isotp, an independent ISO 15765-2 implementation ---------------


def test_interoperates_with_can_isotp() -> None:
    isotp = pytest.importorskip("isotp")
    channel = _channel()
    params = {"blocksize": 3, "stmin": 1, "tx_padding": 0x55, "blocking_send": True}
    with SimulatedEcus.open("virtual", channel) as ecus:
        for cylinder in range(1, 9):
            ecus.state.inject_misfire(cylinder)
        # can-isotp as the tester, our ECU sending multi-frame under its flow control.
        tester_bus = can.Bus(interface="virtual", channel=channel)
        address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=ENGINE.request_id, rxid=ENGINE_RX)
        tester = isotp.CanStack(tester_bus, address=address, params=params)
        tester.start()
        try:
            tester.send(read_dtc_request(0x02, 0xFF), send_timeout=SAFETY_S)
            payload = tester.recv(block=True, timeout=SAFETY_S)
        finally:
            tester.stop()
            tester_bus.shutdown()
    assert payload is not None
    _, records = parse_dtc_report(bytes(payload))
    assert {r.dtc.code for r in records} == {f"P030{n}" for n in range(9)}

    # can-isotp as an ECU sending 100 bytes, our client reassembling and sending flow control.
    channel = _channel()
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    address = isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7EC, rxid=0x7E4)
    ecu = isotp.CanStack(ecu_bus, address=address, params={"tx_padding": 0x55})
    ecu.start()
    bus = can.Bus(interface="virtual", channel=channel)
    notifier = _notifier(bus)
    client = DiagnosticClient(bus, notifier, p2_s=SAFETY_S, isotp=IsoTpConfig(block_size=4, st_min_ms=1))
    answer = bytes([0x62, 0xF1, 0x90]) + bytes(range(97))
    replier = threading.Thread(
        target=lambda: ecu.recv(block=True, timeout=SAFETY_S) and ecu.send(answer, send_timeout=SAFETY_S)
    )
    replier.start()
    try:
        assert client.request(0x7E4, bytes([0x22, 0xF1, 0x90])) == answer
    finally:
        replier.join()
        client.close()
        notifier.stop()
        ecu.stop()
        bus.shutdown()
        ecu_bus.shutdown()
