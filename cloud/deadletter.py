"""Where rejected input is kept for inspection: one JSON line per rejection."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DeadLetter:
    """A rejected MQTT message and why it was rejected."""

    received_ns: int
    topic: str
    reason: str
    payload: bytes


class DeadLetterStore:
    """Rejected messages in a folder: each writer appends to ``{writer}.jsonl`` (thread-safe).

    Several ingest workers share one folder; reading goes through every file.
    """

    def __init__(self, directory: Path, writer: str = "dead-letters") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"{writer}.jsonl"
        self._lock = threading.Lock()

    def put(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep one rejected message, synced to disk before returning."""
        line = json.dumps(
            {
                "received_ns": time.time_ns(),
                "topic": topic,
                "reason": reason,
                "payload_b64": base64.b64encode(payload).decode(),
            }
        )
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())

    def __iter__(self) -> Iterator[DeadLetter]:
        for path in sorted(self.directory.glob("*.jsonl")):
            yield from self._read(path)

    @staticmethod
    def _read(path: Path) -> Iterator[DeadLetter]:
        with path.open(encoding="utf-8") as file:
            for line in file:
                item = json.loads(line)
                yield DeadLetter(
                    item["received_ns"],
                    item["topic"],
                    item["reason"],
                    base64.b64decode(item["payload_b64"]),
                )
