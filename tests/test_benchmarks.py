"""Smoke test of ``python -m benchmarks``: it runs and reports sane figures.

No timing thresholds: a slow machine must not fail this. The workload is tiny
(one vehicle, two simulated seconds) so the run takes a few seconds; the timeout
only catches a hang.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: make it importable however pytest is started.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.__main__ import END_MARKER, START_MARKER, replace_results  # noqa: E402

NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.timeout(120)
def test_quick_edge_run_reports_positive_figures(repo_root: Path, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "benchmarks", "--quick", "--only", "edge",
            "--vehicles", "1", "--duration", "2", "--repeat", "1", "--json", str(results),
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout

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
    assert "Ingest write" not in out  # --only edge

    edge = json.loads(results.read_text())["edge"]
    assert edge["frames"] == edge["child_frames"] == edge["totals"]["frames"] > 0
    for key in ("bare_fps", "pipeline_fps", "ratio", "bytes_per_sample", "rss_peak_kib"):
        assert edge[key] > 0, key


def test_results_block_is_replaced_and_prose_kept() -> None:
    document = f"# Benchmarks\n\nprose\n\n{START_MARKER}\nold figures\n{END_MARKER}\n\nafter\n"
    updated = replace_results(document, "| new | figures |\n")
    assert updated == f"# Benchmarks\n\nprose\n\n{START_MARKER}\n| new | figures |\n{END_MARKER}\n\nafter\n"
    assert replace_results(updated, "again").count(START_MARKER) == 1
    with pytest.raises(ValueError):
        replace_results("no markers here", "x")
