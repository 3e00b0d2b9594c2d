"""The serial protocol between the host and the vehicle-bus microcontroller (MCU).

Specified in ``docs/firmware-protocol.md``; this module is its reference implementation.
A frame is ``version | type | payload | CRC-16`` (CRC-16/CCITT-FALSE, little-endian),
COBS-encoded and terminated by one ``0x00`` byte. Multi-byte fields are little-endian.

Exceptions::

    ProtocolError (ValueError)
     +-- CrcError              the frame's check value does not match its bytes
     +-- MalformedFrameError   bad COBS, unknown version or type, wrong length or field value

:class:`StreamDecoder` turns a byte stream into frames, skipping garbage and counting
everything it drops (:class:`DecoderStats`).
"""

from __future__ import annotations

import binascii
import logging
import struct
from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self, TypedDict

import can

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"

#: Valid CAN FD data lengths (ISO 11898-1: DLC 0-8 map 1:1, then 12 ... 64).
FD_LENGTHS = frozenset((*range(9), 12, 16, 20, 24, 32, 48, 64))
MAX_STANDARD_ID = 0x7FF
MAX_EXTENDED_ID = 0x1FFF_FFFF
#: Controller index meaning "every controller" (configuration requests only).
ALL_CHANNELS = 0xFF
MAX_SENTENCE = 255

_CRC_INIT = 0xFFFF
_HEADER = 2  # version, type
_CRC_SIZE = 2
#: Longest frame before COBS: a GNSS frame with a 255-character sentence.
MAX_FRAME_BYTES = _HEADER + 4 + MAX_SENTENCE + _CRC_SIZE
#: Longest COBS encoding of such a frame (one code byte per started 254-byte block).
MAX_ENCODED_BYTES = MAX_FRAME_BYTES + (MAX_FRAME_BYTES + 253) // 254


class ProtocolError(ValueError):
    """Bytes that are not a valid frame of this protocol."""


class CrcError(ProtocolError):
    """A frame whose CRC does not match its content."""


class MalformedFrameError(ProtocolError):
    """A frame with a valid CRC (or none at all) that breaks the format."""


class FrameType(IntEnum):
    """The type byte. MCU-to-host types are below 0x80, host-to-MCU types above."""

    CAN = 0x01
    HEARTBEAT = 0x02
    BUS_STATUS = 0x03
    GNSS = 0x04
    ACK = 0x05
    TRANSMIT = 0x81
    CONFIG = 0x82


MCU_TO_HOST = frozenset(t for t in FrameType if t < 0x80)
HOST_TO_MCU = frozenset(t for t in FrameType if t >= 0x80)


class ErrorState(IntEnum):
    """CAN fault confinement state of a controller (ISO 11898-1)."""

    ACTIVE = 0
    WARNING = 1  # a counter reached 96
    PASSIVE = 2  # a counter reached 128
    BUS_OFF = 3  # TEC passed 255


class LastError(IntEnum):
    """The controller's last error code (the Bosch M_CAN/bxCAN LEC values)."""

    NONE = 0
    STUFF = 1
    FORM = 2
    ACK = 3
    BIT1 = 4
    BIT0 = 5
    CRC = 6


class AckStatus(IntEnum):
    """The MCU's answer to a host request."""

    OK = 0
    QUEUE_FULL = 1
    BUS_OFF = 2
    INVALID = 3
    UNSUPPORTED = 4


_EXTENDED, _FD, _BRS, _ESI, _REMOTE = 0x01, 0x02, 0x04, 0x08, 0x10
_KNOWN_FLAGS = _EXTENDED | _FD | _BRS | _ESI | _REMOTE
_LISTEN_ONLY = 0x01


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: polynomial 0x1021, init 0xFFFF, no reflection, no final XOR."""
    return binascii.crc_hqx(data, _CRC_INIT)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` without any zero byte, plus 1 byte per 254."""
    out = bytearray()
    parts = data.split(DELIMITER)
    last = len(parts) - 1
    for index, part in enumerate(parts):
        start = 0
        while len(part) - start >= 254:
            out.append(0xFF)
            out += part[start : start + 254]
            start += 254
        rest = part[start:]
        # A final run that ended exactly on a full block needs no closing code byte.
        if rest or start == 0 or index != last:
            out.append(len(rest) + 1)
            out += rest
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Invert :func:`cobs_encode`; raise :class:`MalformedFrameError` on an invalid encoding."""
    out = bytearray()
    position, size = 0, len(data)
    while position < size:
        code = data[position]
        if code == 0:
            raise MalformedFrameError(f"COBS: zero byte at offset {position}")
        end = position + code
        if end > size:
            raise MalformedFrameError(
                f"COBS: code byte at offset {position} announces {code - 1} bytes, "
                f"only {size - position - 1} follow"
            )
        out += data[position + 1 : end]
        position = end
        if code != 0xFF and position < size:
            out.append(0)
    return bytes(out)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


def _exact_length(cls: type, payload: bytes, size: int) -> None:
    if len(payload) != size:
        raise MalformedFrameError(f"{cls.__name__} payload must be {size} bytes, got {len(payload)}")


class _CanContent(TypedDict):
    channel: int
    arbitration_id: int
    data: bytes
    is_extended_id: bool
    is_fd: bool
    bitrate_switch: bool
    error_state_indicator: bool
    is_remote_frame: bool
    remote_length: int


def _message_content(message: can.Message) -> _CanContent:
    """The content of ``message``; an int ``channel`` selects the controller, anything else 0."""
    remote = message.is_remote_frame
    return {
        "channel": message.channel if isinstance(message.channel, int) else 0,
        "arbitration_id": message.arbitration_id,
        "data": b"" if remote else bytes(message.data),
        "is_extended_id": message.is_extended_id,
        "is_fd": message.is_fd,
        "bitrate_switch": message.bitrate_switch,
        "error_state_indicator": message.error_state_indicator,
        "is_remote_frame": remote,
        "remote_length": message.dlc if remote else 0,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class CanFields:
    """A CAN or CAN FD frame's content; ``channel`` is the MCU's controller index.

    A remote frame has no data; ``remote_length`` is the length it requests (0-8).
    """

    channel: int = 0
    arbitration_id: int
    data: bytes = b""
    is_extended_id: bool = False
    is_fd: bool = False
    bitrate_switch: bool = False
    error_state_indicator: bool = False
    is_remote_frame: bool = False
    remote_length: int = 0

    _LAYOUT: ClassVar[struct.Struct]

    def __post_init__(self) -> None:
        _check_range("channel", self.channel, 0, ALL_CHANNELS - 1)
        max_id = MAX_EXTENDED_ID if self.is_extended_id else MAX_STANDARD_ID
        _check_range("arbitration_id", self.arbitration_id, 0, max_id)
        if self.is_remote_frame:
            if self.is_fd or self.data:
                raise ValueError("a remote frame carries no data and cannot be CAN FD")
            _check_range("remote_length", self.remote_length, 0, 8)
        elif self.remote_length:
            raise ValueError("remote_length is only for remote frames")
        if self.is_fd:
            if len(self.data) not in FD_LENGTHS:
                raise ValueError(f"CAN FD data length {len(self.data)} is not one of {sorted(FD_LENGTHS)}")
        elif len(self.data) > 8:
            raise ValueError(f"classic CAN carries at most 8 data bytes, got {len(self.data)}")
        elif self.bitrate_switch or self.error_state_indicator:
            raise ValueError("bitrate_switch and error_state_indicator need is_fd")

    @property
    def length(self) -> int:
        """The frame's length: data bytes, or the requested length of a remote frame."""
        return self.remote_length if self.is_remote_frame else len(self.data)

    @property
    def _flags(self) -> int:
        return (
            (_EXTENDED if self.is_extended_id else 0)
            | (_FD if self.is_fd else 0)
            | (_BRS if self.bitrate_switch else 0)
            | (_ESI if self.error_state_indicator else 0)
            | (_REMOTE if self.is_remote_frame else 0)
        )

    @property
    def _lead(self) -> int:
        """The field in front of the CAN content (timestamp or sequence number)."""
        raise NotImplementedError

    def payload(self) -> bytes:
        """The frame's payload bytes."""
        head = self._LAYOUT.pack(self._lead, self.channel, self._flags, self.arbitration_id, self.length)
        return head + self.data

    def to_message(self, timestamp: float) -> can.Message:
        """A python-can message with this content; ``channel`` becomes the controller index."""
        return can.Message(
            timestamp=timestamp,
            arbitration_id=self.arbitration_id,
            is_extended_id=self.is_extended_id,
            is_remote_frame=self.is_remote_frame,
            is_fd=self.is_fd,
            bitrate_switch=self.bitrate_switch,
            error_state_indicator=self.error_state_indicator,
            dlc=self.length,
            data=self.data,
            channel=self.channel,
        )

    @classmethod
    def _unpack(cls, payload: bytes) -> tuple[int, _CanContent]:
        """Split ``payload`` into the leading field and the CAN content."""
        size = cls._LAYOUT.size
        if len(payload) < size:
            raise MalformedFrameError(f"{cls.__name__} payload needs {size} bytes, got {len(payload)}")
        lead, channel, flags, arbitration_id, length = cls._LAYOUT.unpack_from(payload)
        if flags & ~_KNOWN_FLAGS:
            raise MalformedFrameError(f"{cls.__name__}: reserved flag bits set in 0x{flags:02X}")
        remote = bool(flags & _REMOTE)
        data = payload[size:]
        if len(data) != (0 if remote else length):
            raise MalformedFrameError(
                f"{cls.__name__}: length field says {length}, {len(data)} data bytes follow"
            )
        content: _CanContent = {
            "channel": channel,
            "arbitration_id": arbitration_id,
            "data": data,
            "is_extended_id": bool(flags & _EXTENDED),
            "is_fd": bool(flags & _FD),
            "bitrate_switch": bool(flags & _BRS),
            "error_state_indicator": bool(flags & _ESI),
            "is_remote_frame": remote,
            "remote_length": length if remote else 0,
        }
        return lead, content


@dataclass(frozen=True, slots=True, kw_only=True)
class CanFrame(CanFields):
    """MCU -> host: a frame received on the vehicle bus, stamped with the MCU's 32-bit microseconds."""

    timestamp_us: int

    frame_type: ClassVar[FrameType] = FrameType.CAN
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IBBIB")

    def __post_init__(self) -> None:
        CanFields.__post_init__(self)
        _check_range("timestamp_us", self.timestamp_us, 0, 0xFFFF_FFFF)

    @property
    def _lead(self) -> int:
        return self.timestamp_us

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        timestamp_us, content = cls._unpack(payload)
        return cls(timestamp_us=timestamp_us, **content)

    @classmethod
    def from_message(cls, message: can.Message, timestamp_us: int) -> Self:
        """``message`` as received at MCU time ``timestamp_us`` (see :func:`_message_content`)."""
        return cls(timestamp_us=timestamp_us, **_message_content(message))


@dataclass(frozen=True, slots=True, kw_only=True)
class TransmitRequest(CanFields):
    """Host -> MCU: send a frame on the vehicle bus; answered by an :class:`Ack` with ``seq``."""

    seq: int

    frame_type: ClassVar[FrameType] = FrameType.TRANSMIT
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HBBIB")

    def __post_init__(self) -> None:
        CanFields.__post_init__(self)
        _check_range("seq", self.seq, 0, 0xFFFF)

    @property
    def _lead(self) -> int:
        return self.seq

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        seq, content = cls._unpack(payload)
        return cls(seq=seq, **content)

    @classmethod
    def from_message(cls, message: can.Message, seq: int) -> Self:
        """A request to send ``message`` (see :func:`_message_content`)."""
        return cls(seq=seq, **_message_content(message))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """MCU -> host, once per second: 64-bit uptime (anchors the 32-bit stamps) and firmware."""

    uptime_us: int
    firmware_version: tuple[int, int, int]
    channels: int = 1  # CAN controllers on this MCU

    frame_type: ClassVar[FrameType] = FrameType.HEARTBEAT
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<QBBBB")

    def __post_init__(self) -> None:
        _check_range("uptime_us", self.uptime_us, 0, (1 << 64) - 1)
        if len(self.firmware_version) != 3:
            raise ValueError(f"firmware_version must be (major, minor, patch), got {self.firmware_version!r}")
        for part in self.firmware_version:
            _check_range("firmware_version part", part, 0, 255)
        _check_range("channels", self.channels, 1, ALL_CHANNELS - 1)

    def payload(self) -> bytes:
        """The frame's payload bytes."""
        return self._LAYOUT.pack(self.uptime_us, *self.firmware_version, self.channels)

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        _exact_length(cls, payload, cls._LAYOUT.size)
        uptime_us, major, minor, patch, channels = cls._LAYOUT.unpack(payload)
        return cls(uptime_us, (major, minor, patch), channels)


@dataclass(frozen=True, slots=True)
class BusStatus:
    """MCU -> host: a controller's error state, on every change, after errors and with heartbeats.

    ``rx_overruns`` counts, since MCU start, frames the MCU lost (controller FIFO or
    serial queue full).
    """

    timestamp_us: int
    channel: int
    state: ErrorState
    tec: int
    rec: int
    last_error: LastError = LastError.NONE
    rx_overruns: int = 0

    frame_type: ClassVar[FrameType] = FrameType.BUS_STATUS
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<IBBBBBI")

    def __post_init__(self) -> None:
        _check_range("timestamp_us", self.timestamp_us, 0, 0xFFFF_FFFF)
        _check_range("channel", self.channel, 0, ALL_CHANNELS - 1)
        object.__setattr__(self, "state", ErrorState(self.state))
        object.__setattr__(self, "last_error", LastError(self.last_error))
        _check_range("tec", self.tec, 0, 255)
        _check_range("rec", self.rec, 0, 255)
        _check_range("rx_overruns", self.rx_overruns, 0, 0xFFFF_FFFF)

    def payload(self) -> bytes:
        """The frame's payload bytes."""
        return self._LAYOUT.pack(
            self.timestamp_us, self.channel, self.state, self.tec, self.rec, self.last_error, self.rx_overruns
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        _exact_length(cls, payload, cls._LAYOUT.size)
        timestamp_us, channel, state, tec, rec, last_error, overruns = cls._LAYOUT.unpack(payload)
        return cls(timestamp_us, channel, ErrorState(state), tec, rec, LastError(last_error), overruns)


@dataclass(frozen=True, slots=True)
class GnssFrame:
    """MCU -> host: one NMEA 0183 sentence from the GNSS receiver, without CR LF."""

    timestamp_us: int  # MCU time of the sentence's first byte
    sentence: str

    frame_type: ClassVar[FrameType] = FrameType.GNSS
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<I")

    def __post_init__(self) -> None:
        _check_range("timestamp_us", self.timestamp_us, 0, 0xFFFF_FFFF)
        if not 1 <= len(self.sentence) <= MAX_SENTENCE:
            raise ValueError(f"a sentence has 1..{MAX_SENTENCE} characters, got {len(self.sentence)}")
        if not (self.sentence.isascii() and self.sentence.isprintable()):
            raise ValueError(f"a sentence is printable ASCII without CR/LF, got {self.sentence!r}")

    def payload(self) -> bytes:
        """The frame's payload bytes."""
        return self._LAYOUT.pack(self.timestamp_us) + self.sentence.encode("ascii")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        if len(payload) <= cls._LAYOUT.size:
            raise MalformedFrameError(f"GnssFrame payload needs at least 5 bytes, got {len(payload)}")
        (timestamp_us,) = cls._LAYOUT.unpack_from(payload)
        try:
            sentence = payload[4:].decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedFrameError(f"GnssFrame: sentence is not ASCII ({exc})") from exc
        return cls(timestamp_us, sentence)


@dataclass(frozen=True, slots=True)
class Ack:
    """MCU -> host: the answer to the :class:`TransmitRequest` or :class:`Config` with ``seq``."""

    seq: int
    status: AckStatus = AckStatus.OK

    frame_type: ClassVar[FrameType] = FrameType.ACK
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HB")

    def __post_init__(self) -> None:
        _check_range("seq", self.seq, 0, 0xFFFF)
        object.__setattr__(self, "status", AckStatus(self.status))

    def payload(self) -> bytes:
        """The frame's payload bytes."""
        return self._LAYOUT.pack(self.seq, self.status)

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        _exact_length(cls, payload, cls._LAYOUT.size)
        seq, status = cls._LAYOUT.unpack(payload)
        return cls(seq, AckStatus(status))


@dataclass(frozen=True, slots=True)
class Config:
    """Host -> MCU: bit rates and mode of one controller (or all: ``ALL_CHANNELS``).

    ``data_bitrate`` 0 means classic CAN; otherwise CAN FD with this data-phase rate.
    """

    seq: int
    bitrate: int
    data_bitrate: int = 0
    listen_only: bool = False
    channel: int = ALL_CHANNELS

    frame_type: ClassVar[FrameType] = FrameType.CONFIG
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HBBII")

    def __post_init__(self) -> None:
        _check_range("seq", self.seq, 0, 0xFFFF)
        _check_range("channel", self.channel, 0, ALL_CHANNELS)
        _check_range("bitrate", self.bitrate, 1, 1_000_000)
        if self.data_bitrate:
            _check_range("data_bitrate", self.data_bitrate, self.bitrate, 0xFFFF_FFFF)

    def payload(self) -> bytes:
        """The frame's payload bytes."""
        flags = _LISTEN_ONLY if self.listen_only else 0
        return self._LAYOUT.pack(self.seq, self.channel, flags, self.bitrate, self.data_bitrate)

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        """Parse a payload; raises :class:`ProtocolError` or ``ValueError``."""
        _exact_length(cls, payload, cls._LAYOUT.size)
        seq, channel, flags, bitrate, data_bitrate = cls._LAYOUT.unpack(payload)
        if flags & ~_LISTEN_ONLY:
            raise MalformedFrameError(f"Config: reserved flag bits set in 0x{flags:02X}")
        return cls(seq, bitrate, data_bitrate, bool(flags & _LISTEN_ONLY), channel)


Frame = CanFrame | TransmitRequest | Heartbeat | BusStatus | GnssFrame | Ack | Config

_FRAME_CLASSES: dict[int, type[Frame]] = {
    cls.frame_type: cls for cls in (CanFrame, TransmitRequest, Heartbeat, BusStatus, GnssFrame, Ack, Config)
}
ALL_TYPES = frozenset(FrameType)


def frame_bytes(frame: Frame) -> bytes:
    """A frame before COBS: version, type, payload and CRC."""
    body = bytes((PROTOCOL_VERSION, frame.frame_type)) + frame.payload()
    return body + crc16(body).to_bytes(_CRC_SIZE, "little")


def encode_frame(frame: Frame) -> bytes:
    """A frame as sent on the wire: COBS-encoded and terminated by ``0x00``."""
    return cobs_encode(frame_bytes(frame)) + DELIMITER


def decode_frame(raw: bytes, accept: Collection[int] = ALL_TYPES) -> Frame:
    """Parse a COBS-decoded frame whose type is in ``accept``; raises :class:`ProtocolError`."""
    if len(raw) < _HEADER + _CRC_SIZE:
        raise MalformedFrameError(f"frame of {len(raw)} bytes is shorter than version, type and CRC")
    body = raw[:-_CRC_SIZE]
    expected, computed = int.from_bytes(raw[-_CRC_SIZE:], "little"), crc16(body)
    if expected != computed:
        raise CrcError(f"CRC mismatch: frame carries 0x{expected:04X}, content gives 0x{computed:04X}")
    version, frame_type = body[0], body[1]
    if version != PROTOCOL_VERSION:
        raise MalformedFrameError(f"protocol version {version}, this host speaks {PROTOCOL_VERSION}")
    cls = _FRAME_CLASSES.get(frame_type)
    if cls is None or frame_type not in accept:
        raise MalformedFrameError(f"frame type 0x{frame_type:02X} is unknown or not expected here")
    try:
        return cls.from_payload(body[_HEADER:])
    except MalformedFrameError:
        raise
    except ValueError as exc:
        raise MalformedFrameError(f"{cls.__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class DecoderStats:
    """What a :class:`StreamDecoder` has seen.

    ``crc_errors`` and ``malformed`` count chunks (bytes between delimiters) that held no
    frame; ``bytes_discarded`` counts their bytes and garbage cut off in front of a frame
    (delimiters not included); ``resyncs`` counts valid frames that followed discarded bytes.
    """

    frames_ok: int = 0
    crc_errors: int = 0
    malformed: int = 0
    bytes_discarded: int = 0
    resyncs: int = 0


class StreamDecoder:
    """Incremental parser of the byte stream; resynchronises on the next delimiter.

    A chunk that fails as a whole is searched for a valid frame at a later offset (garbage
    in front of a frame, without a delimiter in between); only if none is found does it
    count as a CRC error or malformed. After :meth:`reset` the bytes up to the first
    delimiter may be the tail of a frame: if they hold no frame they are dropped without
    counting an error.
    """

    def __init__(self, accept: Collection[FrameType] = MCU_TO_HOST) -> None:
        self._accept = frozenset(int(t) for t in accept)
        self._buffer = bytearray()
        self._mid_stream = False
        self._discarding = False
        self._frames_ok = self._crc_errors = self._malformed = self._bytes_discarded = self._resyncs = 0

    @property
    def stats(self) -> DecoderStats:
        """The counters since construction (:meth:`reset` keeps them)."""
        return DecoderStats(
            self._frames_ok, self._crc_errors, self._malformed, self._bytes_discarded, self._resyncs
        )

    def reset(self) -> None:
        """Forget buffered bytes; the stream continues somewhere in the middle (a reopened port)."""
        self._buffer.clear()
        self._mid_stream = True

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames completed by it, in order."""
        frames: list[Frame] = []
        pieces = data.split(DELIMITER)
        tail = pieces.pop()
        for piece in pieces:
            if self._buffer:
                self._buffer += piece
                chunk = self._trimmed(bytes(self._buffer))
                self._buffer.clear()
            else:
                chunk = self._trimmed(piece)
            partial, self._mid_stream = self._mid_stream, False
            if chunk:
                self._chunk(chunk, partial, frames)
        if tail:
            self._buffer += tail
            if len(self._buffer) > MAX_ENCODED_BYTES:
                self._buffer[:] = self._trimmed(bytes(self._buffer))
        return frames

    def _trimmed(self, chunk: bytes) -> bytes:
        """Drop the front of a chunk too long to be one frame; a frame may still end it."""
        excess = len(chunk) - MAX_ENCODED_BYTES
        if excess <= 0:
            return chunk
        self._bytes_discarded += excess
        self._discarding = True
        return chunk[excess:]

    def _chunk(self, chunk: bytes, partial: bool, frames: list[Frame]) -> None:
        try:
            frames.append(decode_frame(cobs_decode(chunk), self._accept))
        except ProtocolError as exc:
            error = exc
        else:
            self._accepted()
            return
        for offset in self._candidates(chunk):
            try:
                frame = decode_frame(cobs_decode(chunk[offset:]), self._accept)
            except ProtocolError:
                continue
            self._bytes_discarded += offset
            self._discarding = True
            frames.append(frame)
            self._accepted()
            return
        if not partial:
            if isinstance(error, CrcError):
                self._crc_errors += 1
            else:
                self._malformed += 1
            logger.debug("dropped %d bytes: %s", len(chunk), error)
        self._bytes_discarded += len(chunk)
        self._discarding = True

    def _candidates(self, chunk: bytes) -> list[int]:
        """Offsets where a frame could start: a COBS code >= 3, then our version and a known type."""
        offsets = []
        position = chunk.find(PROTOCOL_VERSION, 2)
        while 0 <= position < len(chunk) - 1:
            if chunk[position - 1] >= 3 and chunk[position + 1] in self._accept:
                offsets.append(position - 1)
            position = chunk.find(PROTOCOL_VERSION, position + 1)
        return offsets

    def _accepted(self) -> None:
        self._frames_ok += 1
        if self._discarding:
            self._resyncs += 1
            self._discarding = False
