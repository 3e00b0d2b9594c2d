"""``make bench`` / ``python -m benchmarks``: run the benchmarks, print a table, update the docs.

Examples::

    python -m benchmarks                       # both benchmarks, full size
    python -m benchmarks --only edge --quick   # a small smoke run of one
    python -m benchmarks --write-docs          # full run, then rewrite docs/benchmarks.md

``--write-docs`` replaces the block between ``<!-- results:start -->`` and
``<!-- results:end -->`` in docs/benchmarks.md and leaves the prose alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks import edge_decode, ingest_write
from benchmarks.edge_decode import EdgeResult, EdgeWorkload
from benchmarks.ingest_write import IngestResult, IngestWorkload
from roadwave.configfile import with_overrides
from roadwave.services import ServiceError

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"

#: A Raspberry Pi 4 core runs single-thread Python roughly 5-7x slower than a current
#: x86 core (docs/benchmarks.md cites the source); used for the estimate row only.
PI4_SLOWDOWN = (5.0, 7.0)
#: Goals from the issues: edge throughput on one x86 core, its RSS, its ratio to bare
#: cantools (issue 3); ingest throughput as a fraction of the raw write ceiling (issue 5).
EDGE_FPS_GOAL = 100_000
EDGE_RSS_GOAL_MIB = 80
EDGE_RATIO_GOAL = 0.3
INGEST_RATIO_GOAL = 0.8

QUICK_EDGE = EdgeWorkload(vehicles=2, duration_s=3.0, repeat=2)
QUICK_INGEST = IngestWorkload(batches=20, records=250, vins=2, repeat=1)


@dataclass
class Machine:
    """Where the benchmarks ran."""

    date: str
    platform: str
    cpu: str
    cores: int
    python: str
    versions: dict[str, str]

    @classmethod
    def describe(cls) -> Machine:
        """This machine, now."""
        versions = {}
        for package in ("cantools", "python-can", "paho-mqtt"):
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = "not installed"
        return cls(
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            platform=platform.platform(),
            cpu=cpu_model(),
            cores=os.cpu_count() or 0,
            python=f"{platform.python_implementation()} {platform.python_version()}",
            versions=versions,
        )


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


# --- formatting ---------------------------------------------------------------------------


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _goal(met: bool) -> str:
    return "met" if met else "not yet"


def pi4_fps(result: EdgeResult) -> tuple[float, float]:
    """Estimated pipeline frames/s on one Raspberry Pi 4 core (slow end, fast end)."""
    return result.pipeline_fps / PI4_SLOWDOWN[1], result.pipeline_fps / PI4_SLOWDOWN[0]


def _best_of(repeat: int) -> str:
    return "one run" if repeat == 1 else f"best of {repeat} runs"


def edge_workload_text(r: EdgeResult) -> str:
    """One line describing the edge workload."""
    return f"{r.vehicles} vehicles x {r.duration_s:g} s simulated = {r.frames:,} frames, {_best_of(r.repeat)}"


def ingest_workload_text(r: IngestResult) -> str:
    """One line describing the ingest workload."""
    return (
        f"{r.batches} batches x {r.records_per_batch} records from {r.vins} VINs = "
        f"{r.points:,} points ({r.samples:,} samples, {r.payload_bytes / 1e6:.1f} MB of JSON), "
        f"QoS 1, {_best_of(r.repeat)}"
    )


def console_table(
    machine: Machine, edge: EdgeResult | None, ingest: IngestResult | None, runtime_s: float
) -> str:
    """The results as plain text for the terminal."""
    out = [
        f"roadwave benchmarks, {machine.date}",
        f"  {machine.cpu}, {machine.cores} cores, {machine.platform}",
        f"  {machine.python}, " + ", ".join(f"{k} {v}" for k, v in machine.versions.items()),
    ]
    row = "  {:<46} {:>16} {:>14} {:>12}"
    if edge is not None:
        slow, fast = pi4_fps(edge)
        out += [
            "",
            f"Edge decode: {edge_workload_text(edge)}",
            row.format("loop", "frames/s", "us/frame", "ratio"),
            row.format(
                "baseline: bare cantools decode_message", _n(edge.bare_fps), _n(edge.bare_us, 2), "1.00"
            ),
            row.format(
                "edge pipeline: decode+VSS+batch+encode",
                _n(edge.pipeline_fps),
                _n(edge.pipeline_us, 2),
                f"{edge.ratio:.2f}",
            ),
            row.format(
                "Raspberry Pi 4 core (estimate, 5-7x slower)",
                f"{_n(slow)}-{_n(fast)}",
                f"{_n(edge.pipeline_us * PI4_SLOWDOWN[0], 1)}-{_n(edge.pipeline_us * PI4_SLOWDOWN[1], 1)}",
                "",
            ),
            f"  samples emitted: {edge.totals.samples:,} "
            f"({edge.totals.records:,} records in {edge.totals.batches} batches)",
            f"  payload bytes per sample: {edge.bytes_per_sample:.1f}",
            f"  pipeline peak RSS (fresh process): {_mib(edge.rss_peak_kib)} "
            f"(after start-up: {_mib(edge.rss_idle_kib)})",
        ]
    if ingest is not None:
        out += [
            "",
            f"Ingest write: {ingest_workload_text(ingest)}",
            row.format("path", "points/s", "us/point", "ratio"),
            row.format(
                "baseline: raw InfluxDB write_lines x5000",
                _n(ingest.raw_pps),
                _n(ingest.raw_s / ingest.points * 1e6, 2),
                "1.00",
            ),
            row.format(
                "ingest: MQTT QoS 1 -> validate -> InfluxDB",
                _n(ingest.ingest_pps),
                _n(ingest.ingest_s / ingest.points * 1e6, 2),
                f"{ingest.ratio:.2f}",
            ),
            f"  InfluxDB {ingest.influxdb_version}, Mosquitto {ingest.mosquitto_version}; "
            f"publishing took {min(ingest.publish_runs_s):.2f} s of the best run",
        ]
    out += ["", f"total runtime: {runtime_s:.1f} s"]
    return "\n".join(out)


def _md_row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def results_markdown(machine: Machine, edge: EdgeResult, ingest: IngestResult, runtime_s: float) -> str:
    """The results block of docs/benchmarks.md (without the markers)."""
    slow, fast = pi4_fps(edge)
    pi4_us = f"{edge.pipeline_us * PI4_SLOWDOWN[0]:.1f}-{edge.pipeline_us * PI4_SLOWDOWN[1]:.1f}"
    edge_goals = (
        f"throughput >= {EDGE_FPS_GOAL:,} frames/s: {_goal(edge.pipeline_fps >= EDGE_FPS_GOAL)}; "
        f"ratio >= {EDGE_RATIO_GOAL}: {_goal(edge.ratio >= EDGE_RATIO_GOAL)}"
    )
    rss_goal = f"< {EDGE_RSS_GOAL_MIB} MB: {_goal(edge.rss_peak_kib / 1024 < EDGE_RSS_GOAL_MIB)}"
    versions = ", ".join(f"{k} {v}" for k, v in machine.versions.items())
    lines = [
        f'Measured on {machine.date} by `make bench ARGS="--write-docs"` (total runtime {runtime_s:.0f} s).',
        "",
        _md_row("machine", ""),
        "|---|---|",
        _md_row("platform", f"`{machine.platform}`"),
        _md_row("CPU", f"{machine.cpu}, {machine.cores} cores"),
        _md_row("Python", machine.python),
        _md_row("packages", versions),
        _md_row("servers", f"InfluxDB {ingest.influxdb_version}, Mosquitto {ingest.mosquitto_version}"),
        "",
        f"**Edge decode**: {edge_workload_text(edge)}.",
        "",
        _md_row("loop", "frames/s", "µs/frame", "ratio to baseline", "goal (issue 3)"),
        "|---|---:|---:|---:|---|",
        _md_row(
            "baseline: bare cantools `decode_message`", _n(edge.bare_fps), f"{edge.bare_us:.2f}", "1.00", ""
        ),
        _md_row(
            "edge pipeline: decode + VSS + batch + encode",
            _n(edge.pipeline_fps),
            f"{edge.pipeline_us:.2f}",
            f"{edge.ratio:.2f}",
            edge_goals,
        ),
        _md_row(
            "*Raspberry Pi 4 core: **estimate**, this figure / 5-7*",
            f"*{_n(slow)}-{_n(fast)}*",
            f"*{pi4_us}*",
            "",
            "not measured",
        ),
        "",
        _md_row("pipeline output and memory", "value", "goal (issue 3)"),
        "|---|---:|---|",
        _md_row(
            "samples emitted",
            f"{edge.totals.samples:,} ({edge.totals.records:,} records, {edge.totals.batches} batches)",
            "",
        ),
        _md_row("payload bytes per sample", f"{edge.bytes_per_sample:.1f}", ""),
        _md_row(
            "peak RSS, fresh pipeline process",
            f"{_mib(edge.rss_peak_kib)} (after start-up {_mib(edge.rss_idle_kib)})",
            rss_goal,
        ),
        "",
        f"**Ingest write**: {ingest_workload_text(ingest)}.",
        "",
        _md_row("path", "points/s", "µs/point", "ratio to baseline", "goal (issue 5)"),
        "|---|---:|---:|---:|---|",
        _md_row(
            "baseline: raw InfluxDB `write_lines`, 5000 lines per request",
            _n(ingest.raw_pps),
            f"{ingest.raw_s / ingest.points * 1e6:.2f}",
            "1.00",
            "",
        ),
        _md_row(
            "ingest: MQTT QoS 1 -> validate -> InfluxDB",
            _n(ingest.ingest_pps),
            f"{ingest.ingest_s / ingest.points * 1e6:.2f}",
            f"{ingest.ratio:.2f}",
            f">= {INGEST_RATIO_GOAL}: {_goal(ingest.ratio >= INGEST_RATIO_GOAL)}",
        ),
    ]
    return "\n".join(lines) + "\n"


def replace_results(document: str, block: str) -> str:
    """``document`` with the text between the result markers replaced by ``block``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start = document.find(START_MARKER)
    end = document.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"expected {START_MARKER} ... {END_MARKER} in the document")
    head = document[: start + len(START_MARKER)]
    return f"{head}\n{block.strip()}\n{document[end:]}"


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run roadwave's benchmarks; every figure is also given as a ratio to a "
        "baseline measured in the same run.",
    )
    parser.add_argument("--only", choices=("edge", "ingest"), help="run one benchmark")
    parser.add_argument(
        "--quick", action="store_true", help="small workloads: a smoke run, not a measurement"
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"rewrite the results block of {DOCS.relative_to(REPO_ROOT)}",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw results as JSON")
    e, i = EdgeWorkload(), IngestWorkload()
    edge = parser.add_argument_group(
        f"edge workload (default {e.vehicles} vehicles x {e.duration_s:g} s, best of {e.repeat} runs)"
    )
    edge.add_argument("--vehicles", type=int, metavar="N")
    edge.add_argument("--duration", type=float, metavar="S", help="simulated seconds per vehicle")
    ingest = parser.add_argument_group(
        f"ingest workload (default {i.batches} batches x {i.records} records from {i.vins} VINs, "
        f"best of {i.repeat} runs)"
    )
    ingest.add_argument("--batches", type=int, metavar="N")
    ingest.add_argument("--records", type=int, metavar="N", help="records per batch")
    ingest.add_argument("--vins", type=int, metavar="N")
    parser.add_argument(
        "--repeat", type=int, metavar="N", help="timed runs of each loop (both benchmarks); the best counts"
    )
    args = parser.parse_args(argv)
    if args.write_docs and (args.quick or args.only):
        parser.error("--write-docs needs a full run of both benchmarks (no --quick, no --only)")
    for name in ("vehicles", "batches", "records", "vins", "repeat"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.duration is not None and not args.duration > 0:
        parser.error("--duration must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; print, and optionally save, the results."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    machine = Machine.describe()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text}", file=sys.stderr, flush=True)

    edge_result: EdgeResult | None = None
    ingest_result: IngestResult | None = None
    if args.only in (None, "edge"):
        edge_workload = with_overrides(
            QUICK_EDGE if args.quick else EdgeWorkload(),
            vehicles=args.vehicles,
            duration_s=args.duration,
            repeat=args.repeat,
        )
        edge_result = edge_decode.run(edge_workload, progress=progress)
    if args.only in (None, "ingest"):
        ingest_workload = with_overrides(
            QUICK_INGEST if args.quick else IngestWorkload(),
            batches=args.batches,
            records=args.records,
            vins=args.vins,
            repeat=args.repeat,
        )
        try:
            ingest_result = ingest_write.run(ingest_workload, progress=progress)
        except ServiceError as exc:  # typically: mosquitto or influxd not installed
            print(f"ingest benchmark: {exc}", file=sys.stderr)
            return 1
    runtime_s = time.perf_counter() - started
    print(console_table(machine, edge_result, ingest_result, runtime_s))
    if args.json is not None:
        document = {
            "machine": vars(machine),
            "runtime_s": runtime_s,
            "edge": edge_result.as_dict() if edge_result else None,
            "ingest": ingest_result.as_dict() if ingest_result else None,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.write_docs:
        assert edge_result is not None and ingest_result is not None
        block = results_markdown(machine, edge_result, ingest_result, runtime_s)
        DOCS.write_text(replace_results(DOCS.read_text(encoding="utf-8"), block), encoding="utf-8")
        print(f"results written to {DOCS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
