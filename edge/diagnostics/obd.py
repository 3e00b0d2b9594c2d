"""OBD-II services on CAN (SAE J1979 / ISO 15031-5): mode 01 PIDs and the trouble-code modes.

Mode 01 returns current data: a request names up to six PIDs, and each ECU answers the
ones it supports as ``41 pid data pid data...``. Supported-PID bitmaps (PIDs 0x00, 0x20,
0x40...) say which PIDs an ECU answers; PID 0x01 carries the MIL and the count of
confirmed DTCs. Modes 03 and 07 list the confirmed (stored) and pending DTCs; on CAN the
response is ``43 count dtc dtc...``. Mode 04 clears the emission-related DTCs.

The formulas are the standard ones (see /work/shared/domain-facts.md); every numeric PID
read here is linear, ``value = raw * scale + offset`` over a big-endian unsigned integer,
so one :class:`Pid` decodes for the client and encodes for the ECU simulator.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from edge.diagnostics import EncodeError, ResponseFormatError
from edge.diagnostics.dtc import POSITIVE_OFFSET, Dtc

SHOW_CURRENT_DATA = 0x01
SHOW_STORED_DTCS = 0x03
CLEAR_DTCS = 0x04
SHOW_PENDING_DTCS = 0x07
DTC_MODES = (SHOW_STORED_DTCS, SHOW_PENDING_DTCS)
#: ISO 15765-4 lets one mode 01 request name at most six PIDs.
MAX_PIDS_PER_REQUEST = 6
MONITOR_STATUS = 0x01
#: PIDs 0x00, 0x20, ... 0xE0: each a bitmap of the next 32 PIDs.
BITMAP_PIDS = frozenset(range(0x00, 0x100, 0x20))
_BITMAP_SIZE = 4


@dataclass(frozen=True, slots=True)
class Pid:
    """A numeric mode 01 PID: ``value = big-endian unsigned raw * scale + offset``."""

    number: int
    name: str
    unit: str
    size: int  # data bytes
    scale: float
    offset: float = 0.0

    @property
    def minimum(self) -> float:
        return self.offset

    @property
    def maximum(self) -> float:
        return ((1 << (8 * self.size)) - 1) * self.scale + self.offset

    def decode(self, data: bytes) -> float:
        """The physical value of this PID's data bytes."""
        if len(data) != self.size:
            raise ResponseFormatError(
                "length", f"PID 0x{self.number:02X} ({self.name}) has {self.size} data bytes, got {len(data)}"
            )
        return int.from_bytes(data, "big") * self.scale + self.offset

    def encode(self, value: float) -> bytes:
        """The data bytes of ``value``, rounded to the PID's resolution; out of range raises."""
        if not self.minimum <= value <= self.maximum:
            raise EncodeError(
                f"PID 0x{self.number:02X} ({self.name}) carries {self.minimum:g} to {self.maximum:g} "
                f"{self.unit}, got {value!r}"
            )
        return round((value - self.offset) / self.scale).to_bytes(self.size, "big")


#: The numeric PIDs roadwave reads, by number.
PIDS: dict[int, Pid] = {
    pid.number: pid
    for pid in (
        Pid(0x04, "engine_load", "percent", 1, 100 / 255),
        Pid(0x05, "coolant_temperature", "celsius", 1, 1.0, -40.0),
        Pid(0x0C, "engine_speed", "rpm", 2, 0.25),
        Pid(0x0D, "vehicle_speed", "km/h", 1, 1.0),
        Pid(0x1F, "run_time", "s", 2, 1.0),
        Pid(0x2F, "fuel_level", "percent", 1, 100 / 255),
        Pid(0x31, "distance_since_dtc_clear", "km", 2, 1.0),
        Pid(0x42, "control_module_voltage", "V", 2, 0.001),
        Pid(0x5C, "oil_temperature", "celsius", 1, 1.0, -40.0),
        Pid(0xA6, "odometer", "km", 4, 0.1),
    )
}


@dataclass(frozen=True, slots=True)
class MonitorStatus:
    """PID 0x01: the MIL, the number of confirmed emission DTCs, the ignition type.

    Byte A bit 7 is the MIL, bits 0-6 the DTC count; byte B bit 3 marks compression
    ignition. The readiness bits (rest of B, C, D) are not interpreted.
    """

    mil_on: bool
    dtc_count: int
    compression_ignition: bool = False

    @classmethod
    def decode(cls, data: bytes) -> MonitorStatus:
        if len(data) != 4:
            raise ResponseFormatError("length", f"PID 0x01 has 4 data bytes, got {len(data)}")
        return cls(bool(data[0] & 0x80), data[0] & 0x7F, bool(data[1] & 0x08))

    def encode(self) -> bytes:
        if not 0 <= self.dtc_count <= 0x7F:
            raise EncodeError(f"PID 0x01 counts 0-127 DTCs, got {self.dtc_count!r}")
        return bytes([self.mil_on << 7 | self.dtc_count, self.compression_ignition << 3, 0, 0])


def data_size(pid: int) -> int | None:
    """Data bytes of a PID in a mode 01 response, or None for a PID roadwave does not know."""
    if pid in BITMAP_PIDS or pid == MONITOR_STATUS:
        return _BITMAP_SIZE
    known = PIDS.get(pid)
    return known.size if known else None


def decode_supported(base: int, data: bytes) -> frozenset[int]:
    """The PIDs a bitmap PID (0x00, 0x20...) marks as supported: MSB first is ``base + 1``."""
    if base not in BITMAP_PIDS:
        raise EncodeError(f"PID 0x{base:02X} is not a supported-PIDs bitmap")
    if len(data) != _BITMAP_SIZE:
        raise ResponseFormatError("length", f"PID 0x{base:02X} has 4 data bytes, got {len(data)}")
    bits = int.from_bytes(data, "big")
    return frozenset(base + 32 - i for i in range(32) if bits >> i & 1)


def encode_supported(base: int, supported: Collection[int]) -> bytes:
    """The bitmap PID ``base`` for an ECU answering ``supported`` (bitmaps included)."""
    if base not in BITMAP_PIDS:
        raise EncodeError(f"PID 0x{base:02X} is not a supported-PIDs bitmap")
    bits = sum(1 << (base + 32 - pid) for pid in supported if base < pid <= base + 32)
    return bits.to_bytes(_BITMAP_SIZE, "big")


def with_bitmaps(pids: Iterable[int]) -> frozenset[int]:
    """``pids`` plus the bitmap PIDs needed to announce them (0x00 always, 0x20 if any PID > 0x20...)."""
    chosen = frozenset(pids)
    highest = max(chosen, default=0)
    return chosen | {base for base in BITMAP_PIDS if base == 0 or base < highest}


def pid_request(pids: Sequence[int]) -> bytes:
    """A mode 01 request for up to six PIDs; bitmap PIDs may not be mixed with others."""
    if not 1 <= len(pids) <= MAX_PIDS_PER_REQUEST:
        raise EncodeError(f"a mode 01 request names 1 to {MAX_PIDS_PER_REQUEST} PIDs, got {len(pids)}")
    if len(set(pids)) != len(pids):
        raise EncodeError(f"a mode 01 request names each PID once, got {[f'0x{p:02X}' for p in pids]}")
    for pid in pids:
        if not isinstance(pid, int) or data_size(pid) is None:
            raise EncodeError(f"unknown mode 01 PID {pid!r}; known: {sorted(set(PIDS) | BITMAP_PIDS | {1})}")
    bitmaps = sum(pid in BITMAP_PIDS for pid in pids)
    if 0 < bitmaps < len(pids):
        raise EncodeError("supported-PIDs bitmaps (0x00, 0x20...) and other PIDs need separate requests")
    return bytes([SHOW_CURRENT_DATA, *pids])


def parse_pid_response(payload: bytes, requested: Collection[int]) -> dict[int, bytes]:
    """Split ``41 pid data pid data...`` into the data bytes of each PID.

    Every PID must be one of ``requested``, appear once and have its full data.
    """
    if payload[:1] != bytes([SHOW_CURRENT_DATA + POSITIVE_OFFSET]):
        raise ResponseFormatError("service", f"a mode 01 response starts with 41, got {payload[:8].hex()}")
    out: dict[int, bytes] = {}
    i = 1
    while i < len(payload):
        pid = payload[i]
        if pid not in requested:
            raise ResponseFormatError("unrequested pid", f"PID 0x{pid:02X} in {payload.hex()}")
        if pid in out:
            raise ResponseFormatError("duplicate pid", f"PID 0x{pid:02X} twice in {payload.hex()}")
        size = data_size(pid)
        assert size is not None  # requested PIDs were checked by pid_request
        if i + 1 + size > len(payload):
            raise ResponseFormatError("length", f"PID 0x{pid:02X} needs {size} data bytes in {payload.hex()}")
        out[pid] = payload[i + 1 : i + 1 + size]
        i += 1 + size
    if not out:
        raise ResponseFormatError("length", "a mode 01 response without any PID")
    return out


def encode_pid_response(values: dict[int, bytes]) -> bytes:
    """``41 pid data...`` from each PID's data bytes, in the given order."""
    return bytes([SHOW_CURRENT_DATA + POSITIVE_OFFSET]) + b"".join(
        bytes([pid]) + data for pid, data in values.items()
    )


def dtc_request(mode: int) -> bytes:
    """A mode 03 (confirmed) or mode 07 (pending) request."""
    if mode not in DTC_MODES:
        raise EncodeError(f"DTC lists are read with mode 0x03 or 0x07, got {mode!r}")
    return bytes([mode])


def parse_dtc_response(payload: bytes, mode: int) -> list[Dtc]:
    """Decode ``43 count dtc...`` (or ``47``); ``00 00`` entries mean "no DTC" and are dropped."""
    if mode not in DTC_MODES:
        raise EncodeError(f"DTC lists are read with mode 0x03 or 0x07, got {mode!r}")
    if payload[:1] != bytes([mode + POSITIVE_OFFSET]) or len(payload) < 2:
        raise ResponseFormatError(
            "service",
            f"a mode {mode:02X} response starts with {mode + POSITIVE_OFFSET:02X} and a count, "
            f"got {payload[:8].hex() or 'nothing'}",
        )
    count = payload[1]
    if len(payload) != 2 + 2 * count:
        raise ResponseFormatError(
            "dtc count", f"{count} DTCs announced but {len(payload) - 2} bytes follow: {payload[:16].hex()}"
        )
    pairs = (payload[i : i + 2] for i in range(2, len(payload), 2))
    return [Dtc.from_obd_bytes(pair) for pair in pairs if pair != b"\x00\x00"]


def encode_dtc_response(mode: int, dtcs: Sequence[Dtc]) -> bytes:
    """``43 count dtc...`` (or ``47``) for ``dtcs``."""
    if mode not in DTC_MODES:
        raise EncodeError(f"DTC lists are read with mode 0x03 or 0x07, got {mode!r}")
    if len(dtcs) > 0xFF:
        raise EncodeError(f"one response lists at most 255 DTCs, got {len(dtcs)}")
    return bytes([mode + POSITIVE_OFFSET, len(dtcs)]) + b"".join(dtc.obd_bytes() for dtc in dtcs)
