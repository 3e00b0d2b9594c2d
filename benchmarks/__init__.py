"""roadwave's benchmarks: ``make bench`` (``python -m benchmarks``), results in docs/benchmarks.md.

Every figure is reported next to, and as a ratio to, a baseline measured in the same
run on the same machine, so results can be compared between machines and over time:

* :mod:`benchmarks.edge_decode`: the edge pipeline (decode, VSS mapping, throttling,
  batching, payload encoding) against a bare cantools decode loop over the same frames.
* :mod:`benchmarks.ingest_write`: the cloud ingest as 1, 2 and 4 worker processes (MQTT ->
  validation -> InfluxDB) against posting the same, pre-formatted line protocol straight
  to InfluxDB.
* :mod:`benchmarks.fleet_scale`: the most simulated vehicles (one 10-record batch per
  second each) the ingest keeps up with, and frame-to-queryable latency.
* :mod:`benchmarks.encoding`: bytes per sample and encode/decode cost of the payload
  encodings against plain JSON, and the cost of a durable spool write.

This package is imported by the benchmark child processes too, so it imports nothing.
"""
