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

Encryption at rest (optional): with a 32-byte ``key`` every payload is stored as
AES-256-GCM ciphertext with a random 96-bit nonce of its own, and the row's id and
topic as associated data, so a payload moved to another row fails authentication.
Such a row is dropped when it is read, logged and counted (``dropped_tampered``).
A key check value in the ``meta`` table tells a wrong key when the spool is opened.
Ids, topics, times and progress positions stay in clear; stored sizes (and so
``max_bytes``) include 28 bytes of nonce and tag per message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""
#: Length of a spool key: AES-256.
KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_KEY_CHECK: Final = "key_check"
_KEY_CHECK_DATA: Final = b"roadwave spool key check v1"
_HEX_KEY: Final = re.compile(rb"[0-9A-Fa-f]{%d}" % (2 * KEY_BYTES))


#: Largest bound a spool may be given (1 TiB): a larger value in a configuration is a typo.
MAX_SIZE_MB = 2.0**20


class SpoolError(RuntimeError):
    """The spool file cannot be opened or is damaged."""


class SpoolFull(SpoolError):
    """A ``refuse`` spool has no room for the message."""


class SpoolKeyError(SpoolError):
    """The spool's key is missing, wrong or unusable; the message says which and what to do."""


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
    dropped_tampered: int = 0


def load_spool_key(path: Path) -> bytes:
    """The key in ``path``: 32 raw bytes, or 64 hex digits (surrounding whitespace allowed).

    Raises:
        SpoolKeyError: the file cannot be read, group or others may access it, or it
            holds no key.
    """
    try:
        with path.open("rb") as file:
            status = os.fstat(file.fileno())
            data = file.read(4 * KEY_BYTES)
    except OSError as exc:
        raise SpoolKeyError(f"spool key file {path} cannot be read: {exc.strerror}") from exc
    if status.st_mode & 0o077:
        raise SpoolKeyError(
            f"spool key file {path} is accessible to group or others (mode {status.st_mode & 0o777:03o}); "
            "make it private to the agent's user: chmod 600"
        )
    if len(data) == KEY_BYTES:
        return data
    if _HEX_KEY.fullmatch(data.strip()):
        return bytes.fromhex(data.strip().decode("ascii"))
    raise SpoolKeyError(
        f"spool key file {path} must hold {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex digits; "
        f"its {status.st_size} bytes are neither"
    )


class _PayloadCipher:
    """AES-256-GCM of payloads, each bound to its row (id and topic) as associated data."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SpoolKeyError(f"a spool key has {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @staticmethod
    def _row(message_id: int, topic: str) -> bytes:
        return message_id.to_bytes(8, "big") + topic.encode()

    def _seal(self, data: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, associated)

    def _open(self, sealed: bytes, associated: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            return None

    def seal(self, message_id: int, topic: str, payload: bytes) -> bytes:
        return self._seal(payload, self._row(message_id, topic))

    def open(self, message_id: int, topic: str, stored: bytes) -> bytes | None:
        """The payload, or None if the stored row fails authentication (or was retyped)."""
        if not (isinstance(topic, str) and isinstance(stored, bytes)):
            return None
        return self._open(stored, self._row(message_id, topic))

    def key_check(self) -> bytes:
        """A value only this key opens: stored once per spool to recognise its key."""
        return self._seal(b"", _KEY_CHECK_DATA)

    def matches(self, key_check: bytes) -> bool:
        return isinstance(key_check, bytes) and self._open(key_check, _KEY_CHECK_DATA) == b""


class DiskQueue:
    """A bounded, durable FIFO of (topic, payload) messages in one SQLite file. Thread-safe.

    With ``key`` (:data:`KEY_BYTES` bytes) payloads are encrypted at rest (see the module
    docstring); an encrypted spool cannot be opened without its key, nor a spool that
    ever held unencrypted messages with one (:class:`SpoolKeyError`).
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float | None = None,
        when_full: WhenFull = "drop_oldest",
        key: bytes | None = None,
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
        try:
            self._cipher = None if key is None else _PayloadCipher(key)
            self._check_key()
        except SpoolKeyError:
            self._db.close()
            raise
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages"
        ).fetchone()

    def _check_key(self) -> None:
        """Refuse a key the spool was not encrypted with; mark a new spool encrypted."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (_KEY_CHECK,)).fetchone()
        if self._cipher is None:
            if row is not None:
                raise SpoolKeyError(f"spool {self.path} is encrypted: it cannot be opened without its key")
            return
        if row is not None:
            if not self._cipher.matches(row[0]):
                raise SpoolKeyError(
                    f"spool {self.path} was encrypted with another key: configure that key, "
                    "or move the file aside to start an empty spool"
                )
            return
        if self._db.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'messages'").fetchone():
            raise SpoolKeyError(
                f"spool {self.path} was used without encryption and may hold plaintext: deliver its "
                "messages without a key first, then move the file aside to start an encrypted spool"
            )
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?)", (_KEY_CHECK, self._cipher.key_check())
        )

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
                    if self._cipher is not None:
                        data = self._cipher.seal(message_id, topic, data)
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
            if self._cipher is not None:
                rows = self._decrypted_locked(rows)
        return [SpooledMessage(*row) for row in rows]

    def _decrypted_locked(self, rows: list[tuple[int, str, bytes, int]]) -> list[tuple[int, str, bytes, int]]:
        """Rows with their payloads decrypted; rows that fail authentication are dropped and counted."""
        assert self._cipher is not None
        opened, failed = [], []
        for message_id, topic, stored, created_ns in rows:
            payload = self._cipher.open(message_id, topic, stored)
            if payload is None:
                failed.append((message_id, len(stored)))
            else:
                opened.append((message_id, topic, payload, created_ns))
        if failed:
            ids = [message_id for message_id, _ in failed]
            self._db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids)
            self._count -= len(failed)
            self._bytes -= sum(size for _, size in failed)
            self.stats.dropped_tampered += len(failed)
            LOGGER.error(
                "spool %s: message(s) %s fail authentication (tampered with or damaged); dropped",
                self.path,
                ", ".join(map(str, ids)),
            )
        return opened

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
