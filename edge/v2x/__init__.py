"""V2X for roadwave: ETSI ITS-G5 CAM and DENM, GeoNetworking and BTP, pcap recording.

Modules, lowest first: ``errors``, ``timebase`` (TimestampIts), ``units`` (range-checked
scaling), ``model`` (CAM/DENM dataclasses in physical units), ``codec`` (UPER), ``geonet``
(GeoNetworking + BTP-B headers) and ``pcap`` (Wireshark-readable recording). See docs/v2x.md.
"""

from edge.v2x.errors import V2xDecodeError, V2xEncodeError, V2xError

__all__ = ["V2xDecodeError", "V2xEncodeError", "V2xError"]
