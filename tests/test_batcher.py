"""Record batching by size and by age."""

from __future__ import annotations

import threading
import time

from edge.batcher import Batcher
from edge.config import BatchSettings
from roadwave.contract import Record


def record(i: int) -> Record:
    return Record(1_763_700_000_000_000_000 + i, "can0", {"Vehicle.Speed": float(i)})


def test_full_batches_are_emitted_at_once_and_the_rest_on_stop() -> None:
    batches: list[list[Record]] = []
    batcher = Batcher(BatchSettings(max_records=10, max_age_s=3600), lambda b, _: batches.append(b))
    batcher.start()
    for i in range(25):
        batcher.add(record(i))
    assert [len(b) for b in batches] == [10, 10]
    batcher.stop()
    assert [len(b) for b in batches] == [10, 10, 5]
    assert [r.t_ns for b in batches for r in b] == [record(i).t_ns for i in range(25)]


def test_old_records_are_emitted_by_the_timer() -> None:
    emitted = threading.Event()
    batches: list[list[Record]] = []

    def emit(batch: list[Record], _progress: dict[str, int]) -> None:
        batches.append(batch)
        emitted.set()

    batcher = Batcher(BatchSettings(max_records=1000, max_age_s=0.05), emit)
    batcher.start()
    batcher.add(record(0))
    assert emitted.wait(10), "the age timer never emitted the batch"
    batcher.stop()
    assert batches == [[record(0)]]


def test_concurrent_adds_lose_nothing() -> None:
    batches: list[list[Record]] = []
    batcher = Batcher(BatchSettings(max_records=7, max_age_s=0.01), lambda b, _: batches.append(b))
    batcher.start()
    threads = [
        threading.Thread(target=lambda base=base: [batcher.add(record(base + i)) for i in range(500)])
        for base in range(0, 4000, 1000)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.02)
    for thread in threads:
        thread.join()
    batcher.stop()
    seen = sorted(r.t_ns for b in batches for r in b)
    assert seen == sorted(record(base + i).t_ns for base in range(0, 4000, 1000) for i in range(500))
    assert all(1 <= len(b) <= 7 for b in batches)


def test_each_batch_carries_the_last_position_of_each_source() -> None:
    emitted: list[tuple[int, dict[str, int]]] = []
    batcher = Batcher(BatchSettings(max_records=3, max_age_s=3600), lambda b, p: emitted.append((len(b), p)))
    for i in range(1, 6):
        batcher.add(record(i), ("log-a", i))
    batcher.add(record(9), ("log-b", 40))
    batcher.add(record(10))  # a live record has no position
    batcher.stop()
    assert emitted == [(3, {"log-a": 3}), (3, {"log-a": 5, "log-b": 40}), (1, {})]
