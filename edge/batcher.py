"""Collects records and hands them on in batches, by size or by age."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edge.config import BatchSettings
from roadwave.contract import Record


class Batcher:
    """Thread-safe record batching: ``emit`` gets a list when it is full or old enough.

    ``emit`` runs in the caller's thread when a batch fills up, and in the
    batcher's timer thread when a batch reaches ``max_age_s``; it is never run by
    two threads at once.
    """

    def __init__(self, settings: BatchSettings, emit: Callable[[list[Record]], None]) -> None:
        self._settings = settings
        self._emit = emit
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._oldest = 0.0
        self._stopping = threading.Event()
        self._timer = threading.Thread(target=self._flush_by_age, name="batcher", daemon=True)

    def start(self) -> None:
        """Start the timer that flushes batches by age."""
        self._timer.start()

    def add(self, record: Record) -> None:
        """Queue one record; emit the batch if it is full."""
        with self._lock:
            if not self._records:
                self._oldest = time.monotonic()
            self._records.append(record)
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
            self._emit(records)

    def _flush_by_age(self) -> None:
        max_age = self._settings.max_age_s
        while not self._stopping.wait(min(max_age / 4, 0.25)):
            with self._lock:
                if self._records and time.monotonic() - self._oldest >= max_age:
                    self._emit_locked()
