"""Edge decode benchmark: the agent's pipeline against a bare cantools loop, same frames.

The workload is a multi-vehicle drive from the fleet simulator, held in memory as
``can.Message`` objects grouped by vehicle (vehicle after vehicle, as separate agents
would see them). Two loops run over exactly these frames:

* **baseline**: ``db.decode_message(frame_id, data, decode_choices=False)``, a bare
  cantools loop that looks each frame up by id as cantools does. ``decode_choices=False``
  because the pipeline decodes that way too, so the ratio compares like with like.
* **pipeline**: what the edge agent does with a frame, without the network:
  :meth:`FrameDecoder.decode` (decode, VSS mapping, throttling) -> :class:`Batcher`
  -> an emit callback that does what :meth:`TelemetryUplink.send` does minus the
  spool and MQTT (build a :class:`TelemetryBatch`, :func:`encode_telemetry` deflated
  as the agent sends it, count samples and bytes).
  One decoder and batcher per vehicle; the batcher's age timer is not started, so
  batches close by size (1000 records) and the output is deterministic.

Each loop runs ``repeat`` times, interleaved, and the best (shortest) run counts.
The pipeline's memory is measured separately: a fresh child process
(``python -m benchmarks.edge_decode --child FILE``) streams the same frames from a
file through the pipeline and reports its peak RSS (``VmHWM``; see
:func:`peak_rss_kib` for why not ``ru_maxrss``), so neither the simulator nor
the in-memory workload nor the baseline counts.

The simulator (numpy) is imported only by :func:`simulate`, so the child process
loads what an edge agent loads and nothing more.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import can
import cantools.database

from edge.batcher import Batcher
from edge.config import BatchSettings
from edge.dbcload import load_dbc_files
from edge.decoder import FrameDecoder
from edge.mapping import SignalMapping, default_mapping_path, load_mapping
from roadwave import REFERENCE_DBC
from roadwave.contract import Record, TelemetryBatch, encode_telemetry

REPO_ROOT = REFERENCE_DBC.parents[1]
DEFAULT_DBC = REFERENCE_DBC
FLEET = "bench"
BUS = "can0"
#: Traffic simulated before the first frame, so stop-and-go waves (and changing
#: signal values) exist from the start, as in ``roadwave demo``.
WARMUP_S = 120.0

# Frames in the child's input file: vehicle, timestamp, id, flags, length, data.
_FRAME = struct.Struct("<HdIBB64s")
_EXTENDED, _REMOTE, _ERROR = 1, 2, 4
_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class EdgeWorkload:
    """What to simulate: ``vehicles`` cars for ``duration_s`` simulated seconds each."""

    vehicles: int = 4
    duration_s: float = 30.0
    seed: int = 1
    repeat: int = 5


@dataclass(frozen=True)
class VehicleFrames:
    """One vehicle's frames, in time order."""

    vin: str
    frames: list[can.Message]


@dataclass
class PipelineTotals:
    """What the pipeline produced over the whole workload."""

    frames: int = 0
    records: int = 0
    samples: int = 0
    batches: int = 0
    payload_bytes: int = 0

    def add(self, other: PipelineTotals) -> None:
        """Accumulate another vehicle's totals."""
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class EdgeResult:
    """Measured figures of one edge benchmark run; times are the best of ``repeat`` runs."""

    vehicles: int
    duration_s: float
    frames: int
    repeat: int
    bare_s: float
    pipeline_s: float
    bare_runs_s: list[float]
    pipeline_runs_s: list[float]
    totals: PipelineTotals
    rss_idle_kib: int
    rss_peak_kib: int
    child_frames: int

    @property
    def bare_fps(self) -> float:
        """Baseline throughput, frames per second."""
        return self.frames / self.bare_s

    @property
    def pipeline_fps(self) -> float:
        """Pipeline throughput, frames per second."""
        return self.frames / self.pipeline_s

    @property
    def bare_us(self) -> float:
        """Baseline cost, microseconds per frame."""
        return self.bare_s / self.frames * 1e6

    @property
    def pipeline_us(self) -> float:
        """Pipeline cost, microseconds per frame."""
        return self.pipeline_s / self.frames * 1e6

    @property
    def ratio(self) -> float:
        """Pipeline throughput as a fraction of the bare cantools loop's."""
        return self.bare_s / self.pipeline_s

    @property
    def bytes_per_sample(self) -> float:
        """Encoded payload bytes per VSS sample emitted."""
        return self.totals.payload_bytes / self.totals.samples if self.totals.samples else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view with the derived figures."""
        data = asdict(self)
        data.update(
            bare_fps=self.bare_fps,
            pipeline_fps=self.pipeline_fps,
            bare_us_per_frame=self.bare_us,
            pipeline_us_per_frame=self.pipeline_us,
            ratio=self.ratio,
            bytes_per_sample=self.bytes_per_sample,
        )
        return data


# --- workload -------------------------------------------------------------------------


def simulate(workload: EdgeWorkload, dbc: Path = DEFAULT_DBC) -> list[VehicleFrames]:
    """Simulate the drive in memory; return each vehicle's frames."""
    from roadwave.sim.fleet import FleetSimulator, SimConfig  # numpy: parent process only

    config = SimConfig(
        dbc=dbc,
        vehicles=workload.vehicles,
        duration_s=workload.duration_s,
        seed=workload.seed,
        fleet=FLEET,
        bus=BUS,
        warmup_s=WARMUP_S,
    )
    sim = FleetSimulator(config)
    per_vehicle: dict[str, list[can.Message]] = {vin: [] for vin in sim.vins}
    for frame in sim:
        per_vehicle[frame.vin].append(frame.message)
    return [VehicleFrames(vin, frames) for vin, frames in per_vehicle.items()]


def load_decoding(dbc: Path = DEFAULT_DBC) -> tuple[cantools.database.can.Database, list[SignalMapping]]:
    """The DBC and its VSS mapping, as the edge agent loads them."""
    db = load_dbc_files([dbc]).database
    return db, load_mapping(default_mapping_path(dbc), db)


# --- the two loops ----------------------------------------------------------------------


class VehiclePipeline:
    """One vehicle's agent minus the network: decoder -> batcher -> encoded payloads."""

    def __init__(
        self,
        vin: str,
        db: cantools.database.can.Database,
        mappings: Sequence[SignalMapping],
        batch: BatchSettings | None = None,
    ) -> None:
        self.vin = vin
        self.decoder = FrameDecoder(BUS, db, mappings)
        self.batcher = Batcher(batch or BatchSettings(), self._emit)
        self.totals = PipelineTotals()
        self._seq = 0

    def _emit(self, records: list[Record], _progress: dict[str, int]) -> None:
        # TelemetryUplink.send without the spool write, the publish and its acknowledgement.
        batch = TelemetryBatch(self.vin, FLEET, self._seq, records)
        payload = encode_telemetry(batch, compress=True)
        self._seq += 1
        totals = self.totals
        totals.batches += 1
        totals.records += len(records)
        totals.samples += batch.sample_count
        totals.payload_bytes += len(payload)

    def feed(self, frames: Iterable[can.Message]) -> None:
        """Run frames through the pipeline (what ``BusListener`` does per frame)."""
        decode, add = self.decoder.decode, self.batcher.add
        for frame in frames:
            decode(frame, add)

    def finish(self) -> PipelineTotals:
        """Emit the last batch; return this vehicle's totals."""
        self.batcher.stop()
        self.totals.frames = self.decoder.stats.frames_received
        return self.totals


def time_bare(db: cantools.database.can.Database, frames: Sequence[can.Message]) -> float:
    """Seconds for a bare cantools decode loop over ``frames``."""
    decode = db.decode_message
    gc.collect()
    started = time.perf_counter()
    for frame in frames:
        decode(frame.arbitration_id, frame.data, decode_choices=False)  # type: ignore[arg-type]
    return time.perf_counter() - started


def time_pipeline(
    db: cantools.database.can.Database,
    mappings: Sequence[SignalMapping],
    vehicles: Sequence[VehicleFrames],
) -> tuple[float, PipelineTotals]:
    """Seconds for the pipeline over every vehicle's frames, and what it produced."""
    pipelines = [(VehiclePipeline(v.vin, db, mappings), v.frames) for v in vehicles]
    gc.collect()
    started = time.perf_counter()
    for pipeline, frames in pipelines:
        pipeline.feed(frames)
        pipeline.finish()
    elapsed = time.perf_counter() - started
    totals = PipelineTotals()
    for pipeline, _ in pipelines:
        totals.add(pipeline.totals)
    return elapsed, totals


# --- memory: a fresh child process ------------------------------------------------------


def write_frames(vehicles: Sequence[VehicleFrames], path: Path) -> None:
    """Write the workload for the child: a JSON line of VINs, then fixed-size frames."""
    with path.open("wb") as out:
        out.write(json.dumps([v.vin for v in vehicles]).encode() + b"\n")
        for index, vehicle in enumerate(vehicles):
            for m in vehicle.frames:
                flags = (
                    (_EXTENDED if m.is_extended_id else 0)
                    | (_REMOTE if m.is_remote_frame else 0)
                    | (_ERROR if m.is_error_frame else 0)
                )
                out.write(
                    _FRAME.pack(index, m.timestamp, m.arbitration_id, flags, len(m.data), bytes(m.data))
                )


def read_frames(path: Path) -> tuple[list[str], Iterator[tuple[int, can.Message]]]:
    """The VINs and a stream of (vehicle index, frame), a chunk of the file at a time."""
    handle = path.open("rb")
    vins: list[str] = json.loads(handle.readline())

    def stream() -> Iterator[tuple[int, can.Message]]:
        with handle:
            while chunk := handle.read(_FRAME.size * _CHUNK_FRAMES):
                for index, stamp, frame_id, flags, length, data in _FRAME.iter_unpack(chunk):
                    yield (
                        index,
                        can.Message(
                            timestamp=stamp,
                            arbitration_id=frame_id,
                            is_extended_id=bool(flags & _EXTENDED),
                            is_remote_frame=bool(flags & _REMOTE),
                            is_error_frame=bool(flags & _ERROR),
                            dlc=length,
                            data=data[:length],
                            channel=BUS,
                        ),
                    )

    return vins, stream()


def peak_rss_kib() -> int:
    """Peak resident set size of this process image, KiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. ``ru_maxrss`` is not used there because
    the kernel carries the parent's high-water mark over ``fork``/``vfork`` + ``exec``
    into the child's ``ru_maxrss``, so a child started by a big parent would report the
    parent's peak. Elsewhere, ``ru_maxrss`` (KiB on most Unixes, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def child_main(frames_path: Path, dbc: Path) -> dict[str, int]:
    """In the fresh child: load like an agent, stream the frames through, report peak RSS."""
    db, mappings = load_decoding(dbc)
    vins, stream = read_frames(frames_path)
    idle = peak_rss_kib()
    totals = PipelineTotals()
    for index, group in groupby(stream, key=itemgetter(0)):
        pipeline = VehiclePipeline(vins[index], db, mappings)
        pipeline.feed(frame for _, frame in group)
        totals.add(pipeline.finish())
    return {
        "rss_idle_kib": idle,
        "rss_peak_kib": peak_rss_kib(),
        "frames": totals.frames,
        "samples": totals.samples,
    }


def measure_child_rss(vehicles: Sequence[VehicleFrames], dbc: Path = DEFAULT_DBC) -> dict[str, int]:
    """Run :func:`child_main` in a fresh interpreter over the same frames."""
    with tempfile.TemporaryDirectory(prefix="roadwave-bench-") as tmp:
        path = Path(tmp) / "frames.bin"
        write_frames(vehicles, path)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.edge_decode", "--child", str(path), "--dbc", str(dbc)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"edge benchmark child failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmark ----------------------------------------------------------------------


def run(
    workload: EdgeWorkload = EdgeWorkload(),
    dbc: Path = DEFAULT_DBC,
    progress: Callable[[str], None] = lambda _: None,
) -> EdgeResult:
    """Simulate, time both loops ``repeat`` times (interleaved), measure the child's RSS."""
    progress(f"edge: simulating {workload.vehicles} vehicle(s) x {workload.duration_s:g} s")
    vehicles = simulate(workload, dbc)
    frames = [m for v in vehicles for m in v.frames]
    if not frames:
        raise RuntimeError("the simulator produced no frames")
    db, mappings = load_decoding(dbc)
    bare_runs: list[float] = []
    pipeline_runs: list[float] = []
    totals = PipelineTotals()
    for attempt in range(workload.repeat):
        progress(f"edge: run {attempt + 1}/{workload.repeat} over {len(frames):,} frames")
        bare_runs.append(time_bare(db, frames))
        elapsed, totals = time_pipeline(db, mappings, vehicles)
        pipeline_runs.append(elapsed)
    progress("edge: peak RSS of a fresh pipeline process")
    child = measure_child_rss(vehicles, dbc)
    if child["samples"] != totals.samples:
        raise RuntimeError(
            f"the child emitted {child['samples']} samples, the timed pipeline {totals.samples}"
        )
    return EdgeResult(
        vehicles=workload.vehicles,
        duration_s=workload.duration_s,
        frames=len(frames),
        repeat=workload.repeat,
        bare_s=min(bare_runs),
        pipeline_s=min(pipeline_runs),
        bare_runs_s=bare_runs,
        pipeline_runs_s=pipeline_runs,
        totals=totals,
        rss_idle_kib=child["rss_idle_kib"],
        rss_peak_kib=child["rss_peak_kib"],
        child_frames=child["frames"],
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.edge_decode``: the child mode, or this benchmark alone."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.edge_decode", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--child", type=Path, metavar="FRAMES", help="(internal) measure RSS over a frame file"
    )
    parser.add_argument("--dbc", type=Path, default=DEFAULT_DBC)
    parser.add_argument("--vehicles", type=int, default=EdgeWorkload.vehicles)
    parser.add_argument("--duration", type=float, default=EdgeWorkload.duration_s)
    parser.add_argument("--repeat", type=int, default=EdgeWorkload.repeat)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child_main(args.child, args.dbc)))
        return 0
    result = run(EdgeWorkload(args.vehicles, args.duration, repeat=args.repeat), args.dbc)
    print(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
