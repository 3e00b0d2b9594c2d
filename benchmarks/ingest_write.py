"""Ingest write benchmark: MQTT -> ingest -> InfluxDB against InfluxDB's raw write ceiling.

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
* **ingest**: :class:`IngestService` runs in this process (its own thread, default
  settings, a fresh database), subscribed to the real broker. A publisher child
  process (``python -m benchmarks.ingest_write --publisher ...``), connected and
  holding the encoded payloads, publishes them all at QoS 1 when told to; the time
  runs from that signal until ``service.stats.points_written`` reaches the total.
  The publisher is a separate process so that it does not compete with the
  ingest for this interpreter's GIL (in production it is the vehicles).

Each side runs ``repeat`` times, alternating, each run into its own database; the best
counts. One request of 5000 lines into a throw-away database warms InfluxDB up first.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from cloud.influx import InfluxClient, InfluxSettings
from cloud.ingest import IngestConfig, IngestService, IngestSettings
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

_LENGTH = struct.Struct("<II")


@dataclass(frozen=True)
class IngestWorkload:
    """``batches`` telemetry batches of ``records`` records, spread over ``vins`` vehicles."""

    batches: int = 200
    records: int = 500
    vins: int = 5
    seed: int = 1
    repeat: int = 3


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
    raw_s: float
    ingest_s: float
    raw_runs_s: list[float]
    ingest_runs_s: list[float]
    publish_runs_s: list[float]
    influxdb_version: str
    mosquitto_version: str

    @property
    def raw_pps(self) -> float:
        """Raw write ceiling, points per second."""
        return self.points / self.raw_s

    @property
    def ingest_pps(self) -> float:
        """Ingest throughput, points per second."""
        return self.points / self.ingest_s

    @property
    def ratio(self) -> float:
        """Ingest throughput as a fraction of the raw write ceiling."""
        return self.raw_s / self.ingest_s

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with the derived figures."""
        data = asdict(self)
        data.update(raw_pps=self.raw_pps, ingest_pps=self.ingest_pps, ratio=self.ratio)
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
    return records, round(SIM_DURATION_S * 1e9)


def _tiled(records: list[Record], period_ns: int) -> Iterator[Record]:
    """The records, then again shifted by ``period_ns``, and so on, without end."""
    shift = 0
    while True:
        for record in records:
            yield Record(record.t_ns + shift, record.bus, record.signals)
        shift += period_ns


def make_batches(workload: IngestWorkload, dbc: Path = DEFAULT_DBC) -> list[TelemetryBatch]:
    """``workload.batches`` batches, round-robin over the VINs, each VIN's seq counting up."""
    per_vin, period_ns = decoded_records(workload.vins, workload.seed, dbc)
    sources = {vin: _tiled(records, period_ns) for vin, records in per_vin.items() if records}
    if not sources:
        raise RuntimeError("the simulated drive decoded into no records")
    vins = sorted(sources)
    batches: list[TelemetryBatch] = []
    for index in range(workload.batches):
        vin = vins[index % len(vins)]
        chunk = [next(sources[vin]) for _ in range(workload.records)]
        batches.append(TelemetryBatch(vin, FLEET, index // len(vins), chunk))
    return batches


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


# --- publisher child ----------------------------------------------------------------------


def publisher_main(host: str, port: int, path: Path) -> dict[str, float]:
    """Connect, say ``ready``, wait for a line on stdin, publish all at QoS 1, await the acks."""
    from roadwave.mqtt import MqttSettings, connect

    messages = read_payloads(path)
    client = connect(MqttSettings(host=host, port=port), f"roadwave-bench-publisher-{time.monotonic_ns()}")
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.perf_counter()
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise RuntimeError("the broker did not acknowledge a batch within 60 s")
        return {"publish_s": time.perf_counter() - started, "messages": len(infos)}
    finally:
        client.loop_stop()
        client.disconnect()


class Publisher:
    """The publisher child process, connected and waiting for :meth:`go`."""

    def __init__(self, host: str, port: int, payloads: Path) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.ingest_write", "--publisher", host, str(port), str(payloads)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout: IO[str] = self._proc.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if line.strip() != "ready":
            self._proc.kill()
            _, err = self._proc.communicate()
            raise RuntimeError(f"publisher did not start: {line}{err}")

    def go(self) -> None:
        """Tell the child to publish everything now."""
        stdin: IO[str] = self._proc.stdin  # type: ignore[assignment]
        stdin.write("go\n")
        stdin.flush()

    def result(self, timeout_s: float = 60.0) -> dict[str, float]:
        """Wait for the child to finish; its report."""
        try:
            out, err = self._proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
            raise RuntimeError("the publisher did not finish") from None
        if self._proc.returncode != 0:
            raise RuntimeError(f"the publisher failed ({self._proc.returncode}):\n{err}")
        report: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        """Stop the child if it still runs."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


# --- the two measurements ----------------------------------------------------------------


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


def time_ingest(
    mqtt_host: str, mqtt_port: int, url: str, database: str, payloads: Path, points: int, workdir: Path
) -> tuple[float, float]:
    """Seconds from the publisher's start until the ingest wrote ``points``; and its publish time."""
    from roadwave.mqtt import MqttSettings

    config = IngestConfig(
        mqtt=MqttSettings(host=mqtt_host, port=mqtt_port, client_id=f"roadwave-bench-{database}"),
        influx=InfluxSettings(url=url, database=database),
        ingest=IngestSettings(dead_letter_dir=workdir / f"dead-letters-{database}"),
    )
    service = IngestService(config)
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop,), name="ingest", daemon=True)
    worker.start()
    publisher: Publisher | None = None
    try:
        if not service.ready.wait(30):
            raise RuntimeError("the ingest did not subscribe within 30 s")
        publisher = Publisher(mqtt_host, mqtt_port, payloads)
        started = time.perf_counter()
        publisher.go()
        deadline = started + INGEST_TIMEOUT_S
        stats = service.stats
        while stats.points_written < points:
            if stats.messages_rejected:
                raise RuntimeError(f"the ingest rejected {stats.messages_rejected} message(s)")
            if not worker.is_alive():
                raise RuntimeError("the ingest stopped before writing everything")
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"the ingest wrote {stats.points_written} of {points} points in {INGEST_TIMEOUT_S:g} s"
                )
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        publish_s = publisher.result()["publish_s"]
    finally:
        if publisher is not None:
            publisher.kill()
        stop.set()
        worker.join(60)
    if service.stats.points_written != points:
        raise RuntimeError(f"the ingest wrote {service.stats.points_written} points, expected {points}")
    return elapsed, publish_s


def _mosquitto_version(log_path: Path) -> str:
    try:
        match = re.search(r"mosquitto version (\S+) running", log_path.read_text(errors="replace"))
    except OSError:
        return "unknown"
    return match.group(1) if match else "unknown"


def run(
    workload: IngestWorkload = IngestWorkload(),
    dbc: Path = DEFAULT_DBC,
    progress: Callable[[str], None] = lambda _: None,
) -> IngestResult:
    """Start the servers, time the raw writes and the ingest ``repeat`` times each."""
    from roadwave.services import InfluxDB1, Mosquitto

    total = workload.batches * workload.records
    if total % RAW_BATCH_LINES:
        progress(
            f"ingest: note: {total:,} points is not a multiple of {RAW_BATCH_LINES}; the ingest's "
            f"last, partial write waits for its flush interval ({IngestSettings().flush_interval_s:g} s), "
            "which counts in its time"
        )
    progress(f"ingest: {workload.batches} batches x {workload.records} records from {workload.vins} VINs")
    batches = make_batches(workload, dbc)
    messages = [(telemetry_topic(b.fleet, b.vin), encode_telemetry(b)) for b in batches]
    lines = [line for b in batches for line in telemetry_lines(b)]
    samples = sum(b.sample_count for b in batches)
    assert len(lines) == total
    with tempfile.TemporaryDirectory(prefix="roadwave-bench-") as tmp:
        workdir = Path(tmp)
        payloads = workdir / "payloads.bin"
        write_payloads(messages, payloads)
        progress("ingest: starting Mosquitto and InfluxDB")
        with Mosquitto(workdir / "mosquitto") as broker, InfluxDB1(workdir / "influxdb") as influx:
            progress("ingest: warming InfluxDB up")
            time_raw_writes(influx.url, "bench_warmup", lines[:RAW_BATCH_LINES])
            raw_runs: list[float] = []
            ingest_runs: list[float] = []
            publish_runs: list[float] = []
            for attempt in range(workload.repeat):
                progress(f"ingest: run {attempt + 1}/{workload.repeat}, raw writes of {total:,} points")
                raw_runs.append(time_raw_writes(influx.url, f"bench_raw_{attempt}", lines))
                progress(f"ingest: run {attempt + 1}/{workload.repeat}, through MQTT and the ingest")
                elapsed, publish_s = time_ingest(
                    broker.host, broker.port, influx.url, f"bench_ingest_{attempt}", payloads, total, workdir
                )
                ingest_runs.append(elapsed)
                publish_runs.append(publish_s)
            influx_version = influx.version
            mosquitto_version = _mosquitto_version(broker.log_path)
    return IngestResult(
        batches=workload.batches,
        records_per_batch=workload.records,
        vins=workload.vins,
        points=total,
        samples=samples,
        payload_bytes=sum(len(payload) for _, payload in messages),
        repeat=workload.repeat,
        raw_s=min(raw_runs),
        ingest_s=min(ingest_runs),
        raw_runs_s=raw_runs,
        ingest_runs_s=ingest_runs,
        publish_runs_s=publish_runs,
        influxdb_version=influx_version,
        mosquitto_version=mosquitto_version,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.ingest_write``: the publisher child, or this benchmark alone."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest_write", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--publisher", nargs=3, metavar=("HOST", "PORT", "PAYLOADS"), help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=IngestWorkload.batches)
    parser.add_argument("--records", type=int, default=IngestWorkload.records)
    parser.add_argument("--vins", type=int, default=IngestWorkload.vins)
    parser.add_argument("--repeat", type=int, default=IngestWorkload.repeat)
    args = parser.parse_args(argv)
    if args.publisher:
        host, port, path = args.publisher
        print(json.dumps(publisher_main(host, int(port), Path(path))))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workload = IngestWorkload(args.batches, args.records, args.vins, repeat=args.repeat)
    result = run(workload, progress=lambda text: print(text, file=sys.stderr))
    print(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
