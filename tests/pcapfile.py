"""Reading back the pcap files the V2X stack writes, per the libpcap file format."""

from __future__ import annotations

import struct
from pathlib import Path

#: Global header: magic, version 2.4, zone, sigfigs, snaplen, link type.
GLOBAL_HEADER = "<IHHiIII"
#: Record header: seconds, sub-second fraction, captured length, original length.
RECORD_HEADER = "<IIII"


def read_pcap(path: Path) -> tuple[tuple[int, ...], list[tuple[int, int, bytes]]]:
    """Global header fields and (seconds, fraction, frame) records; asserts the file is whole."""
    data = path.read_bytes()
    header = struct.unpack_from(GLOBAL_HEADER, data)
    records, offset = [], struct.calcsize(GLOBAL_HEADER)
    while offset < len(data):
        seconds, fraction, captured, original = struct.unpack_from(RECORD_HEADER, data, offset)
        assert captured == original
        start = offset + struct.calcsize(RECORD_HEADER)
        records.append((seconds, fraction, data[start : start + captured]))
        offset = start + captured
    assert offset == len(data)
    return header, records
