"""python-can's ``slcan`` interface (CANable and friends) against our SLCAN adapter simulator.

The bus and the simulator talk over a real pseudo-terminal; waits are generous.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import can
import pytest
from waiting import WAIT_S, wait_for

from firmware_bridge.slcan_simulator import SlcanSimulator, format_frame, parse_frame

MESSAGES = [
    can.Message(arbitration_id=0x123, is_extended_id=False, data=b"\x01\x02\x03"),
    can.Message(arbitration_id=0x000, is_extended_id=False, data=b""),
    can.Message(arbitration_id=0x1ABCDEF0, is_extended_id=True, data=bytes(range(8))),
    can.Message(arbitration_id=0x7DF, is_extended_id=False, is_remote_frame=True, dlc=8),
    can.Message(arbitration_id=0x18DAF110, is_extended_id=True, is_remote_frame=True, dlc=3),
    can.Message(arbitration_id=0x321, is_extended_id=False, is_fd=True, data=bytes(range(12))),
    can.Message(arbitration_id=0x321, is_extended_id=False, is_fd=True, bitrate_switch=True, data=bytes(64)),
    can.Message(arbitration_id=0x1FFFFFFF, is_extended_id=True, is_fd=True, data=b"\xaa" * 20),
    can.Message(
        arbitration_id=0x1FFFFFFF, is_extended_id=True, is_fd=True, bitrate_switch=True, data=bytes(48)
    ),
]


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[SlcanSimulator]:
    with SlcanSimulator(tmp_path / "ttyACM0") as sim:
        yield sim


@pytest.fixture
def bus(adapter: SlcanSimulator) -> Iterator[can.BusABC]:
    # python-can sleeps 2 s after opening by default, for adapters that reset on open.
    with can.Bus(interface="slcan", channel=str(adapter.path), bitrate=500_000, sleep_after_open=0) as slcan:
        assert adapter.wait_open(WAIT_S), "the host never opened the SLCAN channel"
        yield slcan


@pytest.mark.parametrize(
    ("message", "line"),
    [
        (MESSAGES[0], "t1233010203"),
        (MESSAGES[2], "T1ABCDEF080001020304050607"),
        (MESSAGES[3], "r7DF8"),
        (MESSAGES[5], "d3219000102030405060708090A0B"),
        (MESSAGES[6], "b321F" + "00" * 64),
        (MESSAGES[7], "D1FFFFFFFB" + "AA" * 20),
    ],
)
def test_frame_lines(message: can.Message, line: str) -> None:
    assert format_frame(message) == line
    assert parse_frame(line).equals(message, timestamp_delta=None)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("x123", "not an SLCAN frame"),
        ("t12", "too short"),
        ("t1239" + "00" * 9, "DLC 9 > 8"),
        ("t1232AA", "DLC 2"),
    ],
)
def test_invalid_frame_lines(line: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_frame(line)


def test_python_can_opens_the_adapter(adapter: SlcanSimulator, bus: can.BusABC) -> None:
    assert adapter.bitrate == 500_000 and not adapter.listen_only
    assert adapter.commands[:4] == ["C", "S6", "", "O"]
    assert bus.get_version(WAIT_S) == (10, 13)  # type: ignore[attr-defined]
    assert bus.get_serial_number(WAIT_S) == "RW01"  # type: ignore[attr-defined]
    bus.set_bitrate(250_000, 2_000_000)  # type: ignore[attr-defined]
    wait_for(lambda: (adapter.bitrate, adapter.data_bitrate) == (250_000, 2_000_000), "S5 and Y2")
    bus.set_bitrate_reg("031C")  # type: ignore[attr-defined]
    wait_for(lambda: adapter.commands[-2:] == ["s031C", "O"] and adapter.bitrate is None, "sXXYY")
    assert adapter.is_open


def test_bus_receives_the_adapters_frames(adapter: SlcanSimulator, bus: can.BusABC) -> None:
    for message in MESSAGES:
        adapter.send_message(message)
        received = bus.recv(WAIT_S)
        assert received is not None, f"{message} did not arrive"
        assert received.equals(message, timestamp_delta=None, check_channel=False)


def test_sent_frames_reach_the_adapter(adapter: SlcanSimulator, bus: can.BusABC) -> None:
    for message in MESSAGES:
        bus.send(message)
        assert adapter.received.get(timeout=WAIT_S).equals(message, timestamp_delta=None)


def test_shutdown_closes_the_channel(adapter: SlcanSimulator) -> None:
    with can.Bus(interface="slcan", channel=str(adapter.path), sleep_after_open=0, listen_only=True):
        assert adapter.wait_open(WAIT_S)
        assert adapter.listen_only
    wait_for(lambda: not adapter.is_open, "the channel to close")
    with pytest.raises(RuntimeError, match="host has not sent O or L"):
        adapter.send_message(MESSAGES[0])
