"""`roadwave demo` as a user runs it: servers of its own, a summary, clean exits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def roadwave(*args: str) -> list[str]:
    return [sys.executable, "-m", "roadwave", *args]


def processes_under(folder: Path) -> list[str]:
    """Command lines of running processes that mention ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(folder) in command:
                found.append(command)
    return found


def test_demo_runs_end_to_end_and_prints_the_summary(tmp_path) -> None:
    result = subprocess.run(
        roadwave("demo", "--vehicles", "2", "--duration", "5", "--warmup", "30", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Mosquitto started on 127.0.0.1:" in out and "InfluxDB 1." in out
    assert "TLS only, client certificates of the fleet CA required" in out
    assert f"fleet PKI (CA, certificates, CRL) in {tmp_path / 'pki'}" in out
    frames = re.search(r"CAN frames\s+(\d+) simulated, (\d+) decoded", out)
    samples = re.search(r"samples\s+(\d+) published, (\d+) stored", out)
    assert frames and frames.group(1) == frames.group(2) == str(2 * 5 * 480)
    assert samples and samples.group(1) == samples.group(2) and int(samples.group(1)) > 0
    assert "rejected payloads   0" in out
    assert len(re.findall(r"^  RWDEM\w{12} ", out, re.MULTILINE)) == 2
    assert re.search(r"isolation\s+isolated: (\w{17}) received 0 of (\w{17})'s messages; 0 it published", out)
    # The broker ran the deployment's configuration; every party had its own certificate.
    broker_config = (tmp_path / "mosquitto" / "mosquitto.conf").read_text()
    for line in ("require_certificate true", "use_identity_as_username true", "allow_anonymous false"):
        assert line in broker_config
    configs = [tmp_path / "ingest.toml", *tmp_path.glob("edge-*.toml")]
    assert len(configs) == 3
    for config in configs:
        mqtt = tomllib.loads(config.read_text())["mqtt"]
        assert Path(mqtt["cert_file"]).parent.parent == tmp_path / "pki" / "issued"
        assert Path(mqtt["ca_file"]).is_file() and Path(mqtt["key_file"]).is_file()
    assert processes_under(tmp_path) == []


def test_demo_with_plain_mqtt_says_so_and_skips_the_isolation_check(tmp_path) -> None:
    result = subprocess.run(
        roadwave("demo", "--vehicles", "2", "--duration", "2", "--warmup", "0", "--plain-mqtt")
        + ["--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plain MQTT, anonymous access" in result.stdout
    assert re.search(r"isolation\s+not checked", result.stdout)
    assert "cert_file" not in (tmp_path / "ingest.toml").read_text() and not (tmp_path / "pki").exists()


def test_demo_explains_an_unreachable_database(tmp_path) -> None:
    from roadwave.services import free_port

    result = subprocess.run(
        roadwave("demo", "--influx-url", f"http://127.0.0.1:{free_port()}", "--workdir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "roadwave demo: InfluxDB at http://127.0.0.1:" in result.stderr and "unreachable" in result.stderr
    assert processes_under(tmp_path) == []


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path) -> None:
    demo = subprocess.Popen(
        roadwave("demo", "--vehicles", "3", "--duration", "60", "--warmup", "0", "--workdir", str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if "starting one edge agent per vehicle" in line:
                break
        assert any("ingest subscribed" in line for line in lines), lines
        assert len(processes_under(tmp_path)) >= 3  # mosquitto, influxd, ingest (+ agents)
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        demo.wait(60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode != 0
    deadline = time.monotonic() + 10
    while processes_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(tmp_path) == []
