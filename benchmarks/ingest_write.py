"""Ingest scale-out benchmark: MQTT -> ingest workers -> InfluxDB against InfluxDB's raw write ceiling.

Real servers (:mod:`roadwave.services`) are started in a temporary folder: a
Mosquitto broker and an InfluxDB 1.x. The workload is ``batches`` telemetry batches
of ``records`` records each, from several VINs, made of real decoded samples: the
fleet simulator's frames run through :class:`FrameDecoder` (the edge's decoding,
mapping and throttling). If one simulated drive yields fewer records than needed,
it is repeated later in time (timestamps shifted by the drive's length).

* **baseline** (raw write ceiling): the line protocol the ingest would produce for
  these batches, formatted beforehand, posted with :meth:`InfluxClient.write_lines`
  in requests of 5000 lines (the ingest's default ``batch_lines``), one after the
  other, into a fresh database.
* **ingest** with 1, 2 and 4 workers: that many ``roadwave cloud ingest`` processes
  (default settings) share a ``$share`` subscription group unique to the run and
  write into a fresh database. A publisher child process
  (``python -m benchmarks.ingest_write --publisher ...``), connected and holding
  the payloads deflated as the edge sends them, publishes them at QoS 1 when told
  to; the time runs from that signal until the workers' ``points_written``
  counters (scraped from their ``/metrics``) add up to the total.

Before the timed messages, each run publishes one write's worth of other messages
per worker and waits until they are written (untimed). A worker closes a batch
when it holds ``batch_lines`` points or ``flush_interval_s`` after the batch began;
priming makes every worker start the timed messages on a fresh batch, so no batch
closes early by age and no worker's last batch waits for the flush interval.

The CPU seconds each party used during the timed part (InfluxDB, Mosquitto, the
workers, the publisher, this process) come from ``/proc/<pid>/stat``, to tell what
limited a figure on a machine whose cores they all share.

Each measurement runs ``repeat`` times, alternating, each run into its own
database; the best counts. One request of 5000 lines into a throw-away database
warms InfluxDB up first. :mod:`benchmarks.fleet_scale` reuses the workload, the
worker processes and the CPU accounting of this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import urllib3

from cloud.influx import InfluxClient, InfluxSettings
from cloud.ingest import IngestSettings
from cloud.metrics import PREFIX
from cloud.schema import telemetry_lines
from roadwave.contract import Record, TelemetryBatch, encode_telemetry, telemetry_topic

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DBC = REPO_ROOT / "dbc" / "roadwave_car.dbc"
FLEET = "bench"
#: Lines per request of the raw baseline: the ingest's default ``batch_lines``.
RAW_BATCH_LINES = IngestSettings().batch_lines
#: Simulated seconds per VIN: enough variety; repeated in time when more is needed.
SIM_DURATION_S = 60.0
WARMUP_S = 120.0
#: Longest wait for the ingest to write everything before the run is declared failed.
INGEST_TIMEOUT_S = 300.0
#: Longest wait for a child process to say it is ready or done.
CHILD_TIMEOUT_S = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The party of :func:`cpu_by_party` that is every process on the machine, ours or not.
ALL_PROCESSES = "all processes"

_LENGTH = struct.Struct("<II")


@dataclass(frozen=True)
class IngestWorkload:
    """``batches`` batches of ``records`` records from ``vins`` vehicles, ingested by each ``workers``."""

    batches: int = 200
    records: int = 500
    vins: int = 5
    seed: int = 1
    repeat: int = 3
    workers: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self) -> None:
        for name in ("batches", "records", "vins", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"ingest workload: {name} must be at least 1, not {getattr(self, name)}")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"ingest workload: workers must be counts of at least 1, not {self.workers}")


@dataclass
class WorkerRuns:
    """The ingest runs with ``workers`` processes; CPU seconds by party are those of the best run."""

    workers: int
    runs_s: list[float]
    publish_runs_s: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def best_s(self) -> float:
        """The shortest run."""
        return min(self.runs_s)


@dataclass
class IngestResult:
    """Measured figures of one ingest benchmark run; times are the best of ``repeat`` runs."""

    batches: int
    records_per_batch: int
    vins: int
    points: int
    samples: int
    payload_bytes: int
    repeat: int
    raw_runs_s: list[float]
    raw_cpu_s: dict[str, float]
    scale: list[WorkerRuns]
    influxdb_version: str
    mosquitto_version: str

    @property
    def raw_s(self) -> float:
        """The fastest raw write run."""
        return min(self.raw_runs_s)

    @property
    def raw_pps(self) -> float:
        """Raw write ceiling, points per second."""
        return self.points / self.raw_s

    def pps(self, runs: WorkerRuns) -> float:
        """Ingest throughput of the best run, points per second."""
        return self.points / runs.best_s

    def ratio(self, runs: WorkerRuns) -> float:
        """Ingest throughput as a fraction of the raw write ceiling."""
        return self.raw_s / runs.best_s

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with the derived figures."""
        data = asdict(self)
        data.update(raw_s=self.raw_s, raw_pps=self.raw_pps)
        for runs, view in zip(self.scale, data["scale"], strict=True):
            view.update(best_s=runs.best_s, pps=self.pps(runs), ratio=self.ratio(runs))
        return data


# --- workload -------------------------------------------------------------------------


def decoded_records(vins: int, seed: int, dbc: Path = DEFAULT_DBC) -> tuple[dict[str, list[Record]], int]:
    """Simulate ``vins`` vehicles and decode their frames as the edge does.

    Returns each VIN's records and the drive's length in nanoseconds.
    """
    from edge.decoder import FrameDecoder
    from roadwave.sim.fleet import FleetSimulator, SimConfig

    sim = FleetSimulator(
        SimConfig(
            dbc=dbc, vehicles=vins, duration_s=SIM_DURATION_S, seed=seed, fleet=FLEET, warmup_s=WARMUP_S
        )
    )
    decoders = {vin: FrameDecoder.from_files("can0", [dbc], None) for vin in sim.vins}
    records: dict[str, list[Record]] = {vin: [] for vin in sim.vins}
    for frame in sim:
        decoders[frame.vin].decode(frame.message, records[frame.vin].append)
    if not any(records.values()):
        raise RuntimeError("the simulated drive decoded into no records")
    return records, round(SIM_DURATION_S * 1e9)


def tiled(records: Sequence[Record], period_ns: int, start: int = 0) -> Iterator[Record]:
    """The records from index ``start`` on, then again shifted by ``period_ns``, and so on, without end."""
    shift, index = 0, start % len(records)
    while True:
        for record in records[index:]:
            yield Record(record.t_ns + shift, record.bus, record.signals, record.quality)
        shift, index = shift + period_ns, 0


def make_batches(workload: IngestWorkload, dbc: Path = DEFAULT_DBC) -> list[TelemetryBatch]:
    """``workload.batches`` batches, round-robin over the VINs, each VIN's seq counting up."""
    per_vin, period_ns = decoded_records(workload.vins, workload.seed, dbc)
    sources = {vin: tiled(records, period_ns) for vin, records in per_vin.items() if records}
    vins = sorted(sources)
    batches: list[TelemetryBatch] = []
    for index in range(workload.batches):
        vin = vins[index % len(vins)]
        chunk = [next(sources[vin]) for _ in range(workload.records)]
        batches.append(TelemetryBatch(vin, FLEET, index // len(vins), chunk))
    return batches


def shifted(batches: Sequence[TelemetryBatch], shift_ns: int) -> list[TelemetryBatch]:
    """The batches with every timestamp moved by ``shift_ns`` (other points, same content)."""
    return [
        TelemetryBatch(
            b.vin, b.fleet, b.seq, [Record(r.t_ns + shift_ns, r.bus, r.signals, r.quality) for r in b.records]
        )
        for b in batches
    ]


def deflated_messages(batches: Sequence[TelemetryBatch]) -> list[tuple[str, bytes]]:
    """(topic, payload) of each batch, deflated as the edge sends it."""
    return [(telemetry_topic(b.fleet, b.vin), encode_telemetry(b, compress=True)) for b in batches]


def write_payloads(messages: Sequence[tuple[str, bytes]], path: Path) -> None:
    """Length-prefixed (topic, payload) pairs for the publisher child."""
    with path.open("wb") as out:
        for topic, payload in messages:
            encoded = topic.encode()
            out.write(_LENGTH.pack(len(encoded), len(payload)) + encoded + payload)


def read_payloads(path: Path) -> list[tuple[str, bytes]]:
    """Read what :func:`write_payloads` wrote."""
    data = path.read_bytes()
    messages, offset = [], 0
    while offset < len(data):
        topic_len, payload_len = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        topic = data[offset : offset + topic_len].decode()
        offset += topic_len
        messages.append((topic, data[offset : offset + payload_len]))
        offset += payload_len
    return messages


# --- processes -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) process ``pid`` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
        fields = stat.read().rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def machine_cpu_seconds() -> float:
    """CPU time all processes on this machine have used so far (busy time of every core), from /proc."""
    with open("/proc/stat", encoding="ascii") as stat:
        name, *ticks = stat.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
    if name != "cpu":
        raise RuntimeError(f"/proc/stat starts with {name!r}, not the cpu totals")
    values = [int(tick) for tick in ticks[:8]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # all but idle and iowait


def cpu_by_party(parties: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes, and by :data:`ALL_PROCESSES`.

    Raises:
        RuntimeError: one of the processes is gone (it would be missing from the sum).
    """
    totals = {ALL_PROCESSES: machine_cpu_seconds()}
    for party, pids in parties.items():
        try:
            totals[party] = sum(cpu_seconds(pid) for pid in pids)
        except FileNotFoundError:
            raise RuntimeError(f"a process of {party} ({pids}) exited during the measurement") from None
    return totals


def cpu_used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds by party between two :func:`cpu_by_party` snapshots."""
    return {party: round(after[party] - before[party], 3) for party in before}


class JsonChild:
    """A child process reporting JSON lines on stdout, read by a thread, and told things on stdin.

    Lines with an ``"event"`` key wait for :meth:`wait_for`; every line also goes to
    ``on_line`` (in the reader thread). Anything else the child prints is ignored;
    its stderr goes to ``log``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        on_line: Callable[[dict[str, Any]], None] | None = None,
        cwd: Path = REPO_ROOT,
    ) -> None:
        self.name = log.stem
        self.log = log
        self._on_line = on_line
        self._events: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        with log.open("ab") as err:
            self._proc = subprocess.Popen(
                [sys.executable, *argv],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._reader = threading.Thread(target=self._read, name=f"read-{self.name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def _queue(self, event: str) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._events.setdefault(event, queue.Queue())

    def _read(self) -> None:
        stdout: IO[str] = self._proc.stdout  # type: ignore[assignment]
        for line in stdout:
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if self._on_line is not None:
                self._on_line(message)
            if "event" in message:
                self._queue(message["event"]).put(message)

    def wait_for(self, event: str, timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
        """The child's next line with this event.

        Raises:
            RuntimeError: it exited or did not say it within ``timeout_s``; with its log's tail.
        """
        waiting = self._queue(event)
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                return waiting.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                if self._proc.poll() is not None and not self._reader.is_alive():
                    break
        state = "did not say" if self._proc.poll() is None else f"exited ({self._proc.returncode}) without"
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{self.name} {state} {event!r} within {timeout_s:g} s; {self.log}:\n{tail}")

    def tell(self, line: str) -> None:
        """Write one line to the child's stdin."""
        stdin: IO[str] = self._proc.stdin  # type: ignore[assignment]
        stdin.write(line + "\n")
        stdin.flush()

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM)."""
        if self._proc.poll() is None:
            self._proc.terminate()

    def close(self, timeout_s: float = 30.0) -> int:
        """Close its stdin, wait for it to exit (kill it after ``timeout_s``); its exit code."""
        stdin: IO[str] = self._proc.stdin  # type: ignore[assignment]
        with suppress(BrokenPipeError):
            stdin.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5)
        return self._proc.returncode


class IngestWorkers:
    """``count`` ``roadwave cloud ingest`` processes sharing a ``$share`` group unique to them.

    A context manager: the workers are subscribed when it is entered and stopped
    (SIGTERM) when it is left. :meth:`metrics` sums their ``/metrics`` counters.
    After they stop, their persistent broker sessions are ended, so the broker does
    not keep queueing messages for a group nobody will read again.
    """

    def __init__(
        self,
        count: int,
        *,
        mqtt_host: str,
        mqtt_port: int,
        influx_url: str,
        database: str,
        workdir: Path,
    ) -> None:
        self.group = f"bench-{uuid.uuid4().hex[:8]}"
        self.mqtt_host, self.mqtt_port = mqtt_host, mqtt_port
        self.workdir = workdir
        config = workdir / f"{self.group}.toml"
        from roadwave.pipeline import Endpoints, ingest_config_text

        endpoints = Endpoints(mqtt_host, mqtt_port, influx_url, database)
        config.write_text(ingest_config_text(endpoints, self.group), encoding="utf-8")
        self.names = [f"{self.group}-{index}" for index in range(count)]
        self._children: list[JsonChild] = []
        self._ports: list[int] = []
        self._http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10.0))
        #: The counters the workers reported when they stopped, summed.
        self.stats: dict[str, int] = {}
        self._config = config

    def __enter__(self) -> IngestWorkers:
        try:
            for name in self.names:
                argv = ["-m", "roadwave", "cloud", "ingest", "--config", str(self._config)]
                argv += ["--worker", name, "--metrics-port", "0"]
                self._children.append(JsonChild(argv, self.workdir / f"{name}.log", cwd=self.workdir))
            self._ports = [child.wait_for("ready")["metrics_port"] for child in self._children]
        except BaseException:
            self.abort()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:
            self.abort()

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [child.pid for child in self._children]

    def metrics(self) -> dict[str, float]:
        """Every unlabelled sample and histogram bucket of the workers' /metrics, summed over them.

        Keys are as exposed, e.g. ``roadwave_ingest_points_written_total`` or
        ``roadwave_ingest_frame_to_durable_seconds_bucket{le="0.5"}``. Per-vehicle
        gauges are skipped.
        """
        totals: dict[str, float] = {}
        for port in self._ports:
            text = self._http.request("GET", f"http://127.0.0.1:{port}/metrics").data.decode()
            for line in text.splitlines():
                if line.startswith("#") or ("{" in line and "{le=" not in line):
                    continue
                key, _, value = line.rpartition(" ")
                totals[key] = totals.get(key, 0.0) + float(value)
        return totals

    def counter(self, name: str) -> int:
        """One :data:`cloud.metrics.COUNTERS` counter, summed over the workers."""
        return round(self.metrics()[f"{PREFIX}_{name}_total"])

    def stop(self) -> dict[str, int]:
        """SIGTERM the workers, sum the counters they report as they stop, end their sessions.

        Raises:
            RuntimeError: a worker ended without its report.
        """
        if not self._children:
            return self.stats
        for child in self._children:
            child.terminate()
        totals: dict[str, int] = {}
        try:
            for child in self._children:
                stats = child.wait_for("stopped")["stats"]
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0) + value
        finally:
            self.abort()
        self.stats = totals
        return totals

    def abort(self) -> None:
        """Stop the workers without waiting for their reports (SIGKILL after 10 s); end their sessions."""
        children, self._children = self._children, []
        for child in children:
            child.terminate()
        for child in children:
            child.close(10)
        self._http.clear()
        if children:
            with suppress(OSError):  # the broker may be what failed
                clear_sessions(self.mqtt_host, self.mqtt_port, [f"roadwave-ingest-{n}" for n in self.names])


def clear_sessions(host: str, port: int, client_ids: Sequence[str]) -> None:
    """End the broker's persistent sessions of these (disconnected) clients: reconnect them clean."""
    from roadwave.mqtt import MqttSettings, connect

    for client_id in client_ids:
        client = connect(MqttSettings(host=host, port=port), client_id)
        client.disconnect()
        client.loop_stop()


# --- publisher child ----------------------------------------------------------------------


def publisher_main(host: str, port: int, paths: Sequence[Path]) -> None:
    """Connect and say ``ready``; for each index read on stdin, publish that file at QoS 1.

    Reports ``published`` (with the seconds until the broker acknowledged every
    message) after each file, and exits at the end of stdin.
    """
    from roadwave.mqtt import MqttSettings, connect

    rounds = [read_payloads(path) for path in paths]
    client = connect(MqttSettings(host=host, port=port), f"roadwave-bench-publisher-{uuid.uuid4().hex[:8]}")
    try:
        print(json.dumps({"event": "ready"}), flush=True)
        for line in sys.stdin:
            started = time.perf_counter()
            infos = [client.publish(topic, payload, qos=1) for topic, payload in rounds[int(line)]]
            for info in infos:
                info.wait_for_publish(CHILD_TIMEOUT_S)
                if not info.is_published():
                    raise RuntimeError(f"the broker did not acknowledge a batch within {CHILD_TIMEOUT_S:g} s")
            report = {
                "event": "published",
                "messages": len(infos),
                "publish_s": time.perf_counter() - started,
            }
            print(json.dumps(report), flush=True)
    finally:
        client.disconnect()
        client.loop_stop()


# --- the two measurements ----------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    """Where the benchmark's broker and database run, and their process ids."""

    mqtt_host: str
    mqtt_port: int
    influx_url: str
    influxd_pid: int
    mosquitto_pid: int
    influxdb_version: str
    mosquitto_version: str

    def pids(self) -> dict[str, list[int]]:
        """The servers as parties of :func:`cpu_by_party`."""
        return {"influxd": [self.influxd_pid], "mosquitto": [self.mosquitto_pid]}


def _mosquitto_version(log_path: Path) -> str:
    try:
        match = re.search(r"mosquitto version (\S+) running", log_path.read_text(errors="replace"))
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


@contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    """Mosquitto and InfluxDB 1.x running in ``workdir`` until the block ends."""
    from roadwave.services import InfluxDB1, Mosquitto

    with Mosquitto(workdir / "mosquitto") as broker, InfluxDB1(workdir / "influxdb") as influx:
        assert broker.pid is not None and influx.pid is not None
        yield Servers(
            mqtt_host=broker.host,
            mqtt_port=broker.port,
            influx_url=influx.url,
            influxd_pid=influx.pid,
            mosquitto_pid=broker.pid,
            influxdb_version=influx.version,
            mosquitto_version=_mosquitto_version(broker.log_path),
        )


def time_raw_writes(url: str, database: str, lines: Sequence[str]) -> float:
    """Seconds to post ``lines`` in requests of :data:`RAW_BATCH_LINES` into a fresh database."""
    client = InfluxClient(InfluxSettings(url=url, database=database))
    try:
        client.create_database()
        chunks = [lines[i : i + RAW_BATCH_LINES] for i in range(0, len(lines), RAW_BATCH_LINES)]
        started = time.perf_counter()
        for chunk in chunks:
            client.write_lines(chunk)
        return time.perf_counter() - started
    finally:
        client.close()


def wait_points(workers: IngestWorkers, target: int, timeout_s: float = INGEST_TIMEOUT_S) -> float:
    """Wait until the workers wrote ``target`` points in all; the monotonic time they had.

    Scrapes less often while much remains (scrapes cost the workers CPU), often near the end.

    Raises:
        RuntimeError: a message was rejected, or ``timeout_s`` passed.
    """
    started = time.monotonic()
    first_points = workers.metrics()[f"{PREFIX}_points_written_total"]
    while True:
        metrics = workers.metrics()
        now = time.monotonic()
        points = metrics[f"{PREFIX}_points_written_total"]
        if points >= target:
            return now
        rejected = metrics[f"{PREFIX}_messages_rejected_total"]
        if rejected:
            raise RuntimeError(f"the ingest rejected {rejected:.0f} message(s); see its dead letters")
        if now - started > timeout_s:
            raise RuntimeError(f"the ingest wrote {points:.0f} of {target} points in {timeout_s:g} s")
        speed = (points - first_points) / (now - started)
        pause = (target - points) / speed / 2 if speed > 0 else 0.02
        time.sleep(min(max(pause, 0.005), 0.1))


def time_ingest(
    workers: int,
    servers: Servers,
    database: str,
    payloads: tuple[Path, Path],
    points: tuple[int, int],
    workdir: Path,
) -> tuple[float, float, dict[str, float]]:
    """Prime ``workers`` ingest processes, then time the timed payloads until all points are written.

    ``payloads`` and ``points`` are (priming, timed). Returns the seconds from the
    publisher's signal until the workers wrote everything, the publisher's own
    time, and the CPU seconds used meanwhile by each party.
    """
    prime_file, timed_file = payloads
    prime_points, timed_points = points
    publisher_argv = ["-m", "benchmarks.ingest_write", "--publisher", servers.mqtt_host]
    publisher_argv += [str(servers.mqtt_port), str(prime_file), str(timed_file)]
    with IngestWorkers(
        workers,
        mqtt_host=servers.mqtt_host,
        mqtt_port=servers.mqtt_port,
        influx_url=servers.influx_url,
        database=database,
        workdir=workdir,
    ) as ingest:
        publisher = JsonChild(publisher_argv, workdir / f"publisher-{database}.log")
        try:
            publisher.wait_for("ready")
            publisher.tell("0")
            publisher.wait_for("published")
            wait_points(ingest, prime_points)
            parties = {**servers.pids(), "ingest workers": ingest.pids, "publisher": [publisher.pid]}
            parties["benchmark"] = [os.getpid()]
            before = cpu_by_party(parties)
            started = time.monotonic()
            publisher.tell("1")
            elapsed = wait_points(ingest, prime_points + timed_points) - started
            cpu = cpu_used(before, cpu_by_party(parties))
            publish_s = publisher.wait_for("published")["publish_s"]
        finally:
            publisher.close()
        stats = ingest.stop()
    if stats["points_written"] != prime_points + timed_points or stats["messages_rejected"]:
        raise RuntimeError(f"the ingest reported {stats}, expected {prime_points + timed_points} points")
    return elapsed, publish_s, cpu


def run(
    workload: IngestWorkload = IngestWorkload(),
    dbc: Path = DEFAULT_DBC,
    progress: Callable[[str], None] = lambda _: None,
) -> IngestResult:
    """Start the servers; time the raw writes and the ingest with each worker count, ``repeat`` times."""
    total = workload.batches * workload.records
    per_write = max(1, RAW_BATCH_LINES // workload.records)  # messages that fill one ingest write
    uneven = [w for w in workload.workers if workload.batches % w or total // w % RAW_BATCH_LINES]
    if uneven:
        progress(
            f"ingest: note: with {', '.join(map(str, uneven))} worker(s), {total:,} points do not split "
            f"into whole writes of {RAW_BATCH_LINES} points per worker; a worker's last, partial write "
            f"waits for the flush interval ({IngestSettings().flush_interval_s:g} s), which counts"
        )
    progress(f"ingest: {workload.batches} batches x {workload.records} records from {workload.vins} VINs")
    made = make_batches(replace(workload, batches=workload.batches + per_write * max(workload.workers)), dbc)
    batches = made[: workload.batches]
    prime = shifted(made[workload.batches :], -7 * 86_400 * 10**9)  # other points: a week earlier
    messages = deflated_messages(batches)
    lines = [line for b in batches for line in telemetry_lines(b)]
    if len(lines) != total:
        raise RuntimeError(f"{total} records made {len(lines)} points: flagged samples in the workload")
    samples = sum(b.sample_count for b in batches)
    with tempfile.TemporaryDirectory(prefix="roadwave-bench-") as tmp:
        workdir = Path(tmp)
        timed_file = workdir / "timed.bin"
        write_payloads(messages, timed_file)
        progress("ingest: starting Mosquitto and InfluxDB")
        with running_servers(workdir) as servers:
            progress("ingest: warming InfluxDB up")
            time_raw_writes(servers.influx_url, "bench_warmup", lines[:RAW_BATCH_LINES])
            raw_runs: list[float] = []
            raw_cpu: dict[str, float] = {}
            scale = [WorkerRuns(workers, [], []) for workers in workload.workers]
            for attempt in range(workload.repeat):
                progress(f"ingest: run {attempt + 1}/{workload.repeat}, raw writes of {total:,} points")
                parties = {"influxd": [servers.influxd_pid], "benchmark": [os.getpid()]}
                before = cpu_by_party(parties)
                raw_runs.append(time_raw_writes(servers.influx_url, f"bench_raw_{attempt}", lines))
                if raw_runs[-1] == min(raw_runs):
                    raw_cpu = cpu_used(before, cpu_by_party(parties))
                for runs in scale:
                    progress(
                        f"ingest: run {attempt + 1}/{workload.repeat}, through MQTT and "
                        f"{runs.workers} ingest worker process(es)"
                    )
                    prime_file = workdir / f"prime-{runs.workers}.bin"
                    primed = prime[: per_write * runs.workers]
                    write_payloads(deflated_messages(primed), prime_file)
                    prime_points = sum(len(telemetry_lines(batch)) for batch in primed)
                    elapsed, publish_s, cpu = time_ingest(
                        runs.workers,
                        servers,
                        f"bench_ingest_{runs.workers}_{attempt}",
                        (prime_file, timed_file),
                        (prime_points, total),
                        workdir,
                    )
                    runs.runs_s.append(elapsed)
                    runs.publish_runs_s.append(publish_s)
                    if elapsed == runs.best_s:
                        runs.cpu_s = cpu
    return IngestResult(
        batches=workload.batches,
        records_per_batch=workload.records,
        vins=workload.vins,
        points=total,
        samples=samples,
        payload_bytes=sum(len(payload) for _, payload in messages),
        repeat=workload.repeat,
        raw_runs_s=raw_runs,
        raw_cpu_s=raw_cpu,
        scale=scale,
        influxdb_version=servers.influxdb_version,
        mosquitto_version=servers.mosquitto_version,
    )


def parse_counts(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` as (1, 2, 4).

    Raises:
        ValueError: not a comma-separated list of positive integers.
    """
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise ValueError(f"expected comma-separated positive integers such as 1,2,4, not {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.ingest_write``: the publisher child, or this benchmark alone."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest_write", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--publisher", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=IngestWorkload.batches)
    parser.add_argument("--records", type=int, default=IngestWorkload.records)
    parser.add_argument("--vins", type=int, default=IngestWorkload.vins)
    parser.add_argument("--repeat", type=int, default=IngestWorkload.repeat)
    parser.add_argument("--workers", type=parse_counts, default=IngestWorkload.workers)
    args = parser.parse_args(argv)
    if args.publisher:
        host, port, *paths = args.publisher
        publisher_main(host, int(port), [Path(path) for path in paths])
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workload = IngestWorkload(args.batches, args.records, args.vins, repeat=args.repeat, workers=args.workers)
    result = run(workload, progress=lambda text: print(text, file=sys.stderr))
    print(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
