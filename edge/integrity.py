"""Frame integrity: checksum algorithms and the DBC attributes that switch them on.

A message is integrity protected when its ``RwChecksumAlgorithm`` attribute is not
``"none"``. One of its signals then has ``RwIntegrityRole`` ``"counter"`` (a rolling
counter that advances by one per frame and wraps to 0) and one has ``"checksum"``:
8 bits, byte aligned, computed with the algorithm over all payload bytes except the
checksum byte, in payload order. The simulator fills these in; the edge decoder checks them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cantools.database

CHECKSUM_ALGORITHM_ATTRIBUTE = "RwChecksumAlgorithm"
INTEGRITY_ROLE_ATTRIBUTE = "RwIntegrityRole"


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8_J1850_TABLE = _crc8_table(0x1D)


def crc8_sae_j1850(data: bytes | bytearray) -> int:
    """CRC-8 SAE J1850: polynomial 0x1D, init 0xFF, no reflection, final XOR 0xFF.

    The check value (CRC of ``b"123456789"``) is 0x4B.
    """
    table = _CRC8_J1850_TABLE
    crc = 0xFF
    for byte in data:
        crc = table[crc ^ byte]
    return crc ^ 0xFF


def xor8(data: bytes | bytearray) -> int:
    """XOR of all bytes."""
    result = 0
    for byte in data:
        result ^= byte
    return result


def sum8(data: bytes | bytearray) -> int:
    """Sum of all bytes modulo 256."""
    return sum(data) & 0xFF


#: ``RwChecksumAlgorithm`` attribute value -> checksum function over the protected bytes.
CHECKSUM_ALGORITHMS: dict[str, Callable[[bytes | bytearray], int]] = {
    "crc8_sae_j1850": crc8_sae_j1850,
    "xor8": xor8,
    "sum8": sum8,
}


def _algorithm(name: str) -> Callable[[bytes | bytearray], int]:
    try:
        return CHECKSUM_ALGORITHMS[name]
    except KeyError:
        known = ", ".join(sorted(CHECKSUM_ALGORITHMS))
        raise ValueError(f"unknown checksum algorithm {name!r} (known: {known})") from None


def frame_checksum(algorithm: str, payload: bytes | bytearray, checksum_byte: int) -> int:
    """Checksum of ``payload`` with ``algorithm`` over every byte except ``checksum_byte``."""
    if not 0 <= checksum_byte < len(payload):
        raise ValueError(f"checksum byte {checksum_byte} is outside the {len(payload)}-byte payload")
    return _algorithm(algorithm)(payload[:checksum_byte] + payload[checksum_byte + 1 :])


def verify_checksum(algorithm: str, payload: bytes | bytearray, checksum_byte: int) -> bool:
    """Whether the checksum byte of ``payload`` matches the other bytes."""
    return frame_checksum(algorithm, payload, checksum_byte) == payload[checksum_byte]


@dataclass(frozen=True, slots=True)
class IntegritySpec:
    """How one DBC message is integrity protected."""

    message: str
    algorithm: str
    counter_signal: str
    counter_modulus: int  # the counter runs 0 .. counter_modulus - 1
    checksum_signal: str
    checksum_byte: int  # payload index of the checksum byte

    def checksum(self, payload: bytes) -> int:
        """The checksum ``payload`` should carry."""
        return frame_checksum(self.algorithm, payload, self.checksum_byte)

    def verify(self, payload: bytes | bytearray) -> bool:
        """Whether the checksum byte of ``payload`` is correct."""
        return verify_checksum(self.algorithm, payload, self.checksum_byte)


def _attribute_value(attributes: dict[str, Any], name: str, definitions: dict[str, Any]) -> Any:
    """Value of attribute ``name`` (enum values as labels), else its BA_DEF_DEF_ default."""
    attribute = attributes.get(name)
    if attribute is None:
        definition = definitions.get(name)
        return None if definition is None else definition.default_value
    value = attribute.value
    choices = attribute.definition.choices
    if choices and isinstance(value, int):
        return choices[value]
    return value


def _checksum_byte(message_name: str, signal: Any) -> int:
    aligned = signal.start % 8 == (0 if signal.byte_order == "little_endian" else 7)
    if signal.length != 8 or not aligned:
        raise ValueError(
            f"checksum signal {message_name}.{signal.name} must be 8 bits on a byte boundary "
            f"(start bit {signal.start}, length {signal.length}, {signal.byte_order})"
        )
    return int(signal.start) // 8


def integrity_specs(database: cantools.database.can.Database) -> dict[str, IntegritySpec]:
    """Integrity settings of every protected message of a DBC database, by message name.

    Raises ValueError naming the message when a protected message lacks exactly one
    counter and one checksum signal, or names an unknown algorithm.
    """
    definitions = database.dbc.attribute_definitions if database.dbc else {}
    specs: dict[str, IntegritySpec] = {}
    for message in database.messages:
        attributes = message.dbc.attributes if message.dbc else {}
        algorithm = _attribute_value(attributes, CHECKSUM_ALGORITHM_ATTRIBUTE, definitions)
        if algorithm in (None, "none"):
            continue
        if algorithm not in CHECKSUM_ALGORITHMS:
            known = ", ".join(sorted(CHECKSUM_ALGORITHMS))
            raise ValueError(
                f"message {message.name}: {CHECKSUM_ALGORITHM_ATTRIBUTE} {algorithm!r} is not "
                f"one of none, {known}"
            )
        roles: dict[str, list[Any]] = {"counter": [], "checksum": []}
        for signal in message.signals:
            signal_attributes = signal.dbc.attributes if signal.dbc else {}
            role = _attribute_value(signal_attributes, INTEGRITY_ROLE_ATTRIBUTE, definitions)
            if role in roles:
                roles[role].append(signal)
        for role, found in roles.items():
            if len(found) != 1:
                names = ", ".join(s.name for s in found) or "none"
                raise ValueError(
                    f"message {message.name} uses {algorithm} and needs exactly one signal with "
                    f"{INTEGRITY_ROLE_ATTRIBUTE} {role!r}, found: {names}"
                )
        counter, checksum = roles["counter"][0], roles["checksum"][0]
        specs[message.name] = IntegritySpec(
            message=message.name,
            algorithm=algorithm,
            counter_signal=counter.name,
            counter_modulus=1 << counter.length,
            checksum_signal=checksum.name,
            checksum_byte=_checksum_byte(message.name, checksum),
        )
    return specs


@dataclass(frozen=True, slots=True)
class IntegrityOverride:
    """A message's integrity settings given in the agent's configuration, not the DBC.

    ``algorithm = "none"`` switches checking off for a message the DBC protects.
    """

    message: str
    algorithm: str
    counter_signal: str | None = None
    checksum_signal: str | None = None


def resolve_integrity(
    database: cantools.database.can.Database, overrides: Sequence[IntegrityOverride]
) -> dict[str, IntegritySpec]:
    """The DBC's integrity settings with the configuration's overrides applied.

    Raises ValueError naming the message or signal an override gets wrong.
    """
    specs = integrity_specs(database)
    for override in overrides:
        try:
            message = database.get_message_by_name(override.message)
        except KeyError:
            raise ValueError(f"integrity override: no message {override.message!r} in the DBC") from None
        if override.algorithm == "none":
            specs.pop(message.name, None)
            continue
        _algorithm(override.algorithm)
        if override.counter_signal is None or override.checksum_signal is None:
            raise ValueError(f"integrity override of {message.name}: give counter and checksum signals")
        names = {signal.name: signal for signal in message.signals}
        for name in (override.counter_signal, override.checksum_signal):
            if name not in names:
                raise ValueError(f"integrity override of {message.name}: no signal {name!r}")
        counter = names[override.counter_signal]
        specs[message.name] = IntegritySpec(
            message=message.name,
            algorithm=override.algorithm,
            counter_signal=counter.name,
            counter_modulus=1 << counter.length,
            checksum_signal=override.checksum_signal,
            checksum_byte=_checksum_byte(message.name, names[override.checksum_signal]),
        )
    return specs
