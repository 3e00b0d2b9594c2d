"""Fault tests: a multi-vehicle drive through real processes while parts of the system fail.

Each scenario runs four edge agents replaying their simulated CAN logs at recorded
speed into two ingest workers (a shared subscription), breaks something mid-stream,
and then compares InfluxDB with what uninterrupted agents publish: every sample must
be there exactly once, with its value and quality, and nothing else. The scenarios
have their own Mosquitto and InfluxDB, because they stop and restart them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from samples import Samples, replayed_samples, stored_samples

from roadwave.pipeline import DEFAULT_DBC, Endpoints, Pipeline
from roadwave.services import InfluxDB1, Mosquitto

pytestmark = pytest.mark.integration

VEHICLES = 4
DURATION_S = 10.0
START = 1_763_800_000.0
#: When the fault strikes, and how long the broken part stays away, in seconds of the drive.
FAULT_AT_S = 3.0
OUTAGE_S = 3.0


@dataclass
class Servers:
    mosquitto: Mosquitto
    influxdb: InfluxDB1


@dataclass
class Outcome:
    expected: Samples
    stored: Samples
    ingest: dict[str, Any]
    agents: list[dict[str, Any]]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    from conftest import _start_or_skip

    broker = _start_or_skip(Mosquitto(tmp_path_factory.mktemp("fault-mosquitto")))
    try:
        influx = _start_or_skip(InfluxDB1(tmp_path_factory.mktemp("fault-influxdb")))
        try:
            yield Servers(broker, influx)
        finally:
            influx.stop()
    finally:
        broker.stop()


Logs = dict[str, Path]
Fault = Callable[[Pipeline, Servers, Logs], None]


def drive_with(
    fault: Fault, servers: Servers, workdir: Path, name: str, seed: int, partitioned: bool = False
) -> Outcome:
    """Run the drive, call ``fault`` at FAULT_AT_S, and collect what InfluxDB ends up with."""
    endpoints = Endpoints(
        servers.mosquitto.host, servers.mosquitto.port, servers.influxdb.url, f"fault_{name}"
    )
    with Pipeline(workdir, endpoints, fleet=name) as pipeline:
        sim = pipeline.simulate(VEHICLES, DURATION_S, seed=seed, start_time=START)
        expected: Samples = {}
        for vin, log in sim.logs.items():
            expected.update(replayed_samples(vin, log, DEFAULT_DBC))
        pipeline.start_ingest(workers=2, partitioned=partitioned)
        for vin, log in sim.logs.items():
            pipeline.start_agent(vin, log, realtime=True)
        time.sleep(FAULT_AT_S)
        fault(pipeline, servers, sim.logs)
        agents = pipeline.wait_agents(timeout_s=120)
        pipeline.wait_stored(len(expected), timeout_s=90)
        ingest = pipeline.stop_ingest()
        return Outcome(expected, stored_samples(pipeline.influx, name), ingest, agents)


def assert_nothing_lost_or_doubled(outcome: Outcome) -> None:
    missing = outcome.expected.keys() - outcome.stored.keys()
    extra = outcome.stored.keys() - outcome.expected.keys()
    assert not missing, (
        f"{len(missing)} sample(s) missing, from {min(missing)} to {max(missing)}; "
        f"ingest {outcome.ingest}; agents {[agent['uplink'] for agent in outcome.agents]}"
    )
    assert not extra, f"{len(extra)} sample(s) not published by any agent, e.g. {sorted(extra)[:3]}"
    wrong = [key for key, value in outcome.expected.items() if outcome.stored[key] != value]
    assert not wrong, f"{len(wrong)} sample(s) with another value or quality, e.g. {wrong[:3]}"
    assert outcome.ingest["messages_rejected"] == 0
    # The figures the issue asks for, in the test log (-rA or on failure).
    print(
        f"samples expected {len(outcome.expected)}, stored {len(outcome.stored)}; ingest {outcome.ingest}; "
        f"agents {[agent['uplink'] for agent in outcome.agents]}"
    )


def restart_broker(_pipeline: Pipeline, servers: Servers, _logs: dict[str, Path]) -> None:
    servers.mosquitto.stop()
    time.sleep(OUTAGE_S)
    servers.mosquitto.start()


def test_mosquitto_restarted_mid_stream(servers: Servers, tmp_path: Path) -> None:
    # Partitioned workers: their plain persistent subscriptions survive the restart.
    outcome = drive_with(restart_broker, servers, tmp_path, "broker", seed=31, partitioned=True)
    assert_nothing_lost_or_doubled(outcome)
    assert outcome.ingest["messages_skipped"] > 0, "the workers did not split the fleet"


@pytest.mark.xfail(
    strict=True,
    reason="Mosquitto 2.0 does not restore shared subscriptions from its persistence file, so what "
    "vehicles publish between its restart and the workers' return has no subscriber (docs/scaling.md)",
)
def test_mosquitto_restarted_mid_stream_with_shared_subscriptions(servers: Servers, tmp_path: Path) -> None:
    def restart_while_the_workers_are_down(pipeline: Pipeline, servers: Servers, logs: Logs) -> None:
        # The workers stay away until the vehicles have reconnected and published, so the
        # outcome does not depend on who comes back first: only a subscription the broker
        # restored from its persistence file could keep that traffic.
        workers = [f"{pipeline.group}-{index}" for index in range(2)]
        for name in workers:
            pipeline.kill_ingest_worker(name)
        restart_broker(pipeline, servers, logs)
        time.sleep(OUTAGE_S)
        for name in workers:
            pipeline.start_ingest_worker(name)

    outcome = drive_with(restart_while_the_workers_are_down, servers, tmp_path, "broker_shared", seed=35)
    assert_nothing_lost_or_doubled(outcome)


def test_influxdb_stopped_for_a_while(servers: Servers, tmp_path: Path) -> None:
    def outage(_pipeline: Pipeline, servers: Servers, _logs: dict[str, Path]) -> None:
        servers.influxdb.stop()
        time.sleep(OUTAGE_S)
        servers.influxdb.start()

    outcome = drive_with(outage, servers, tmp_path, "influx", seed=32)
    assert_nothing_lost_or_doubled(outcome)
    assert outcome.ingest["messages_buffered"] > 0, "the outage never reached the ingest's buffer"


def test_edge_agent_killed_and_restarted(servers: Servers, tmp_path: Path) -> None:
    def kill_agent(pipeline: Pipeline, _servers: Servers, logs: dict[str, Path]) -> None:
        vin = next(iter(logs))
        pipeline.kill_agent(vin)
        time.sleep(OUTAGE_S)
        pipeline.start_agent(vin, logs[vin])  # resumes after what its spool holds, at full speed

    outcome = drive_with(kill_agent, servers, tmp_path, "agent", seed=33)
    assert_nothing_lost_or_doubled(outcome)


def test_one_ingest_worker_killed_while_the_other_runs(servers: Servers, tmp_path: Path) -> None:
    def kill_worker(pipeline: Pipeline, _servers: Servers, _logs: dict[str, Path]) -> None:
        name = f"{pipeline.group}-1"
        pipeline.kill_ingest_worker(name)
        time.sleep(OUTAGE_S)
        pipeline.start_ingest_worker(name)  # collects its unacknowledged share

    outcome = drive_with(kill_worker, servers, tmp_path, "worker", seed=34)
    assert_nothing_lost_or_doubled(outcome)
