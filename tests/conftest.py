"""Shared fixtures: the repository root and real Mosquitto/InfluxDB servers.

If a server's executable is missing, tests that need it are skipped, or fail when
``ROADWAVE_REQUIRE_SERVERS=1`` (as ``make test`` sets) so CI cannot pass by skipping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from cloud.influx import InfluxClient, InfluxSettings
from roadwave.contract import v2x as v2x_topics
from roadwave.services import ExecutableNotFoundError, InfluxDB1, Mosquitto

ServerT = TypeVar("ServerT", bound=Mosquitto | InfluxDB1)


class StartServer(Protocol):
    """Type of the ``start_server`` fixture."""

    def __call__(self, server: ServerT) -> ServerT: ...


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """Root of the roadwave repository."""
    return Path(__file__).resolve().parent.parent


def _start_or_skip(server: ServerT) -> ServerT:
    """Start ``server``; a missing executable skips the test, or fails it if required."""
    try:
        server.start()
        return server
    except ExecutableNotFoundError as exc:
        reason = str(exc)
    if os.environ.get("ROADWAVE_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (required because ROADWAVE_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto broker on a free loopback port for the whole session."""
    with _start_or_skip(Mosquitto(tmp_path_factory.mktemp("mosquitto"))) as server:
        yield server


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1]:
    """A real InfluxDB 1.x server on a free loopback port for the whole session."""
    with _start_or_skip(InfluxDB1(tmp_path_factory.mktemp("influxdb"))) as server:
        yield server


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start a test's own server (skip/fail rules as above); stopped after the test."""
    started: list[Mosquitto | InfluxDB1] = []

    def start(server: ServerT) -> ServerT:
        started.append(server)
        return _start_or_skip(server)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def influx_database(influxdb: InfluxDB1) -> Iterator[str]:
    """Name of a fresh, empty database on the session InfluxDB; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=name))
    client.create_database()
    try:
        yield name
    finally:
        client.query(f'DROP DATABASE "{name}"')
        client.close()


@pytest.fixture
def relay(mosquitto: Mosquitto) -> Iterator[subprocess.Popen[str]]:
    """``roadwave v2x-relay`` running against the session broker; killed if a test leaves it running."""
    repo = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", "roadwave", "v2x-relay", "--mqtt-host", mosquitto.host]
    command += ["--mqtt-port", str(mosquitto.port), "--client-id", f"relay-{uuid.uuid4().hex[:8]}"]
    process = subprocess.Popen(command, cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready == {"event": "ready", "subscription": v2x_topics.UPLOAD_SUBSCRIPTION}
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
