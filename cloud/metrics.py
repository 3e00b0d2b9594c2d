"""Prometheus metrics and health probes of an ingest worker, served over HTTP.

``GET /metrics`` (Prometheus text format), ``GET /ready`` (200 when the worker
takes traffic, 503 with the reason otherwise) and ``GET /live`` (200 while
the process serves). Counters are read from the service's own
:class:`~cloud.ingest.IngestStats` at scrape time, so there is one source of
truth; the latency histograms are observed as writes complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cloud.ingest import IngestService

LOGGER = logging.getLogger(__name__)

PREFIX = "roadwave_ingest"
#: Counters of IngestStats exported, with their help text.
COUNTERS = {
    "messages_received": "MQTT messages received (of this worker's partition)",
    "messages_skipped": "MQTT messages of other partitions, acknowledged unread",
    "messages_rejected": "messages that broke the contract or were refused by InfluxDB (dead letters)",
    "messages_written": "messages whose points were written to InfluxDB",
    "messages_buffered": "messages kept in the on-disk buffer while InfluxDB was unreachable",
    "messages_acked": "messages acknowledged to the broker after they were durable",
    "points_written": "points written to InfluxDB",
    "samples_written": "samples (field values) written to InfluxDB",
    "writes": "successful InfluxDB write requests",
    "write_retries": "InfluxDB write attempts that failed and will be retried",
}
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class _ServiceCollector(Collector):
    def __init__(self, service: IngestService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        service = self._service
        for name, text in COUNTERS.items():
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=getattr(service.stats, name))
        buffer = service.buffer
        depth = GaugeMetricFamily(f"{PREFIX}_buffer_messages", "messages waiting in the on-disk buffer")
        depth.add_metric([], len(buffer) if buffer is not None else 0)
        yield depth
        size = GaugeMetricFamily(f"{PREFIX}_buffer_bytes", "payload bytes in the on-disk buffer")
        size.add_metric([], buffer.size_bytes if buffer is not None else 0)
        yield size
        queued = GaugeMetricFamily(f"{PREFIX}_queue_messages", "validated messages waiting for the writer")
        queued.add_metric([], service.queue_depth)
        yield queued
        seen = GaugeMetricFamily(
            f"{PREFIX}_vehicle_last_seen_seconds",
            "Unix time of each vehicle's last valid message",
            labels=["fleet", "vin"],
        )
        for (fleet, vin), when in list(service.last_seen.items()):
            seen.add_metric([fleet, vin], when)
        yield seen


class IngestMetrics:
    """The metrics registry of one ingest worker and, when a port is configured, its HTTP server."""

    def __init__(self, service: IngestService) -> None:
        self._service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServiceCollector(service))
        self.write_seconds = Histogram(
            f"{PREFIX}_write_seconds", "duration of InfluxDB write requests", registry=self.registry
        )
        self.durable_lag_seconds = Histogram(
            f"{PREFIX}_frame_to_durable_seconds",
            "from the oldest frame timestamp of a message to its points being written (queryable)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._server: ThreadingHTTPServer | None = None
        self.port: int | None = None

    def observe_write(self, seconds: float, oldest_frames_ns: Sequence[int]) -> None:
        """Record one successful write and how old each message's oldest frame was then."""
        self.write_seconds.observe(seconds)
        now = time.time_ns()
        for oldest in oldest_frames_ns:
            self.durable_lag_seconds.observe(max(0, now - oldest) / 1e9)

    def start(self) -> None:
        """Serve /metrics, /ready and /live if ``metrics_port`` is set (0 picks a free port)."""
        settings = self._service.config.ingest
        if settings.metrics_port is None:
            return
        self._server = ThreadingHTTPServer((settings.metrics_host, settings.metrics_port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        LOGGER.info("metrics on http://%s:%d/metrics", settings.metrics_host, self.port)

    def stop(self) -> None:
        """Stop the HTTP server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                if self.path == "/metrics":
                    self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/ready":
                    ready, why = metrics._service.readiness()
                    self._reply(200 if ready else 503, why.encode() + b"\n")
                elif self.path == "/live":
                    self._reply(200, b"ok\n")
                else:
                    self._reply(404, b"not found: try /metrics, /ready or /live\n")

            def _reply(
                self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the http.server API)
                LOGGER.debug("metrics %s: " + format, self.client_address[0], *args)

        return Handler
