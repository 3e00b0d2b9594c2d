"""Smoke tests of ``python -m benchmarks`` and unit tests of its helpers.

No timing thresholds: a slow machine must not fail this. The workloads are tiny
(``--quick``), the assertions are about consistency (counts add up, ratios match
their parts, every figure is positive), and the timeouts only catch a hang.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

# benchmarks/ is not an installed package: make it importable however pytest is started.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.__main__ import (  # noqa: E402
    END_MARKER,
    QUICK_FLEET,
    QUICK_INGEST,
    START_MARKER,
    Table,
    cpu_table,
    parse_args,
    replace_results,
)
from benchmarks.encoding import CODECS, SHIPPED, EncodingWorkload  # noqa: E402
from benchmarks.fleet_scale import (  # noqa: E402
    FleetWorkload,
    Schedule,
    backlog_slope,
    histogram_quantile,
    percentile,
    vehicle_vin,
)
from benchmarks.ingest_write import ALL_PROCESSES, IngestWorkload, parse_counts  # noqa: E402
from roadwave.contract import VIN_PATTERN  # noqa: E402

NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _run_quick(repo_root: Path, tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """Run ``python -m benchmarks --quick ARGS --json FILE``; its stdout and JSON document."""
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *args, "--json", str(results)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(results.read_text())


@pytest.fixture
def servers_installed(mosquitto: object, influxdb: object) -> None:
    """The ingest and fleet benchmarks start their own servers: skip (or fail) as the fixtures do."""


@pytest.mark.timeout(120)
def test_quick_edge_run_reports_positive_figures(repo_root: Path, tmp_path: Path) -> None:
    out, document = _run_quick(
        repo_root, tmp_path, "--only", "edge", "--vehicles", "1", "--duration", "2", "--repeat", "1"
    )
    rows = {
        "baseline: bare cantools decode_message": 3,
        "edge pipeline: decode+VSS+batch+encode": 3,
    }
    for label, count in rows.items():
        match = re.search(rf"^\s*{re.escape(label)}\s+" + r"\s+".join([NUMBER] * count) + r"\s*$", out, re.M)
        assert match, f"row {label!r} missing or malformed in:\n{out}"
        assert all(_number(value) > 0 for value in match.groups()), match.group(0)
    assert re.search(r"Raspberry Pi 4 core \(estimate", out)
    for pattern in (
        rf"samples emitted: {NUMBER} \({NUMBER} records in {NUMBER} batches\)",
        rf"payload bytes per sample: {NUMBER}",
        rf"pipeline peak RSS \(fresh process\): {NUMBER} MiB",
    ):
        match = re.search(pattern, out)
        assert match, f"{pattern!r} not found in:\n{out}"
        assert all(_number(value) > 0 for value in match.groups()), match.group(0)
    assert "Ingest scale-out" not in out and "Fleet scale" not in out  # --only edge
    assert document["ingest"] is None and document["fleet"] is None and document["encoding"] is None

    edge = document["edge"]
    assert edge["frames"] == edge["child_frames"] == edge["totals"]["frames"] > 0
    for key in ("bare_fps", "pipeline_fps", "ratio", "bytes_per_sample", "rss_peak_kib"):
        assert edge[key] > 0, key


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("servers_installed")
def test_quick_ingest_scale_out_is_consistent(repo_root: Path, tmp_path: Path) -> None:
    out, document = _run_quick(repo_root, tmp_path, "--only", "ingest")
    ingest = document["ingest"]
    assert ingest["points"] == QUICK_INGEST.batches * QUICK_INGEST.records
    assert ingest["payload_bytes"] > 0 and ingest["samples"] >= ingest["points"]
    assert ingest["raw_pps"] == pytest.approx(ingest["points"] / min(ingest["raw_runs_s"]))
    assert [runs["workers"] for runs in ingest["scale"]] == list(QUICK_INGEST.workers)
    for runs in ingest["scale"]:
        assert len(runs["runs_s"]) == len(runs["publish_runs_s"]) == QUICK_INGEST.repeat
        assert runs["best_s"] == min(runs["runs_s"]) > 0
        assert runs["pps"] == pytest.approx(ingest["points"] / runs["best_s"])
        assert runs["ratio"] == pytest.approx(ingest["raw_s"] / runs["best_s"])
        cpu = runs["cpu_s"]
        assert set(cpu) == {ALL_PROCESSES, "influxd", "mosquitto", "ingest workers", "publisher", "benchmark"}
        assert all(seconds >= 0 for seconds in cpu.values()), cpu
        row = rf"ingest: {runs['workers']} worker process(es)?, MQTT QoS 1 -> validate -> InfluxDB\s+{NUMBER}"
        assert re.search(row, out), f"no row for {runs['workers']} worker(s) in:\n{out}"
    assert "baseline: raw InfluxDB write_lines" in out


@pytest.mark.timeout(180)
@pytest.mark.usefixtures("servers_installed")
def test_quick_fleet_steps_are_consistent(repo_root: Path, tmp_path: Path) -> None:
    out, document = _run_quick(repo_root, tmp_path, "--only", "fleet")
    fleet = document["fleet"]
    steps = fleet["steps"]
    assert fleet["raw_pps"] > 0
    assert [step["vehicles"] for step in steps] == list(QUICK_FLEET.steps[: len(steps)])
    # Steps stop after the first that is not sustained.
    assert all(step["sustained"] for step in steps[:-1])
    assert len(steps) == len(QUICK_FLEET.steps) or not steps[-1]["sustained"]
    sustained = [step["vehicles"] for step in steps if step["sustained"]]
    assert fleet["sustained_vehicles"] == (sustained[-1] if sustained else 0)
    for step in steps:
        assert step["published"] > 0 and step["achieved_rate"] > 0
        if step["drain_s"] is not None:
            assert step["acked"] == step["published"]
        assert len(step["backlog"]) >= 2
        assert step["sustained"] == (step["no_backlog_growth"] and not step["publisher_limited"])
        assert all(latency > 0 for latency in step["latency_s"]), step["latency_s"]
        assert step["latency_s"] or step["latency_missing"]  # every sampled batch is accounted for
        assert step["cpu_s"][ALL_PROCESSES] >= 0 and step["window_s"] > 0
    assert re.search(r"Largest fleet sustained: [0-9,]+ vehicles \(goal 10,000", out), out


@pytest.mark.timeout(120)
def test_quick_encoding_compares_codecs(repo_root: Path, tmp_path: Path) -> None:
    out, document = _run_quick(repo_root, tmp_path, "--only", "encoding")
    result = document["encoding"]
    codecs = {codec["name"]: codec for codec in result["codecs"]}
    assert list(codecs) == [codec.name for codec in CODECS]
    assert codecs["JSON"]["bytes_ratio"] == codecs["JSON"]["encode_ratio"] == 1.0
    assert codecs[SHIPPED]["bytes"] < codecs["JSON"]["bytes"]  # deflate shrinks repetitive JSON
    for codec in codecs.values():
        assert codec["bytes_per_sample"] == pytest.approx(codec["bytes"] / result["samples"])
        assert codec["encode_us_per_sample"] > 0 and codec["decode_us_per_sample"] > 0
    assert len(result["spool_put_s"]) == EncodingWorkload(spool_writes=10).spool_writes
    assert all(seconds > 0 for seconds in result["spool_put_s"])
    assert "baseline: JSON" in out and "durable spool write (DiskQueue.put, fsync)" in out


def test_results_block_is_replaced_and_prose_kept() -> None:
    document = f"# Benchmarks\n\nprose\n\n{START_MARKER}\nold figures\n{END_MARKER}\n\nafter\n"
    updated = replace_results(document, "| new | figures |\n")
    assert updated == f"# Benchmarks\n\nprose\n\n{START_MARKER}\n| new | figures |\n{END_MARKER}\n\nafter\n"
    assert replace_results(updated, "again").count(START_MARKER) == 1
    with pytest.raises(ValueError):
        replace_results("no markers here", "x")


# --- helpers -------------------------------------------------------------------------------


def test_schedule_ramps_up_then_holds_the_rate() -> None:
    schedule = Schedule(rate=100, ramp_s=2.0, steady_s=3.0)
    assert schedule.total == 100 + 300  # half the rate over the ramp, then the full rate
    assert [schedule.due(t) for t in (0.0, 1.0, 2.0, 3.0, 5.0, 60.0)] == [0, 25, 100, 200, 400, 400]
    for count in range(1, schedule.total + 1):
        at = schedule.time_of(count)
        assert schedule.due(at + 1e-9) >= count > schedule.due(at - 1e-6), count
    assert Schedule(rate=10, ramp_s=0.0, steady_s=2.0).due(0.55) == 5


def test_percentiles_and_histogram_quantiles() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert percentile([4.0], 99) == 4.0
    # 10 observations in (0.5, 1.0]: the median interpolates to the middle of that bucket.
    assert histogram_quantile({0.5: 0, 1.0: 10, math.inf: 10}, 0.5) == pytest.approx(0.75)
    assert histogram_quantile({0.5: 4, 1.0: 4, math.inf: 8}, 0.99) == 1.0  # in +Inf: a lower bound
    assert math.isnan(histogram_quantile({1.0: 0, math.inf: 0}, 0.5))


def test_backlog_slope_is_the_least_squares_slope() -> None:
    assert backlog_slope([(0.0, 10), (1.0, 12), (2.0, 14)]) == pytest.approx(2.0)
    assert backlog_slope([(0.5, 100), (1.7, 0), (2.2, 100), (3.9, 0)]) < 0
    with pytest.raises(RuntimeError, match="only 1 backlog sample"):
        backlog_slope([(1.0, 5)])


def test_simulated_vins_follow_the_contract() -> None:
    assert all(VIN_PATTERN.fullmatch(vehicle_vin(index)) for index in (0, 9_999, 10**9))
    assert len({vehicle_vin(index) for index in range(1000)}) == 1000


def test_cpu_table_splits_the_machine_into_parties_others_and_idle() -> None:
    runs = [
        ("raw", 1.0, {ALL_PROCESSES: 1.5, "influxd": 0.5}),
        ("ingest", 2.0, {ALL_PROCESSES: 3.0, "influxd": 0.75, "workers": 1.25}),
    ]
    table = cpu_table(runs, cores=2)
    assert table.header[2:4] == ["influxd", "workers"]
    assert table.rows[0][1:] == ["1.00", "0.50", "", "1.00", "0.50"]
    assert table.rows[1][1:] == ["2.00", "0.75", "1.25", "1.00", "1.00"]


def test_table_renders_console_and_markdown() -> None:
    rows: list[Sequence[str]] = [["baseline: `write_lines`", "1,000", ""], ["ingest", "500", "not yet"]]
    table = Table(["path", "points/s", "goal"], rows, text=[2])
    assert table.markdown() == [
        "| path | points/s | goal |",
        "|---|---:|---|",
        "| baseline: `write_lines` | 1,000 |  |",
        "| ingest | 500 | not yet |",
    ]
    assert table.console() == [
        "  path" + " " * 19 + "points/s  goal",
        "  baseline: write_lines" + " " * 5 + "1,000",
        "  ingest" + " " * 22 + "500  not yet",
    ]


def test_workloads_and_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_counts("1,2,4") == (1, 2, 4)
    for text in ("", "1,,2", "0", "two"):
        with pytest.raises(ValueError, match="comma-separated positive integers"):
            parse_counts(text)
    with pytest.raises(ValueError, match="steps must be increasing"):
        FleetWorkload(steps=(1000, 500))
    with pytest.raises(ValueError, match="publishers cannot share"):
        FleetWorkload(steps=(1, 5), publishers=2)
    with pytest.raises(ValueError, match="workers must be counts"):
        IngestWorkload(workers=())
    with pytest.raises(ValueError, match="spool_writes must be at least 1"):
        EncodingWorkload(spool_writes=0)
    with pytest.raises(SystemExit) as exited:
        parse_args(["--only", "fleet", "--steady", "1"])
    assert exited.value.code == 2
    assert "steady_s >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--workers", "1,x"])
    assert "comma-separated positive integers" in capsys.readouterr().err
    assert parse_args(["--quick", "--steps", "10,30"]).workloads.fleet.steps == (10, 30)
