"""The firmware bridge: protocol, stream decoder, clock mapping and the python-can bus.

Bus tests run the real :class:`RoadwaveBus` against :class:`FirmwareSimulator` over real
pseudo-terminals; nothing of ours is mocked. Waits are generous (up to 10 s for what
normally takes milliseconds) and no test asserts how fast anything is.
"""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import can
import pytest
from waiting import WAIT_S, wait_for

from firmware_bridge.bus import GnssSentence, RoadwaveBus
from firmware_bridge.clock import WRAP_US, McuClock
from firmware_bridge.protocol import (
    ALL_TYPES,
    DELIMITER,
    HOST_TO_MCU,
    MAX_ENCODED_BYTES,
    PROTOCOL_VERSION,
    Ack,
    AckStatus,
    BusStatus,
    CanFrame,
    Config,
    CrcError,
    ErrorState,
    Frame,
    FrameType,
    GnssFrame,
    Heartbeat,
    LastError,
    MalformedFrameError,
    StreamDecoder,
    TransmitRequest,
    cobs_decode,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
    frame_bytes,
)
from firmware_bridge.simulator import FirmwareSimulator, SimulatedClock
from roadwave.sim.fleet import FleetSimulator, SimConfig

# -- protocol ------------------------------------------------------------------------------

FRAMES: list[Frame] = [
    CanFrame(timestamp_us=0, arbitration_id=0x123, data=bytes(range(8))),
    CanFrame(timestamp_us=0xFFFF_FFFF, arbitration_id=0x1FFF_FFFF, is_extended_id=True, data=b"\x00" * 8),
    CanFrame(
        timestamp_us=123_456,
        channel=2,
        arbitration_id=0x18DA_F110,
        is_extended_id=True,
        is_fd=True,
        bitrate_switch=True,
        error_state_indicator=True,
        data=bytes(range(64)),
    ),
    CanFrame(timestamp_us=7, arbitration_id=0x7FF, is_fd=True, data=bytes(12)),
    CanFrame(timestamp_us=8, arbitration_id=0x7DF, is_remote_frame=True, remote_length=8),
    CanFrame(timestamp_us=9, arbitration_id=0, data=b""),
    TransmitRequest(
        seq=0xFFFF, arbitration_id=0x1ABC_DEF0, is_extended_id=True, is_fd=True, data=b"\xff" * 64
    ),
    TransmitRequest(seq=1, channel=1, arbitration_id=0x100, is_remote_frame=True, remote_length=3),
    Heartbeat(uptime_us=(1 << 64) - 1, firmware_version=(1, 2, 3), channels=3),
    BusStatus(5_000_000, 1, ErrorState.BUS_OFF, tec=255, rec=127, last_error=LastError.ACK, rx_overruns=42),
    GnssFrame(99, "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"),
    GnssFrame(0, "!" + "x" * 254),
    Ack(513, AckStatus.QUEUE_FULL),
    Config(seq=2, bitrate=500_000, data_bitrate=2_000_000, listen_only=True, channel=0xFF),
    Config(seq=3, bitrate=125_000, channel=0),
]


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1  # the catalogued check value of CRC-16/CCITT-FALSE


@pytest.mark.parametrize(
    ("data", "encoded"),
    [
        ("", "01"),
        ("00", "0101"),
        ("0000", "010101"),
        ("001100", "01021101"),
        ("11220033", "0311220233"),
        ("11223344", "0511223344"),
        ("11000000", "0211010101"),
        (bytes(range(1, 255)).hex(), "ff" + bytes(range(1, 255)).hex()),
        ("00" + bytes(range(1, 255)).hex(), "01ff" + bytes(range(1, 255)).hex()),
        (bytes(range(1, 256)).hex(), "ff" + bytes(range(1, 255)).hex() + "02ff"),
        (bytes(range(2, 256)).hex() + "00", "ff" + bytes(range(2, 256)).hex() + "0101"),
        (bytes(range(3, 256)).hex() + "0001", "fe" + bytes(range(3, 256)).hex() + "0201"),
    ],
)
def test_cobs_published_vectors(data: str, encoded: str) -> None:
    assert cobs_encode(bytes.fromhex(data)).hex() == encoded
    assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(data)


def _reference_cobs(data: bytes) -> bytes:
    """Byte-at-a-time COBS, the textbook way, as an independent oracle.

    Unlike :func:`cobs_encode` it closes a final full block with a ``01`` code; both decode alike.
    """
    out, code_at = bytearray(b"\x00"), 0
    for byte in data:
        if byte:
            out.append(byte)
        if not byte or len(out) - code_at == 255:
            out[code_at] = len(out) - code_at
            code_at = len(out)
            out.append(0)
    out[code_at] = len(out) - code_at
    return bytes(out)


def _edge_cases() -> Iterator[bytes]:
    for size in (0, 1, 253, 254, 255, 256, 507, 508, 509, 1000):
        yield b"\x00" * size
        yield b"\x07" * size
        yield b"\x00" + b"\x07" * size
        yield b"\x07" * size + b"\x00"
        yield b"\x00" + b"\x07" * size + b"\x00"
    rng = random.Random(3)
    for _ in range(300):  # zeros and 0xFF over-represented
        yield bytes(
            rng.choice((0, 1, 255)) if rng.random() < 0.3 else rng.randrange(256)
            for _ in range(rng.randrange(700))
        )


def test_cobs_round_trips_edge_cases_and_random_data() -> None:
    for data in _edge_cases():
        encoded = cobs_encode(data)
        assert b"\x00" not in encoded
        assert len(encoded) <= len(data) + 1 + len(data) // 254
        assert cobs_decode(encoded) == data
        assert cobs_decode(_reference_cobs(data)) == data


@pytest.mark.parametrize(
    ("encoded", "message"), [("0311", "announces 2 bytes"), ("021100", "zero byte"), ("05", "announces 4")]
)
def test_cobs_rejects_invalid_encodings(encoded: str, message: str) -> None:
    with pytest.raises(MalformedFrameError, match=message):
        cobs_decode(bytes.fromhex(encoded))


@pytest.mark.parametrize("frame", FRAMES, ids=lambda frame: type(frame).__name__)
def test_every_frame_type_round_trips(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert wire.endswith(DELIMITER) and DELIMITER not in wire[:-1]
    assert len(wire) - 1 <= MAX_ENCODED_BYTES
    assert decode_frame(cobs_decode(wire[:-1])) == frame
    assert StreamDecoder(accept=ALL_TYPES).feed(wire) == [frame]


def test_can_frames_convert_to_and_from_python_can() -> None:
    message = can.Message(
        arbitration_id=0x1ABCDE,
        is_extended_id=True,
        is_fd=True,
        bitrate_switch=True,
        data=bytes(range(48)),
        channel=1,
    )
    frame = CanFrame.from_message(message, timestamp_us=5)
    back = frame.to_message(timestamp=1.5)
    assert back.equals(message, timestamp_delta=None)
    assert back.timestamp == 1.5
    remote = TransmitRequest.from_message(
        can.Message(arbitration_id=0x7DF, is_extended_id=False, is_remote_frame=True, dlc=8, channel="can0"),
        seq=9,
    )
    assert (remote.channel, remote.length, remote.data) == (0, 8, b"")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arbitration_id": 0x800}, "arbitration_id must be in 0..2047"),
        ({"arbitration_id": 0x2000_0000, "is_extended_id": True}, "arbitration_id must be in 0..536870911"),
        ({"arbitration_id": 1, "data": bytes(9)}, "at most 8 data bytes"),
        ({"arbitration_id": 1, "data": bytes(10), "is_fd": True}, "CAN FD data length 10"),
        ({"arbitration_id": 1, "bitrate_switch": True}, "need is_fd"),
        ({"arbitration_id": 1, "is_remote_frame": True, "data": b"x"}, "remote frame carries no data"),
        ({"arbitration_id": 1, "remote_length": 2}, "only for remote frames"),
        ({"arbitration_id": 1, "channel": 255}, "channel must be in 0..254"),
    ],
)
def test_invalid_can_content_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CanFrame(timestamp_us=0, **fields)  # type: ignore[arg-type]


def _raw(body: bytes) -> bytes:
    """A decoded frame with a correct CRC around ``body``."""
    return body + crc16(body).to_bytes(2, "little")


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (b"\x01", MalformedFrameError, "shorter than"),
        (_raw(b"\x02\x02" + bytes(12)), MalformedFrameError, "protocol version 2"),
        (_raw(b"\x01\x7e"), MalformedFrameError, "type 0x7E"),
        (_raw(b"\x01\x02" + bytes(11)), MalformedFrameError, "must be 12 bytes"),
        (_raw(b"\x01\x01" + bytes(5) + b"\x20" + bytes(5)), MalformedFrameError, "reserved flag bits"),
        (_raw(b"\x01\x01" + bytes(10) + b"\x02" + b"x"), MalformedFrameError, "length field says 2"),
        (_raw(b"\x01\x01" + bytes(10) + b"\x09" + bytes(9)), MalformedFrameError, "at most 8 data bytes"),
        (_raw(b"\x01\x04" + bytes(4) + "é".encode()), MalformedFrameError, "not ASCII"),
        (_raw(b"\x01\x05\x01\x00\x09"), MalformedFrameError, "9 is not a valid AckStatus"),
        (frame_bytes(FRAMES[0])[:-1] + bytes((frame_bytes(FRAMES[0])[-1] ^ 0x40,)), CrcError, "CRC mismatch"),
    ],
)
def test_malformed_frames_are_refused_precisely(raw: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_frame(raw)


def test_decoder_reassembles_frames_split_anywhere() -> None:
    rng = random.Random(1)
    frames = [rng.choice(FRAMES) for _ in range(500)]
    stream = b"".join(map(encode_frame, frames))
    decoder, decoded, position = StreamDecoder(accept=ALL_TYPES), [], 0
    while position < len(stream):
        step = rng.randrange(1, 60)
        decoded += decoder.feed(stream[position : position + step])
        position += step
    assert decoded == frames
    assert decoder.stats.frames_ok == 500 and decoder.stats.bytes_discarded == 0


def test_garbage_without_delimiter_costs_no_frame() -> None:
    first, second = FRAMES[0], FRAMES[2]
    decoder = StreamDecoder()
    garbage = bytes(range(1, 38))
    assert decoder.feed(encode_frame(first) + garbage + encode_frame(second)) == [first, second]
    stats = decoder.stats
    assert (stats.frames_ok, stats.crc_errors, stats.malformed, stats.bytes_discarded, stats.resyncs) == (
        2,
        0,
        0,
        37,
        1,
    )


def test_resync_after_random_garbage_counts_exactly() -> None:
    rng = random.Random(7)
    frames = [f for f in FRAMES if f.frame_type < 0x80] * 4
    stream, expected_chunks, expected_bytes, expected_resyncs = b"", 0, 0, 0
    for index, frame in enumerate(frames):
        if index % 2:
            garbage = rng.randbytes(rng.randrange(1, 600))
            pieces = garbage.split(b"\x00")
            expected_chunks += sum(1 for piece in pieces[:-1] if piece)  # each ends at a delimiter
            expected_bytes += len(garbage) - garbage.count(0)
            expected_resyncs += bool(garbage.strip(b"\x00"))
            stream += garbage
        stream += encode_frame(frame)
    decoder = StreamDecoder()
    decoded = list(
        itertools.chain.from_iterable(decoder.feed(stream[i : i + 97]) for i in range(0, len(stream), 97))
    )
    assert decoded == frames
    stats = decoder.stats
    assert stats.frames_ok == len(frames)
    assert stats.crc_errors + stats.malformed == expected_chunks
    assert stats.bytes_discarded == expected_bytes
    assert stats.resyncs == expected_resyncs


def test_corrupt_crc_is_counted_and_the_next_frame_kept() -> None:
    first, broken, last = FRAMES[0], FRAMES[2], FRAMES[9]
    raw = bytearray(frame_bytes(broken))
    raw[-2] ^= 0x01
    corrupt = cobs_encode(bytes(raw))
    decoder = StreamDecoder()
    assert decoder.feed(encode_frame(first) + corrupt + DELIMITER + encode_frame(last)) == [first, last]
    stats = decoder.stats
    assert (stats.frames_ok, stats.crc_errors, stats.malformed, stats.bytes_discarded, stats.resyncs) == (
        2,
        1,
        0,
        len(corrupt),
        1,
    )


def test_overlong_garbage_is_trimmed_and_the_frame_behind_it_kept() -> None:
    decoder = StreamDecoder()
    garbage = b"\x55" * 3000
    assert decoder.feed(garbage[:1000]) == []
    assert decoder.feed(garbage[1000:] + encode_frame(FRAMES[1])) == [FRAMES[1]]
    assert decoder.stats.bytes_discarded == 3000
    assert decoder.stats.resyncs == 1


def test_after_reset_a_partial_first_chunk_is_not_an_error() -> None:
    decoder = StreamDecoder()
    decoder.feed(encode_frame(FRAMES[0])[:10])
    decoder.reset()
    wire = encode_frame(FRAMES[2])
    assert decoder.feed(wire[7:] + encode_frame(FRAMES[0])) == [FRAMES[0]]
    stats = decoder.stats
    assert (stats.crc_errors, stats.malformed, stats.bytes_discarded, stats.resyncs) == (
        0,
        0,
        len(wire) - 8,
        1,
    )


def test_frames_of_the_other_direction_are_malformed() -> None:
    to_host, to_mcu = StreamDecoder(), StreamDecoder(accept=HOST_TO_MCU)
    request = encode_frame(FRAMES[6])
    assert to_host.feed(request) == [] and to_host.stats.malformed == 1
    assert to_mcu.feed(request) == [FRAMES[6]]


def test_version_byte_comes_first() -> None:
    assert frame_bytes(FRAMES[0])[:2] == bytes((PROTOCOL_VERSION, FrameType.CAN))


# -- clock ---------------------------------------------------------------------------------

HOST_EPOCH = 1_750_000_000.0
MIN_DELAY = 0.0002


def _drive_clock(
    clock: McuClock,
    mcu: SimulatedClock,
    start: float,
    seconds: float,
    rng: random.Random,
    host_offset: float = 0.0,
    rate_hz: int = 10,
) -> list[float]:
    """Feed the clock frames at ``rate_hz`` and heartbeats at 1 Hz; return mapping errors (s).

    Delays: a floor, exponential jitter (mean 0.5 ms) and 1 % spikes of 5-50 ms, FIFO.
    ``host_offset`` is added to the host clock (a stepped host clock).
    """
    errors, arrival = [], 0.0
    for index in range(round(seconds * rate_hz)):
        event = start + index / rate_hz
        delay = (
            MIN_DELAY + rng.expovariate(2000.0) + (rng.uniform(0.005, 0.05) if rng.random() < 0.01 else 0.0)
        )
        arrival = max(event + delay, arrival)
        if index % rate_hz == 0:
            mapped = clock.map_uptime(mcu.uptime_us(event), arrival + host_offset)
        else:
            mapped = clock.map_stamp(mcu.stamp(event), arrival + host_offset)
        errors.append(mapped - (event + host_offset + MIN_DELAY))
    return errors


@pytest.mark.parametrize(("skew_ppm", "hours"), [(100.0, 2.0), (-100.0, 2.0), (200.0, 1.0)])
def test_skewed_mcu_clock_maps_within_a_millisecond_for_hours(skew_ppm: float, hours: float) -> None:
    # Boot 4000 s before the start, so the 32-bit stamps wrap (at 4295 s) during the run.
    mcu = SimulatedClock(boot_time=HOST_EPOCH - 4000.0, skew_ppm=skew_ppm)
    clock = McuClock()
    errors = _drive_clock(clock, mcu, HOST_EPOCH, hours * 3600, random.Random(5))
    # Until better samples arrive, the error is the first samples' own delay above the floor.
    assert max(map(abs, errors[10:])) < 0.001  # after the first second
    assert max(map(abs, errors[600:])) < 0.0001  # after the first minute
    estimate = clock.estimate
    assert estimate is not None and estimate.resets == 0
    assert estimate.skew_ppm == pytest.approx(skew_ppm, abs=1.0)
    assert estimate.boot_time == pytest.approx(mcu.boot_time + MIN_DELAY, abs=0.001)


def test_first_heartbeat_fixes_the_high_word_of_earlier_stamps() -> None:
    mcu = SimulatedClock(boot_time=HOST_EPOCH - 3 * WRAP_US / 1e6 - 100.0)  # uptime past three wraps
    clock = McuClock()
    clock.map_stamp(mcu.stamp(HOST_EPOCH), HOST_EPOCH + MIN_DELAY)  # high word still unknown
    errors = _drive_clock(clock, mcu, HOST_EPOCH + 0.05, 30, random.Random(2))
    assert max(map(abs, errors[10:])) < 0.001
    assert clock.estimate is not None and clock.estimate.resets == 1


def test_mcu_restart_starts_a_new_estimate() -> None:
    clock, rng = McuClock(), random.Random(3)
    _drive_clock(clock, SimulatedClock(HOST_EPOCH - 500.0, 50.0), HOST_EPOCH, 60, rng)
    rebooted = SimulatedClock(HOST_EPOCH + 60.0, -30.0)
    errors = _drive_clock(clock, rebooted, HOST_EPOCH + 60.5, 60, rng)
    assert max(map(abs, errors[10:])) < 0.001
    assert clock.estimate is not None and clock.estimate.resets == 1


@pytest.mark.parametrize("step_s", [-3.0, 3.0])
def test_host_clock_step_is_followed(step_s: float) -> None:
    clock, rng, mcu = McuClock(), random.Random(4), SimulatedClock(HOST_EPOCH - 100.0, 20.0)
    _drive_clock(clock, mcu, HOST_EPOCH, 300, rng)
    errors = _drive_clock(clock, mcu, HOST_EPOCH + 300, 120, rng, host_offset=step_s)
    settled = errors[200:] if step_s > 0 else errors[10:]  # a forward step shows after STEP_BINS bins
    assert max(map(abs, settled)) < 0.001
    assert clock.estimate is not None and clock.estimate.resets == 1


def test_mapping_is_monotonic_in_mcu_time() -> None:
    clock = McuClock()
    # Each sample arrives with less delay than the one before: the estimate keeps moving earlier.
    mapped = [clock.map_stamp(1000 * i, HOST_EPOCH + i * 0.001 + 0.01 / (i + 1)) for i in range(200)]
    assert mapped == sorted(mapped)


# -- the bus over real pseudo-terminals ----------------------------------------------------


@pytest.fixture
def mcu(tmp_path: Path) -> Iterator[FirmwareSimulator]:
    """A simulated MCU whose 32-bit stamps wrap a second after the test starts, crystal +80 ppm."""
    clock = SimulatedClock(boot_time=time.time() - WRAP_US / 1e6 + 1.0, skew_ppm=80.0)
    with FirmwareSimulator(
        tmp_path / "ttyRW0", clock=clock, firmware_version=(2, 1, 7), heartbeat_interval=0.1
    ) as sim:
        yield sim


@pytest.fixture
def open_bus() -> Iterator[Callable[..., RoadwaveBus]]:
    """``open_bus(path, **kwargs)``: a roadwave bus via ``can.Bus``, shut down after the test."""
    buses: list[can.BusABC] = []

    def open_bus(path: Path, **kwargs: Any) -> RoadwaveBus:
        bus = can.Bus(interface="roadwave", channel=str(path), **kwargs)
        buses.append(bus)
        assert isinstance(bus, RoadwaveBus)
        return bus

    yield open_bus
    for bus in buses:
        bus.shutdown()


def _recv(bus: can.BusABC) -> can.Message:
    message = bus.recv(WAIT_S)
    assert message is not None, "no frame within the timeout"
    return message


def test_entry_point_registers_the_interface() -> None:
    assert can.interfaces.BACKENDS["roadwave"] == ("firmware_bridge.bus", "RoadwaveBus")


def test_bus_receives_frames_with_host_times_mapped_from_the_mcu_clock(
    mcu: FirmwareSimulator, open_bus: Callable[..., RoadwaveBus]
) -> None:
    bus = open_bus(mcu.path, bitrate=500_000, data_bitrate=2_000_000)
    assert [(c.bitrate, c.data_bitrate, c.channel) for c in mcu.configs] == [(500_000, 2_000_000, 0xFF)]
    assert bus.protocol is can.CanProtocol.CAN_FD
    fleet = FleetSimulator(SimConfig(vehicles=1, duration_s=1.0, start_time=HOST_EPOCH))
    sent = [frame.message for frame in itertools.islice(fleet, 60)]
    sent += [
        can.Message(
            arbitration_id=0x1FFF_FFFF, is_extended_id=True, is_fd=True, bitrate_switch=True, data=bytes(64)
        ),
        can.Message(arbitration_id=0x7DF, is_extended_id=False, is_remote_frame=True, dlc=8),
    ]
    intended, received = [], []
    for message in sent:  # spans the MCU's 32-bit wrap
        intended.append(time.time())
        mcu.send_message(message, at=intended[-1])
        received.append(_recv(bus))
        time.sleep(0.03)
    for message, got in zip(sent, received, strict=True):
        assert got.equals(message, timestamp_delta=None, check_channel=False)
        assert got.channel == 0
    offsets = [got.timestamp - at for got, at in zip(received, intended, strict=True)]
    assert max(map(abs, offsets)) < 0.005, offsets
    stamps = [got.timestamp for got in received]
    assert stamps == sorted(stamps)
    assert bus.firmware_version == (2, 1, 7)
    counters = bus.counters
    assert counters.can_frames == len(sent) and counters.crc_errors == counters.malformed == 0


def test_bus_reconnects_when_the_device_returns(
    mcu: FirmwareSimulator, open_bus: Callable[..., RoadwaveBus]
) -> None:
    bus = open_bus(mcu.path, bitrate=250_000, reconnect_delay=0.02, reconnect_max_delay=0.2)
    mcu.send_message(can.Message(arbitration_id=0x10, data=b"before"))
    assert _recv(bus).data == b"before"
    mcu.disappear()
    wait_for(lambda: not bus.connected, "the bus to notice the lost device")
    with pytest.raises(can.CanOperationError, match="disconnected"):
        bus.send(can.Message(arbitration_id=0x11))
    time.sleep(0.3)  # several failed reopening attempts
    mcu.reappear()
    wait_for(lambda: bus.connected, "the bus to reopen the device")
    for index in range(20):
        at = time.time()
        mcu.send_message(can.Message(arbitration_id=0x20 + index, data=b"after"), at=at)
        got = _recv(bus)
        assert (got.arbitration_id, got.data) == (0x20 + index, b"after")
        assert abs(got.timestamp - at) < 0.005
    assert bus.counters.reconnects == 1
    assert [config.bitrate for config in mcu.configs] == [250_000, 250_000]  # configured again


def test_without_reconnect_a_lost_device_fails_recv(
    mcu: FirmwareSimulator, open_bus: Callable[..., RoadwaveBus]
) -> None:
    bus = open_bus(mcu.path, reconnect=False)
    mcu.disappear()
    with pytest.raises(can.CanOperationError, match="lost and reconnect is off"):
        bus.recv(WAIT_S)


def test_send_reaches_the_mcu_and_refusals_raise(
    mcu: FirmwareSimulator, open_bus: Callable[..., RoadwaveBus]
) -> None:
    bus = open_bus(mcu.path)
    messages = [
        can.Message(arbitration_id=0x123, is_extended_id=False, data=b"\x01\x02\x03"),
        can.Message(
            arbitration_id=0x1ABCDEF0, is_fd=True, bitrate_switch=True, data=bytes(range(64)), channel=1
        ),
        can.Message(arbitration_id=0x7DF, is_extended_id=False, is_remote_frame=True, dlc=2),
    ]
    for message in messages:
        bus.send(message)
        request = mcu.transmits.get(timeout=WAIT_S)
        assert request.to_message(0.0).equals(message, timestamp_delta=None, check_channel=False)
        assert request.channel == (message.channel or 0)
    mcu.ack_status = AckStatus.BUS_OFF
    with pytest.raises(can.CanOperationError, match="MCU refused frame 0x123: BUS_OFF"):
        bus.send(messages[0])
    mcu.ack_status = None
    with pytest.raises(can.CanTimeoutError, match="no answer from the MCU"):
        bus.send(messages[0], timeout=0.2)
    bus.send(messages[0], timeout=0)  # fire and forget
    wait_for(lambda: mcu.transmits.qsize() == 3, "the three unanswered requests")


def test_refused_configuration_fails_the_open(mcu: FirmwareSimulator) -> None:
    mcu.ack_status = AckStatus.UNSUPPORTED
    with pytest.raises(can.CanInitializationError, match="UNSUPPORTED"):
        can.Bus(interface="roadwave", channel=str(mcu.path), bitrate=1_000_000, data_bitrate=8_000_000)


def test_missing_device_fails_the_open(tmp_path: Path) -> None:
    with pytest.raises(can.CanInitializationError, match="cannot open"):
        can.Bus(interface="roadwave", channel=str(tmp_path / "ttyNothing"))


def test_gnss_bus_status_and_heartbeats_reach_the_host(
    mcu: FirmwareSimulator, open_bus: Callable[..., RoadwaveBus]
) -> None:
    bus = open_bus(mcu.path)
    sentence = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
    at = time.time()
    mcu.send_gnss(sentence, at=at)
    got = bus.recv_gnss(WAIT_S)
    assert got is not None and got.sentence == sentence
    assert abs(got.timestamp - at) < 0.005

    mcu.send_bus_status(ErrorState.PASSIVE, tec=130, rec=3, last_error=LastError.BIT0, channel=1)
    wait_for(lambda: bus.state is can.BusState.PASSIVE, "the passive state")
    mcu.send_bus_status(ErrorState.BUS_OFF, tec=255, last_error=LastError.ACK)
    wait_for(lambda: bus.state is can.BusState.ERROR, "bus-off")
    assert bus.bus_status[1].tec == 130
    assert bus.counters.bus_errors == 2
    wait_for(lambda: bus.counters.heartbeats >= 2, "heartbeats")
    assert bus.firmware_version == (2, 1, 7)
    assert bus.clock is not None


def test_gnss_callback(mcu: FirmwareSimulator, open_bus: Callable[..., RoadwaveBus]) -> None:
    sentences: list[GnssSentence] = []
    bus = open_bus(mcu.path, on_gnss=sentences.append)
    for index in range(3):
        mcu.send_gnss(f"$GPZDA,{index}")
    wait_for(lambda: len(sentences) == 3, "three sentences")
    assert [s.sentence for s in sentences] == ["$GPZDA,0", "$GPZDA,1", "$GPZDA,2"]
    with pytest.raises(RuntimeError, match="on_gnss callback"):
        bus.recv_gnss(0)


def test_bus_counts_garbage_and_corrupt_frames_exactly(
    tmp_path: Path, open_bus: Callable[..., RoadwaveBus]
) -> None:
    with FirmwareSimulator(tmp_path / "ttyRW1", heartbeat_interval=None) as sim:
        bus = open_bus(sim.path)
        first = can.Message(arbitration_id=0x100, is_extended_id=False, data=b"one")
        second = can.Message(arbitration_id=0x200, is_extended_id=False, data=b"two")
        sim.inject(bytes(range(1, 101)))  # 100 bytes of garbage, no delimiter
        sim.send_message(first)
        corrupt = sim.send_corrupt(CanFrame.from_message(second, timestamp_us=1))
        sim.inject(b"\x00\x00\x00")  # idle delimiters are not errors
        sim.send_message(second)
        assert _recv(bus).data == b"one"
        assert _recv(bus).data == b"two"
        counters = bus.counters
        assert (counters.frames_ok, counters.crc_errors, counters.malformed) == (2, 1, 0)
        assert (counters.bytes_discarded, counters.resyncs) == (100 + len(corrupt), 2)
        assert sim.stats.frames_ok == 0 and sim.stats.bytes_discarded == 0  # the host's bytes were clean


def test_documented_examples_are_valid_frames(repo_root: Path) -> None:
    """Every ``frame``/``wire`` hex example in docs/firmware-protocol.md decodes and matches."""
    examples: list[tuple[str, str]] = []
    for line in (repo_root / "docs" / "firmware-protocol.md").read_text().splitlines():
        match = re.fullmatch(r"(?:[A-Z]+ +)?(frame|wire) +([0-9a-f ]+)", line.strip())
        if match:
            examples.append((match[1], match[2]))
        elif examples and re.fullmatch(r" +[0-9a-f ]+", line):
            examples[-1] = (examples[-1][0], f"{examples[-1][1]} {line.strip()}")
    frames = [bytes.fromhex(text) for kind, text in examples if kind == "frame"]
    assert len(frames) == 9
    for raw in frames:
        assert frame_bytes(decode_frame(raw)) == raw
    encodings = 0
    for (kind, text), (next_kind, next_text) in itertools.pairwise(examples):
        if (kind, next_kind) == ("frame", "wire"):
            assert bytes.fromhex(next_text) == cobs_encode(bytes.fromhex(text)) + DELIMITER
            encodings += 1
    assert encodings == 8
