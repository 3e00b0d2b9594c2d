"""Collects records and hands them on in batches, by size or by age."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edge.config import BatchSettings
from roadwave.contract import Record

#: Receives a batch and the latest position of each source that contributed to it.
BatchEmit = Callable[[list[Record], dict[str, int]], None]


class Batcher:
    """Thread-safe record batching: ``emit`` gets a list when it is full or old enough.

    A record may come with a (source, position) pair, e.g. its place in a replayed
    log; the batch is emitted with the last position of each source it holds.

    ``emit`` runs in the caller's thread when a batch fills up, and in the
    batcher's timer thread when a batch reaches ``max_age_s``; it is never run by
    two threads at once.
    """

    def __init__(self, settings: BatchSettings, emit: BatchEmit) -> None:
        self._settings = settings
        self._emit = emit
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._progress: dict[str, int] = {}
        self._oldest = 0.0
        self._stopping = threading.Event()
        self._timer = threading.Thread(target=self._flush_by_age, name="batcher", daemon=True)

    def start(self) -> None:
        """Start the timer that flushes batches by age."""
        self._timer.start()

    def add(self, record: Record, position: tuple[str, int] | None = None) -> None:
        """Queue one record (at ``position`` of its source); emit the batch if it is full."""
        with self._lock:
            if not self._records:
                self._oldest = time.monotonic()
            self._records.append(record)
            if position is not None:
                self._progress[position[0]] = position[1]
            if len(self._records) >= self._settings.max_records:
                self._emit_locked()

    def flush(self) -> None:
        """Emit whatever is waiting."""
        with self._lock:
            self._emit_locked()

    def stop(self) -> None:
        """Stop the timer and emit the last batch."""
        self._stopping.set()
        if self._timer.is_alive():
            self._timer.join()
        self.flush()

    def _emit_locked(self) -> None:
        if self._records:
            records, self._records = self._records, []
            progress, self._progress = self._progress, {}
            self._emit(records, progress)

    def _flush_by_age(self) -> None:
        max_age = self._settings.max_age_s
        while not self._stopping.wait(min(max_age / 4, 0.25)):
            with self._lock:
                if self._records and time.monotonic() - self._oldest >= max_age:
                    self._emit_locked()
