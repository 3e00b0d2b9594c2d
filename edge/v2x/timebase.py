"""ITS time base (ETSI TS 102 894-2 TimestampIts, EN 302 637-2 generationDeltaTime).

``TimestampIts`` counts TAI milliseconds since 2004-01-01T00:00:00 UTC. TAI has no leap
seconds, so it runs ahead of UTC by the leap seconds inserted since 2004: five since
2017-01-01. A future leap second needs a new entry in ``_LEAP_SECONDS``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from edge.v2x.errors import V2xDecodeError, V2xEncodeError

TimestampIts = int
"""Milliseconds since 2004-01-01T00:00:00 UTC on the TAI time scale."""

TIMESTAMP_ITS_MAX = 2**42 - 1
"""Largest TimestampIts the ASN.1 type allows (about year 2143)."""


def _unix_ms(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp()) * 1000


ITS_EPOCH_UNIX_MS = _unix_ms(2004, 1, 1)

#: Unix time (ms) from which each leap second since 2004 counts (IERS Bulletin C).
_LEAP_SECONDS = (
    _unix_ms(2006, 1, 1),
    _unix_ms(2009, 1, 1),
    _unix_ms(2012, 7, 1),
    _unix_ms(2015, 7, 1),
    _unix_ms(2017, 1, 1),
)


def _leap_seconds_at(unix_ms: int) -> int:
    return sum(1 for start in _LEAP_SECONDS if unix_ms >= start)


def timestamp_its_from_unix_ms(unix_ms: int) -> TimestampIts:
    """TimestampIts of a Unix time in milliseconds (UTC, as ``time.time_ns() // 10**6``)."""
    if unix_ms < ITS_EPOCH_UNIX_MS:
        raise V2xEncodeError(f"Unix time {unix_ms} ms is before the ITS epoch 2004-01-01T00:00:00 UTC")
    timestamp = unix_ms - ITS_EPOCH_UNIX_MS + 1000 * _leap_seconds_at(unix_ms)
    if timestamp > TIMESTAMP_ITS_MAX:
        raise V2xEncodeError(f"Unix time {unix_ms} ms is beyond the largest TimestampIts")
    return timestamp


def unix_ms_from_timestamp_its(timestamp: TimestampIts) -> int:
    """Unix time in milliseconds of a TimestampIts (the inverse of ``timestamp_its_from_unix_ms``).

    A timestamp inside an inserted leap second maps to the first Unix millisecond after it.
    """
    if not 0 <= timestamp <= TIMESTAMP_ITS_MAX:
        raise V2xDecodeError(f"TimestampIts {timestamp} is outside 0 .. {TIMESTAMP_ITS_MAX}")
    for leaps in range(len(_LEAP_SECONDS), 0, -1):
        unix_ms = timestamp + ITS_EPOCH_UNIX_MS - 1000 * leaps
        counted = _leap_seconds_at(unix_ms)
        if counted == leaps:
            return unix_ms
        if counted > leaps:  # inside leap second number ``leaps + 1``
            return _LEAP_SECONDS[leaps]
    return timestamp + ITS_EPOCH_UNIX_MS


def timestamp_its_now() -> TimestampIts:
    """The current TimestampIts from the system clock."""
    return timestamp_its_from_unix_ms(time.time_ns() // 1_000_000)


def generation_delta_time(timestamp: TimestampIts) -> int:
    """CAM generationDeltaTime: TimestampIts modulo 65536."""
    return timestamp % 65536


def gn_timestamp(timestamp: TimestampIts) -> int:
    """GeoNetworking position-vector timestamp: TimestampIts modulo 2**32."""
    return timestamp % 2**32
