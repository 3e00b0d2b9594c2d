"""A durable first-in first-out queue of messages on disk, for store-and-forward.

The edge uplink keeps every telemetry batch here until the broker acknowledged
it; the ingest keeps writes here while InfluxDB is unreachable. SQLite in WAL
mode with ``synchronous=FULL``: when :meth:`DiskQueue.put` returns, the message
survives a killed process and a power cut (the write-ahead log is synced and
checksummed, so a torn last write is discarded, never half-applied).

Bounds: ``max_bytes`` of payload and ``max_age_s``. What happens when a new
message does not fit is the owner's choice: ``drop_oldest`` (the edge: the
newest data matters most, and every dropped message is counted) or ``refuse``
(the ingest: :class:`SpoolFull` is raised and the caller keeps the message
unacknowledged, so the broker holds it).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

LOGGER = logging.getLogger(__name__)

WhenFull = Literal["drop_oldest", "refuse"]
WHEN_FULL: Final = ("drop_oldest", "refuse")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    source TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"""


class SpoolError(RuntimeError):
    """The spool file cannot be opened or is damaged."""


class SpoolFull(SpoolError):
    """A ``refuse`` spool has no room for the message."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One stored message; ``id`` increases with every message ever put."""

    id: int
    topic: str
    payload: bytes
    created_ns: int


@dataclass
class SpoolStats:
    """What went in and out of a spool during this process's life."""

    put: int = 0
    removed: int = 0
    dropped_full: int = 0
    dropped_expired: int = 0
    dropped_bytes: int = 0


class DiskQueue:
    """A bounded, durable FIFO of (topic, payload) messages in one SQLite file. Thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float | None = None,
        when_full: WhenFull = "drop_oldest",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, not {max_bytes}")
        if when_full not in WHEN_FULL:
            raise ValueError(f"spool when_full must be one of {', '.join(WHEN_FULL)}, not {when_full!r}")
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.when_full = when_full
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            verdict = self._db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise SpoolError(
                f"spool {path} cannot be opened ({exc}); move the file aside to start an empty spool"
            ) from exc
        if verdict != "ok":
            self._db.close()
            raise SpoolError(f"spool {path} is damaged ({verdict}); move the file aside to start anew")
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
        ).fetchone()

    def __len__(self) -> int:
        return int(self._count)

    @property
    def size_bytes(self) -> int:
        """Payload bytes stored."""
        return int(self._bytes)

    def put(
        self,
        topic: str,
        payload: bytes | Callable[[int], bytes],
        progress: Mapping[str, int] | None = None,
    ) -> int:
        """Store a message durably and return its id.

        ``payload`` may be a function of the id (so a sequence number inside the
        message equals its place in the spool). ``progress`` positions (see
        :meth:`progress`) are saved in the same transaction.

        Raises:
            SpoolFull: a ``refuse`` spool has no room for it.
            ValueError: the payload alone is larger than ``max_bytes``.
        """
        return self._put([(topic, payload)], progress or {})[0]

    def put_many(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Store several messages durably in one transaction (all or none); return their ids."""
        return self._put(messages, {}) if messages else []

    def _put(
        self, messages: Sequence[tuple[str, bytes | Callable[[int], bytes]]], progress: Mapping[str, int]
    ) -> list[int]:
        with self._lock:
            stats_before = dataclasses.replace(self.stats)
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                last = cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                first_id = (last[0] if last else 0) + 1
                rows = []
                for message_id, (topic, payload) in enumerate(messages, first_id):
                    data = payload(message_id) if callable(payload) else payload
                    rows.append((message_id, topic, data, time.time_ns()))
                size = sum(len(row[2]) for row in rows)
                if size > self.max_bytes:
                    raise ValueError(f"{size} bytes of messages cannot fit a spool of {self.max_bytes} bytes")
                self._expire_locked(cursor)
                self._make_room_locked(cursor, size)
                cursor.executemany(
                    "INSERT INTO messages (id, topic, payload, created_ns) VALUES (?, ?, ?, ?)", rows
                )
                cursor.executemany(
                    "INSERT INTO progress (source, position) VALUES (?, ?) "
                    "ON CONFLICT (source) DO UPDATE SET position = excluded.position",
                    progress.items(),
                )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")  # expiries and drops of this attempt are undone too
                self._reload_totals_locked()
                self.stats = stats_before
                raise
            self._count += len(rows)
            self._bytes += size
            self.stats.put += len(rows)
            return [row[0] for row in rows]

    def _make_room_locked(self, cursor: sqlite3.Cursor, size: int) -> None:
        if self._bytes + size <= self.max_bytes:
            return
        if self.when_full == "refuse":
            raise SpoolFull(
                f"spool {self.path} is full: {self._count} messages, {self._bytes} of {self.max_bytes} bytes"
            )
        dropped = dropped_bytes = 0
        for message_id, length in cursor.execute(
            "SELECT id, LENGTH(payload) FROM messages ORDER BY id"
        ).fetchall():
            if self._bytes - dropped_bytes + size <= self.max_bytes:
                break
            cursor.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            dropped += 1
            dropped_bytes += length
        self._count -= dropped
        self._bytes -= dropped_bytes
        self.stats.dropped_full += dropped
        self.stats.dropped_bytes += dropped_bytes
        LOGGER.warning(
            "spool %s full: dropped the %d oldest message(s), %d bytes", self.path, dropped, dropped_bytes
        )

    def _expire_locked(self, cursor: sqlite3.Cursor) -> None:
        if self.max_age_s is None:
            return
        cutoff = time.time_ns() - int(self.max_age_s * 1e9)
        count, size = cursor.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE created_ns < ?", (cutoff,)
        ).fetchone()
        if count:
            cursor.execute("DELETE FROM messages WHERE created_ns < ?", (cutoff,))
            self._count -= count
            self._bytes -= size
            self.stats.dropped_expired += count
            self.stats.dropped_bytes += size
            LOGGER.warning(
                "spool %s: dropped %d message(s) older than %g s", self.path, count, self.max_age_s
            )

    def _reload_totals_locked(self) -> None:
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
        ).fetchone()

    def head(self, limit: int, after_id: int = 0) -> list[SpooledMessage]:
        """The oldest ``limit`` messages with an id above ``after_id``, in order."""
        with self._lock:
            if self.max_age_s is not None and self._count:
                cursor = self._db.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                self._expire_locked(cursor)
                cursor.execute("COMMIT")
            rows = self._db.execute(
                "SELECT id, topic, payload, created_ns FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [SpooledMessage(*row) for row in rows]

    def remove(self, ids: Iterable[int]) -> None:
        """Delete messages (ids already gone are ignored)."""
        wanted = list(ids)
        if not wanted:
            return
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(wanted))
            count, size = cursor.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE id IN ({marks})",
                wanted,
            ).fetchone()
            cursor.execute(f"DELETE FROM messages WHERE id IN ({marks})", wanted)
            cursor.execute("COMMIT")
            self._count -= count
            self._bytes -= size
            self.stats.removed += count

    def progress(self, source: str) -> int:
        """The last position saved for ``source`` with :meth:`put` (0 if none)."""
        with self._lock:
            row = self._db.execute("SELECT position FROM progress WHERE source = ?", (source,)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Checkpoint the write-ahead log and close the file."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
