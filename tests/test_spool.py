"""The on-disk spool: order, bounds, progress, and durability across kills and torn writes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roadwave.spool import DiskQueue, SpoolError, SpoolFull


def spool(path: Path, **options) -> DiskQueue:
    options.setdefault("max_bytes", 1_000_000)
    return DiskQueue(path, **options)


def test_messages_come_out_in_order_and_stay_until_removed(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite") as queue:
        ids = [queue.put("t", f"m{i}".encode()) for i in range(5)]
        assert ids == sorted(ids) and len(queue) == 5 and queue.size_bytes == 10
        assert [m.payload for m in queue.head(3)] == [b"m0", b"m1", b"m2"]
        assert [m.payload for m in queue.head(10, after_id=ids[2])] == [b"m3", b"m4"]
        queue.remove([ids[0], ids[2], 999])
        assert [m.id for m in queue.head(10)] == [ids[1], ids[3], ids[4]]
    with spool(tmp_path / "q.sqlite") as reopened:  # what was not removed is still there
        assert [m.payload for m in reopened.head(10)] == [b"m1", b"m3", b"m4"]
        assert reopened.size_bytes == 6


def test_ids_keep_increasing_after_the_spool_empties_and_a_payload_can_carry_its_id(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite") as queue:
        first = queue.put("t", b"x")
        queue.remove([first])
    with spool(tmp_path / "q.sqlite") as queue:
        second = queue.put("t", lambda seq: f"seq={seq}".encode())
        assert second == first + 1
        assert queue.head(1)[0].payload == f"seq={second}".encode()


def test_progress_is_saved_with_the_message(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite") as queue:
        assert queue.progress("replay:a") == 0
        queue.put("t", b"1", progress={"replay:a": 10})
        queue.put("t", b"2", progress={"replay:a": 25, "replay:b": 3})
    with spool(tmp_path / "q.sqlite") as queue:
        assert (queue.progress("replay:a"), queue.progress("replay:b")) == (25, 3)


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite", max_bytes=100) as queue:
        for i in range(12):
            queue.put("t", bytes([i]) * 10)
        assert len(queue) == 10 and queue.size_bytes == 100
        assert queue.head(1)[0].payload == bytes([2]) * 10
        assert (queue.stats.dropped_full, queue.stats.dropped_bytes) == (2, 20)


def test_a_refusing_spool_raises_and_keeps_what_it_has(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite", max_bytes=100, when_full="refuse") as queue:
        queue.put_many([("t", b"a" * 60), ("t", b"b" * 30)])
        with pytest.raises(SpoolFull, match="is full: 2 messages, 90 of 100 bytes"):
            queue.put("t", b"c" * 20)
        assert [m.payload[:1] for m in queue.head(10)] == [b"a", b"b"] and queue.size_bytes == 90
        assert (queue.stats.put, queue.stats.dropped_full, queue.stats.dropped_expired) == (2, 0, 0)
        with pytest.raises(ValueError, match="cannot fit a spool of 100 bytes"):
            queue.put("t", b"d" * 101)


def test_a_refused_put_leaves_expired_messages_and_their_count_as_they_were(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite", max_bytes=100) as queue:
        queue.put("t", b"o" * 10)
        time.sleep(0.2)
        queue.put("t", b"n" * 85)
    with spool(tmp_path / "q.sqlite", max_bytes=100, max_age_s=0.1, when_full="refuse") as queue:
        with pytest.raises(SpoolFull):  # the old message expires inside the put, which is refused
            queue.put("t", b"x" * 20)
        assert len(queue) == 2 and queue.size_bytes == 95 and queue.stats.dropped_expired == 0


def test_old_messages_expire_and_are_counted(tmp_path: Path) -> None:
    with spool(tmp_path / "q.sqlite", max_age_s=0.05) as queue:
        queue.put("t", b"old")
        time.sleep(0.1)
        queue.put("t", b"new")
        assert [m.payload for m in queue.head(10)] == [b"new"]
        assert queue.stats.dropped_expired == 1


def test_a_file_that_is_not_a_spool_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(SpoolError, match="move the file aside"):
        spool(path)


WRITER = """
import sys
from pathlib import Path
from roadwave.spool import DiskQueue
queue = DiskQueue(Path(sys.argv[1]), max_bytes=10**9)
i = 0
while True:
    message_id = queue.put("t", (b"%08d" % i) * 512)
    print(message_id, flush=True)  # printed only once the message is durable
    i += 1
"""


def test_every_message_reported_durable_survives_a_sigkill_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    durable = [int(writer.stdout.readline()) for _ in range(200)]
    os.kill(writer.pid, signal.SIGKILL)  # while it keeps writing
    writer.wait()
    durable += [int(line) for line in writer.stdout.read().split()]
    with spool(path, max_bytes=10**9) as queue:
        stored = {m.id: m.payload for m in queue.head(10**6)}
    assert set(durable) <= set(stored), "a message reported durable is gone"
    for message_id, payload in stored.items():  # and nothing is half-written
        assert payload == (b"%08d" % (message_id - 1)) * 512


def test_a_torn_last_write_is_discarded_and_the_rest_survives(tmp_path: Path) -> None:
    """Power lost mid-write leaves a partial frame at the end of the WAL: SQLite must ignore it."""
    path = tmp_path / "q.sqlite"
    queue = spool(path)
    for i in range(20):
        queue.put("t", b"%03d" % i * 100)
    wal = Path(f"{path}-wal")
    # Copy the files as a power cut would leave them (the process never closed them),
    # then tear the last WAL frame in half and add garbage after it.
    torn = tmp_path / "torn.sqlite"
    torn.write_bytes(path.read_bytes())
    frames = wal.read_bytes()
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    Path(f"{torn}-wal").write_bytes(frames[: len(frames) - (page + 24) // 2] + os.urandom(777))
    queue.close()
    with spool(torn) as recovered:
        payloads = [m.payload for m in recovered.head(100)]
    assert len(payloads) == 19  # the torn transaction (and only that one) is gone
    assert payloads == [b"%03d" % i * 100 for i in range(len(payloads))]
