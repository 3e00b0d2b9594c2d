"""GeoNetworking and BTP-B headers (edge/v2x/geonet.py) and the pcap recorder (edge/v2x/pcap.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapfile import read_pcap

from edge.v2x.codec import encode_cam, encode_denm
from edge.v2x.errors import V2xDecodeError, V2xEncodeError
from edge.v2x.geonet import (
    BTP_PORT_CAM,
    BTP_PORT_DENM,
    AreaShape,
    BasicNextHeader,
    GbcHeader,
    GeoArea,
    GnAddress,
    GnPacket,
    HeaderType,
    LongPositionVector,
    ShbHeader,
    build_gbc,
    build_shb,
    encode_lifetime,
    mac_from_station_id,
    parse_common_and_payload,
    parse_packet,
)
from edge.v2x.model import (
    ActionId,
    Cam,
    Denm,
    DenmLocation,
    DenmManagement,
    DenmSituation,
    PathPoint,
    ReferencePosition,
    StationType,
)
from edge.v2x.pcap import ETHERTYPE_GEONETWORKING, PcapWriter

SOURCE = LongPositionVector(
    address=GnAddress.for_station(1234, StationType.PASSENGER_CAR),
    timestamp_ms=123_456,
    latitude_deg=48.1234567,
    longitude_deg=11.7654321,
    speed_mps=13.89,
    heading_deg=123.4,
)
CIRCLE = GeoArea.circle(48.12, 11.76, 500)
RECTANGLE = GeoArea(
    shape=AreaShape.RECTANGLE,
    latitude_deg=-33.9,
    longitude_deg=151.2,
    distance_a_m=800,
    distance_b_m=20,
    angle_deg=45,
)
PAYLOAD = b"\x02\x02payload"


def _shb(**changes: Any) -> bytes:
    return build_shb(PAYLOAD, source=dataclasses.replace(SOURCE, **changes))


def _gbc(area: GeoArea = CIRCLE, **options: Any) -> bytes:
    return build_gbc(PAYLOAD, source=SOURCE, area=area, sequence_number=9, **options)


# --------------------------------------------------------------------------- round trips


def test_shb_round_trip_and_layout() -> None:
    data = build_shb(PAYLOAD, source=SOURCE, traffic_class=0x42, lifetime_s=1.0)
    assert len(data) == 4 + 8 + 28 + 4 + len(PAYLOAD)
    assert data[:4] == bytes([0x11, 0x00, 1 << 2 | 1, 1])  # version 1 / common header, 1 s, RHL 1
    assert data[4:8] == bytes([0x20, 0x50, 0x42, 0x80])  # BTP-B, TSB/SHB, TC, mobile
    assert data[12:14] == bytes([0x14, 0x00])  # GN_ADDR: not manual, ITS-S type 5
    assert data[14:20] == mac_from_station_id(1234) == bytes.fromhex("0200000004d2")

    packet = parse_packet(data)
    assert packet.secured is None and packet.body is not None
    assert (packet.basic.version, packet.basic.lifetime_s, packet.basic.remaining_hop_limit) == (1, 1.0, 1)
    common = packet.body.common
    assert (common.header_type, common.header_subtype) == (HeaderType.TOPOLOGICALLY_SCOPED_BROADCAST, 0)
    assert (common.traffic_class, common.mobile, common.max_hop_limit) == (0x42, True, 1)
    assert common.payload_length == 4 + len(PAYLOAD)
    assert packet.body.extended == ShbHeader(SOURCE, 0)
    assert (packet.body.btp.destination_port, packet.body.btp.destination_port_info) == (BTP_PORT_CAM, 0)
    assert packet.body.payload == PAYLOAD


@pytest.mark.parametrize(
    "area",
    [
        CIRCLE,
        RECTANGLE,
        dataclasses.replace(RECTANGLE, shape=AreaShape.ELLIPSE, angle_deg=359),
        GeoArea.circle(-90.0, 180.0, 65535),
    ],
)
def test_gbc_round_trip(area: GeoArea) -> None:
    data = _gbc(area, hop_limit=5, destination_port_info=7, mobile=False)
    assert len(data) == 4 + 8 + 44 + 4 + len(PAYLOAD)
    assert data[5] == 0x40 | area.shape
    packet = parse_packet(data)
    assert packet.body is not None
    assert packet.body.extended == GbcHeader(sequence_number=9, source=SOURCE, area=area)
    assert (packet.basic.remaining_hop_limit, packet.body.common.max_hop_limit) == (5, 5)
    assert packet.body.common.mobile is False
    assert (packet.body.btp.destination_port, packet.body.btp.destination_port_info) == (BTP_PORT_DENM, 7)
    assert packet.body.payload == PAYLOAD


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"speed_mps": -5.25}, {"speed_mps": -5.25}),
        ({"speed_mps": -163.84}, {"speed_mps": -163.84}),
        ({"speed_mps": 163.83}, {"speed_mps": 163.83}),
        ({"heading_deg": 360.0}, {"heading_deg": 0.0}),
        ({"heading_deg": 359.9}, {"heading_deg": 359.9}),
        ({"latitude_deg": -90.0, "longitude_deg": -180.0}, {"latitude_deg": -90.0, "longitude_deg": -180.0}),
        ({"position_accurate": False, "timestamp_ms": 2**32 - 1}, {"position_accurate": False}),
        ({"address": GnAddress(station_type=31, mid=b"\xaa" * 6, manual=True)}, {}),
    ],
)
def test_position_vector_round_trip(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    body = parse_packet(_shb(**changes)).body
    assert body is not None
    assert body.extended.source == dataclasses.replace(SOURCE, **(changes | expected))


@pytest.mark.parametrize(
    ("lifetime_s", "byte"),
    [
        (60.0, 6 << 2 | 2),
        (1, 1 << 2 | 1),
        (45.0, 45 << 2 | 1),
        (0.05, 1 << 2 | 0),
        (3.15, 63 << 2 | 0),
        (0, 0 << 2 | 3),
        (630.0, 63 << 2 | 2),
        (6300, 63 << 2 | 3),
    ],
)
def test_lifetime_encoding(lifetime_s: float, byte: int) -> None:
    assert encode_lifetime(lifetime_s) == byte
    packet = parse_packet(build_shb(PAYLOAD, source=SOURCE, lifetime_s=lifetime_s))
    assert packet.basic.lifetime_s == pytest.approx(lifetime_s)


# --------------------------------------------------------------------------- secured packets


def test_secured_packet_hook() -> None:
    envelopes: list[bytes] = []

    def secure(body: bytes) -> bytes:
        envelopes.append(body)
        return b"SIGNED" + body

    plain, secured = _gbc(), _gbc(secure=secure)
    assert secured[0] == 0x10 | BasicNextHeader.SECURED_PACKET
    assert envelopes == [plain[4:]]  # the security layer sees the common header onwards
    packet = parse_packet(secured)
    assert packet.body is None and packet.secured == b"SIGNED" + plain[4:]
    assert packet.basic.next_header == BasicNextHeader.SECURED_PACKET
    unsecured = parse_packet(plain)
    assert parse_common_and_payload(packet.secured[len(b"SIGNED") :]) == unsecured.body


def test_secure_must_return_bytes() -> None:
    with pytest.raises(V2xEncodeError, match="secure"):
        build_shb(PAYLOAD, source=SOURCE, secure=lambda body: b"")
    with pytest.raises(V2xDecodeError, match="secured packet without a body"):
        parse_packet(bytes([0x12, 0, 0, 1]))


# --------------------------------------------------------------------------- refused values and bytes


@pytest.mark.parametrize(
    ("build", "field", "allowed"),
    [
        (lambda: _shb(latitude_deg=90.1), "source.latitude_deg", "-90 .. 90 deg"),
        (lambda: _shb(speed_mps=163.84), "source.speed_mps", "-163.84 .. 163.83 m/s"),
        (lambda: _shb(heading_deg=-1.0), "source.heading_deg", "0 .. 360 deg"),
        (lambda: _shb(timestamp_ms=2**32), "source.timestamp_ms", "0 .. 4294967295"),
        (lambda: _shb(address=GnAddress(station_type=32, mid=b"\x00" * 6)), "station_type", "0 .. 31"),
        (lambda: _shb(address=GnAddress(station_type=5, mid=b"\x00" * 5)), "address.mid", "6 bytes"),
        (lambda: _gbc(dataclasses.replace(CIRCLE, distance_a_m=65536)), "area.distance_a_m", "0 .. 65535"),
        (lambda: _gbc(dataclasses.replace(RECTANGLE, angle_deg=360)), "area.angle_deg", "0 .. 359"),
        (lambda: _gbc(dataclasses.replace(CIRCLE, shape=5)), "area.shape", "is not one of"),  # type: ignore[arg-type]
        (lambda: _gbc(dataclasses.replace(CIRCLE, longitude_deg=181.0)), "area.longitude_deg", "-180 .. 180"),
        (lambda: _gbc(hop_limit=0), "hop_limit", "1 .. 255"),
        (lambda: _gbc(destination_port=70000), "destination_port", "0 .. 65535"),
        (lambda: _gbc(lifetime_s=0.07), "lifetime_s", "0 .. 6300 s"),
        (lambda: _gbc(lifetime_s=7000), "lifetime_s", "0 .. 6300 s"),
        (
            lambda: build_gbc(PAYLOAD, source=SOURCE, area=CIRCLE, sequence_number=65536),
            "sequence_number",
            "65535",
        ),
        (lambda: build_shb(bytes(65532), source=SOURCE), "BTP header and payload", "at most 65535"),
        (lambda: mac_from_station_id(2**32), "station_id", "0 .. 4294967295"),
    ],
)
def test_bad_header_values_are_refused_naming_the_field(build: Any, field: str, allowed: str) -> None:
    with pytest.raises(V2xEncodeError) as caught:
        build()
    assert field in str(caught.value)
    assert allowed in str(caught.value)


def test_every_truncation_is_refused() -> None:
    for data in (_shb(), _gbc()):
        for length in range(len(data)):
            with pytest.raises(V2xDecodeError):
                parse_packet(data[:length])


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_shb() + b"\x00", "payload length 13 does not match the 14 bytes"),
        (_patched(_shb(), 0, b"\x01"), "version 0 is not supported"),
        (_patched(_shb(), 0, b"\x10"), "next header 0 is not supported"),
        (_patched(_shb(), 4, b"\x10"), "next header 1 is not supported (only BTP-B"),
        (_patched(_shb(), 5, b"\x10"), "header type 1 subtype 0 is not supported"),
        (_patched(_shb(), 5, b"\x51"), "header type 5 subtype 1 is not supported"),
        (_patched(_gbc(), 5, b"\x43"), "header type 4 subtype 3 is not supported"),
        (_patched(_gbc(), 3, b"\x0b"), "remaining hop limit 11 exceeds the maximum hop limit 10"),
        (_patched(_shb(), 4 + 8 + 12, struct.pack(">i", 900_000_001)), "latitude 900000001 is outside"),
        (_patched(_shb(), 4 + 8 + 16, struct.pack(">i", -1_800_000_001)), "longitude -1800000001 is outside"),
        (_patched(_shb(), 4 + 8 + 22, struct.pack(">H", 3600)), "heading 3600 is outside"),
        (_patched(_gbc(), 4 + 8 + 4 + 24 + 12, struct.pack(">H", 360)), "angle 360 is outside"),
        (_patched(_gbc(), 4 + 8 + 4 + 24, struct.pack(">i", -900_000_001)), "area latitude"),
        (_patched(_shb()[: 4 + 8 + 28 + 2], 4 + 4, b"\x00\x02"), "truncated BTP-B header"),
    ],
    ids=lambda value: value if isinstance(value, str) else "packet",
)
def test_inconsistent_packets_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(V2xDecodeError) as caught:
        parse_packet(data)
    assert reason in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_parse_or_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(V2xDecodeError):
        assert isinstance(parse_packet(data), GnPacket)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([_shb(), _gbc(RECTANGLE)]), st.data())
def test_corrupted_packets_parse_or_raise_decode_error(valid: bytes, data: st.DataObject) -> None:
    offset = data.draw(st.integers(0, len(valid) - 1))
    corrupted = _patched(valid, offset, bytes([data.draw(st.integers(0, 255))]))
    with contextlib.suppress(V2xDecodeError):
        packet = parse_packet(corrupted)
        assert packet.body is None or packet.body.payload == corrupted[-len(packet.body.payload) :]


# --------------------------------------------------------------------------- pcap

_CAM = Cam(
    station_id=1234,
    station_type=StationType.PASSENGER_CAR,
    generation_delta_time=4242,
    position=ReferencePosition(latitude_deg=48.1234567, longitude_deg=11.7654321),
    speed_mps=13.89,
    heading_deg=123.4,
)
_DENM = Denm(
    station_id=1234,
    management=DenmManagement(
        action_id=ActionId(1234, 7),
        detection_time=600_000_000_000,
        reference_time=600_000_000_100,
        event_position=_CAM.position,
        station_type=StationType.PASSENGER_CAR,
        validity_duration_s=60,
    ),
    situation=DenmSituation(information_quality=3, cause_code=99, sub_cause_code=1),
    location=DenmLocation(traces=((PathPoint(delta_latitude_deg=0.0001, delta_longitude_deg=0.0),),)),
)


def test_pcap_frames_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "v2x.pcap"
    shb, gbc = _shb(), _gbc()
    with PcapWriter(path, station_id=1234) as writer:
        writer.write(shb, 1_700_000_000_123_456_789)
        writer.write(gbc, 1_700_000_001_000_000_000, station_id=77)
    header, records = read_pcap(path)
    assert header == (0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
    assert [(seconds, fraction) for seconds, fraction, _ in records] == [
        (1_700_000_000, 123_456_789),
        (1_700_000_001, 0),
    ]
    frames = [frame for _, _, frame in records]
    assert [frame[:6] for frame in frames] == [b"\xff" * 6] * 2
    assert [frame[6:12] for frame in frames] == [mac_from_station_id(1234), mac_from_station_id(77)]
    assert [struct.unpack(">H", frame[12:14])[0] for frame in frames] == [ETHERTYPE_GEONETWORKING] * 2
    assert [frame[14:] for frame in frames] == [shb, gbc]


def test_pcap_writer_is_thread_safe(tmp_path: Path) -> None:
    path = tmp_path / "threads.pcap"
    writer = PcapWriter(path)

    def work(worker: int) -> None:
        for index in range(50):
            writer.write(_shb(timestamp_ms=worker * 1000 + index), (worker * 1000 + index) * 10**6)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    writer.close()
    writer.close()  # harmless
    _, records = read_pcap(path)
    timestamps = []
    for _seconds, _fraction, frame in records:
        body = parse_packet(frame[14:]).body
        assert body is not None
        timestamps.append(body.extended.source.timestamp_ms)
    assert sorted(timestamps) == sorted(worker * 1000 + index for worker in range(4) for index in range(50))


def test_pcap_refusals(tmp_path: Path) -> None:
    writer = PcapWriter(tmp_path / "refused.pcap")
    with pytest.raises(V2xEncodeError, match="t_ns"):
        writer.write(_shb(), -1)
    with pytest.raises(V2xEncodeError, match="does not fit"):
        writer.write(bytes(65522), 0)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(_shb(), 0)


def test_tshark_dissects_our_pcap(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    path = tmp_path / "dissect.pcap"
    with PcapWriter(path, station_id=1234) as writer:
        writer.write(build_shb(encode_cam(_CAM), source=SOURCE), 1_700_000_000_000_000_000)
        writer.write(
            build_gbc(encode_denm(_DENM), source=SOURCE, area=CIRCLE, sequence_number=9),
            1_700_000_000_100_000_000,
        )
    fields = [
        "frame.protocols",
        "geonw.ch.htype",
        "geonw.src_pos.lat",
        "geonw.src_pos.speed",
        "btpb.dstport",
        "its.messageID",
        "its.stationID",
        "its.speedValue",
        "its.headingValue",
        "its.causeCode",
        "its.subCauseCode",
        "its.sequenceNumber",
        "geonw.gxc.radius",
    ]
    command = [tshark, "-r", str(path), "-T", "fields", "-E", "separator=;"]
    for field in fields:
        command += ["-e", field]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    rows = [dict(zip(fields, line.split(";"), strict=True)) for line in result.stdout.splitlines()]
    assert len(rows) == 2
    cam, denm = rows
    assert cam["frame.protocols"] == denm["frame.protocols"] == "eth:ethertype:gnw:btpb:its"
    assert (cam["geonw.ch.htype"], denm["geonw.ch.htype"]) == ("0x50", "0x40")
    assert cam["geonw.src_pos.lat"] == "481234567"
    assert (cam["btpb.dstport"], denm["btpb.dstport"]) == ("2001", "2002")
    assert (cam["its.messageID"], denm["its.messageID"]) == ("2", "1")
    assert cam["its.stationID"] == "1234"
    assert (cam["its.speedValue"], cam["its.headingValue"]) == ("1389", "1234")
    assert (denm["its.causeCode"], denm["its.subCauseCode"], denm["its.sequenceNumber"]) == ("99", "1", "7")
    assert denm["geonw.gxc.radius"] == "500"
