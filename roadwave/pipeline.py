"""The whole path as real processes: simulator -> edge agents -> Mosquitto -> ingest -> InfluxDB.

:class:`Pipeline` is what ``roadwave demo`` runs and what the end-to-end tests
drive. It writes every configuration file a deployment would have into its
working folder, runs ``roadwave edge`` (one process per vehicle, replaying the
vehicle's simulated CAN log) and ``roadwave cloud ingest`` as child processes,
and stops all of them when closed, also on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from cloud.influx import InfluxClient, InfluxSettings
from cloud.schema import FLAGGED_MEASUREMENT, TELEMETRY_MEASUREMENT
from roadwave.sim.fleet import DEFAULT_DBC, CandumpLogSink, FleetSimulator, SimConfig, TruthJsonlSink, run


class PipelineError(RuntimeError):
    """A stage of the pipeline failed; the message says which and why."""


@dataclass(frozen=True)
class Endpoints:
    """Where the broker and the database are."""

    mqtt_host: str
    mqtt_port: int
    influx_url: str
    database: str = "roadwave"


@dataclass(frozen=True)
class SimulationResult:
    """What the simulator produced: one candump log per VIN, and the ground truth."""

    logs: dict[str, Path]
    truth: Path
    frames: int


def _quote(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string


def ingest_config_text(endpoints: Endpoints, share_group: str) -> str:
    """An ``ingest.toml`` for workers sharing ``share_group``; buffers and dead letters beside it."""
    return (
        "[mqtt]\n"
        f"host = {_quote(endpoints.mqtt_host)}\n"
        f"port = {endpoints.mqtt_port}\n\n"
        "[influx]\n"
        'api = "v1"\n'
        f"url = {_quote(endpoints.influx_url)}\n"
        f"database = {_quote(endpoints.database)}\n\n"
        "[ingest]\n"
        f"share_group = {_quote(share_group)}\n"
        'dead_letter_dir = "dead-letters"\n'
        'buffer_dir = "ingest-buffer"\n'
    )


class Pipeline:
    """Runs the simulated fleet's traffic through the real services (a context manager)."""

    def __init__(
        self,
        workdir: Path,
        endpoints: Endpoints,
        *,
        fleet: str = "demo",
        dbc: Path = DEFAULT_DBC,
    ) -> None:
        self.workdir = workdir
        self.endpoints = endpoints
        self.fleet = fleet
        self.dbc = dbc
        #: Names the ingest workers' shared subscription and sessions, unique to this pipeline.
        self.group = f"ingest-{uuid.uuid4().hex[:8]}"
        self._ingests: dict[str, subprocess.Popen[str]] = {}
        self._worker_args: dict[str, list[str]] = {}
        self._agents: dict[str, subprocess.Popen[str]] = {}
        self.influx = InfluxClient(InfluxSettings(url=endpoints.influx_url, database=endpoints.database))
        workdir.mkdir(parents=True, exist_ok=True)

    # --- stages -------------------------------------------------------------------

    def simulate(
        self,
        vehicles: int,
        duration_s: float,
        seed: int,
        *,
        warmup_s: float = 0.0,
        start_time: float | None = None,
    ) -> SimulationResult:
        """Simulate the fleet once, writing each vehicle's CAN log and the ground truth.

        New logs start a new drive: the agents' spools (and the resume points of
        earlier replays in them) are removed.
        """
        config = SimConfig(
            dbc=self.dbc,
            vehicles=vehicles,
            duration_s=duration_s,
            seed=seed,
            fleet=self.fleet,
            warmup_s=warmup_s,
        )
        if start_time is not None:
            config = dataclasses.replace(config, start_time=start_time)
        sim = FleetSimulator(config)
        shutil.rmtree(self.workdir / "spool", ignore_errors=True)
        truth = self.workdir / "ground-truth.jsonl"
        with CandumpLogSink(self.workdir / "logs", sim.vins) as logs, TruthJsonlSink(truth) as truths:
            stats = run(sim, [logs, truths])
        return SimulationResult(logs=dict(logs.paths), truth=truth, frames=stats.frames)

    def start_ingest(self, workers: int = 1, partitioned: bool = False, timeout_s: float = 30.0) -> list[str]:
        """Write ``ingest.toml`` and start ``workers`` ingest processes sharing the load.

        The workers share a subscription, or split the fleet by VIN if ``partitioned``.
        Returns the worker names; each worker is subscribed when this returns.
        """
        config = self.workdir / "ingest.toml"
        config.write_text(ingest_config_text(self.endpoints, self.group))
        self._worker_args = {}
        for index in range(workers):
            name = f"{self.group}-{index}"
            self._worker_args[name] = ["--partition", f"{index}/{workers}"] if partitioned else []
            self.start_ingest_worker(name, timeout_s)
        return list(self._worker_args)

    def start_ingest_worker(self, name: str, timeout_s: float = 30.0) -> None:
        """Start (or restart) one ingest worker and wait until it is subscribed."""
        config = self.workdir / "ingest.toml"
        args = ["cloud", "ingest", "--config", str(config), "--worker", name, *self._worker_args[name]]
        process = self._spawn(args, f"ingest-{name}")
        self._ingests[name] = process
        line = _read_json_line(process.stdout, timeout_s)
        if not line or line.get("event") != "ready":
            raise PipelineError(
                f"ingest worker {name} did not start; see {self.workdir / f'ingest-{name}.err'}"
            )

    def kill_ingest_worker(self, name: str) -> None:
        """SIGKILL one ingest worker (no chance to finish anything)."""
        _kill(self._ingests.pop(name))

    def edge_config(self, vin: str, log: Path, realtime: bool = False) -> Path:
        """Write the edge agent configuration of one vehicle replaying ``log``."""
        path = self.workdir / f"edge-{vin}.toml"
        path.write_text(
            "[vehicle]\n"
            f"vin = {_quote(vin)}\n"
            f"fleet = {_quote(self.fleet)}\n\n"
            "[mqtt]\n"
            f"host = {_quote(self.endpoints.mqtt_host)}\n"
            f"port = {self.endpoints.mqtt_port}\n"
            "reconnect_min_s = 0.2\n"
            "reconnect_max_s = 2.0\n\n"
            "[batch]\n"
            "max_records = 1000\n"
            "max_age_s = 1.0\n\n"
            "[uplink]\n"
            "max_messages_per_s = 200.0\n\n"
            "[[bus]]\n"
            'name = "can0"\n'
            f"dbc = [{_quote(str(self.dbc))}]\n"
            f"log = {_quote(str(log))}\n"
            f"realtime = {'true' if realtime else 'false'}\n"
        )
        return path

    def start_agent(self, vin: str, log: Path, realtime: bool = False) -> None:
        """Start (or restart) the edge agent of one vehicle replaying ``log``."""
        config = self.edge_config(vin, log, realtime)
        self._agents[vin] = self._spawn(["edge", "--config", str(config)], f"edge-{vin}")

    def kill_agent(self, vin: str) -> None:
        """SIGKILL one edge agent."""
        _kill(self._agents.pop(vin))

    def wait_agents(self, timeout_s: float = 300.0) -> list[dict[str, Any]]:
        """Wait for every running agent to finish its log; return their reports."""
        reports = []
        deadline = time.monotonic() + timeout_s
        for vin, agent in list(self._agents.items()):
            try:
                out, _ = agent.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                raise PipelineError(f"edge agent {vin} did not finish in {timeout_s:.0f} s") from None
            if agent.returncode != 0 or not out.strip():
                raise PipelineError(
                    f"edge agent {vin} failed (exit {agent.returncode}); "
                    f"see {self.workdir / f'edge-{vin}.err'}"
                )
            reports.append(json.loads(out.strip().splitlines()[-1]))
            del self._agents[vin]
        return reports

    def run_agents(self, logs: dict[str, Path], timeout_s: float = 300.0) -> list[dict[str, Any]]:
        """Run one edge agent per vehicle to the end of its log; return their reports."""
        for vin, log in logs.items():
            self.start_agent(vin, log)
        return self.wait_agents(timeout_s)

    def stored_samples(self) -> int:
        """Number of field values stored, good and flagged."""
        measurements = f'"{TELEMETRY_MEASUREMENT}", "{FLAGGED_MEASUREMENT}"'
        rows = self.influx.query(f"SELECT COUNT(*) FROM {measurements}")
        return sum(v for row in rows for k, v in row.items() if k.startswith("count_") and v)

    def wait_stored(self, expected: int, timeout_s: float = 120.0) -> int:
        """Wait until InfluxDB holds ``expected`` samples; return what it holds."""
        deadline = time.monotonic() + timeout_s
        stored = self.stored_samples()
        while stored < expected and time.monotonic() < deadline:
            time.sleep(0.25)
            stored = self.stored_samples()
        return stored

    def stop_ingest(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop every ingest worker (SIGTERM) and return their counters, summed."""
        if not self._ingests:
            raise PipelineError("the ingest is not running")
        workers, self._ingests = self._ingests, {}
        for process in workers.values():
            process.terminate()
        totals: dict[str, Any] = {}
        for name, process in workers.items():
            try:
                out, _ = process.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                raise PipelineError(f"ingest worker {name} did not stop in time") from None
            lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
            stopped = [line for line in lines if line.get("event") == "stopped"]
            if not stopped:
                log = self.workdir / f"ingest-{name}.err"
                raise PipelineError(f"ingest worker {name} ended without its report; see {log}")
            for key, value in stopped[-1]["stats"].items():
                totals[key] = totals.get(key, 0) + value
        return totals

    # --- processes ----------------------------------------------------------------

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[str]:
        stderr = (self.workdir / f"{name}.err").open("a")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            [sys.executable, "-m", "roadwave", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.workdir,
            env=env,
        )

    def close(self) -> None:
        """Stop every child process still running."""
        for process in [*self._agents.values(), *self._ingests.values()]:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    _kill(process)
        self._agents, self._ingests = {}, {}
        self.influx.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _kill(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _read_json_line(stream: IO[str] | None, timeout_s: float) -> dict[str, Any] | None:
    """Read the next JSON line of a child's stdout, or None at its end or after ``timeout_s``."""
    if stream is None:
        return None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                break
            line = stream.readline()
            if not line:
                return None
            if line.startswith("{"):
                return json.loads(line)
    return None
