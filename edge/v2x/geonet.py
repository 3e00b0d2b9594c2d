"""GeoNetworking (ETSI EN 302 636-4-1 v1.4.1) and BTP-B (EN 302 636-5-1) headers.

roadwave sends two packet kinds: single-hop broadcast (SHB) for CAMs and GeoBroadcast
(GBC) to a circle, rectangle or ellipse for DENMs, each with BTP-B in front of the payload::

    basic header (4) | common header (8) | SHB (28) or GBC (44) | BTP-B (4) | payload

When the basic header's next header is "secured packet", everything after it is the
security envelope (ETSI TS 103 097) around the common header onwards: ``build_shb`` and
``build_gbc`` take a ``secure`` function that wraps those bytes, ``parse_packet`` returns
the envelope undecoded, and ``parse_common_and_payload`` reads what the security layer
unwrapped. Parsing checks every length and field range and raises ``V2xDecodeError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from edge.v2x.errors import V2xDecodeError, V2xEncodeError
from edge.v2x.units import Scaled, check_integer, check_number

GN_VERSION = 1
BTP_PORT_CAM = 2001
BTP_PORT_DENM = 2002
DEFAULT_LIFETIME_S = 60.0
"""itsGnDefaultPacketLifetime."""
DEFAULT_HOP_LIMIT = 10
"""itsGnDefaultHopLimit, the GBC hop limit unless the caller chooses another."""

BASIC_HEADER_LENGTH = 4
COMMON_HEADER_LENGTH = 8
LONG_POSITION_VECTOR_LENGTH = 24
SHB_HEADER_LENGTH = LONG_POSITION_VECTOR_LENGTH + 4
GBC_HEADER_LENGTH = 4 + LONG_POSITION_VECTOR_LENGTH + 16
BTP_B_HEADER_LENGTH = 4


class BasicNextHeader(IntEnum):
    ANY = 0
    COMMON_HEADER = 1
    SECURED_PACKET = 2


class CommonNextHeader(IntEnum):
    ANY = 0
    BTP_A = 1
    BTP_B = 2
    IPV6 = 3


class HeaderType(IntEnum):
    """Common-header HT; roadwave builds and parses GEO_BROADCAST and TOPOLOGICALLY_SCOPED_BROADCAST."""

    ANY = 0
    BEACON = 1
    GEO_UNICAST = 2
    GEO_ANYCAST = 3
    GEO_BROADCAST = 4
    TOPOLOGICALLY_SCOPED_BROADCAST = 5
    LOCATION_SERVICE = 6


SHB_SUBTYPE = 0
"""HST of a single-hop broadcast under HT TOPOLOGICALLY_SCOPED_BROADCAST."""


class AreaShape(IntEnum):
    """HST of a GeoBroadcast: the shape of its destination area."""

    CIRCLE = 0
    RECTANGLE = 1
    ELLIPSE = 2


_AREA_SHAPES = frozenset(AreaShape)


_LATITUDE = Scaled(10_000_000, -900_000_000, 900_000_000, "deg")
_LONGITUDE = Scaled(10_000_000, -1_800_000_000, 1_800_000_000, "deg")
_SPEED = Scaled(100, -16_384, 16_383, "m/s")
_HEADING = Scaled(10, 0, 3600, "deg")  # 360 deg is sent as 0 (north); the field holds 0 .. 3599
_LIFETIME_BASES_S = (0.05, 1.0, 10.0, 100.0)
_MOBILE_FLAG = 0x80


def mac_from_station_id(station_id: int) -> bytes:
    """A locally administered unicast MAC address, 02:00 followed by the 32-bit station id."""
    return b"\x02\x00" + check_integer(station_id, "station_id", 0, 2**32 - 1).to_bytes(4, "big")


@dataclass(frozen=True)
class GnAddress:
    """GN_ADDR: manual flag, ITS-S type (5 bits) and the 48-bit MID (the link-layer address)."""

    station_type: int
    mid: bytes
    manual: bool = False

    @classmethod
    def for_station(cls, station_id: int, station_type: int) -> GnAddress:
        """The address roadwave uses: MID from ``mac_from_station_id``."""
        return cls(station_type=station_type, mid=mac_from_station_id(station_id))


@dataclass(frozen=True, kw_only=True)
class LongPositionVector:
    """Where the source was: ``timestamp_ms`` is ``timebase.gn_timestamp`` of the fix time.

    ``speed_mps`` is signed (negative when reversing); ``position_accurate`` is the PAI bit.
    """

    address: GnAddress
    timestamp_ms: int
    latitude_deg: float
    longitude_deg: float
    speed_mps: float = 0.0
    heading_deg: float = 0.0
    position_accurate: bool = True


@dataclass(frozen=True, kw_only=True)
class GeoArea:
    """A GeoBroadcast destination area around a centre.

    Circle: ``distance_a_m`` is the radius. Rectangle and ellipse: ``distance_a_m`` is the
    half length along the long side, ``distance_b_m`` the half width, and ``angle_deg`` the
    azimuth of the long side, clockwise from north.
    """

    shape: AreaShape
    latitude_deg: float
    longitude_deg: float
    distance_a_m: int
    distance_b_m: int = 0
    angle_deg: int = 0

    @classmethod
    def circle(cls, latitude_deg: float, longitude_deg: float, radius_m: int) -> GeoArea:
        return cls(
            shape=AreaShape.CIRCLE,
            latitude_deg=latitude_deg,
            longitude_deg=longitude_deg,
            distance_a_m=radius_m,
        )


@dataclass(frozen=True)
class BasicHeader:
    version: int
    next_header: BasicNextHeader
    lifetime_s: float
    remaining_hop_limit: int


@dataclass(frozen=True)
class CommonHeader:
    """``traffic_class`` is the raw TC byte: SCF bit 7, channel offload bit 6, TC ID bits 0-5."""

    next_header: CommonNextHeader
    header_type: HeaderType
    header_subtype: int
    traffic_class: int
    mobile: bool
    payload_length: int
    max_hop_limit: int


@dataclass(frozen=True)
class ShbHeader:
    source: LongPositionVector
    media_dependent: int = 0


@dataclass(frozen=True)
class GbcHeader:
    sequence_number: int
    source: LongPositionVector
    area: GeoArea


@dataclass(frozen=True)
class BtpBHeader:
    destination_port: int
    destination_port_info: int = 0


@dataclass(frozen=True)
class GnBody:
    """Everything from the common header on: what a secured packet carries inside."""

    common: CommonHeader
    extended: ShbHeader | GbcHeader
    btp: BtpBHeader
    payload: bytes


@dataclass(frozen=True)
class GnPacket:
    """A parsed packet: ``body`` when unsecured, else the undecoded ``secured`` envelope."""

    basic: BasicHeader
    body: GnBody | None
    secured: bytes | None


# --------------------------------------------------------------------------- building


def encode_lifetime(lifetime_s: float) -> int:
    """The LT byte (6-bit multiplier, 2-bit base of 50 ms, 1 s, 10 s or 100 s) for an exact lifetime.

    The largest base that expresses the lifetime exactly is used (60 s is 6 x 10 s).
    """
    seconds = check_number(lifetime_s, "lifetime_s")
    for base_code, base in reversed(list(enumerate(_LIFETIME_BASES_S))):
        multiplier = round(seconds / base)
        if 0 <= multiplier <= 63 and abs(multiplier * base - seconds) < 1e-9:
            return multiplier << 2 | base_code
    raise V2xEncodeError(
        f"lifetime_s = {lifetime_s!r} is not a multiple 0..63 of 0.05 s, 1 s, 10 s or 100 s (0 .. 6300 s)"
    )


def _decode_lifetime(byte: int) -> float:
    return (byte >> 2) * _LIFETIME_BASES_S[byte & 0x03]


def _position_vector_bytes(vector: LongPositionVector, field: str) -> bytes:
    address = vector.address
    if len(address.mid) != 6:
        raise V2xEncodeError(f"{field}.address.mid must be 6 bytes, got {len(address.mid)}")
    station_type = check_integer(address.station_type, f"{field}.address.station_type", 0, 31)
    speed = _SPEED.encode(vector.speed_mps, f"{field}.speed_mps") & 0x7FFF
    return struct.pack(
        ">H6sIiiHH",
        int(address.manual) << 15 | station_type << 10,
        address.mid,
        check_integer(vector.timestamp_ms, f"{field}.timestamp_ms", 0, 2**32 - 1),
        _LATITUDE.encode(vector.latitude_deg, f"{field}.latitude_deg"),
        _LONGITUDE.encode(vector.longitude_deg, f"{field}.longitude_deg"),
        int(vector.position_accurate) << 15 | speed,
        _HEADING.encode(vector.heading_deg, f"{field}.heading_deg") % 3600,
    )


def _btp_and_payload(payload: bytes, destination_port: int, destination_port_info: int) -> bytes:
    header = struct.pack(
        ">HH",
        check_integer(destination_port, "destination_port", 0, 65535),
        check_integer(destination_port_info, "destination_port_info", 0, 65535),
    )
    return header + bytes(payload)


def _common_header(
    header_type: HeaderType,
    subtype: int,
    *,
    traffic_class: int,
    mobile: bool,
    length: int,
    max_hop_limit: int,
) -> bytes:
    if length > 65535:
        raise V2xEncodeError(
            f"BTP header and payload are {length} bytes; at most 65535 fit the payload length"
        )
    return struct.pack(
        ">BBBBHBB",
        CommonNextHeader.BTP_B << 4,
        header_type << 4 | subtype,
        check_integer(traffic_class, "traffic_class", 0, 255),
        _MOBILE_FLAG if mobile else 0,
        length,
        check_integer(max_hop_limit, "hop_limit", 1, 255),
        0,
    )


def _with_basic_header(
    body: bytes, lifetime_s: float, hop_limit: int, secure: Callable[[bytes], bytes] | None
) -> bytes:
    if secure is None:
        next_header, rest = BasicNextHeader.COMMON_HEADER, body
    else:
        next_header, rest = BasicNextHeader.SECURED_PACKET, secure(body)
        if not rest:
            raise V2xEncodeError("secure() returned no bytes")
    basic = struct.pack(">BBBB", GN_VERSION << 4 | next_header, 0, encode_lifetime(lifetime_s), hop_limit)
    return basic + bytes(rest)


def build_shb(
    payload: bytes,
    *,
    source: LongPositionVector,
    destination_port: int = BTP_PORT_CAM,
    destination_port_info: int = 0,
    traffic_class: int = 0,
    mobile: bool = True,
    media_dependent: int = 0,
    lifetime_s: float = DEFAULT_LIFETIME_S,
    secure: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """A single-hop broadcast packet (a CAM's).

    With ``secure``, the basic header announces a secured packet and is followed by
    ``secure(body)``, where body is the common header, SHB header, BTP-B header and payload.
    """
    transport = _btp_and_payload(payload, destination_port, destination_port_info)
    common = _common_header(
        HeaderType.TOPOLOGICALLY_SCOPED_BROADCAST,
        SHB_SUBTYPE,
        traffic_class=traffic_class,
        mobile=mobile,
        length=len(transport),
        max_hop_limit=1,
    )
    extended = _position_vector_bytes(source, "source") + struct.pack(
        ">I", check_integer(media_dependent, "media_dependent", 0, 2**32 - 1)
    )
    return _with_basic_header(common + extended + transport, lifetime_s, 1, secure)


def build_gbc(
    payload: bytes,
    *,
    source: LongPositionVector,
    area: GeoArea,
    sequence_number: int,
    destination_port: int = BTP_PORT_DENM,
    destination_port_info: int = 0,
    traffic_class: int = 0,
    mobile: bool = True,
    hop_limit: int = DEFAULT_HOP_LIMIT,
    lifetime_s: float = DEFAULT_LIFETIME_S,
    secure: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """A GeoBroadcast packet to ``area`` (a DENM's); ``secure`` as for ``build_shb``."""
    if area.shape not in _AREA_SHAPES:
        raise V2xEncodeError(f"area.shape = {area.shape!r} is not one of {sorted(_AREA_SHAPES)}")
    transport = _btp_and_payload(payload, destination_port, destination_port_info)
    common = _common_header(
        HeaderType.GEO_BROADCAST,
        area.shape,
        traffic_class=traffic_class,
        mobile=mobile,
        length=len(transport),
        max_hop_limit=hop_limit,
    )
    extended = (
        struct.pack(">HH", check_integer(sequence_number, "sequence_number", 0, 65535), 0)
        + _position_vector_bytes(source, "source")
        + struct.pack(
            ">iiHHHH",
            _LATITUDE.encode(area.latitude_deg, "area.latitude_deg"),
            _LONGITUDE.encode(area.longitude_deg, "area.longitude_deg"),
            check_integer(area.distance_a_m, "area.distance_a_m", 0, 65535),
            check_integer(area.distance_b_m, "area.distance_b_m", 0, 65535),
            check_integer(area.angle_deg, "area.angle_deg", 0, 359),
            0,
        )
    )
    return _with_basic_header(common + extended + transport, lifetime_s, hop_limit, secure)


# --------------------------------------------------------------------------- parsing


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) < length:
        raise V2xDecodeError(f"truncated {what}: {len(data)} of {length} bytes")


def _angle(count: int, scale: Scaled, field: str) -> float:
    if not scale.low <= count <= scale.high:
        raise V2xDecodeError(f"{field} {count} is outside {scale.low} .. {scale.high}")
    return count / scale.per_unit


def _parse_position_vector(data: bytes, offset: int, field: str) -> LongPositionVector:
    address_bits, mid, timestamp, latitude, longitude, pai_speed, heading = struct.unpack_from(
        ">H6sIiiHH", data, offset
    )
    if heading > 3599:
        raise V2xDecodeError(f"{field} heading {heading} is outside 0 .. 3599 (0.1 deg)")
    speed = pai_speed & 0x7FFF
    return LongPositionVector(
        address=GnAddress(station_type=address_bits >> 10 & 0x1F, mid=mid, manual=bool(address_bits >> 15)),
        timestamp_ms=timestamp,
        latitude_deg=_angle(latitude, _LATITUDE, f"{field} latitude"),
        longitude_deg=_angle(longitude, _LONGITUDE, f"{field} longitude"),
        speed_mps=(speed - 0x8000 if speed & 0x4000 else speed) / _SPEED.per_unit,
        heading_deg=heading / _HEADING.per_unit,
        position_accurate=bool(pai_speed >> 15),
    )


def _parse_common_header(data: bytes) -> CommonHeader:
    _need(data, COMMON_HEADER_LENGTH, "common header")
    next_header, types, traffic_class, flags, payload_length, max_hop_limit, _ = struct.unpack_from(
        ">BBBBHBB", data
    )
    if next_header >> 4 != CommonNextHeader.BTP_B:
        raise V2xDecodeError(f"common header next header {next_header >> 4} is not supported (only BTP-B, 2)")
    header_type, subtype = types >> 4, types & 0x0F
    supported = (header_type == HeaderType.TOPOLOGICALLY_SCOPED_BROADCAST and subtype == SHB_SUBTYPE) or (
        header_type == HeaderType.GEO_BROADCAST and subtype in _AREA_SHAPES
    )
    if not supported:
        raise V2xDecodeError(
            f"header type {header_type} subtype {subtype} is not supported (only SHB 5/0 and GBC 4/0-2)"
        )
    return CommonHeader(
        next_header=CommonNextHeader.BTP_B,
        header_type=HeaderType(header_type),
        header_subtype=subtype,
        traffic_class=traffic_class,
        mobile=bool(flags & _MOBILE_FLAG),
        payload_length=payload_length,
        max_hop_limit=max_hop_limit,
    )


def _parse_gbc(data: bytes, offset: int, shape: AreaShape) -> GbcHeader:
    sequence_number, _ = struct.unpack_from(">HH", data, offset)
    source = _parse_position_vector(data, offset + 4, "GBC source")
    latitude, longitude, distance_a, distance_b, angle, _ = struct.unpack_from(
        ">iiHHHH", data, offset + 4 + LONG_POSITION_VECTOR_LENGTH
    )
    if angle > 359:
        raise V2xDecodeError(f"GBC area angle {angle} is outside 0 .. 359 deg")
    area = GeoArea(
        shape=shape,
        latitude_deg=_angle(latitude, _LATITUDE, "GBC area latitude"),
        longitude_deg=_angle(longitude, _LONGITUDE, "GBC area longitude"),
        distance_a_m=distance_a,
        distance_b_m=distance_b,
        angle_deg=angle,
    )
    return GbcHeader(sequence_number=sequence_number, source=source, area=area)


def parse_common_and_payload(data: bytes) -> GnBody:
    """Common header, extended header, BTP-B and payload (an unsecured body or an unwrapped one)."""
    common = _parse_common_header(data)
    offset = COMMON_HEADER_LENGTH
    extended: ShbHeader | GbcHeader
    if common.header_type == HeaderType.GEO_BROADCAST:
        _need(data, offset + GBC_HEADER_LENGTH, "GBC extended header")
        extended = _parse_gbc(data, offset, AreaShape(common.header_subtype))
        offset += GBC_HEADER_LENGTH
    else:
        _need(data, offset + SHB_HEADER_LENGTH, "SHB extended header")
        (media_dependent,) = struct.unpack_from(">I", data, offset + LONG_POSITION_VECTOR_LENGTH)
        extended = ShbHeader(_parse_position_vector(data, offset, "SHB source"), media_dependent)
        offset += SHB_HEADER_LENGTH
    remaining = len(data) - offset
    if remaining != common.payload_length:
        raise V2xDecodeError(
            f"common header payload length {common.payload_length} does not match "
            f"the {remaining} bytes that follow"
        )
    _need(data, offset + BTP_B_HEADER_LENGTH, "BTP-B header")
    destination_port, destination_port_info = struct.unpack_from(">HH", data, offset)
    return GnBody(
        common=common,
        extended=extended,
        btp=BtpBHeader(destination_port, destination_port_info),
        payload=bytes(data[offset + BTP_B_HEADER_LENGTH :]),
    )


def parse_packet(data: bytes) -> GnPacket:
    """A GeoNetworking packet as sent by ``build_shb``/``build_gbc`` (secured or not)."""
    _need(data, BASIC_HEADER_LENGTH, "basic header")
    version_and_next, _, lifetime, remaining_hop_limit = struct.unpack_from(">BBBB", data)
    version, next_header = version_and_next >> 4, version_and_next & 0x0F
    if version != GN_VERSION:
        raise V2xDecodeError(f"GeoNetworking version {version} is not supported (only {GN_VERSION})")
    if next_header not in (BasicNextHeader.COMMON_HEADER, BasicNextHeader.SECURED_PACKET):
        raise V2xDecodeError(f"basic header next header {next_header} is not supported (common 1, secured 2)")
    basic = BasicHeader(
        version, BasicNextHeader(next_header), _decode_lifetime(lifetime), remaining_hop_limit
    )
    rest = bytes(data[BASIC_HEADER_LENGTH:])
    if basic.next_header == BasicNextHeader.SECURED_PACKET:
        if not rest:
            raise V2xDecodeError("secured packet without a body")
        return GnPacket(basic=basic, body=None, secured=rest)
    body = parse_common_and_payload(rest)
    if remaining_hop_limit > body.common.max_hop_limit:
        raise V2xDecodeError(
            f"remaining hop limit {remaining_hop_limit} exceeds "
            f"the maximum hop limit {body.common.max_hop_limit}"
        )
    return GnPacket(basic=basic, body=body, secured=None)
