"""Log formats the agent replays, and the `roadwave decode` / `roadwave record` tools."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import can
import pytest

from edge.agent import open_log
from roadwave import REFERENCE_DBC
from roadwave.cli.record import record
from roadwave.sim.fleet import FleetSimulator, SimConfig

START = 1_763_700_000.0


@pytest.fixture(scope="module")
def frames() -> list[can.Message]:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=1.0, seed=5, start_time=START))
    return [frame.message for frame in sim]


@pytest.mark.parametrize("suffix", [".log", ".asc", ".blf"])
def test_every_log_format_replays_with_absolute_frame_times(tmp_path, frames, suffix: str) -> None:
    path = tmp_path / f"drive{suffix}"
    with can.Logger(path) as writer:
        for frame in frames:
            writer.on_message_received(frame)
    replayed = list(open_log(path))
    assert len(replayed) == len(frames)
    for original, copy in zip(frames, replayed, strict=True):
        assert (copy.arbitration_id, copy.is_extended_id, bytes(copy.data)) == (
            original.arbitration_id, original.is_extended_id, bytes(original.data),
        )  # fmt: skip
        assert copy.timestamp == pytest.approx(original.timestamp, abs=1e-5)


def write_candump(path: Path, frames: list[can.Message]) -> None:
    with can.Logger(path) as writer:
        for frame in frames:
            writer.on_message_received(frame)


def test_decode_prints_checked_frames_labels_problems_and_timeouts(tmp_path, frames) -> None:
    kept = [f for f in frames if not (f.arbitration_id == 0x0A0 and 0.5 <= f.timestamp - START < 0.6)]
    tampered = [f for f in kept]
    target = next(i for i, f in enumerate(tampered) if f.arbitration_id == 0x0C0)  # BRK_Status
    bad = bytearray(tampered[target].data)
    bad[0] ^= 0xFF
    tampered[target] = can.Message(
        arbitration_id=0x0C0, is_extended_id=False, data=bytes(bad), timestamp=tampered[target].timestamp
    )
    tampered.append(
        can.Message(arbitration_id=0x7AB, is_extended_id=False, data=b"\x01", timestamp=START + 1.0)
    )
    log = tmp_path / "drive.log"
    write_candump(log, tampered)
    result = subprocess.run(
        [sys.executable, "-m", "roadwave", "decode", "--dbc", str(REFERENCE_DBC), str(log)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames_out = [line for line in lines if "event" not in line]
    timeouts = [line for line in lines if line.get("event") == "timeout"]
    assert len(frames_out) == len(tampered) - 1  # all but the unknown id
    engine = next(line for line in frames_out if line["message"] == "ENG_Status")
    assert engine["labels"] == {"GearSelected": "D"} and engine["signals"]["GearSelected"] == 3
    assert [line["message"] for line in frames_out if "problem" in line] == ["BRK_Status"]
    assert [t["message"] for t in timeouts] == ["ESP_Speed"]
    assert timeouts[0]["t"] == pytest.approx(START + 0.49 + 0.03, abs=1e-6)
    counters = json.loads(result.stderr.strip().splitlines()[-1])["counters"]
    assert counters["frames_unknown"] == 1 and counters["frames_integrity_failed"] == 1
    assert counters["frames_received"] == len(tampered)


def test_decode_refuses_a_missing_log_clearly(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "roadwave", "decode", "--dbc", str(REFERENCE_DBC), str(tmp_path / "none.log")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "no such log file" in result.stderr


def test_record_writes_a_live_bus_to_a_candump_log(tmp_path, frames) -> None:
    output = tmp_path / "recorded.log"
    stop = threading.Event()
    with can.Bus(interface="virtual", channel="record-test", preserve_timestamps=True) as listen:
        result: list[int] = []
        worker = threading.Thread(
            target=lambda: result.append(record(listen, output, stop, max_frames=len(frames)))
        )
        worker.start()
        with can.Bus(interface="virtual", channel="record-test", preserve_timestamps=True) as send:
            for frame in frames:
                send.send(frame)
        worker.join(30)
    assert result == [len(frames)]
    replayed = list(open_log(output))
    assert [(f.arbitration_id, bytes(f.data), f.timestamp) for f in replayed] == [
        (f.arbitration_id, bytes(f.data), pytest.approx(f.timestamp, abs=1e-6)) for f in frames
    ]
