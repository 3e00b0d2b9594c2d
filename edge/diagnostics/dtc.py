"""Diagnostic trouble codes: the ``P0301`` form, ISO 14229 status bits, descriptions, UDS 0x19.

A DTC is two bytes in OBD-II (modes 03/07, ISO 15031-6 / SAE J2012): the top two bits
pick the letter (P powertrain, C chassis, B body, U network), the next two the first
digit (0-3), and three hex nibbles follow, so ``03 01`` is ``P0301``. UDS (ISO 14229-1)
DTCs in the SAE J2012 format add a third byte, the failure type (``P0301-1F``), and every
UDS DTC comes with a status byte (:class:`DtcStatus`).

This module also encodes and decodes the two ReadDTCInformation (0x19) reports roadwave
uses: reportNumberOfDTCByStatusMask (0x01) and reportDTCByStatusMask (0x02). The ECU
simulator and the client share these functions, so both sides speak one layout.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from edge.diagnostics import DtcError, EncodeError, ResponseFormatError

#: The letter of each value of a DTC's top two bits.
LETTERS = "PCBU"
_CODE = re.compile(r"([PCBU])([0-3])([0-9A-F]{3})(?:-([0-9A-F]{2}))?")

READ_DTC_INFORMATION = 0x19
REPORT_NUMBER_BY_STATUS_MASK = 0x01
REPORT_BY_STATUS_MASK = 0x02
#: DTCFormatIdentifier of ISO 14229-1: SAE J2012-DA format 00 (2-byte code + failure type).
DTC_FORMAT_J2012_00 = 0x00
POSITIVE_OFFSET = 0x40


class DtcStatus(enum.IntFlag):
    """The DTC status byte of ISO 14229-1 (D.2); bit 7 is the MIL request."""

    TEST_FAILED = 0x01
    TEST_FAILED_THIS_OPERATION_CYCLE = 0x02
    PENDING = 0x04
    CONFIRMED = 0x08
    TEST_NOT_COMPLETED_SINCE_LAST_CLEAR = 0x10
    TEST_FAILED_SINCE_LAST_CLEAR = 0x20
    TEST_NOT_COMPLETED_THIS_OPERATION_CYCLE = 0x40
    WARNING_INDICATOR_REQUESTED = 0x80

    def labels(self) -> tuple[str, ...]:
        """Lower-case names of the set bits, lowest bit first (for JSON and logs)."""
        return tuple(flag.name.lower() for flag in DtcStatus if flag in self and flag.name)


@dataclass(frozen=True, slots=True)
class Dtc:
    """One trouble code: ``code`` like ``"P0301"``; ``failure_type`` is the UDS third byte."""

    code: str
    failure_type: int | None = None

    def __post_init__(self) -> None:
        match = _CODE.fullmatch(self.code) if isinstance(self.code, str) else None
        if match is None or match.group(4) is not None:
            raise DtcError(
                f"a DTC code is a letter P/C/B/U, a digit 0-3 and three hex digits "
                f"(upper case, e.g. 'P0301'), got {self.code!r}"
            )
        if self.failure_type is not None and (
            not isinstance(self.failure_type, int) or not 0 <= self.failure_type <= 0xFF
        ):
            raise DtcError(f"a DTC failure type is a byte 0-255 or None, got {self.failure_type!r}")

    @classmethod
    def parse(cls, text: str) -> Dtc:
        """``"P0301"`` or, with a failure type, ``"P0301-1F"`` (case-insensitive)."""
        match = _CODE.fullmatch(text.strip().upper()) if isinstance(text, str) else None
        if match is None:
            raise DtcError(
                f"not a DTC: {text!r}; expected a letter P/C/B/U, a digit 0-3, three hex digits "
                f"and optionally '-' and a two-digit failure type, e.g. 'P0301' or 'C0288-00'"
            )
        letter, digit, rest, failure = match.groups()
        return cls(letter + digit + rest, None if failure is None else int(failure, 16))

    @classmethod
    def from_obd_bytes(cls, data: bytes) -> Dtc:
        """The two-byte OBD-II form (mode 03/07)."""
        if len(data) != 2:
            raise DtcError(f"an OBD-II DTC is 2 bytes, got {len(data)}: {bytes(data).hex()}")
        word = int.from_bytes(data, "big")
        return cls(f"{LETTERS[word >> 14]}{(word >> 12) & 0x3}{word & 0xFFF:03X}")

    @classmethod
    def from_uds_bytes(cls, data: bytes) -> Dtc:
        """The three-byte UDS form: the OBD-II code and the failure type byte."""
        if len(data) != 3:
            raise DtcError(f"a UDS DTC is 3 bytes, got {len(data)}: {bytes(data).hex()}")
        return cls(cls.from_obd_bytes(data[:2]).code, data[2])

    def obd_bytes(self) -> bytes:
        """The two-byte OBD-II form."""
        word = LETTERS.index(self.code[0]) << 14 | int(self.code[1]) << 12 | int(self.code[2:], 16)
        return word.to_bytes(2, "big")

    def uds_bytes(self) -> bytes:
        """The three-byte UDS form (failure type 0 when there is none)."""
        return self.obd_bytes() + bytes([self.failure_type or 0])

    @property
    def description(self) -> str | None:
        """Our short description of the generic code, or None when we have none."""
        return DESCRIPTIONS.get(self.code)

    def __str__(self) -> str:
        return self.code if self.failure_type is None else f"{self.code}-{self.failure_type:02X}"


def _misfires() -> dict[str, str]:
    return {f"P030{n}": f"cylinder {n} misfires" for n in range(1, 9)}


#: Short descriptions of common generic (SAE-assigned) codes, in our own words. Codes
#: with a manufacturer-controlled digit (P1xxx, C1xxx...) mean different things per make.
DESCRIPTIONS: dict[str, str] = {
    "P0101": "air mass sensor reading does not fit the engine's operating point",
    "P0116": "coolant temperature sensor reading is implausible",
    "P0117": "coolant temperature sensor signal is too low",
    "P0118": "coolant temperature sensor signal is too high",
    "P0128": "engine warms up too slowly: coolant stays below the thermostat temperature",
    "P0171": "mixture too lean on bank 1: fuel trim has reached its rich limit",
    "P0172": "mixture too rich on bank 1: fuel trim has reached its lean limit",
    "P0174": "mixture too lean on bank 2: fuel trim has reached its rich limit",
    "P0175": "mixture too rich on bank 2: fuel trim has reached its lean limit",
    "P0217": "engine overheating: coolant above its safe limit",
    "P0300": "misfires on several or changing cylinders",
    **_misfires(),
    "P0335": "crankshaft position sensor A gives no usable signal",
    "P0420": "catalytic converter on bank 1 cleans less than required",
    "P0430": "catalytic converter on bank 2 cleans less than required",
    "P0442": "small leak in the fuel vapour (EVAP) system",
    "P0455": "large leak in the fuel vapour (EVAP) system, often a loose fuel cap",
    "P0500": "vehicle speed sensor A signal missing or implausible",
    "P0562": "supply voltage at the control module is too low",
    "P0563": "supply voltage at the control module is too high",
    "P0700": "the transmission controller stored a fault and asks for the warning lamp",
    # Seen in manufacturer service data for brake control modules; we could not check it
    # against SAE J2012-DA (not public), so treat the wording as indicative.
    "C0288": "brake pad wear sensor: pads worn to the limit or sensor circuit fault",
    "U0073": "the control module's CAN bus is off",
    "U0100": "no messages from the engine control module (ECM/PCM A)",
    "U0121": "no messages from the ABS control module",
    "U0140": "no messages from the body control module",
}


@dataclass(frozen=True, slots=True)
class DtcRecord:
    """A DTC as one ECU reports it, with its status byte."""

    dtc: Dtc
    status: DtcStatus


@dataclass(frozen=True, slots=True)
class DtcCount:
    """The answer to reportNumberOfDTCByStatusMask (0x19 0x01)."""

    availability: DtcStatus  # the status bits the ECU supports
    format_id: int
    count: int


def read_dtc_request(subfunction: int, status_mask: int) -> bytes:
    """A ReadDTCInformation request: 0x19, subfunction 0x01 or 0x02, status mask."""
    if subfunction not in (REPORT_NUMBER_BY_STATUS_MASK, REPORT_BY_STATUS_MASK):
        raise EncodeError(f"ReadDTCInformation subfunction must be 0x01 or 0x02, got {subfunction!r}")
    if not isinstance(status_mask, int) or not 0 <= status_mask <= 0xFF:
        raise EncodeError(f"a DTC status mask is a byte 0-255, got {status_mask!r}")
    return bytes([READ_DTC_INFORMATION, subfunction, status_mask])


def _check_header(payload: bytes, subfunction: int) -> None:
    expected = bytes([READ_DTC_INFORMATION + POSITIVE_OFFSET, subfunction])
    if payload[:2] != expected:
        raise ResponseFormatError(
            "service", f"expected a response starting {expected.hex()}, got {payload[:2].hex() or 'nothing'}"
        )


def parse_dtc_count(payload: bytes) -> DtcCount:
    """Decode ``59 01 availability format count_hi count_lo``."""
    _check_header(payload, REPORT_NUMBER_BY_STATUS_MASK)
    if len(payload) != 6:
        raise ResponseFormatError("length", f"a DTC count response is 6 bytes, got {len(payload)}")
    return DtcCount(DtcStatus(payload[2]), payload[3], int.from_bytes(payload[4:6], "big"))


def encode_dtc_count(availability: DtcStatus, count: int, format_id: int = DTC_FORMAT_J2012_00) -> bytes:
    """The positive response to 0x19 0x01."""
    if not 0 <= count <= 0xFFFF:
        raise EncodeError(f"a DTC count is 0-65535, got {count!r}")
    header = [READ_DTC_INFORMATION + POSITIVE_OFFSET, REPORT_NUMBER_BY_STATUS_MASK, availability, format_id]
    return bytes(header) + count.to_bytes(2, "big")


def parse_dtc_report(payload: bytes) -> tuple[DtcStatus, list[DtcRecord]]:
    """Decode ``59 02 availability (DTC[3] status)*``: the availability mask and the records.

    Status bits outside the availability mask are reported as the ECU sent them.
    """
    _check_header(payload, REPORT_BY_STATUS_MASK)
    if len(payload) < 3 or (len(payload) - 3) % 4:
        raise ResponseFormatError(
            "length",
            f"a DTC report is 3 bytes plus 4 per DTC, got {len(payload)} bytes: {payload[:16].hex()}",
        )
    records = [
        DtcRecord(Dtc.from_uds_bytes(payload[i : i + 3]), DtcStatus(payload[i + 3]))
        for i in range(3, len(payload), 4)
    ]
    return DtcStatus(payload[2]), records


def encode_dtc_report(availability: DtcStatus, records: Iterable[DtcRecord]) -> bytes:
    """The positive response to 0x19 0x02."""
    body = b"".join(record.dtc.uds_bytes() + bytes([record.status]) for record in records)
    return bytes([READ_DTC_INFORMATION + POSITIVE_OFFSET, REPORT_BY_STATUS_MASK, availability]) + body
