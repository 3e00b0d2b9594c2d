"""A misfire travels the whole maintenance path as real processes, as in the compose stack.

``roadwave sim --ecus --fault`` plays a car's CAN bus and ECUs over UDP multicast,
``roadwave edge`` polls its diagnostics and publishes them, ``roadwave cloud alerts`` raises
the DTC alert, and ``roadwave partner watch`` prints it as the partner receives it: first
pending, then confirmed with the lamp on after the next drive cycle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cloud.influx import InfluxClient, InfluxSettings
from roadwave.contract.alerts import Alert
from roadwave.services import InfluxDB1, Mosquitto
from roadwave.sim.fleet import make_vin

REPO = Path(__file__).resolve().parents[1]
SAFETY_S = 120  # only reached when something hangs


def roadwave(*args: str, **options: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "roadwave", *args], cwd=REPO, text=True, **options)  # type: ignore[call-overload]


@pytest.mark.integration
def test_a_misfire_reaches_the_partner_pending_then_confirmed(
    mosquitto: Mosquitto, influxdb: InfluxDB1, influx_database: str, tmp_path: Path
) -> None:
    vin = make_vin(2, 0)  # what `roadwave sim --seed 2` calls its first vehicle
    fleet, partner = f"f{uuid.uuid4().hex[:8]}", f"garage-{uuid.uuid4().hex[:8]}"
    group = f"239.74.{uuid.uuid4().int % 200 + 20}.{uuid.uuid4().int % 200 + 20}"
    mqtt = f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
    (tmp_path / "registry.toml").write_text(
        f'[[vehicle]]\nvin = "{vin}"\nfleet = "{fleet}"\n\n'
        f'[[partner]]\nid = "{partner}"\nfleets = ["{fleet}"]\n'
    )
    (tmp_path / "alerts.toml").write_text(
        f'{mqtt}client_id = "alerts-{fleet}"\n\n'
        f'[influx]\napi = "v1"\nurl = "{influxdb.url}"\ndatabase = "{influx_database}"\n\n'
        '[alerting]\nregistry = "registry.toml"\n'
    )
    (tmp_path / "partner.toml").write_text(mqtt)
    (tmp_path / "edge.toml").write_text(
        f'[vehicle]\nvin = "{vin}"\nfleet = "{fleet}"\n\n{mqtt}\n'
        f'[[bus]]\nname = "can0"\ndbc = ["{REPO / "dbc" / "roadwave_car.dbc"}"]\n'
        f'interface = "udp_multicast"\nchannel = "{group}"\n\n'
        '[diagnostics]\nbus = "can0"\ninterval_s = 2.0\n\n[uplink]\nspool = "spool.sqlite"\n'
    )
    processes = []
    try:
        alerts = roadwave(
            "cloud", "alerts", "--config", str(tmp_path / "alerts.toml"), stdout=subprocess.PIPE
        )
        processes.append(alerts)
        assert alerts.stdout is not None and json.loads(alerts.stdout.readline())["event"] == "ready"
        watcher = roadwave(
            "partner", "watch", "--partner", partner, "--config", str(tmp_path / "partner.toml"),
            "--count", "2", "--timeout", str(SAFETY_S), stdout=subprocess.PIPE,
        )  # fmt: skip
        processes.append(watcher)
        processes.append(roadwave("edge", "--config", str(tmp_path / "edge.toml"), stdout=subprocess.DEVNULL))
        processes.append(
            roadwave(
                "sim",
                "--vehicles",
                "1",
                "--seed",
                "2",
                "--fleet",
                fleet,
                "--interface",
                "udp_multicast",
                "--channel",
                group,
                "--realtime",
                "1",
                "--duration",
                "90",
                "--ecus",
                "--fault",
                "0:misfire=2",
                "--drive-cycle",
                "5",
            )  # fmt: skip
        )
        output, _ = watcher.communicate(timeout=SAFETY_S + 10)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)

    received = [Alert.from_dict(json.loads(line)) for line in output.splitlines() if line.startswith("{")]
    assert [(a.type, a.vin, a.state) for a in received] == [("dtc_P0302", vin, "active")] * 2
    first, second = received
    assert first.id == second.id and second.count == 2
    assert (first.severity, first.value["pending"], first.value["confirmed"]) == (1, 1.0, 0.0)
    assert (second.severity, second.value["confirmed"], second.value["mil_on"]) == (2, 1.0, 1.0)
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    try:
        rows = client.query(f'SELECT * FROM "alerts" WHERE "fleet" = \'{fleet}\'')
    finally:
        client.close()
    assert rows, "the alert's transitions are stored"
