"""Record GeoNetworking packets as a pcap file that Wireshark dissects.

Classic pcap with nanosecond timestamps (magic 0xa1b23c4d), link type Ethernet: each
packet becomes an Ethernet II frame to the broadcast address with EtherType 0x8947
(GeoNetworking), from the MAC address ``geonet.mac_from_station_id`` gives the sender.
"""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from edge.v2x.errors import V2xEncodeError
from edge.v2x.geonet import mac_from_station_id

ETHERTYPE_GEONETWORKING = 0x8947
LINKTYPE_ETHERNET = 1
PCAP_MAGIC_NANOSECONDS = 0xA1B23C4D
SNAPLEN = 65535
_BROADCAST_MAC = b"\xff" * 6


class PcapWriter:
    """Writes GN packets to ``path`` (truncating it); safe to share between threads.

    ``station_id`` gives the source MAC address unless ``write`` names another sender.
    Every record is flushed, so the file can be opened while it grows.
    """

    def __init__(self, path: str | Path, station_id: int = 0) -> None:
        self._source_mac = mac_from_station_id(station_id)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(
            struct.pack("<IHHiIII", PCAP_MAGIC_NANOSECONDS, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
        )
        self._file.flush()

    def write(self, packet: bytes, t_ns: int, station_id: int | None = None) -> None:
        """Append ``packet`` received or sent at Unix time ``t_ns`` (nanoseconds)."""
        if isinstance(t_ns, bool) or not isinstance(t_ns, int) or not 0 <= t_ns < 2**32 * 10**9:
            raise V2xEncodeError(f"t_ns = {t_ns!r} is not a Unix time in nanoseconds that pcap can hold")
        source = self._source_mac if station_id is None else mac_from_station_id(station_id)
        frame = _BROADCAST_MAC + source + struct.pack(">H", ETHERTYPE_GEONETWORKING) + bytes(packet)
        if len(frame) > SNAPLEN:
            raise V2xEncodeError(f"packet of {len(packet)} bytes does not fit a {SNAPLEN}-byte pcap record")
        seconds, nanoseconds = divmod(t_ns, 10**9)
        record = struct.pack("<IIII", seconds, nanoseconds, len(frame), len(frame)) + frame
        with self._lock:
            if self._file is None:
                raise ValueError("PcapWriter is closed")
            self._file.write(record)
            self._file.flush()

    def close(self) -> None:
        """Close the file; closing twice is harmless."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
