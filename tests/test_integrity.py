"""Checksum algorithms and the DBC integrity attributes (edge/integrity.py)."""

from __future__ import annotations

import random

import cantools.database
import pytest

from edge.integrity import (
    CHECKSUM_ALGORITHMS,
    crc8_sae_j1850,
    frame_checksum,
    integrity_specs,
    sum8,
    verify_checksum,
    xor8,
)
from roadwave.sim.fleet import DEFAULT_DBC


def _crc8_bitwise(data: bytes) -> int:
    """Straight from the definition: poly 0x1D, init 0xFF, MSB first, final XOR 0xFF."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ 0xFF


def test_crc8_check_value() -> None:
    assert crc8_sae_j1850(b"123456789") == 0x4B


@pytest.mark.parametrize(
    ("data", "crc"),
    [  # AUTOSAR SWS CRC Library, CRC8 SAE J1850 examples
        ("00000000", 0x59),
        ("F20183", 0x37),
        ("0FAA0055", 0x79),
        ("00FF5511", 0xB8),
        ("332255AABBCCDDEEFF", 0xCB),
        ("926B55", 0x8C),
        ("FFFFFFFF", 0x74),
    ],
)
def test_crc8_autosar_examples(data: str, crc: int) -> None:
    assert crc8_sae_j1850(bytes.fromhex(data)) == crc


def test_crc8_table_matches_bitwise_definition() -> None:
    rng = random.Random(7)
    for length in (0, 1, 7, 31, 63):
        data = bytes(rng.randrange(256) for _ in range(length))
        assert crc8_sae_j1850(data) == _crc8_bitwise(data)


def test_xor8_and_sum8() -> None:
    assert xor8(b"") == 0
    assert xor8(bytes([0x0F, 0xF0, 0x01])) == 0xFE
    assert sum8(bytes([0xFF, 0x02])) == 0x01
    assert sum8(bytes(range(256))) == (255 * 256 // 2) % 256


def test_registry_names_match_dbc_enum() -> None:
    assert set(CHECKSUM_ALGORITHMS) == {"crc8_sae_j1850", "xor8", "sum8"}


def test_frame_checksum_skips_checksum_byte() -> None:
    payload = bytes([0xAA, 1, 2, 3, 4, 5, 6, 7])
    expected = crc8_sae_j1850(bytes([1, 2, 3, 4, 5, 6, 7]))
    assert frame_checksum("crc8_sae_j1850", payload, 0) == expected
    # the checksum byte's own value does not matter
    assert frame_checksum("crc8_sae_j1850", bytes([0x00]) + payload[1:], 0) == expected
    assert frame_checksum("sum8", bytes([1, 2, 99, 3]), 2) == 6
    protected = bytes([expected]) + payload[1:]
    assert verify_checksum("crc8_sae_j1850", protected, 0)
    assert not verify_checksum("crc8_sae_j1850", protected[:-1] + b"\x08", 0)


def test_frame_checksum_errors() -> None:
    with pytest.raises(ValueError, match="unknown checksum algorithm 'crc16'"):
        frame_checksum("crc16", b"\x00\x01", 0)
    with pytest.raises(ValueError, match="checksum byte 8 is outside the 8-byte payload"):
        frame_checksum("xor8", bytes(8), 8)


def test_integrity_specs_of_reference_dbc() -> None:
    database = cantools.database.load_file(DEFAULT_DBC)
    assert isinstance(database, cantools.database.can.Database)
    specs = integrity_specs(database)
    assert set(specs) == {
        "ESP_Speed",
        "ESP_Dynamics",
        "STEER_Angle",
        "BRK_Status",
        "RDR_LeadObject",
    }
    for name, spec in specs.items():
        assert spec.algorithm == "crc8_sae_j1850"
        assert spec.counter_signal == f"{name}_Counter"
        assert spec.checksum_signal == f"{name}_Checksum"
        assert spec.counter_modulus == 16
        assert spec.checksum_byte == 0


_DBC_TEMPLATE = """VERSION ""
BS_:
BU_: ECU
BO_ 256 Msg: 8 ECU
 SG_ Msg_Checksum : {checksum_start}|8@1+ (1,0) [0|255] "" Vector__XXX
 SG_ Msg_Counter : 8|4@1+ (1,0) [0|15] "" Vector__XXX
 SG_ Value : 16|16@1+ (1,0) [0|65535] "" Vector__XXX
BA_DEF_ BO_ "RwChecksumAlgorithm" ENUM "none","crc8_sae_j1850","xor8","sum8";
BA_DEF_ SG_ "RwIntegrityRole" ENUM "none","counter","checksum";
BA_DEF_DEF_ "RwChecksumAlgorithm" "none";
BA_DEF_DEF_ "RwIntegrityRole" "none";
BA_ "RwChecksumAlgorithm" BO_ 256 {algorithm};
{roles}
"""


def _database(
    algorithm: int = 3, checksum_start: int = 56, counter: bool = True
) -> cantools.database.can.Database:
    roles = ['BA_ "RwIntegrityRole" SG_ 256 Msg_Checksum 2;']
    if counter:
        roles.append('BA_ "RwIntegrityRole" SG_ 256 Msg_Counter 1;')
    text = _DBC_TEMPLATE.format(algorithm=algorithm, checksum_start=checksum_start, roles="\n".join(roles))
    database = cantools.database.load_string(text, "dbc")
    assert isinstance(database, cantools.database.can.Database)
    return database


def test_integrity_specs_other_algorithm_and_byte() -> None:
    spec = integrity_specs(_database())["Msg"]
    assert (spec.algorithm, spec.checksum_byte) == ("sum8", 7)
    payload = bytes([1, 2, 3, 4, 5, 6, 7, 0])
    assert spec.checksum(payload) == 28


def test_integrity_specs_errors() -> None:
    with pytest.raises(ValueError, match=r"Msg uses sum8 and needs exactly one signal with .* 'counter'"):
        integrity_specs(_database(counter=False))
    with pytest.raises(ValueError, match=r"Msg\.Msg_Checksum must be 8 bits on a byte boundary"):
        integrity_specs(_database(checksum_start=52))
    assert integrity_specs(_database(algorithm=0)) == {}
