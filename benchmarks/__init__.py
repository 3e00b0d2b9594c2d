"""roadwave's benchmarks: ``make bench`` (``python -m benchmarks``), results in docs/benchmarks.md.

Every figure is reported next to, and as a ratio to, a baseline measured in the same
run on the same machine, so results can be compared between machines and over time:

* :mod:`benchmarks.edge_decode`: the edge pipeline (decode, VSS mapping, throttling,
  batching, payload encoding) against a bare cantools decode loop over the same frames.
* :mod:`benchmarks.ingest_write`: the cloud ingest (MQTT -> validation -> InfluxDB)
  against posting the same, pre-formatted line protocol straight to InfluxDB.

This package is imported by the benchmark child processes too, so it imports nothing.
"""
