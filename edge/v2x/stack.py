"""The vehicle's V2X stack: what the edge agent calls.

``on_record(record)`` for every decoded record, ``on_event(event)`` for every update from
``edge.events``, ``tick(now_ns)`` at least every 100 ms. The stack generates CAMs
(``cam_service``) and DENMs (``denm_service``), wraps them in BTP-B and GeoNetworking (a
single-hop broadcast for CAMs, a GeoBroadcast to the relevance circle for DENMs),
optionally signs them (``edge.v2x.security.Signer``: ITS-AID 36 or 37, a generation time
that never repeats, a DENM's generationLocation), sends them on every transport and
records them to an optional pcap file. Packets the transports hear are recorded, checked
by the ``Verifier`` when one is set (refusals counted as ``rejected.security_<reason>``),
parsed, decoded and, for DENMs, handed to the :class:`DenmReceiver`; the warnings it
raises go to ``on_warning``. Whatever is refused is counted under ``rejected.<reason>``.

Originating times come from the records and ``tick``; received packets are timed with
``clock`` (Unix nanoseconds, the system clock unless a test passes another). The stack
is thread-safe: transports deliver from their own threads, and ``on_warning`` runs
outside its lock, in whichever thread raised the warning.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as paho

from edge.v2x.cam_service import CamService, Motion, MotionTracker, VehicleDescription
from edge.v2x.codec import decode_cam, decode_denm, encode_cam, encode_denm
from edge.v2x.denm_service import (
    ACCEPTED,
    RELEVANCE_LIMIT_M,
    DenmOriginator,
    DenmReceiver,
    HazardWarning,
    WarningState,
    its_time,
)
from edge.v2x.errors import V2xConfigError, V2xDecodeError, V2xError
from edge.v2x.geonet import (
    BASIC_HEADER_LENGTH,
    BTP_PORT_CAM,
    BTP_PORT_DENM,
    AreaShape,
    GbcHeader,
    GeoArea,
    GnAddress,
    GnBody,
    LongPositionVector,
    build_gbc,
    build_shb,
    parse_common_and_payload,
    parse_packet,
)
from edge.v2x.model import ActionId, Cam, Denm
from edge.v2x.pcap import PcapWriter
from edge.v2x.quadkey import local_offset_m
from edge.v2x.security import CAM_PSID, DENM_PSID, Location, Signer, V2xSecurityError, Verifier
from edge.v2x.timebase import gn_timestamp
from edge.v2x.transport import PacketRoute, TransportError, V2xTransport
from roadwave.contract import Record
from roadwave.contract import v2x as topics
from roadwave.contract.events import Event

LOGGER = logging.getLogger(__name__)

#: Radius of a DENM's destination area when its relevance distance is "over 10 km" or absent.
MAX_AREA_RADIUS_M = 65_535
#: Encoded DENMs kept for their repetitions (one per recent actionID).
DENM_CACHE = 64


@dataclass(frozen=True, kw_only=True)
class V2xConfig:
    """Who this vehicle is on V2X."""

    station_id: int
    vehicle: VehicleDescription = field(default_factory=VehicleDescription)

    def __post_init__(self) -> None:
        station = self.station_id
        if isinstance(station, bool) or not isinstance(station, int) or not 0 <= station < 2**32:
            raise V2xConfigError(f"station_id {station!r} is not an integer 0 .. {2**32 - 1}")


class _Rejected(Exception):
    """A received packet refused; ``reason`` names its counter."""

    def __init__(self, reason: str, detail: object = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def its_microseconds(unix_ns: int) -> int:
    """Time64: microseconds since the ITS epoch (TAI), the time base of TS 103 097 signatures."""
    return its_time(unix_ns) * 1000 + unix_ns // 1000 % 1000


#: IEEE 1609.2 Elevation (decimetres): 0 .. 0xEFFF for 0 .. 6143.9 m, 0xF001 .. 0xFFFF for
#: -409.5 .. -0.1 m, 0xF000 unknown.
_ELEVATION_UNKNOWN = 0xF000


def generation_location(latitude_deg: float, longitude_deg: float, altitude_m: float | None) -> Location:
    """A DENM's generationLocation; an altitude the Elevation cannot hold is sent as unknown."""
    decimetres = None if altitude_m is None else round(altitude_m * 10)
    if decimetres is None or not -4095 <= decimetres < _ELEVATION_UNKNOWN:
        elevation = _ELEVATION_UNKNOWN
    else:
        elevation = decimetres % 0x10000
    return Location(round(latitude_deg * 1e7), round(longitude_deg * 1e7), elevation)


def inside_area(area: GeoArea, latitude_deg: float, longitude_deg: float) -> bool:
    """Whether a position lies in a GeoBroadcast area (EN 302 931 geometry, on a local plane)."""
    east, north = local_offset_m(area.latitude_deg, area.longitude_deg, latitude_deg, longitude_deg)
    a, b = float(area.distance_a_m), float(area.distance_b_m)
    if area.shape == AreaShape.CIRCLE:
        return a > 0 and math.hypot(east, north) <= a
    if a <= 0 or b <= 0:
        return False
    angle = math.radians(area.angle_deg)
    along = east * math.sin(angle) + north * math.cos(angle)
    across = east * math.cos(angle) - north * math.sin(angle)
    if area.shape == AreaShape.RECTANGLE:
        return abs(along) <= a and abs(across) <= b
    return (along / a) ** 2 + (across / b) ** 2 <= 1.0


class V2xStack:
    """One vehicle's CAM and DENM services, transports, security and recording."""

    def __init__(
        self,
        config: V2xConfig,
        transports: Sequence[V2xTransport] = (),
        *,
        on_warning: Callable[[HazardWarning], None] | None = None,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        pcap: PcapWriter | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.transports = tuple(transports)
        self.on_warning = on_warning
        self.signer, self.verifier, self.pcap, self.clock = signer, verifier, pcap, clock
        vehicle = config.vehicle
        self.motion = MotionTracker()
        self.cams = CamService(config.station_id, vehicle, self.motion)
        self.denms = DenmOriginator(config.station_id, vehicle.station_type, self.motion)
        self.receiver = DenmReceiver()
        self._address = GnAddress.for_station(config.station_id, vehicle.station_type)
        self._gbc_sequence = 0
        self._signed_us = -1  # the last generation time signed: each must be new, or receivers see a replay
        self._encoded: dict[ActionId, tuple[Denm, bytes]] = {}
        self._now_ns = 0
        self._counts: Counter[str] = Counter()
        self._failing: set[str] = set()  # transports whose last send failed
        self._lock = threading.Lock()
        opened: list[V2xTransport] = []
        try:
            for transport in self.transports:
                transport.open(self._on_packet)
                opened.append(transport)
        except BaseException:
            for transport in opened:
                transport.close()
            raise

    # ----------------------------------------------------------------------- the agent's calls

    def on_record(self, record: Record) -> None:
        """Take one decoded record (position, speed, heading, lights, ...)."""
        with self._lock:
            self.motion.update(record)
            self._now_ns = max(self._now_ns, record.t_ns)

    def on_event(self, event: Event, now_ns: int | None = None) -> None:
        """Announce, update or cancel the event's DENM (``now_ns``: the latest record time by default)."""
        with self._lock:
            now_ns = max(self._now_ns if now_ns is None else now_ns, event.detected_ns)
            denm = self.denms.on_event(event, now_ns)
            if denm is not None:
                self._send_denm(denm, now_ns)

    def tick(self, now_ns: int) -> None:
        """Send the CAM and DENM repetitions due, follow the vehicle, review received events."""
        with self._lock:
            self._now_ns = max(self._now_ns, now_ns)
            motion = self.motion.current
            if motion is not None:
                self._follow(motion)
            cam = self.cams.poll(now_ns)
            if cam is not None and motion is not None:
                self._send_cam(cam, motion, now_ns)
            for denm in self.denms.poll(now_ns):
                self._send_denm(denm, now_ns)
            warnings = self.receiver.review(its_time(self.clock()), motion)
        self._raise(warnings)

    def counters(self) -> dict[str, int]:
        """Messages sent and received, warnings, and everything refused, by reason."""
        with self._lock:
            counts = dict(self._counts)
        for transport in self.transports:
            if transport.echoes_dropped:
                counts[f"echoes.{transport.name}"] = transport.echoes_dropped
            if transport.oversize:
                counts[f"rejected.oversize.{transport.name}"] = transport.oversize
        return dict(sorted(counts.items()))

    def close(self) -> None:
        """Close every transport (not the pcap writer, which belongs to the caller)."""
        for transport in self.transports:
            transport.close()

    def __enter__(self) -> V2xStack:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- sending

    def _follow(self, motion: Motion) -> None:
        for transport in self.transports:
            try:
                transport.on_position(motion.latitude_deg, motion.longitude_deg)
            except V2xError as exc:
                self._counts[f"position_failed.{transport.name}"] += 1
                LOGGER.warning("%s cannot follow the vehicle: %s", transport.name, exc)

    def _source(
        self, motion: Motion | None, latitude_deg: float, longitude_deg: float, now_ns: int
    ) -> LongPositionVector:
        """The GN source position vector: the vehicle's motion, else the given position (at rest)."""
        if motion is None:
            return LongPositionVector(
                address=self._address,
                timestamp_ms=gn_timestamp(its_time(now_ns)),
                latitude_deg=latitude_deg,
                longitude_deg=longitude_deg,
            )
        return LongPositionVector(
            address=self._address,
            timestamp_ms=gn_timestamp(its_time(motion.t_ns)),
            latitude_deg=motion.latitude_deg,
            longitude_deg=motion.longitude_deg,
            speed_mps=motion.speed_mps or 0.0,
            heading_deg=motion.heading_deg or 0.0,
        )

    def _secure(
        self, psid: int, now_ns: int, location: Location | None = None
    ) -> Callable[[bytes], bytes] | None:
        signer = self.signer
        if signer is None:
            return None
        self._signed_us = max(its_microseconds(now_ns), self._signed_us + 1)
        generation_us = self._signed_us
        return lambda body: signer.sign(body, psid, generation_us, location)

    def _send_cam(self, cam: Cam, motion: Motion, now_ns: int) -> None:
        try:
            source = self._source(motion, motion.latitude_deg, motion.longitude_deg, now_ns)
            packet = build_shb(encode_cam(cam), source=source, secure=self._secure(CAM_PSID, now_ns))
        except ValueError as exc:  # V2xEncodeError, or the signer's refusal
            self._refuse_to_send("cam", exc)
            return
        self._transmit(packet, PacketRoute(topics.CAM, motion.latitude_deg, motion.longitude_deg), now_ns)

    def _send_denm(self, denm: Denm, now_ns: int) -> None:
        management = denm.management
        latitude, longitude = management.event_position.latitude_deg, management.event_position.longitude_deg
        assert latitude is not None and longitude is not None  # the originator always sets them
        limit = (
            math.inf
            if management.relevance_distance is None
            else RELEVANCE_LIMIT_M[management.relevance_distance]
        )
        area = GeoArea.circle(latitude, longitude, int(min(limit, MAX_AREA_RADIUS_M)))
        motion = self.motion.current
        source = self._source(motion, latitude, longitude, now_ns)
        altitude = management.event_position.altitude_m if motion is None else motion.altitude_m
        try:
            location = generation_location(source.latitude_deg, source.longitude_deg, altitude)
            packet = build_gbc(
                self._encode_denm(denm),
                source=source,
                area=area,
                sequence_number=self._gbc_sequence,
                secure=self._secure(DENM_PSID, now_ns, location),
            )
        except ValueError as exc:  # V2xEncodeError, or the signer's refusal
            self._refuse_to_send("denm", exc)
            return
        self._gbc_sequence = (self._gbc_sequence + 1) % 65536
        self._transmit(packet, PacketRoute(topics.DENM, latitude, longitude), now_ns)

    def _encode_denm(self, denm: Denm) -> bytes:
        """The DENM's UPER bytes; a repetition (the same object again) reuses them."""
        key = denm.management.action_id
        cached = self._encoded.get(key)
        if cached is not None and cached[0] is denm:
            return cached[1]
        payload = encode_denm(denm)
        self._encoded[key] = (denm, payload)
        if len(self._encoded) > DENM_CACHE:
            del self._encoded[next(iter(self._encoded))]
        return payload

    def _refuse_to_send(self, kind: str, exc: ValueError) -> None:
        self._counts[f"build_failed.{kind}"] += 1
        LOGGER.error("cannot build a %s: %s", kind.upper(), exc)

    def _transmit(self, packet: bytes, route: PacketRoute, now_ns: int) -> None:
        for transport in self.transports:
            try:
                transport.send(packet, route)
            except TransportError as exc:
                self._counts[f"send_failed.{transport.name}"] += 1
                first = transport.name not in self._failing  # log once per outage, not per packet
                self._failing.add(transport.name)
                LOGGER.log(logging.WARNING if first else logging.DEBUG, "%s: %s", transport.name, exc)
            else:
                self._failing.discard(transport.name)
        self._counts[f"sent.{route.kind}"] += 1
        self._record(packet, now_ns, self.config.station_id)

    def _record(self, packet: bytes, t_ns: int, station_id: int) -> None:
        if self.pcap is None:
            return
        try:
            self.pcap.write(packet, t_ns, station_id)
        except ValueError as exc:  # V2xEncodeError (time, size) or a closed writer
            self._counts["pcap_failed"] += 1
            LOGGER.warning("pcap: %s", exc)

    # ----------------------------------------------------------------------- receiving

    def _on_packet(self, packet: bytes) -> None:
        now_ns = self.clock()
        with self._lock:
            warnings = self._receive(packet, now_ns)
        self._raise(warnings)

    def _receive(self, packet: bytes, now_ns: int) -> list[HazardWarning]:
        sender = 0  # unknown until the message header is decoded
        try:
            body = self._unwrap(packet, now_ns)
            motion = self.motion.current
            if motion is not None and not self._addressed_to(body, motion):
                raise _Rejected("outside_area")
            message = self._decode(body)
            sender = message.station_id
            if isinstance(message, Cam):
                self._counts["received.cam"] += 1
                return []
            self._counts["received.denm"] += 1
            outcome, warnings = self.receiver.receive(message, its_time(now_ns), motion)
            if outcome not in ACCEPTED:
                raise _Rejected(f"denm_{outcome}")
            self._counts[f"denm.{outcome}"] += 1
            return warnings
        except _Rejected as rejected:
            self._counts[f"rejected.{rejected.reason}"] += 1
            LOGGER.debug("packet refused (%s) %s", rejected.reason, rejected.detail)
            return []
        finally:
            self._record(packet, now_ns, sender)

    def _unwrap(self, packet: bytes, now_ns: int) -> GnBody:
        try:
            parsed = parse_packet(packet)
        except V2xDecodeError as exc:
            raise _Rejected("geonetworking", exc) from exc
        if parsed.secured is None:
            assert parsed.body is not None
            if self.verifier is not None:  # it decides whether unsigned packets are acceptable
                try:
                    self.verifier.accept_unsecured(packet[BASIC_HEADER_LENGTH:])
                except V2xSecurityError as exc:
                    raise _Rejected(f"security_{exc.reason}", exc) from exc
            return parsed.body
        if self.verifier is None:
            raise _Rejected("secured_without_verifier")
        try:
            verified = self.verifier.verify(parsed.secured, its_microseconds(now_ns))
        except V2xSecurityError as exc:
            if exc.reason == "unknown_signer" and self.signer is not None:
                # a station we cannot verify is new here and may not know our ticket either:
                # the next CAM carries it in full (TS 103 097), so both learn each other quickly
                self.signer.include_certificate_next()
            raise _Rejected(f"security_{exc.reason}", exc) from exc
        try:
            return parse_common_and_payload(verified.payload)
        except V2xDecodeError as exc:
            raise _Rejected("geonetworking", exc) from exc

    @staticmethod
    def _addressed_to(body: GnBody, motion: Motion) -> bool:
        """A GeoBroadcast is for the vehicles inside its area; a single-hop broadcast for all."""
        if not isinstance(body.extended, GbcHeader):
            return True
        return inside_area(body.extended.area, motion.latitude_deg, motion.longitude_deg)

    @staticmethod
    def _decode(body: GnBody) -> Cam | Denm:
        port = body.btp.destination_port
        try:
            if port == BTP_PORT_CAM:
                return decode_cam(body.payload)
            if port == BTP_PORT_DENM:
                return decode_denm(body.payload)
        except V2xDecodeError as exc:
            raise _Rejected("message", exc) from exc
        raise _Rejected("btp_port", port)

    def _raise(self, warnings: list[HazardWarning]) -> None:
        for warning in warnings:
            with self._lock:
                self._counts[f"warnings.{warning.state}"] += 1
            log = LOGGER.warning if warning.state == WarningState.RAISED else LOGGER.info
            distance = "?" if warning.distance_m is None else f"{warning.distance_m:.0f} m"
            log(
                "V2X warning %s: %s at %s (station %d, sequence %d)%s",
                warning.state,
                warning.hazard,
                distance,
                warning.action_id.originating_station_id,
                warning.action_id.sequence_number,
                "" if warning.reason is None else f": {warning.reason}",
            )
            if self.on_warning is not None:
                self.on_warning(warning)


def warning_publisher(client: paho.Client, fleet: str, vin: str) -> Callable[[HazardWarning], None]:
    """An ``on_warning`` that publishes each warning as JSON to the vehicle's warning topic (QoS 1)."""
    topic = topics.warning_topic(fleet, vin)

    def publish(warning: HazardWarning) -> None:
        client.publish(topic, json.dumps(warning.to_dict(), separators=(",", ":")).encode(), qos=1)

    return publish
