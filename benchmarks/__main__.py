"""``make bench`` / ``python -m benchmarks``: run the benchmarks, print a table, update the docs.

Examples::

    python -m benchmarks                       # all benchmarks, full size
    python -m benchmarks --only edge --quick   # a small smoke run of one
    python -m benchmarks --write-docs          # full run, then rewrite docs/benchmarks.md

``--write-docs`` replaces the block between ``<!-- results:start -->`` and
``<!-- results:end -->`` in docs/benchmarks.md and leaves the prose alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import edge_decode, encoding, fleet_scale, ingest_write
from benchmarks.edge_decode import EdgeResult, EdgeWorkload
from benchmarks.encoding import EncodingResult, EncodingWorkload
from benchmarks.fleet_scale import FleetResult, FleetWorkload
from benchmarks.ingest_write import ALL_PROCESSES, IngestResult, IngestWorkload, parse_counts
from roadwave.configfile import with_overrides
from roadwave.services import ServiceError

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "benchmarks.md"
START_MARKER = "<!-- results:start -->"
END_MARKER = "<!-- results:end -->"
BENCHMARKS = ("edge", "ingest", "fleet", "encoding")

#: A Raspberry Pi 4 core runs single-thread Python roughly 5-7x slower than a current
#: x86 core (docs/benchmarks.md cites the source); used for the estimate row only.
PI4_SLOWDOWN = (5.0, 7.0)
#: Goals from the issues: edge throughput on one x86 core, its RSS, its ratio to bare
#: cantools (issue 3); ingest throughput as a fraction of the raw write ceiling, and the
#: vehicles one machine ingests (issue 5).
EDGE_FPS_GOAL = 100_000
EDGE_RSS_GOAL_MIB = 80
EDGE_RATIO_GOAL = 0.3
INGEST_RATIO_GOAL = 0.8
FLEET_GOAL_VEHICLES = 10_000

QUICK_EDGE = EdgeWorkload(vehicles=2, duration_s=3.0, repeat=2)
QUICK_INGEST = IngestWorkload(batches=20, records=250, vins=2, repeat=1, workers=(1, 2))
QUICK_FLEET = FleetWorkload(
    steps=(20, 50), publishers=1, ramp_s=1.0, steady_s=3.0, latency_samples=20, source_vins=1
)
QUICK_ENCODING = EncodingWorkload(vins=1, repeat=1, spool_writes=10)


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
        for package in ("cantools", "python-can", "paho-mqtt", "msgpack"):
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


@dataclass
class Results:
    """What one run measured; None for a benchmark that did not run."""

    edge: EdgeResult | None = None
    ingest: IngestResult | None = None
    fleet: FleetResult | None = None
    encoding: EncodingResult | None = None

    def as_dict(self) -> dict[str, Any]:
        """Each benchmark's JSON-ready view (or None)."""
        return {name: None if result is None else result.as_dict() for name, result in vars(self).items()}

    def servers(self) -> str:
        """The server versions the ingest or fleet benchmark ran against."""
        source = self.ingest or self.fleet
        if source is None:
            return "none (edge and encoding benchmarks only)"
        return f"InfluxDB {source.influxdb_version}, Mosquitto {source.mosquitto_version}"


# --- formatting ---------------------------------------------------------------------------


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _goal(met: bool) -> str:
    return "met" if met else "not yet"


def _s(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f}"


def pi4_fps(result: EdgeResult) -> tuple[float, float]:
    """Estimated pipeline frames/s on one Raspberry Pi 4 core (slow end, fast end)."""
    return result.pipeline_fps / PI4_SLOWDOWN[1], result.pipeline_fps / PI4_SLOWDOWN[0]


def _best_of(repeat: int) -> str:
    return "one run" if repeat == 1 else f"best of {repeat} runs"


@dataclass
class Table:
    """Rows of cells, printed for the terminal or as Markdown.

    The first column (labels) and the ``text`` columns are aligned left, figures right.
    """

    header: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    text: Sequence[int] = ()

    def _left(self, column: int) -> bool:
        return column == 0 or column in self.text

    def console(self) -> list[str]:
        """Aligned text lines, Markdown backticks dropped."""
        cells = [[cell.replace("`", "") for cell in row] for row in [self.header, *self.rows]]
        widths = [max(len(row[column]) for row in cells) for column in range(len(self.header))]
        return [
            "  "
            + "  ".join(
                cell.ljust(width) if self._left(column) else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in cells
        ]

    def markdown(self) -> list[str]:
        """A Markdown table."""
        rule = "|" + "|".join("---" if self._left(i) else "---:" for i in range(len(self.header))) + "|"
        return [_md_row(*self.header), rule, *(_md_row(*row) for row in self.rows)]


def cpu_table(runs: Sequence[tuple[str, float, Mapping[str, float]]], cores: int) -> Table:
    """CPU seconds by party for each (label, wall seconds, :func:`cpu_used` result).

    Also what other processes used (everything on the machine minus the parties)
    and what stayed idle of ``cores`` x wall seconds.
    """
    # Column order from the last run: the later runs have the most parties.
    parties = list(dict.fromkeys(p for _, _, cpu in reversed(runs) for p in cpu if p != ALL_PROCESSES))
    table = Table(["CPU seconds", "wall s", *parties, "other processes", f"idle of {cores} cores"])
    for label, wall_s, cpu in runs:
        ours = sum(cpu.get(party, 0.0) for party in parties)
        table.rows.append(
            [
                label,
                f"{wall_s:.2f}",
                *(f"{cpu[party]:.2f}" if party in cpu else "" for party in parties),
                f"{max(cpu[ALL_PROCESSES] - ours, 0.0):.2f}",
                f"{max(wall_s * cores - cpu[ALL_PROCESSES], 0.0):.2f}",
            ]
        )
    return table


def edge_workload_text(r: EdgeResult) -> str:
    """One line describing the edge workload."""
    return f"{r.vehicles} vehicles x {r.duration_s:g} s simulated = {r.frames:,} frames, {_best_of(r.repeat)}"


def ingest_workload_text(r: IngestResult) -> str:
    """One line describing the ingest workload."""
    return (
        f"{r.batches} batches x {r.records_per_batch} records from {r.vins} VINs = "
        f"{r.points:,} points ({r.samples:,} samples, {r.payload_bytes / 1e6:.1f} MB deflated), "
        f"QoS 1, {_best_of(r.repeat)}"
    )


def ingest_tables(r: IngestResult, cores: int) -> tuple[Table, Table]:
    """Throughput by worker count against the raw ceiling; CPU seconds of each best run."""
    table = Table(["path", "points/s", "µs/point", "ratio to baseline", "goal (issue 5)"], text=[4])
    table.rows.append(
        [
            "baseline: raw InfluxDB `write_lines`, 5000 lines per request",
            _n(r.raw_pps),
            f"{r.raw_s / r.points * 1e6:.2f}",
            "1.00",
            "",
        ]
    )
    for runs in r.scale:
        ratio = r.ratio(runs)
        plural = "es" if runs.workers > 1 else ""
        table.rows.append(
            [
                f"ingest: {runs.workers} worker process{plural}, MQTT QoS 1 -> validate -> InfluxDB",
                _n(r.pps(runs)),
                f"{runs.best_s / r.points * 1e6:.2f}",
                f"{ratio:.2f}",
                f">= {INGEST_RATIO_GOAL}: {_goal(ratio >= INGEST_RATIO_GOAL)}",
            ]
        )
    cpu = [("raw writes", r.raw_s, r.raw_cpu_s)]
    cpu += [(f"{runs.workers} worker(s)", runs.best_s, runs.cpu_s) for runs in r.scale]
    return table, cpu_table(cpu, cores)


def fleet_workload_text(r: FleetResult) -> str:
    """One line describing the fleet workload."""
    return (
        f"each vehicle sends one deflated batch of {r.records} records per second, QoS 1; "
        f"{r.workers} ingest worker process(es), {r.publishers} publisher process(es); per step "
        f"{r.ramp_s:g} s ramp + {r.steady_s:g} s steady, final drain within {r.drain_s:g} s"
    )


def fleet_tables(r: FleetResult, cores: int) -> tuple[Table, Table | None, Table]:
    """The steps; the latency at the largest sustained step (if any); CPU seconds of each step."""
    steps = Table(
        [
            "vehicles",
            "target msg/s",
            "achieved msg/s",
            "target points/s",
            "ratio to raw ceiling",
            "backlog slope /s",
            "limit /s",
            "drain s",
            "verdict",
        ],
        text=[8],
    )
    steps.rows.append(
        ["baseline: raw InfluxDB `write_lines` of such points", "", "", _n(r.raw_pps), "1.00", "", "", "", ""]
    )
    for step in r.steps:
        steps.rows.append(
            [
                f"{step.vehicles:,}",
                _n(step.vehicles),
                _n(step.achieved_rate),
                _n(r.points_per_s(step)),
                f"{r.points_per_s(step) / r.raw_pps:.2f}",
                f"{step.backlog_slope:+,.1f}",
                _n(fleet_scale.MAX_SLOPE_FRACTION * step.vehicles, 1),
                _s(step.drain_s) if step.drain_s is not None else f"> {r.drain_s:g}",
                step.verdict,
            ]
        )
    sustained = r.sustained
    latency = None
    if sustained is not None:
        latency = Table(
            [
                f"latency at {sustained.vehicles:,} vehicles ({len(sustained.latency_s)} batches sampled)",
                "p50 s",
                "p99 s",
            ]
        )
        latency.rows += [
            ["newest frame -> queryable in InfluxDB", _s(sustained.latency(50)), _s(sustained.latency(99))],
            [
                f"oldest frame -> queryable (+ {sustained.batch_span_s:g} s of batching)",
                _s(sustained.latency(50, oldest=True)),
                _s(sustained.latency(99, oldest=True)),
            ],
            [
                "ingest's `frame_to_durable_seconds`: oldest frame -> written",
                _s(sustained.durable_p50_s),
                _s(sustained.durable_p99_s),
            ],
        ]
    cpu = cpu_table([(f"{step.vehicles:,} vehicles", step.window_s, step.cpu_s) for step in r.steps], cores)
    return steps, latency, cpu


def fleet_summary(r: FleetResult) -> str:
    """The largest sustained vehicle count against the goal, and whether it is a lower bound."""
    sustained = r.sustained
    count = sustained.vehicles if sustained is not None else 0
    text = (
        f"Largest fleet sustained: {count:,} vehicles "
        f"(goal {FLEET_GOAL_VEHICLES:,}: {_goal(count >= FLEET_GOAL_VEHICLES)})"
    )
    last = r.steps[-1]
    if r.limited_by_publisher:
        text += (
            f"; a lower bound: at {last.vehicles:,} the publishers reached only "
            f"{last.achieved_rate:,.0f} of {last.vehicles:,} messages/s (the load generator was the limit)"
        )
    elif not last.sustained:
        text += f"; at {last.vehicles:,} vehicles: {last.verdict}"
    return text


def encoding_workload_text(r: EncodingResult) -> str:
    """One line describing the encoding workload."""
    return (
        f"{r.batches} one-second batches ({r.records:,} records, {r.samples:,} samples) "
        f"of decoded drives, {_best_of(r.repeat)}"
    )


def encoding_table(r: EncodingResult) -> Table:
    """Size and cost per sample of each codec, as ratios to plain JSON."""
    table = Table(
        [
            "codec",
            "bytes/sample",
            "encode µs/sample",
            "decode µs/sample",
            "bytes ratio",
            "encode ratio",
            "decode ratio",
        ]
    )
    for index, codec in enumerate(r.codecs):
        size, encode, decode = r.ratios(codec)
        table.rows.append(
            [
                f"baseline: {codec.name}" if index == 0 else codec.name,
                f"{codec.bytes / r.samples:.1f}",
                f"{r.per_sample_us(codec.encode_s):.2f}",
                f"{r.per_sample_us(codec.decode_s):.2f}",
                f"{size:.2f}",
                f"{encode:.2f}",
                f"{decode:.2f}",
            ]
        )
    return table


def encoding_notes(r: EncodingResult) -> list[str]:
    """The shipped path as the services call it, and the durable spool write."""
    shipped = r.codec(encoding.SHIPPED)
    per_batch = r.spool_put_median_s
    encode_per_batch = shipped.encode_s / r.batches
    encode_us, decode_us = r.per_sample_us(r.contract_encode_s), r.per_sample_us(r.contract_decode_s)
    return [
        f"shipped path as called: `encode_telemetry(compress=True)` {encode_us:.2f} µs/sample; "
        f"`decode_telemetry` (inflate, parse, validate) {decode_us:.2f} µs/sample",
        f"durable spool write (`DiskQueue.put`, fsync) on {r.spool_filesystem}: median "
        f"{per_batch * 1e3:.2f} ms per batch ({per_batch * r.batches / r.samples * 1e6:.1f} µs/sample), "
        f"{per_batch / encode_per_batch:.1f}x the shipped encoding of a batch",
    ]


def console_table(machine: Machine, results: Results, runtime_s: float) -> str:
    """The results as plain text for the terminal."""
    out = [
        f"roadwave benchmarks, {machine.date}",
        f"  {machine.cpu}, {machine.cores} cores, {machine.platform}",
        f"  {machine.python}, " + ", ".join(f"{k} {v}" for k, v in machine.versions.items()),
    ]
    row = "  {:<46} {:>16} {:>14} {:>12}"
    if (edge := results.edge) is not None:
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
    if (ingest := results.ingest) is not None:
        throughput, cpu = ingest_tables(ingest, machine.cores)
        out += ["", f"Ingest scale-out: {ingest_workload_text(ingest)}", *throughput.console()]
        out += ["", *cpu.console()]
    if (fleet := results.fleet) is not None:
        steps, latency, cpu = fleet_tables(fleet, machine.cores)
        out += [
            "",
            f"Fleet scale: {fleet_workload_text(fleet)}",
            *steps.console(),
            f"  {fleet_summary(fleet)}",
        ]
        if latency is not None:
            out += ["", *latency.console()]
        out += ["", *cpu.console()]
    if (codecs := results.encoding) is not None:
        out += ["", f"Encoding: {encoding_workload_text(codecs)}", *encoding_table(codecs).console()]
        out += [f"  {note.replace('`', '')}" for note in encoding_notes(codecs)]
    out += ["", f"servers: {results.servers()}", f"total runtime: {runtime_s:.1f} s"]
    return "\n".join(out)


def _md_row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def edge_markdown(edge: EdgeResult) -> list[str]:
    """The edge section of the results block."""
    slow, fast = pi4_fps(edge)
    pi4_us = f"{edge.pipeline_us * PI4_SLOWDOWN[0]:.1f}-{edge.pipeline_us * PI4_SLOWDOWN[1]:.1f}"
    edge_goals = (
        f"throughput >= {EDGE_FPS_GOAL:,} frames/s: {_goal(edge.pipeline_fps >= EDGE_FPS_GOAL)}; "
        f"ratio >= {EDGE_RATIO_GOAL}: {_goal(edge.ratio >= EDGE_RATIO_GOAL)}"
    )
    rss_goal = f"< {EDGE_RSS_GOAL_MIB} MB: {_goal(edge.rss_peak_kib / 1024 < EDGE_RSS_GOAL_MIB)}"
    return [
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
    ]


def results_markdown(machine: Machine, results: Results, runtime_s: float) -> str:
    """The results block of docs/benchmarks.md (without the markers); every benchmark must have run.

    Raises:
        ValueError: a benchmark is missing from ``results``.
    """
    edge, ingest, fleet, codecs = results.edge, results.ingest, results.fleet, results.encoding
    if edge is None or ingest is None or fleet is None or codecs is None:
        raise ValueError("the docs need the results of every benchmark")
    versions = ", ".join(f"{k} {v}" for k, v in machine.versions.items())
    throughput, ingest_cpu = ingest_tables(ingest, machine.cores)
    steps, latency, fleet_cpu = fleet_tables(fleet, machine.cores)
    lines = [
        f'Measured on {machine.date} by `make bench ARGS="--write-docs"` (total runtime {runtime_s:.0f} s).',
        "",
        _md_row("machine", ""),
        "|---|---|",
        _md_row("platform", f"`{machine.platform}`"),
        _md_row("CPU", f"{machine.cpu}, {machine.cores} cores"),
        _md_row("Python", machine.python),
        _md_row("packages", versions),
        _md_row("servers", results.servers()),
        "",
        *edge_markdown(edge),
        "",
        f"**Ingest scale-out**: {ingest_workload_text(ingest)}.",
        "",
        *throughput.markdown(),
        "",
        *ingest_cpu.markdown(),
        "",
        f"**Fleet scale**: {fleet_workload_text(fleet)}.",
        "",
        *steps.markdown(),
        "",
        f"{fleet_summary(fleet)}.",
        "",
        *([*latency.markdown(), ""] if latency is not None else []),
        *fleet_cpu.markdown(),
        "",
        f"**Encoding**: {encoding_workload_text(codecs)}.",
        "",
        *encoding_table(codecs).markdown(),
        "",
        *(f"- {note}" for note in encoding_notes(codecs)),
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
    parser.add_argument("--only", choices=BENCHMARKS, help="run one benchmark")
    parser.add_argument(
        "--quick", action="store_true", help="small workloads: a smoke run, not a measurement"
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"rewrite the results block of {DOCS.relative_to(REPO_ROOT)}",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw results as JSON")
    e, i, f = EdgeWorkload(), IngestWorkload(), FleetWorkload()
    edge = parser.add_argument_group(
        f"edge workload (default {e.vehicles} vehicles x {e.duration_s:g} s, best of {e.repeat} runs)"
    )
    edge.add_argument("--vehicles", type=int, metavar="N")
    edge.add_argument("--duration", type=float, metavar="S", help="simulated seconds per vehicle")
    ingest = parser.add_argument_group(
        f"ingest workload (default {i.batches} batches x {i.records} records from {i.vins} VINs into "
        f"{','.join(map(str, i.workers))} workers, best of {i.repeat} runs)"
    )
    ingest.add_argument("--batches", type=int, metavar="N")
    ingest.add_argument("--records", type=int, metavar="N", help="records per batch")
    ingest.add_argument("--vins", type=int, metavar="N")
    ingest.add_argument("--workers", type=_counts, metavar="N,N", help="worker process counts")
    fleet = parser.add_argument_group(
        f"fleet workload (default {','.join(map(str, f.steps))} vehicles, {f.ramp_s:g} s ramp + "
        f"{f.steady_s:g} s steady, {f.workers} workers, {f.publishers} publishers)"
    )
    fleet.add_argument("--steps", type=_counts, metavar="N,N", help="vehicle counts to step through")
    fleet.add_argument("--fleet-workers", type=int, metavar="N", help="ingest worker processes")
    fleet.add_argument("--publishers", type=int, metavar="N", help="publisher processes")
    fleet.add_argument("--ramp", type=float, metavar="S", help="seconds of ramp-up per step")
    fleet.add_argument("--steady", type=float, metavar="S", help="seconds of steady load per step")
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="timed runs of each loop (edge, ingest, encoding); the best counts",
    )
    args = parser.parse_args(argv)
    if args.write_docs and (args.quick or args.only):
        parser.error("--write-docs needs a full run of every benchmark (no --quick, no --only)")
    for name in ("vehicles", "repeat"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if args.duration is not None and not args.duration > 0:
        parser.error("--duration must be > 0")
    try:
        args.workloads = workloads(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _counts(text: str) -> tuple[int, ...]:
    try:
        return parse_counts(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class Workloads:
    """The workload of each benchmark, after --quick and the command-line overrides."""

    edge: EdgeWorkload
    ingest: IngestWorkload
    fleet: FleetWorkload
    encoding: EncodingWorkload


def workloads(args: argparse.Namespace) -> Workloads:
    """Each benchmark's workload from the command line.

    Raises:
        ValueError: an option makes a workload invalid; the message says which.
    """
    return Workloads(
        edge=with_overrides(
            QUICK_EDGE if args.quick else EdgeWorkload(),
            vehicles=args.vehicles,
            duration_s=args.duration,
            repeat=args.repeat,
        ),
        ingest=with_overrides(
            QUICK_INGEST if args.quick else IngestWorkload(),
            batches=args.batches,
            records=args.records,
            vins=args.vins,
            repeat=args.repeat,
            workers=args.workers,
        ),
        fleet=with_overrides(
            QUICK_FLEET if args.quick else FleetWorkload(),
            steps=args.steps,
            workers=args.fleet_workers,
            publishers=args.publishers,
            ramp_s=args.ramp,
            steady_s=args.steady,
        ),
        encoding=with_overrides(QUICK_ENCODING if args.quick else EncodingWorkload(), repeat=args.repeat),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; print, and optionally save, the results."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    machine = Machine.describe()
    selected: Workloads = args.workloads

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text}", file=sys.stderr, flush=True)

    def wanted(name: str) -> bool:
        return args.only in (None, name)

    results = Results()
    if wanted("edge"):
        results.edge = edge_decode.run(selected.edge, progress=progress)
    try:
        if wanted("ingest"):
            results.ingest = ingest_write.run(selected.ingest, progress=progress)
        if wanted("fleet"):
            results.fleet = fleet_scale.run(selected.fleet, progress=progress)
    except ServiceError as exc:  # typically: mosquitto or influxd not installed
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 1
    if wanted("encoding"):
        results.encoding = encoding.run(selected.encoding, progress=progress)
    runtime_s = time.perf_counter() - started
    print(console_table(machine, results, runtime_s))
    if args.json is not None:
        document = {"machine": vars(machine), "runtime_s": runtime_s, **results.as_dict()}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.write_docs:
        block = results_markdown(machine, results, runtime_s)
        DOCS.write_text(replace_results(DOCS.read_text(encoding="utf-8"), block), encoding="utf-8")
        print(f"results written to {DOCS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
