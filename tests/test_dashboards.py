"""The Grafana dashboards: committed files up to date, structurally valid, every query answers.

The queries run against the real InfluxDB after a simulated drive through the whole
pipeline (simulator -> edge agents -> Mosquitto -> ingest). The ring-road drive has no
harsh events, diagnostic reports or maintenance alerts, so the test adds event points,
diagnostic reports and alert transitions the way the ingest (``cloud.schema.event_lines``,
``diagnostics_lines``) and the alert store (``cloud.maintenance.store.alert_lines``) write
them. Grafana's macros and variables are substituted as Grafana does before it sends a query.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud.influx import InfluxClient, InfluxSettings
from cloud.maintenance import AlertBook, DtcStatus, Finding, MaintenanceMonitor, Normal
from cloud.maintenance.store import alert_lines
from cloud.schema import diagnostics_lines, event_lines
from roadwave.contract.diagnostics import DiagnosticsReport, PidReading, ReportedDtc
from roadwave.contract.events import ENDED, Event
from roadwave.pipeline import Endpoints, Pipeline

REPO = Path(__file__).resolve().parents[1]
# dashboards/ is not an installed package: make it importable however pytest is started.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dashboards import generate  # noqa: E402

JSON_DIR = REPO / "dashboards" / "json"
PROVISIONING = REPO / "dashboards" / "provisioning"
DASHBOARDS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(JSON_DIR.glob("*.json"))
}
FLEET = "dashfleet"
VEHICLES = 2
DURATION_S = 20.0
#: Grafana's InfluxQL macros; the variables each dashboard defines come on top.
MACROS = {"timeFilter", "__interval"}
SECOND_NS = 10**9


def datasource_uid() -> str:
    document = yaml.safe_load((PROVISIONING / "datasources" / "roadwave.yaml").read_text())
    (source,) = document["datasources"]
    return source["uid"]


def walk(node: Any, key: str) -> Iterator[Any]:
    """Every value stored under ``key`` anywhere in a JSON document."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield value
            yield from walk(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, key)


def variable_names(dashboard: dict[str, Any]) -> set[str]:
    return {variable["name"] for variable in dashboard["templating"]["list"]}


@dataclass(frozen=True)
class QuerySite:
    """One query of a committed dashboard and where Grafana runs it."""

    file: str
    where: str
    query: str
    alias: str | None = None

    @property
    def id(self) -> str:
        return f"{self.file}:{self.where}"


def query_sites() -> list[QuerySite]:
    sites = []
    for file, dashboard in DASHBOARDS.items():
        for variable in dashboard["templating"]["list"]:
            sites.append(QuerySite(file, f"variable ${variable['name']}", variable["query"]))
        for annotation in dashboard["annotations"]["list"]:
            sites.append(QuerySite(file, f"annotation {annotation['name']}", annotation["target"]["query"]))
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                where = f"{panel['title']} {target['refId']}"
                sites.append(QuerySite(file, where, target["query"], target.get("alias")))
    return sites


# --- the generator and the files --------------------------------------------------------------


def test_committed_dashboards_are_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboards.generate", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert sorted(DASHBOARDS) == [
        "fleet.json",
        "maintenance.json",
        "safety.json",
        "traffic.json",
        "vehicle.json",
    ]


def test_check_names_every_file_that_is_not_up_to_date(tmp_path: Path, capsys) -> None:
    assert generate.main(["--dir", str(tmp_path)]) == 0
    (tmp_path / "fleet.json").write_text("{}")
    (tmp_path / "traffic.json").unlink()
    (tmp_path / "old.json").write_text("{}")
    assert sorted(generate.check(tmp_path)) == [
        f"{tmp_path / 'fleet.json'} differs from the generator's output",
        f"{tmp_path / 'old.json'} is not produced by the generator",
        f"{tmp_path / 'traffic.json'} is missing",
    ]
    assert generate.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "run `python -m dashboards.generate`" in capsys.readouterr().err
    assert generate.main(["--dir", str(tmp_path)]) == 0
    assert generate.check(tmp_path) == [] and not (tmp_path / "old.json").exists()


def test_the_generator_refuses_definitions_grafana_would_show_wrong() -> None:
    with pytest.raises(generate.DashboardError, match="'Vehicle.Speeed' is not a path of the roadwave VSS"):
        generate.vss("Vehicle.Speeed")
    typo = generate.Query("SELECT MEAN(\"Vehicle.Speed\") FROM telemetry WHERE vin = '$vim' AND $timeFilter")
    panel = generate.stat("Speed", "", typo)
    with pytest.raises(generate.DashboardError, match=r"dashboard x, panel 'Speed': unknown \$vim"):
        generate.Dashboard("x", "X", "", (panel,)).to_json()
    wide = generate.table("Wide", "", generate.Query("SELECT 1 FROM t WHERE $timeFilter"), width=25)
    with pytest.raises(generate.DashboardError, match="panel 'Wide': size 25 x 8"):
        generate.Dashboard("x", "X", "", (wide,)).to_json()
    rows = generate.Query("SELECT 1 FROM t WHERE $timeFilter")
    with pytest.raises(generate.DashboardError, match="layer 'L' needs a table-format query"):
        generate.geomap("Map", "", generate.Layer("L", rows))
    with pytest.raises(generate.DashboardError, match="layer kind 'dots' is not one of"):
        generate.geomap("Map", "", generate.Layer("L", replace(rows, table=True), kind="dots"))


def test_uids_are_unique_and_panels_tile_the_grid() -> None:
    uids = [dashboard["uid"] for dashboard in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids) == 5
    for file, dashboard in DASHBOARDS.items():
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids), file
        covered: set[tuple[int, int]] = set()
        for panel in dashboard["panels"]:
            x, y, w, h = (panel["gridPos"][key] for key in "xywh")
            assert w >= 1 and h >= 1 and x >= 0 and y >= 0, (file, panel["title"])
            assert x + w <= generate.GRID_COLUMNS, (file, panel["title"])
            cells = {(column, row) for column in range(x, x + w) for row in range(y, y + h)}
            assert not cells & covered, f"{file}: {panel['title']} overlaps another panel"
            covered |= cells
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert ref_ids and len(set(ref_ids)) == len(ref_ids), (file, panel["title"])


def test_every_datasource_reference_resolves_to_the_provisioned_one() -> None:
    expected = {"type": "influxdb", "uid": datasource_uid()}
    for file, dashboard in DASHBOARDS.items():
        references = list(walk(dashboard, "datasource"))
        # each panel, its targets, each variable and annotation name one
        assert len(references) >= 2 * len(dashboard["panels"]) + len(dashboard["templating"]["list"]), file
        assert all(reference == expected for reference in references), file


def test_queries_use_only_grafana_macros_and_the_dashboards_variables() -> None:
    for site in query_sites():
        dashboard = DASHBOARDS[site.file]
        tokens = set(re.findall(r"\$(\w+)", site.query))
        assert tokens <= MACROS | variable_names(dashboard), site.id
        # panels and annotations follow the time picker, except the "online" stat and the open
        # alerts (current state); variables list tag values, which have no time
        if not site.where.startswith("variable") and "$timeFilter" not in site.query:
            assert "now() -" in site.query or "FROM alerts" in site.query, site.id


def test_links_point_at_dashboards_that_exist() -> None:
    uids = {dashboard["uid"] for dashboard in DASHBOARDS.values()}
    urls = [url for dashboard in DASHBOARDS.values() for url in walk(dashboard, "url")]
    assert urls
    for url in urls:
        match = re.match(r"/d/([\w-]+)", url)
        assert match and match.group(1) in uids, url


def test_provisioning_files_load_the_datasource_and_the_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "roadwave.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "influxdb" and source["jsonData"]["version"] == "InfluxQL"
    assert source["url"] == "${ROADWAVE_INFLUX_URL}"
    assert source["jsonData"]["dbName"] == "${ROADWAVE_INFLUX_DB}"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "roadwave.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and Path(provider["options"]["path"]).is_absolute()
    docs = (REPO / "docs" / "dashboards.md").read_text()
    assert provider["options"]["path"] in docs and "ROADWAVE_INFLUX_TOKEN" in docs


# --- every query against the real InfluxDB ----------------------------------------------------


@dataclass(frozen=True)
class Drive:
    """What a simulated drive left in InfluxDB, and Grafana's view of it."""

    client: InfluxClient
    vins: list[str]
    start_ms: int
    end_ms: int

    def substitute(self, query: str, multi_vin: bool) -> str:
        """``query`` as Grafana sends it, with the whole drive as time range and every VIN picked."""
        vin = f"({'|'.join(self.vins)})" if multi_vin else self.vins[0]
        text = (
            query.replace("$timeFilter", f"time >= {self.start_ms}ms and time <= {self.end_ms}ms")
            .replace("$__interval", "5s")
            .replace("$fleet", FLEET)
            .replace("$vin", vin)
        )
        assert not re.search(r"\$\w", text), f"a macro or variable left in {text}"
        return text


def write_events(client: InfluxClient, vins: list[str], start_ns: int) -> None:
    """Three ended events inside the drive, at positions the vehicles passed."""
    events = [
        (vins[0], "harsh_braking", 2, 5),
        (vins[0], "end_of_queue", 2, 8),
        (vins[1], "emergency_braking", 3, 11),
    ]
    lines = []
    for vin, kind, severity, at_s in events:
        t_ns = start_ns + at_s * SECOND_NS
        (row,) = client.query(
            'SELECT FIRST("Vehicle.CurrentLocation.Latitude") AS "lat", '
            'FIRST("Vehicle.CurrentLocation.Longitude") AS "lon" '
            f"FROM telemetry WHERE vin = '{vin}' AND time >= {t_ns}"
        )
        event = Event(
            kind=kind,
            state=ENDED,
            severity=severity,
            start_ns=t_ns,
            detected_ns=t_ns + SECOND_NS // 10,
            end_ns=t_ns + SECOND_NS,
            peak={"deceleration_mps2": 3.5 if severity == 2 else 7.6, "speed_kmh": 40.0},
            position=(row["lat"], row["lon"]),
            snapshot={},
        )
        lines += event_lines(FLEET, vin, event)
    client.write_lines(lines)


def write_alerts(client: InfluxClient, vins: list[str], start_ns: int) -> None:
    """A pending DTC, battery and brake-wear alerts that stay open, and a coolant alert that clears."""
    book, monitor = AlertBook(), MaintenanceMonitor()
    at = [start_ns + s * SECOND_NS for s in range(2, 7)]
    notes = book.observe(FLEET, monitor.feed_dtcs(vins[0], at[0], [DtcStatus("P0301", True, False, "7E8")]))
    notes += book.observe(
        FLEET,
        [
            Finding(vins[1], "battery", at[1], 2, {"resting_voltage_v": 11.9}, "Charge the battery."),
            Finding(vins[0], "brake_wear", at[2], 1, {"used_fraction": 0.83}, "Inspect the brake pads."),
            Finding(vins[1], "coolant_overtemp", at[3], 2, {"ect_c": 108.0}, "Check the coolant."),
            Normal(vins[1], "coolant_overtemp", at[4], {"ect_c": 95.0}, hold_s=1.0),
        ],
    )
    notes += book.tick(at[4] + 3 * SECOND_NS)
    assert [note.transition for note in notes] == ["opened"] * 4 + ["cleared"]
    client.write_lines(alert_lines(notes))


def diagnostics_at(start_ns: int) -> list[tuple[int, DiagnosticsReport]]:
    """The drive's diagnostic reports (vehicle index, report), at 3, 4 and 9 s.

    The first vehicle's lamp is on for a misfire; a pending code of its first report is
    gone from its second one. The other vehicle reports no codes.
    """
    misfire = ReportedDtc("7E8", "P0301", ("confirmed",), "obd_mode_03", description="Cylinder 1 misfire")
    abs_sensor = ReportedDtc("7E9", "C0288", ("pending",), "obd_mode_07")
    coolant = PidReading("7E8", 0x05, "coolant_temperature", 90.0, "celsius")
    engine = PidReading("7E8", 0x0C, "engine_speed", 800.0, "rpm")
    at = [start_ns + s * SECOND_NS for s in (3, 4, 9)]
    return [
        (0, DiagnosticsReport(at[0], "start", True, True, (coolant,), (misfire, abs_sensor))),
        (1, DiagnosticsReport(at[1], "start", False, True, (engine,))),
        (0, DiagnosticsReport(at[2], "periodic", True, True, (replace(coolant, value=92.0),), (misfire,))),
    ]


@pytest.fixture(scope="module")
def drive(mosquitto, influxdb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drive]:
    database = f"test_{uuid.uuid4().hex[:12]}"
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=database))
    # a minute ago, so that the drive is over and inside the "online" window
    start_s = math.floor(time.time()) - 60
    endpoints = Endpoints(mosquitto.host, mosquitto.port, influxdb.url, database)
    try:
        with Pipeline(tmp_path_factory.mktemp("dashboards"), endpoints, fleet=FLEET) as pipeline:
            client.create_database()
            sim = pipeline.simulate(VEHICLES, DURATION_S, seed=7, warmup_s=30.0, start_time=float(start_s))
            pipeline.start_ingest()
            published = sum(report["uplink"]["samples_acked"] for report in pipeline.run_agents(sim.logs))
            assert published > 0 and pipeline.wait_stored(published) == published
            pipeline.stop_ingest()
        vins = sorted(sim.logs)
        write_events(client, vins, start_s * SECOND_NS)
        write_alerts(client, vins, start_s * SECOND_NS)
        reports = diagnostics_at(start_s * SECOND_NS)
        client.write_lines([line for i, r in reports for line in diagnostics_lines(FLEET, vins[i], r)])
        yield Drive(client, vins, start_s * 1000, round((start_s + DURATION_S) * 1000))
    finally:
        client.query(f'DROP DATABASE "{database}"')
        client.close()


def is_multi_vin(file: str) -> bool:
    (vin,) = [variable for variable in DASHBOARDS[file]["templating"]["list"] if variable["name"] == "vin"]
    return bool(vin["multi"])


def run(drive: Drive, file: str, query: str) -> list[dict[str, Any]]:
    return drive.client.query(drive.substitute(query, is_multi_vin(file)))


def columns(rows: list[dict[str, Any]]) -> set[str]:
    """Column and tag names of a result."""
    return {name for row in rows for name in row}


def columns_named_by(panel: dict[str, Any]) -> dict[str, set[str]]:
    """Per refId, the result columns the panel's options read (map coordinates, bar labels, ...)."""
    needed: dict[str, set[str]] = {target["refId"]: set() for target in panel["targets"]}
    for layer in panel["options"].get("layers", []):
        names = {layer["location"]["latitude"], layer["location"]["longitude"]}
        colour = layer["config"].get("style", {}).get("color", {}).get("field")
        needed[layer["filterData"]["options"]] |= names | ({colour} if colour else set())
    if "xField" in panel["options"]:
        needed[panel["targets"][0]["refId"]].add(panel["options"]["xField"])
    return needed


@pytest.mark.integration
@pytest.mark.parametrize("site", query_sites(), ids=lambda site: site.id)
def test_every_query_returns_rows_after_a_drive(drive: Drive, site: QuerySite) -> None:
    rows = run(drive, site.file, site.query)
    assert rows, f"{site.id}: no rows for {drive.substitute(site.query, is_multi_vin(site.file))}"
    if site.alias and site.alias.startswith("$tag_"):
        assert all(site.alias.removeprefix("$tag_") in row for row in rows), site.id


@pytest.mark.integration
@pytest.mark.parametrize(
    ("file", "panel"),
    [(file, panel) for file, dashboard in DASHBOARDS.items() for panel in dashboard["panels"]],
    ids=lambda value: value if isinstance(value, str) else value["title"],
)
def test_panel_options_name_columns_the_queries_return(drive: Drive, file: str, panel: dict) -> None:
    returned = {target["refId"]: columns(run(drive, file, target["query"])) for target in panel["targets"]}
    for ref_id, names in columns_named_by(panel).items():
        assert names <= returned[ref_id], f"{panel['title']} {ref_id}: missing {names - returned[ref_id]}"
    for transformation in panel["transformations"]:
        if transformation["id"] == "calculateField":
            operands = transformation["options"]["binary"]
            assert {operands["left"], operands["right"]} <= set.union(*returned.values()), panel["title"]


@pytest.mark.integration
def test_annotations_return_their_text_and_tag_columns(drive: Drive) -> None:
    (annotation,) = DASHBOARDS["vehicle.json"]["annotations"]["list"]
    target = annotation["target"]
    rows = run(drive, "vehicle.json", target["query"])
    assert sorted(row[target["tagsColumn"]] for row in rows) == ["end_of_queue", "harsh_braking"]
    assert all(row[target["textColumn"]] == f"{row['type']}-{row['time']}" for row in rows)  # the event id


def panel_query(file: str, title: str, ref_id: str = "A") -> str:
    (panel,) = [panel for panel in DASHBOARDS[file]["panels"] if panel["title"] == title]
    (target,) = [target for target in panel["targets"] if target["refId"] == ref_id]
    return target["query"]


@pytest.mark.integration
def test_the_panels_show_what_the_drive_left(drive: Drive) -> None:
    variables = {v["name"]: v["query"] for v in DASHBOARDS["fleet.json"]["templating"]["list"]}
    assert {row["value"] for row in run(drive, "fleet.json", variables["fleet"])} == {FLEET}
    assert sorted(row["value"] for row in run(drive, "fleet.json", variables["vin"])) == drive.vins

    def first(file: str, title: str, column: str) -> Any:
        return run(drive, file, panel_query(file, title))[0][column]

    online = f"Online (telemetry in the last {generate.ONLINE_WINDOW})"
    assert first("fleet.json", online, "vehicles") == VEHICLES
    assert first("fleet.json", "Vehicles reporting", "vehicles") == VEHICLES
    assert 0 < first("fleet.json", "Distance driven", "km") < 1.0  # 20 s at ring-road speeds

    by_type = run(drive, "safety.json", panel_query("safety.json", "Events by type"))
    assert {row["type"]: row["events"] for row in by_type} == {
        "harsh_braking": 1,
        "end_of_queue": 1,
        "emergency_braking": 1,
    }
    assert first("safety.json", "Critical events", "events") == 1

    active = run(drive, "maintenance.json", panel_query("maintenance.json", "Active alerts"))
    assert sorted(row["type"] for row in active) == ["battery", "brake_wear", "dtc_P0301"]  # coolant cleared
    dtcs = run(drive, "maintenance.json", panel_query("maintenance.json", "Trouble codes (DTCs)"))
    assert [(row["vin"], row["type"], row["severity"]) for row in dtcs] == [(drive.vins[0], "dtc_P0301", 1)]
    pads = run(drive, "maintenance.json", panel_query("maintenance.json", "Brake pads used (estimate)"))
    assert [(row["vin"], row["pad_used"]) for row in pads] == [(drive.vins[0], 0.83)]

    earliest, other, latest = (report.t_ns for _, report in diagnostics_at(drive.start_ms * 10**6))
    lamps = run(drive, "maintenance.json", panel_query("maintenance.json", "Malfunction lamp (MIL)"))
    assert {
        row["vin"]: (row["time"], row["mil_on"], row["confirmed_count"], row["pending_count"])
        for row in lamps
    } == {drive.vins[0]: (latest, True, 1, 0), drive.vins[1]: (other, False, 0, 0)}
    codes = run(drive, "maintenance.json", panel_query("maintenance.json", "Trouble codes reported"))
    assert {
        (row["vin"], row["ecu"], row["code"]): (row["confirmed"], row["pending"], row["time"])
        for row in codes
    } == {
        (drive.vins[0], "7E8", "P0301"): (True, False, latest),
        (drive.vins[0], "7E9", "C0288"): (False, True, earliest),  # gone: not in the latest report
    }
    readings = run(drive, "vehicle.json", panel_query("vehicle.json", "OBD readings"))
    assert [(row["ecu"], row["coolant_temperature"], row["time"]) for row in readings] == [
        ("7E8", 92.0, latest)
    ]

    slow = run(drive, "traffic.json", panel_query("traffic.json", "Slow-down hotspots"))
    assert all(row["speed"] <= generate.SLOW_KMH for row in slow)
