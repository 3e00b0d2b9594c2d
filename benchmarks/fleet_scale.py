"""Fleet scale benchmark: the most vehicles one machine ingests without a growing backlog.

Each simulated vehicle publishes one telemetry batch per second: ``records``
records (10 Hz) whose signals are the realistic mix of the edge decoder's output
(:func:`benchmarks.ingest_write.decoded_records`, cycled per vehicle from its own
starting point), with frame timestamps spread over the second before the publish
time, deflated as the edge sends them, at QoS 1. Publisher child processes
(``python -m benchmarks.fleet_scale --publisher SPEC``) share the vehicles and pace
themselves to one message per vehicle per second: the rate ramps up linearly over
``ramp_s``, then holds for ``steady_s``. ``workers`` ``roadwave cloud ingest``
processes (:class:`~benchmarks.ingest_write.IngestWorkers`) take the load into a
fresh database per step.

Once a second, at a random point of the second, the benchmark takes the
**backlog**: messages published (the publishers report their counts ten times a
second) minus messages the workers acknowledged as durable
(``roadwave_ingest_messages_acked_total`` from their ``/metrics``). A step
**sustains** its vehicle count when the backlog's least-squares slope over the
steady window stays below 2 % of the vehicle count per second, the final backlog
drains within ``drain_s`` of the last publish, and the publishers reached 98 % of
their target rate. When they did not, the load
generator, not the ingest, was the limit: the steps stop there and the result is a
lower bound. Steps go up through ``steps`` and stop after the first that fails.

**Latency**: the publishers mark about ``latency_samples`` batches of the steady
window; a probe thread polls InfluxDB every 10 ms (one request for all pending
batches) until the newest point of each is queryable. Reported per step: newest
frame -> queryable (network, ingest, write) and oldest frame -> queryable (adds the
edge's batching window), plus the ingest's own ``frame_to_durable`` histogram
(oldest frame -> written) over the steady window, from the workers' metrics.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.ingest_write import (
    CHILD_TIMEOUT_S,
    DEFAULT_DBC,
    FLEET,
    IngestWorkers,
    JsonChild,
    Servers,
    cpu_by_party,
    cpu_used,
    decoded_records,
    parse_counts,
    running_servers,
    time_raw_writes,
)
from cloud.influx import InfluxClient, InfluxError, InfluxSettings
from cloud.metrics import PREFIX
from cloud.schema import TELEMETRY_MEASUREMENT, telemetry_lines
from roadwave.contract import Record, TelemetryBatch, Value, encode_telemetry, telemetry_topic
from roadwave.mqtt import MqttConnectError

#: "No backlog growth": the backlog's slope stays below this fraction of the vehicles, per second.
MAX_SLOPE_FRACTION = 0.02
#: The publishers count as on target when they reach this fraction of it.
TARGET_FRACTION = 0.98
BACKLOG_INTERVAL_S = 1.0
PROGRESS_INTERVAL_S = 0.1
#: The publishers publish what is due this often.
PUBLISH_TICK_S = 0.01
LATENCY_POLL_S = 0.01
#: How long the latency probe keeps looking for sampled batches after the drain.
LATENCY_GRACE_S = 5.0
BUS = "can0"
#: The raw write baseline: this many vehicles' batches over this many seconds.
RAW_VEHICLES = 2000
RAW_SECONDS = 5
DURABLE_BUCKET = f"{PREFIX}_frame_to_durable_seconds_bucket"

#: One decoded drive: the signals of each record, in order.
Drive = Sequence[dict[str, Value]]


@dataclass(frozen=True)
class FleetWorkload:
    """Vehicle counts to step through and how each step runs."""

    steps: tuple[int, ...] = (500, 1000, 2000, 5000, 10_000)
    workers: int = 2
    publishers: int = 2
    records: int = 10
    ramp_s: float = 5.0
    steady_s: float = 30.0
    drain_s: float = 5.0
    latency_samples: int = 200
    source_vins: int = 2
    seed: int = 1

    def __post_init__(self) -> None:
        if not self.steps or min(self.steps) < 1 or list(self.steps) != sorted(set(self.steps)):
            raise ValueError(f"fleet workload: steps must be increasing vehicle counts, not {self.steps}")
        for name in ("workers", "publishers", "records", "latency_samples", "source_vins"):
            if getattr(self, name) < 1:
                raise ValueError(f"fleet workload: {name} must be at least 1, not {getattr(self, name)}")
        if self.ramp_s < 0 or self.steady_s < 2 * BACKLOG_INTERVAL_S or self.drain_s <= 0:
            raise ValueError(
                f"fleet workload: need ramp_s >= 0, steady_s >= {2 * BACKLOG_INTERVAL_S:g} and drain_s > 0, "
                f"not {self.ramp_s:g}, {self.steady_s:g} and {self.drain_s:g}"
            )
        if self.publishers > self.steps[0]:
            raise ValueError(
                f"fleet workload: {self.publishers} publishers cannot share {self.steps[0]} vehicles"
            )


@dataclass
class StepResult:
    """One vehicle count: backlog, publish rate, latency and CPU over its steady window."""

    vehicles: int
    published: int
    acked: int
    achieved_rate: float
    backlog: list[tuple[float, int]]
    backlog_slope: float
    no_backlog_growth: bool
    drain_s: float | None
    batch_span_s: float
    latency_s: list[float]
    latency_missing: int
    durable_p50_s: float
    durable_p99_s: float
    cpu_s: dict[str, float]
    window_s: float

    @property
    def publisher_limited(self) -> bool:
        """The publishers did not reach their target rate."""
        return self.achieved_rate < TARGET_FRACTION * self.vehicles

    @property
    def sustained(self) -> bool:
        """No backlog growth at the full target rate."""
        return self.no_backlog_growth and not self.publisher_limited

    @property
    def verdict(self) -> str:
        """Sustained, or why not."""
        if self.sustained:
            return "sustained"
        if not self.no_backlog_growth:
            return "backlog grew" if self.drain_s is not None else "backlog did not drain in time"
        return "publishers short of their target rate"

    def latency(self, q: float, oldest: bool = False) -> float:
        """The ``q``-th percentile of newest (or oldest) frame -> queryable, seconds; NaN without samples."""
        if not self.latency_s:
            return math.nan
        return percentile(self.latency_s, q) + (self.batch_span_s if oldest else 0.0)


@dataclass
class FleetResult:
    """All steps run, in order; the last one failed unless every step was sustained."""

    workers: int
    publishers: int
    records: int
    ramp_s: float
    steady_s: float
    drain_s: float
    raw_pps: float
    steps: list[StepResult]
    influxdb_version: str
    mosquitto_version: str

    @property
    def sustained(self) -> StepResult | None:
        """The largest step sustained, if any."""
        return next((step for step in reversed(self.steps) if step.sustained), None)

    def points_per_s(self, step: StepResult) -> float:
        """The points per second a step's vehicles send at their target rate."""
        return step.vehicles * self.records

    @property
    def limited_by_publisher(self) -> bool:
        """The steps stopped because the load generator, not the ingest, fell short: a lower bound."""
        last = self.steps[-1]
        return last.publisher_limited and last.no_backlog_growth

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with the derived figures."""
        data = asdict(self)
        for step, view in zip(self.steps, data["steps"], strict=True):
            view.update(
                sustained=step.sustained,
                publisher_limited=step.publisher_limited,
                latency_newest_p50_s=step.latency(50),
                latency_newest_p99_s=step.latency(99),
            )
            for key, value in view.items():  # JSON has no NaN: no figure is null
                if isinstance(value, float) and math.isnan(value):
                    view[key] = None
        sustained = self.sustained
        data.update(
            sustained_vehicles=sustained.vehicles if sustained else 0,
            limited_by_publisher=self.limited_by_publisher,
        )
        return data


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def histogram_quantile(buckets: Mapping[float, float], q: float) -> float:
    """The ``q`` quantile (0-1) of a cumulative histogram ``{upper bound: count}``.

    Interpolated linearly within the bucket, as Prometheus does; in the ``+Inf``
    bucket the largest finite bound is returned. NaN for an empty histogram.
    """
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if not total:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def durable_buckets(metrics: Mapping[str, float]) -> dict[float, float]:
    """The workers' ``frame_to_durable_seconds`` histogram as ``{upper bound: cumulative count}``."""
    prefix = f'{DURABLE_BUCKET}{{le="'
    return {float(key[len(prefix) : -2]): value for key, value in metrics.items() if key.startswith(prefix)}


# --- publisher child ----------------------------------------------------------------------


@dataclass(frozen=True)
class PublisherSpec:
    """What one publisher child does: vehicles ``first`` to ``first + count - 1``, paced."""

    host: str
    port: int
    signals: str
    first: int
    count: int
    records: int
    ramp_s: float
    steady_s: float
    sample_every: int


class Schedule:
    """How many messages are due after ``t`` seconds: the rate ramps up linearly, then holds."""

    def __init__(self, rate: float, ramp_s: float, steady_s: float) -> None:
        self.rate, self.ramp_s = rate, ramp_s
        self._ramp_messages = rate * ramp_s / 2
        self.total = round(self._ramp_messages + rate * steady_s)

    def due(self, t: float) -> int:
        """Messages due by ``t`` seconds after the start."""
        if t < self.ramp_s:
            return min(self.total, math.floor(self.rate * t * t / (2 * self.ramp_s)))
        return min(self.total, math.floor(self._ramp_messages + self.rate * (t - self.ramp_s)))

    def time_of(self, count: int) -> float:
        """Seconds after the start when ``count`` messages are due."""
        if count <= self._ramp_messages and self.ramp_s > 0:
            return math.sqrt(2 * self.ramp_s * count / self.rate)
        return self.ramp_s + (count - self._ramp_messages) / self.rate


def vehicle_vin(index: int) -> str:
    """A valid VIN for simulated vehicle ``index``."""
    return f"RWBENCH{index:010d}"


class VehicleFeed:
    """Simulated vehicles ``first`` to ``first + count - 1`` and their next telemetry batches.

    Each vehicle cycles through the signals of one decoded drive (vehicle ``i`` takes
    drive ``i`` modulo their number) from its own starting point; a batch holds
    ``records`` records spaced evenly over the second up to its newest frame time.
    """

    def __init__(self, drives: Sequence[Drive], first: int, count: int, records: int) -> None:
        indexes = range(first, first + count)
        self.vins = [vehicle_vin(index) for index in indexes]
        self.topics = [telemetry_topic(FLEET, vin) for vin in self.vins]
        self._signals = [
            itertools.islice(itertools.cycle(drive), index * 977 % len(drive), None)
            for index, drive in ((index, drives[index % len(drives)]) for index in indexes)
        ]
        self._offsets_ns = [(records - 1 - i) * 10**9 // records for i in range(records)]

    def batch(self, vehicle: int, seq: int, newest_ns: int) -> TelemetryBatch:
        """Vehicle number ``vehicle`` (of this feed)'s next batch."""
        signals = self._signals[vehicle]
        records = [Record(newest_ns - offset, BUS, next(signals)) for offset in self._offsets_ns]
        return TelemetryBatch(self.vins[vehicle], FLEET, seq, records)


def read_drives(path: Path) -> list[Drive]:
    """What :func:`write_drives` wrote."""
    drives: list[Drive] = json.loads(path.read_text(encoding="utf-8"))
    return drives


def write_drives(records: Mapping[str, Sequence[Record]], path: Path) -> None:
    """The decoded drives' signal dicts, one list per source VIN, for the publisher children."""
    path.write_text(json.dumps([[r.signals for r in drive] for drive in records.values() if drive]), "utf-8")


def publisher_main(spec: PublisherSpec) -> None:
    """Say ``ready``; on a line on stdin, publish on schedule; report ``done``; exit at the end of stdin.

    Publishes every :data:`PUBLISH_TICK_S` what is due by then. The paho client runs
    without its network thread (this loop calls :meth:`paho.Client.loop`): handing each
    message to another thread cost the load generator more CPU per message.
    """
    feed = VehicleFeed(read_drives(Path(spec.signals)), spec.first, spec.count, spec.records)
    schedule = Schedule(spec.count, spec.ramp_s, spec.steady_s)
    client = _connect(spec.host, spec.port, f"roadwave-bench-fleet-{spec.first}-{uuid.uuid4().hex[:8]}")
    acked = [0]

    def count_ack(*_: Any) -> None:
        acked[0] += 1

    client.on_publish = count_ack
    print(json.dumps({"event": "ready"}), flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    end = started + spec.ramp_s + spec.steady_s
    published, report_at = 0, started
    # Publish what is due, tick by tick, until the schedule ends (behind or not).
    while published < schedule.total and (tick := time.monotonic()) < end:
        due = schedule.due(tick - started)
        while published < due and (now := time.monotonic()) < end:
            vehicle = published % spec.count
            batch = feed.batch(vehicle, published // spec.count, time.time_ns())
            client.publish(feed.topics[vehicle], encode_telemetry(batch, compress=True), qos=1)
            published += 1
            if now - started >= spec.ramp_s and published % spec.sample_every == 0:
                newest = batch.records[-1]
                sample = [batch.vin, newest.t_ns, next(iter(newest.signals))]
                print(json.dumps({"sample": sample}), flush=True)
            if now >= report_at:  # also while catching up, so the counts stay current
                print(json.dumps({"published": published}), flush=True)
                report_at = now + PROGRESS_INTERVAL_S
                client.loop(0)
        client.loop(0)  # acknowledgements in, queued messages out
        time.sleep(max(0.0, tick + PUBLISH_TICK_S - time.monotonic()))
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while acked[0] < published and time.monotonic() < deadline:
        client.loop(0.05)
    print(json.dumps({"event": "done", "published": published, "publish_s": elapsed}), flush=True)
    sys.stdin.readline()  # stay (and stay measurable) until told to go
    client.disconnect()


def _connect(host: str, port: int, client_id: str) -> paho.Client:
    """A connected paho client without a network thread: the caller runs its loop.

    Raises:
        MqttConnectError: no connection within :data:`CHILD_TIMEOUT_S`.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(1000)
    try:
        client.connect(host, port)
    except OSError as exc:
        raise MqttConnectError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise MqttConnectError(f"the MQTT broker at {host}:{port} did not accept {client_id!r}")
        client.loop(0.1)
    return client


# --- latency probe ----------------------------------------------------------------------


class LatencyProbe:
    """Polls InfluxDB until the newest point of each sampled batch is queryable; records when.

    A message's points travel in one write request, so its newest point stands for
    all of them. :meth:`add` is called by the publishers' reader threads; every
    :data:`LATENCY_POLL_S` the pending batches are looked up in one request.
    """

    def __init__(self, influx_url: str, database: str) -> None:
        self._client = InfluxClient(InfluxSettings(url=influx_url, database=database))
        self._pending: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: InfluxError | None = None
        #: Newest frame -> queryable, seconds, per sampled batch.
        self.latencies_s: list[float] = []
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)
        self._thread.start()

    def add(self, vin: str, newest_ns: int, field: str) -> None:
        """Follow one more batch: its VIN, newest frame time and a field of its newest record."""
        with self._lock:
            self._pending[vin, newest_ns] = field

    def _run(self) -> None:
        while not self._stop.wait(LATENCY_POLL_S):
            with self._lock:
                pending = dict(self._pending)
            if not pending:
                continue
            statements = [
                f'SELECT "{field}", "vin" FROM "{TELEMETRY_MEASUREMENT}" WHERE vin = \'{vin}\' AND time = {t}'
                for (vin, t), field in pending.items()
            ]
            try:
                rows = self._client.query(";".join(statements))
            except InfluxError as exc:
                if exc.retryable:
                    continue  # a busy database answers late, not never: ask again
                self._error = exc
                return
            seen_ns = time.time_ns()
            with self._lock:
                for row in rows:
                    if self._pending.pop((row["vin"], row["time"]), None) is not None:
                        self.latencies_s.append((seen_ns - row["time"]) / 1e9)

    def close(self, grace_s: float) -> int:
        """Wait up to ``grace_s`` for the pending batches, then stop; the number never seen.

        Raises:
            InfluxError: InfluxDB refused the probe's query.
        """
        deadline = time.monotonic() + grace_s
        while self._pending and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(LATENCY_POLL_S)
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(10)
            self._client.close()
        if self._error is not None:
            raise self._error
        return len(self._pending)


# --- one step ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tick:
    """What the benchmark saw at one backlog sample: seconds since the start, counts, CPU, histogram."""

    t: float
    published: int
    acked: int
    cpu: dict[str, float]
    durable: dict[float, float]

    @property
    def backlog(self) -> int:
        """Messages published and not yet acknowledged as durable."""
        return self.published - self.acked


def backlog_slope(backlog: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope (messages per second) of (seconds, backlog) samples.

    Raises:
        RuntimeError: fewer than two samples.
    """
    if len(backlog) < 2:
        raise RuntimeError(f"only {len(backlog)} backlog sample(s) in the steady window")
    times, values = zip(*backlog, strict=True)
    return statistics.linear_regression(times, values).slope


def run_step(
    vehicles: int,
    workload: FleetWorkload,
    servers: Servers,
    signals: Path,
    workdir: Path,
) -> StepResult:
    """Run one vehicle count through fresh workers into a fresh database."""
    database = f"fleet_{vehicles}"
    steady_messages = vehicles * workload.steady_s
    sample_every = max(1, round(steady_messages / workload.latency_samples))
    shares = [vehicles * p // workload.publishers for p in range(workload.publishers + 1)]
    counts = [0] * workload.publishers
    with IngestWorkers(
        workload.workers,
        mqtt_host=servers.mqtt_host,
        mqtt_port=servers.mqtt_port,
        influx_url=servers.influx_url,
        database=database,
        workdir=workdir,
    ) as ingest:
        probe = LatencyProbe(servers.influx_url, database)

        def listener(index: int) -> Callable[[dict[str, Any]], None]:
            def on_line(line: dict[str, Any]) -> None:
                if "published" in line:
                    counts[index] = line["published"]
                if "sample" in line:
                    probe.add(*line["sample"])

            return on_line

        publishers: list[JsonChild] = []
        try:
            for index in range(workload.publishers):
                spec = PublisherSpec(
                    host=servers.mqtt_host,
                    port=servers.mqtt_port,
                    signals=str(signals),
                    first=shares[index],
                    count=shares[index + 1] - shares[index],
                    records=workload.records,
                    ramp_s=workload.ramp_s,
                    steady_s=workload.steady_s,
                    sample_every=sample_every,
                )
                spec_path = workdir / f"publisher-{vehicles}-{index}.json"
                spec_path.write_text(json.dumps(asdict(spec)), encoding="utf-8")
                argv = ["-m", "benchmarks.fleet_scale", "--publisher", str(spec_path)]
                publishers.append(
                    JsonChild(argv, workdir / f"publisher-{vehicles}-{index}.log", listener(index))
                )
            for publisher in publishers:
                publisher.wait_for("ready")
            parties = {**servers.pids(), "ingest workers": ingest.pids}
            parties.update(publishers=[p.pid for p in publishers], benchmark=[os.getpid()])
            for publisher in publishers:
                publisher.tell("go")
            started = time.monotonic()
            end = workload.ramp_s + workload.steady_s
            ticks: list[_Tick] = []
            jitter = random.Random(vehicles)
            for interval in range(math.ceil(end / BACKLOG_INTERVAL_S)):
                # A random point in each interval, so the samples do not alias with the ingest's
                # 1 s flush cycle (which would turn its sawtooth into a spurious slope).
                due = started + (interval + jitter.random()) * BACKLOG_INTERVAL_S
                time.sleep(max(0.0, due - time.monotonic()))
                published = sum(counts)
                metrics = ingest.metrics()
                if metrics[f"{PREFIX}_messages_rejected_total"]:
                    raise RuntimeError(f"the ingest rejected messages; see the dead letters in {workdir}")
                acked = round(metrics[f"{PREFIX}_messages_acked_total"])
                t = time.monotonic() - started
                ticks.append(_Tick(t, published, acked, cpu_by_party(parties), durable_buckets(metrics)))
            total = sum(p.wait_for("done")["published"] for p in publishers)
            drain_s = wait_drained(ingest, total, workload.drain_s)
            acked = ingest.counter("messages_acked")
            missing = probe.close(LATENCY_GRACE_S if drain_s is not None else 0.0)
        finally:
            for publisher in publishers:
                publisher.close()
            probe.close(0.0)
        if drain_s is None:
            ingest.abort()  # a growing backlog would take long to write at SIGTERM; its counts are known
    window = [tick for tick in ticks if tick.t >= workload.ramp_s]
    first, last = window[0], window[-1]
    durable = {bound: count - first.durable.get(bound, 0.0) for bound, count in last.durable.items()}
    slope = backlog_slope([(tick.t, tick.backlog) for tick in window])
    return StepResult(
        vehicles=vehicles,
        published=total,
        acked=acked,
        achieved_rate=(last.published - first.published) / (last.t - first.t),
        backlog=[(round(tick.t, 3), tick.backlog) for tick in ticks],
        backlog_slope=slope,
        no_backlog_growth=slope < MAX_SLOPE_FRACTION * vehicles and drain_s is not None,
        drain_s=drain_s,
        batch_span_s=(workload.records - 1) / workload.records,
        latency_s=probe.latencies_s,
        latency_missing=missing,
        durable_p50_s=histogram_quantile(durable, 0.5) if durable else math.nan,
        durable_p99_s=histogram_quantile(durable, 0.99) if durable else math.nan,
        cpu_s=cpu_used(first.cpu, last.cpu),
        window_s=last.t - first.t,
    )


def wait_drained(workers: IngestWorkers, total: int, limit_s: float) -> float | None:
    """Seconds until the workers acknowledged ``total`` messages, or None if not within ``limit_s``."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) <= limit_s:
        if workers.counter("messages_acked") >= total:
            return elapsed
        time.sleep(0.1)
    return None


def time_raw_ceiling(servers: Servers, drives: Sequence[Drive], records: int) -> float:
    """The raw write ceiling in points/s for this workload's kind of points.

    :data:`RAW_VEHICLES` vehicles' batches of :data:`RAW_SECONDS` seconds, as line
    protocol formatted beforehand, posted as :func:`time_raw_writes` does, into a
    fresh database.
    """
    feed = VehicleFeed(drives, 0, RAW_VEHICLES, records)
    now = time.time_ns()
    lines = [
        line
        for second in range(RAW_SECONDS)
        for vehicle in range(RAW_VEHICLES)
        for line in telemetry_lines(feed.batch(vehicle, second, now - (RAW_SECONDS - second) * 10**9))
    ]
    return len(lines) / time_raw_writes(servers.influx_url, "fleet_raw", lines)


def run(
    workload: FleetWorkload = FleetWorkload(),
    dbc: Path = DEFAULT_DBC,
    progress: Callable[[str], None] = lambda _: None,
) -> FleetResult:
    """Start the servers and step through the vehicle counts until one is not sustained."""
    progress(f"fleet: decoding {workload.source_vins} simulated drive(s) for the signal mix")
    records, _ = decoded_records(workload.source_vins, workload.seed, dbc)
    steps: list[StepResult] = []
    with tempfile.TemporaryDirectory(prefix="roadwave-bench-fleet-") as tmp:
        workdir = Path(tmp)
        signals = workdir / "signals.json"
        write_drives(records, signals)
        progress("fleet: starting Mosquitto and InfluxDB")
        with running_servers(workdir) as servers:
            progress(f"fleet: baseline, raw writes of {RAW_VEHICLES:,} vehicles x {RAW_SECONDS} s")
            raw_pps = time_raw_ceiling(servers, read_drives(signals), workload.records)
            for vehicles in workload.steps:
                progress(
                    f"fleet: {vehicles:,} vehicles, {workload.ramp_s:g} s ramp + {workload.steady_s:g} s "
                    f"steady, {workload.workers} ingest worker(s)"
                )
                step = run_step(vehicles, workload, servers, signals, workdir)
                steps.append(step)
                progress(f"fleet: {vehicles:,} vehicles: {step_verdict(step)}")
                if not step.sustained:
                    break
    return FleetResult(
        workers=workload.workers,
        publishers=workload.publishers,
        records=workload.records,
        ramp_s=workload.ramp_s,
        steady_s=workload.steady_s,
        drain_s=workload.drain_s,
        raw_pps=raw_pps,
        steps=steps,
        influxdb_version=servers.influxdb_version,
        mosquitto_version=servers.mosquitto_version,
    )


def step_verdict(step: StepResult) -> str:
    """One line on how a step went."""
    drain = f"{step.drain_s:.1f} s" if step.drain_s is not None else "not in time"
    return (
        f"{step.verdict}: {step.achieved_rate:,.0f} messages/s, backlog slope {step.backlog_slope:+,.1f}/s, "
        f"drain {drain}"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.fleet_scale``: a publisher child, or this benchmark alone."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--publisher", type=Path, metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=parse_counts, default=FleetWorkload.steps)
    parser.add_argument("--workers", type=int, default=FleetWorkload.workers)
    parser.add_argument("--publishers", type=int, default=FleetWorkload.publishers)
    parser.add_argument("--ramp", type=float, default=FleetWorkload.ramp_s)
    parser.add_argument("--steady", type=float, default=FleetWorkload.steady_s)
    args = parser.parse_args(argv)
    if args.publisher:
        publisher_main(PublisherSpec(**json.loads(args.publisher.read_text(encoding="utf-8"))))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workload = FleetWorkload(
        steps=args.steps,
        workers=args.workers,
        publishers=args.publishers,
        ramp_s=args.ramp,
        steady_s=args.steady,
    )
    result = run(workload, progress=lambda text: print(text, file=sys.stderr))
    print(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
