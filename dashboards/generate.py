"""The roadwave Grafana dashboards, built from a small panel and query builder of our own.

``python -m dashboards.generate`` writes one JSON file per dashboard into
``dashboards/json`` (the files Grafana's file provisioning loads); ``--check`` writes
nothing and exits 1 when the files there differ from what this module produces.

Queries are InfluxQL on the schema of docs/schema.md, so the same dashboards work on
InfluxDB 1.x, 2.x (DBRP mapping) and 3.x. They use Grafana's macros ``$timeFilter``
and ``$__interval`` and the template variables ``$fleet`` and ``$vin``; anything else
starting with ``$`` in a query is refused. Field names, measurement names and
thresholds come from the code that writes or defines them (VSS catalog, cloud schema,
maintenance and event defaults), so a rename there changes the dashboards or fails here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.maintenance import CLEARED, MaintenanceConfig
from cloud.maintenance.store import ALERTS_MEASUREMENT, VALUE_PREFIX
from cloud.schema import (
    DIAGNOSTICS_MEASUREMENT,
    DTCS_MEASUREMENT,
    EVENTS_MEASUREMENT,
    OBD_MEASUREMENT,
    TELEMETRY_MEASUREMENT,
)
from edge.events import EventsConfig
from edge.events.config import EmergencyBraking, EndOfQueue, HarshBraking, TrafficJam
from roadwave.contract import VSS_CATALOG

JsonObject = dict[str, Any]

#: Where the committed dashboards live; Grafana's dashboard provider reads a mount of it.
JSON_DIR = Path(__file__).resolve().parent / "json"
#: The data source of dashboards/provisioning/datasources/roadwave.yaml.
DATASOURCE: JsonObject = {"type": "influxdb", "uid": "roadwave-influxql"}
#: Grafana's dashboard JSON model version the files follow (Grafana 10.4 and later).
SCHEMA_VERSION = 39
GRID_COLUMNS = 24
#: Every ``$name`` a query may contain: Grafana's InfluxQL macros and our variables.
QUERY_TOKENS = frozenset({"timeFilter", "__interval", "fleet", "vin"})
#: "Online": telemetry stored within this window before now (roadwave's choice, docs/dashboards.md).
ONLINE_WINDOW = "5m"
LATITUDE, LONGITUDE = "latitude", "longitude"

_TOKEN = re.compile(r"\$(\w+)")
_REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Grafana unit ids for the VSS units the panels show.
_UNITS = {
    "km/h": "velocitykmh",
    "m/s^2": "accMS2",
    "rpm": "rpm",
    "V": "volt",
    "celsius": "celsius",
}


class DashboardError(ValueError):
    """A dashboard definition that cannot be rendered; the message names the dashboard and panel."""


# --- queries ---------------------------------------------------------------------------------


def vss(path: str) -> str:
    """The quoted ``telemetry`` field of a VSS path (docs/schema.md: field names are VSS paths)."""
    if path not in VSS_CATALOG:
        raise DashboardError(f"{path!r} is not a path of the roadwave VSS catalog (roadwave.contract)")
    return f'"{path}"'


def unit_of(path: str) -> str:
    """The Grafana unit id of a VSS path's unit."""
    vss(path)
    unit = VSS_CATALOG[path].unit
    if unit not in _UNITS:
        raise DashboardError(f"no Grafana unit is known for {path} ({unit!r}); add it to _UNITS")
    return _UNITS[unit]


SPEED = "Vehicle.Speed"
ACCEL_LONGITUDINAL = "Vehicle.Acceleration.Longitudinal"
ACCEL_LATERAL = "Vehicle.Acceleration.Lateral"
ENGINE_SPEED = "Vehicle.Powertrain.CombustionEngine.Speed"
COOLANT = "Vehicle.Powertrain.CombustionEngine.ECT"
BATTERY = "Vehicle.LowVoltageBattery.CurrentVoltage"
ODOMETER = "Vehicle.TraveledDistance"
POSITION = ("Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude")

FLEET = "fleet = '$fleet'"
#: The vehicles picked in a multi-value ``$vin`` (Grafana writes ``(A|B)``, or ``.*`` for All).
PICKED_VEHICLES = f"{FLEET} AND vin =~ /^$vin$/"
ONE_VEHICLE = f"{FLEET} AND vin = '$vin'"
IN_RANGE = "$timeFilter"
BY_INTERVAL = "time($__interval)"


def select(columns: str, source: str, *conditions: str, group: str = "", tail: str = "") -> str:
    """``SELECT columns FROM source WHERE conditions [GROUP BY group] [tail]``; source may be a subquery."""
    text = f"SELECT {columns} FROM {source} WHERE {' AND '.join(conditions)}"
    if group:
        text += f" GROUP BY {group}"
    return f"{text} {tail}" if tail else text


def position_columns(selector: str) -> str:
    """Latitude and longitude through ``selector`` (MEAN, LAST), named as the geomap reads them."""
    latitude, longitude = POSITION
    return f'{selector}({vss(latitude)}) AS "{LATITUDE}", {selector}({vss(longitude)}) AS "{LONGITUDE}"'


def open_alerts(vehicles: str, columns: str, *conditions: str, outer: str = "*", group: str = "") -> str:
    """The latest transition of each vehicle's alert types over all time, unless it is a clear.

    ``columns`` are alert fields read at that transition (``LAST("count")`` picks it);
    ``outer`` the columns returned of those.
    """
    inner = select(
        f'LAST("count") AS "count", "state", {columns}', ALERTS_MEASUREMENT, vehicles, *conditions,
        group='vin, "type"',
    )  # fmt: skip
    return select(outer, f"({inner})", f"\"state\" != '{CLEARED}'", group=group)


@dataclass(frozen=True)
class Query:
    """One InfluxQL target: rows with columns (``table``) or one series per group, named ``alias``."""

    influxql: str
    table: bool = False
    alias: str | None = None

    def tokens(self) -> set[str]:
        """The ``$names`` the query uses."""
        return set(_TOKEN.findall(self.influxql))

    def to_json(self, ref_id: str) -> JsonObject:
        target: JsonObject = {
            "refId": ref_id,
            "datasource": DATASOURCE,
            "rawQuery": True,
            "query": self.influxql,
            "resultFormat": "table" if self.table else "time_series",
        }
        if self.alias:
            target["alias"] = self.alias
        return target


# --- panels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """A Grafana panel; its place on the grid is decided by the dashboard's layout."""

    type: str
    title: str
    description: str
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    defaults: JsonObject = field(default_factory=dict)
    overrides: tuple[JsonObject, ...] = ()
    options: JsonObject = field(default_factory=dict)
    transformations: tuple[JsonObject, ...] = ()

    def to_json(self, panel_id: int, grid: JsonObject) -> JsonObject:
        return {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "gridPos": grid,
            "datasource": DATASOURCE,
            "targets": [query.to_json(ref) for query, ref in zip(self.queries, _REF_IDS, strict=False)],
            "fieldConfig": {"defaults": self.defaults, "overrides": list(self.overrides)},
            "options": self.options,
            "transformations": list(self.transformations),
        }


def thresholds(base: str, *steps: tuple[float, str]) -> JsonObject:
    """Absolute thresholds: ``base`` colour below the first step, then each step's colour from its value."""
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}, *({"color": c, "value": v} for v, c in steps)],
    }


_LEGEND = {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []}


def timeseries(
    title: str,
    description: str,
    *queries: Query,
    unit: str,
    limits: JsonObject | None = None,
    bars: bool = False,
    width: int = 12,
) -> Panel:
    """Lines (or stacked bars) over time; ``limits`` (see :func:`thresholds`) are drawn as lines."""
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 80 if bars else 10,
        "showPoints": "never",
        "spanNulls": True,
        "stacking": {"mode": "normal" if bars else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line" if limits else "off"},
    }
    defaults = {"unit": unit, "custom": custom, "thresholds": limits or thresholds("green")}
    options = {"legend": _LEGEND, "tooltip": {"mode": "multi", "sort": "none"}}
    return Panel("timeseries", title, description, queries, width, 8, defaults, options=options)


def stat(title: str, description: str, query: Query, unit: str = "none", colour: str = "blue") -> Panel:
    """One big number."""
    defaults = {"unit": unit, "color": {"mode": "thresholds"}, "thresholds": thresholds(colour)}
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "textMode": "value",
        "orientation": "auto",
    }
    return Panel("stat", title, description, (query,), 6, 4, defaults, options=options)


def table(
    title: str,
    description: str,
    *queries: Query,
    width: int = 12,
    overrides: Sequence[JsonObject] = (),
    transformations: Sequence[JsonObject] = (),
) -> Panel:
    """Rows as returned (queries in table format)."""
    return Panel(
        "table", title, description, queries, width, 8,
        defaults={"custom": {"align": "auto", "filterable": True}},
        overrides=tuple(overrides),
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
        transformations=tuple(transformations),
    )  # fmt: skip


def barchart(title: str, description: str, query: Query, category: str, width: int = 12) -> Panel:
    """One bar per row, labelled by the string column ``category``."""
    options = {
        "orientation": "horizontal",
        "xField": category,
        "showValue": "auto",
        "legend": {**_LEGEND, "showLegend": False},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    defaults = {"color": {"mode": "palette-classic"}}
    return Panel("barchart", title, description, (query,), width, 8, defaults, options=options)


def bargauge(title: str, description: str, query: Query, unit: str, limits: JsonObject) -> Panel:
    """One bar per series, from 0 to 1, coloured by ``limits``."""
    defaults = {"unit": unit, "min": 0, "max": 1, "color": {"mode": "thresholds"}, "thresholds": limits}
    options = {
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }
    return Panel("bargauge", title, description, (query,), 12, 8, defaults, options=options)


LAYER_KINDS = ("markers", "heatmap")


@dataclass(frozen=True)
class Layer:
    """A geomap layer drawing the rows of ``query`` at their ``latitude``/``longitude`` columns.

    ``kind`` is ``markers`` (coloured by column ``colour_by``, if given) or ``heatmap``.
    """

    name: str
    query: Query
    kind: str = "markers"
    colour_by: str | None = None

    def to_json(self, ref_id: str) -> JsonObject:
        if self.kind == "heatmap":
            config: JsonObject = {"blur": 15, "radius": 6, "weight": {"fixed": 1, "min": 0, "max": 1}}
        else:
            colour: JsonObject = {"fixed": "dark-green"}
            if self.colour_by:
                colour["field"] = self.colour_by
            config = {"showLegend": True, "style": {"size": {"fixed": 6}, "color": colour, "opacity": 0.8}}
        return {
            "type": self.kind,
            "name": self.name,
            "config": config,
            "location": {"mode": "coords", "latitude": LATITUDE, "longitude": LONGITUDE},
            "filterData": {"id": "byRefId", "options": ref_id},
            "tooltip": True,
        }


def geomap(
    title: str, description: str, *layers: Layer, colours: str | None = None, width: int = 12
) -> Panel:
    """A map with one layer per query (in table format), fitted to the data."""
    for layer in layers:
        if not layer.query.table:
            raise DashboardError(f"geomap {title!r}: layer {layer.name!r} needs a table-format query")
        if layer.kind not in LAYER_KINDS:
            raise DashboardError(f"geomap {title!r}: layer kind {layer.kind!r} is not one of {LAYER_KINDS}")
    defaults: JsonObject = {"color": {"mode": colours or "fixed"}}
    options = {
        "view": {"id": "fit", "allLayers": True, "lat": 0, "lon": 0, "zoom": 15},
        "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
        "basemap": {"type": "default", "name": "Basemap"},
        "layers": [layer.to_json(ref) for layer, ref in zip(layers, _REF_IDS, strict=False)],
        "tooltip": {"mode": "details"},
    }
    queries = tuple(layer.query for layer in layers)
    return Panel("geomap", title, description, queries, width, 10, defaults, options=options)


# --- dashboards ------------------------------------------------------------------------------


def _variable(name: str, label: str, query: str, multi: bool) -> JsonObject:
    variable: JsonObject = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 1,
        "sort": 1,
        "regex": "",
        "hide": 0,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
    }
    if multi:
        variable["allValue"] = ".*"
    return variable


def variables(multi_vin: bool) -> list[JsonObject]:
    """``$fleet`` (one fleet) and ``$vin`` (its vehicles: several and All, or exactly one)."""
    tags = f'SHOW TAG VALUES FROM "{TELEMETRY_MEASUREMENT}" WITH KEY ='
    return [
        _variable("fleet", "Fleet", f'{tags} "fleet"', multi=False),
        _variable("vin", "VIN", f'{tags} "vin" WHERE "fleet" = \'$fleet\'', multi=multi_vin),
    ]


@dataclass(frozen=True)
class Annotation:
    """Markers on every time axis of the dashboard, from ``query`` (with ``$timeFilter``)."""

    name: str
    query: Query
    text_column: str
    tags_column: str
    colour: str = "red"

    def to_json(self) -> JsonObject:
        return {
            "name": self.name,
            "enable": True,
            "iconColor": self.colour,
            "datasource": DATASOURCE,
            "target": {
                "refId": "Anno",
                "query": self.query.influxql,
                "rawQuery": True,
                "fromAnnotations": True,
                "textEditor": True,
                "textColumn": self.text_column,
                "tagsColumn": self.tags_column,
            },
        }


@dataclass(frozen=True)
class Dashboard:
    """A dashboard: panels flow left to right into rows of :data:`GRID_COLUMNS`."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    multi_vin: bool = True
    annotations: tuple[Annotation, ...] = ()

    @property
    def file_name(self) -> str:
        return f"{self.uid.removeprefix('roadwave-')}.json"

    def queries(self) -> Iterator[tuple[str, Query]]:
        """Every query with where it is used: panels, annotations."""
        for panel in self.panels:
            for query in panel.queries:
                yield f"panel {panel.title!r}", query
        for annotation in self.annotations:
            yield f"annotation {annotation.name!r}", annotation.query

    def validate(self) -> None:
        """Raise :class:`DashboardError` for a definition Grafana would show wrong or not at all."""
        titles = [panel.title for panel in self.panels]
        if len(set(titles)) != len(titles):
            raise DashboardError(f"dashboard {self.uid}: panel titles repeat")
        for panel in self.panels:
            if not 1 <= panel.width <= GRID_COLUMNS or panel.height < 1:
                raise DashboardError(
                    f"dashboard {self.uid}, panel {panel.title!r}: size {panel.width} x {panel.height}"
                )
            if not 1 <= len(panel.queries) <= len(_REF_IDS):
                raise DashboardError(f"dashboard {self.uid}, panel {panel.title!r}: needs 1-26 queries")
        for where, query in self.queries():
            unknown = query.tokens() - QUERY_TOKENS
            if unknown:
                names = ", ".join(f"${name}" for name in sorted(unknown))
                raise DashboardError(f"dashboard {self.uid}, {where}: unknown {names} in {query.influxql!r}")

    def to_json(self) -> JsonObject:
        self.validate()
        panels, x, y, row_height = [], 0, 0, 0
        for panel_id, panel in enumerate(self.panels, start=1):
            if x + panel.width > GRID_COLUMNS:
                x, y, row_height = 0, y + row_height, 0
            panels.append(panel.to_json(panel_id, {"x": x, "y": y, "w": panel.width, "h": panel.height}))
            x, row_height = x + panel.width, max(row_height, panel.height)
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["roadwave"],
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "timezone": "browser",
            "links": [
                {
                    "title": "roadwave",
                    "type": "dashboards",
                    "tags": ["roadwave"],
                    "asDropdown": False,
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "templating": {"list": variables(self.multi_vin)},
            "annotations": {"list": [annotation.to_json() for annotation in self.annotations]},
            "panels": panels,
        }


VEHICLE_DETAIL_UID = "roadwave-vehicle"
_MAINTENANCE = MaintenanceConfig()
#: Traffic at or below this mean speed counts as slow (the traffic-jam detector's threshold, docs/events.md).
SLOW_KMH = EventsConfig.for_class("car").traffic_jam.threshold
SLOW_DOWN_EVENTS = (HarshBraking.kind, EmergencyBraking.kind, EndOfQueue.kind, TrafficJam.kind)
SEVERITY_CRITICAL = 3
NEWEST_FIRST = "ORDER BY time DESC LIMIT 500"
#: The latest point of each group, as a raw row: its own time comes with it.
LATEST = "ORDER BY time DESC LIMIT 1"
#: ``DIAGNOSTICS`` is an InfluxQL keyword: the measurement's name must be quoted.
DIAGNOSTICS_SOURCE = f'"{DIAGNOSTICS_MEASUREMENT}"'
#: The malfunction lamp in a table cell (a report without PID 0x01 leaves it empty: unknown).
MIL_MAPPING: JsonObject = {
    "type": "value",
    "options": {
        "true": {"text": "on", "color": "red", "index": 0},
        "false": {"text": "off", "color": "green", "index": 1},
    },
}


def in_range(
    columns: str, source: str, vehicles: str, *conditions: str, group: str = "", tail: str = ""
) -> str:
    """A query of ``vehicles`` within the dashboard's time range."""
    return select(columns, source, vehicles, *conditions, IN_RANGE, group=group, tail=tail)


def per_interval(columns: str, source: str, vehicles: str, *conditions: str, by: str = "") -> str:
    """Aggregates per ``$__interval`` (and per tag ``by``) in the time range; empty intervals left out."""
    group = f"{BY_INTERVAL}, {by}" if by else BY_INTERVAL
    return in_range(columns, source, vehicles, *conditions, group=group, tail="fill(none)")


def per_vehicle(function: str, path: str, vehicles: str) -> Query:
    """One series per vehicle: ``function`` (MEAN, MIN, ...) of a VSS path per interval."""
    return Query(
        per_interval(f"{function}({vss(path)})", TELEMETRY_MEASUREMENT, vehicles, by="vin"), alias="$tag_vin"
    )


def column_override(column: str, *properties: tuple[str, Any]) -> JsonObject:
    """A table override setting ``properties`` (id, value) of result column ``column``."""
    return {
        "matcher": {"id": "byName", "options": column},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def reported_dtcs(vehicles: str) -> Panel:
    """The trouble codes reported in the time range, each with its latest status and when that was."""
    return table(
        "Trouble codes reported",
        "Each code per vehicle, ECU, source and failure type reported in the time range: its latest "
        "status (pending, confirmed, the ISO 14229-1 status byte) and when it was last reported. "
        "A code last reported before the vehicle's latest complete diagnostic report is no longer set.",
        Query(
            in_range(
                'LAST("confirmed") AS "confirmed", "pending", "status", "description"',
                DTCS_MEASUREMENT,
                vehicles,
                group="vin, ecu, code, source, failure_type",
            ),  # fmt: skip
            table=True,
        ),
        overrides=(column_override("Time", ("displayName", "last reported")),),
    )


def fleet_overview() -> Dashboard:
    latest_speed = f'LAST({vss(SPEED)}) AS "speed"'
    online = select(
        latest_speed, TELEMETRY_MEASUREMENT, PICKED_VEHICLES, f"time > now() - {ONLINE_WINDOW}", group="vin"
    )
    reporting = in_range(latest_speed, TELEMETRY_MEASUREMENT, PICKED_VEHICLES, group="vin")
    distance = in_range(
        f'SPREAD({vss(ODOMETER)}) AS "m"', TELEMETRY_MEASUREMENT, PICKED_VEHICLES, group="vin"
    )
    vehicle_link = {
        "title": "Vehicle detail",
        "url": f"/d/{VEHICLE_DETAIL_UID}?var-fleet=${{fleet}}&var-vin=${{__value.raw}}&${{__url_time_range}}",
    }
    return Dashboard(
        "roadwave-fleet",
        "roadwave: fleet overview",
        "Which vehicles report, where they are, how far they drove and how many events they had.",
        (
            stat(
                f"Online (telemetry in the last {ONLINE_WINDOW})",
                f"Vehicles whose telemetry reached InfluxDB within {ONLINE_WINDOW} before now, whatever the "
                "time range (the agent's MQTT online/offline status is not stored in InfluxDB).",
                Query(f'SELECT COUNT("speed") AS "vehicles" FROM ({online})', table=True),
                colour="green",
            ),
            stat(
                "Vehicles reporting",
                "Vehicles with telemetry in the time range.",
                Query(f'SELECT COUNT("speed") AS "vehicles" FROM ({reporting})', table=True),
            ),
            stat(
                "Distance driven",
                "Sum over the vehicles of their odometer's rise in the time range.",
                Query(f'SELECT SUM("m") / 1000 AS "km" FROM ({distance})', table=True),
                unit="lengthkm",
            ),
            stat(
                "Events",
                "Driving and ADAS events detected in the time range (docs/events.md).",
                Query(
                    in_range('COUNT("severity") AS "events"', EVENTS_MEASUREMENT, PICKED_VEHICLES), table=True
                ),
                colour="orange",
            ),
            table(
                "Last seen",
                "Per vehicle: its latest speed sample in the time range and when it was taken. "
                "A VIN opens the vehicle detail dashboard.",
                Query(
                    in_range(
                        f'LAST({vss(SPEED)}) AS "speed_kmh"',
                        TELEMETRY_MEASUREMENT,
                        PICKED_VEHICLES,
                        group="vin",
                    ),
                    table=True,
                ),
                overrides=(column_override("vin", ("links", [vehicle_link])),),
            ),
            geomap(
                "Positions",
                "Each vehicle's latest position in the time range, coloured by its latest speed.",
                Layer(
                    "Vehicles",
                    Query(
                        in_range(
                            f"{position_columns('LAST')}, {latest_speed}",
                            TELEMETRY_MEASUREMENT,
                            PICKED_VEHICLES,
                            group="vin",
                        ),  # fmt: skip
                        table=True,
                    ),
                    colour_by="speed",
                ),
                colours="continuous-RdYlGr",
            ),
            table(
                "Events per vehicle-km",
                "Per vehicle: events in the time range (query A), kilometres driven by the odometer (B) and "
                "their ratio, joined by VIN in Grafana. Vehicles without events have no ratio.",
                Query(
                    in_range(
                        'COUNT("severity") AS "events"', EVENTS_MEASUREMENT, PICKED_VEHICLES, group="vin"
                    ),
                    table=True,
                ),
                Query(
                    in_range(
                        f'SPREAD({vss(ODOMETER)}) / 1000 AS "km"',
                        TELEMETRY_MEASUREMENT,
                        PICKED_VEHICLES,
                        group="vin",
                    ),
                    table=True,
                ),
                transformations=(
                    {"id": "merge", "options": {}},
                    {
                        "id": "calculateField",
                        "options": {
                            "mode": "binary",
                            "binary": {"left": "events", "operator": "/", "right": "km"},
                            "alias": "events per km",
                        },
                    },
                ),
            ),
            timeseries(
                "Speed per vehicle",
                "Mean speed per vehicle and interval.",
                per_vehicle("MEAN", SPEED, PICKED_VEHICLES),
                unit=unit_of(SPEED),
            ),
        ),
    )


def vehicle_detail() -> Dashboard:
    def mean_and(extreme: str, path: str) -> Query:
        field_name = vss(path)
        columns = f'MEAN({field_name}) AS "mean", {extreme}({field_name}) AS "{extreme.lower()}"'
        return Query(per_interval(columns, TELEMETRY_MEASUREMENT, ONE_VEHICLE))

    battery, coolant = _MAINTENANCE.battery, _MAINTENANCE.coolant_overtemp
    longitudinal, lateral = vss(ACCEL_LONGITUDINAL), vss(ACCEL_LATERAL)
    accelerations = (
        f'MEAN({longitudinal}) AS "longitudinal", MIN({longitudinal}) AS "strongest deceleration", '
        f'MEAN({lateral}) AS "lateral"'
    )
    events = Query(in_range('"id", "type", "severity"', EVENTS_MEASUREMENT, ONE_VEHICLE), table=True)
    return Dashboard(
        VEHICLE_DETAIL_UID,
        "roadwave: vehicle detail",
        "One vehicle's signals over time, with its events as annotations.",
        (
            timeseries(
                "Speed", "Mean and highest speed per interval.", mean_and("MAX", SPEED), unit=unit_of(SPEED)
            ),
            timeseries(
                "Accelerations",
                "Mean longitudinal and lateral acceleration per interval, and the strongest deceleration.",
                Query(per_interval(accelerations, TELEMETRY_MEASUREMENT, ONE_VEHICLE)),
                unit=unit_of(ACCEL_LONGITUDINAL),
            ),
            timeseries(
                "Engine speed",
                "Mean and highest engine speed per interval.",
                mean_and("MAX", ENGINE_SPEED),
                unit=unit_of(ENGINE_SPEED),
            ),
            timeseries(
                "12 V battery",
                f"Mean and lowest voltage per interval. A cranking dip below {battery.cranking_weak_v} V "
                f"marks a weak battery; at rest, {battery.resting_low_v} / {battery.resting_warning_v} V "
                "is about 50 / 25 % charge (docs/maintenance.md).",
                mean_and("MIN", BATTERY),
                unit=unit_of(BATTERY),
                limits=thresholds(
                    "red",
                    (battery.cranking_weak_v, "orange"),
                    (battery.resting_warning_v, "yellow"),
                    (battery.resting_low_v, "green"),
                ),  # fmt: skip
            ),
            timeseries(
                "Coolant temperature",
                f"Mean and highest coolant temperature per interval; an alert is raised above "
                f"{coolant.threshold_c:g} °C, critical above {coolant.critical_c:g} °C "
                "(docs/maintenance.md).",
                mean_and("MAX", COOLANT),
                unit=unit_of(COOLANT),
                limits=thresholds("green", (coolant.threshold_c, "orange"), (coolant.critical_c, "red")),
            ),
            geomap(
                "Route",
                "Mean position per interval, coloured by mean speed.",
                Layer(
                    "Route",
                    Query(
                        per_interval(
                            f'{position_columns("MEAN")}, MEAN({vss(SPEED)}) AS "speed"',
                            TELEMETRY_MEASUREMENT,
                            ONE_VEHICLE,
                        ),  # fmt: skip
                        table=True,
                    ),
                    colour_by="speed",
                ),
                colours="continuous-RdYlGr",
            ),
            table(
                "Events",
                "The vehicle's events in the time range, newest first.",
                Query(
                    in_range(
                        f'"type", "severity", "state", "duration_s", "{LATITUDE}", "{LONGITUDE}"',
                        EVENTS_MEASUREMENT,
                        ONE_VEHICLE,
                        tail=NEWEST_FIRST,
                    ),  # fmt: skip
                    table=True,
                ),
            ),
            table(
                "Alert transitions",
                "The vehicle's maintenance alerts that opened, changed or cleared in the time range.",
                Query(
                    in_range(
                        '"type", "transition", "state", "severity", "recommendation"',
                        ALERTS_MEASUREMENT,
                        ONE_VEHICLE,
                        tail=NEWEST_FIRST,
                    ),  # fmt: skip
                    table=True,
                ),
            ),
            table(
                "OBD readings",
                "Each ECU's OBD-II values of its latest diagnostic report in the time range, one column "
                "per reading (names and units: docs/diagnostics.md).",
                Query(in_range("*", OBD_MEASUREMENT, ONE_VEHICLE, group="ecu", tail=LATEST), table=True),
                overrides=(column_override("Time", ("displayName", "read at")),),
            ),
            reported_dtcs(ONE_VEHICLE),
        ),
        multi_vin=False,
        annotations=(Annotation("Events", events, text_column="id", tags_column="type"),),
    )


def safety_events() -> Dashboard:
    count = 'COUNT("severity") AS "events"'
    return Dashboard(
        "roadwave-safety",
        "roadwave: safety events",
        "Driving and ADAS events (docs/events.md): when, what, who and where.",
        (
            timeseries(
                "Events over time",
                "Events per interval, stacked by type.",
                Query(
                    per_interval(count, EVENTS_MEASUREMENT, PICKED_VEHICLES, by='"type"'), alias="$tag_type"
                ),
                unit="none",
                bars=True,
                width=18,
            ),
            stat(
                "Critical events",
                f"Events of severity {SEVERITY_CRITICAL} (critical) in the time range.",
                Query(
                    in_range(count, EVENTS_MEASUREMENT, PICKED_VEHICLES, f'"severity" = {SEVERITY_CRITICAL}'),
                    table=True,
                ),
                colour="red",
            ),
            barchart(
                "Events by type",
                "Events per type in the time range.",
                Query(in_range(count, EVENTS_MEASUREMENT, PICKED_VEHICLES, group='"type"'), table=True),
                category="type",
            ),
            barchart(
                "Events by vehicle",
                "Events per vehicle in the time range.",
                Query(in_range(count, EVENTS_MEASUREMENT, PICKED_VEHICLES, group="vin"), table=True),
                category="vin",
            ),
            geomap(
                "Where events happen",
                "Each event at its position at detection, coloured by severity "
                "(1 info, 2 warning, 3 critical).",
                Layer(
                    "Events",
                    Query(
                        in_range(
                            f'"{LATITUDE}", "{LONGITUDE}", "severity", "type", "vin"',
                            EVENTS_MEASUREMENT,
                            PICKED_VEHICLES,
                        ),  # fmt: skip
                        table=True,
                    ),
                    colour_by="severity",
                ),
                colours="continuous-GrYlRd",
            ),
            table(
                "Event list",
                "Events in the time range, newest first.",
                Query(
                    in_range(
                        '"vin", "type", "severity", "state", "duration_s"',
                        EVENTS_MEASUREMENT,
                        PICKED_VEHICLES,
                        tail=NEWEST_FIRST,
                    ),  # fmt: skip
                    table=True,
                ),
            ),
        ),
    )


def maintenance() -> Dashboard:
    battery, brakes = _MAINTENANCE.battery, _MAINTENANCE.brake_wear
    alert_columns = '"severity", "recommendation"'
    battery_columns = (
        f'"severity", "{VALUE_PREFIX}resting_voltage_v" AS "resting_v", '
        f'"{VALUE_PREFIX}cranking_min_v" AS "cranking_min_v"'
    )
    pad_used = f'"{VALUE_PREFIX}used_fraction" AS "pad_used"'
    return Dashboard(
        "roadwave-maintenance",
        "roadwave: maintenance",
        "Open maintenance alerts, trouble codes, battery and brake health (docs/maintenance.md). "
        "Open alerts are the current state, whatever the time range.",
        (
            table(
                "Active alerts",
                "Open alerts (active or acknowledged): the latest transition of each vehicle's alert types.",
                Query(open_alerts(PICKED_VEHICLES, alert_columns), table=True),
                width=24,
            ),
            table(
                "Trouble codes (DTCs)",
                "Open alerts of diagnostic trouble codes (alert types dtc_<CODE>): "
                "severity 1 pending, 2 confirmed.",
                Query(open_alerts(PICKED_VEHICLES, alert_columns, '"type" =~ /^dtc_/'), table=True),
            ),
            table(
                "Malfunction lamp (MIL)",
                "Each vehicle's latest diagnostic report in the time range: the malfunction lamp (empty: "
                "no ECU reported it), whether every trouble-code read was answered, the codes confirmed "
                "and pending, and the problems of the read.",
                Query(
                    in_range(
                        '"mil_on", "dtcs_complete", "confirmed_count", "pending_count", "problem_count", '
                        '"trigger"',
                        DIAGNOSTICS_SOURCE,
                        PICKED_VEHICLES,
                        group="vin",
                        tail=LATEST,
                    ),  # fmt: skip
                    table=True,
                ),
                overrides=(
                    column_override(
                        "mil_on", ("mappings", [MIL_MAPPING]), ("custom.cellOptions", {"type": "color-text"})
                    ),
                    column_override("Time", ("displayName", "latest report")),
                ),
            ),
            reported_dtcs(PICKED_VEHICLES),
            table(
                "Battery alerts",
                "Open battery alerts with the resting or cranking voltage that raised them.",
                Query(open_alerts(PICKED_VEHICLES, battery_columns, "\"type\" = 'battery'"), table=True),
            ),
            timeseries(
                "12 V battery voltage (lowest)",
                f"Lowest voltage per vehicle and interval: cranking dips below {battery.cranking_weak_v} V "
                "mark a weak battery.",
                per_vehicle("MIN", BATTERY, PICKED_VEHICLES),
                unit=unit_of(BATTERY),
                limits=thresholds("red", (battery.cranking_weak_v, "green")),
            ),
            bargauge(
                "Brake pads used (estimate)",
                f"Share of the pad budget used, for vehicles with an open brake_wear alert (raised at "
                f"{brakes.soon:.0%}); estimated from braking energy, see docs/maintenance.md.",
                Query(
                    open_alerts(
                        PICKED_VEHICLES, pad_used, "\"type\" = 'brake_wear'", outer='"pad_used"', group="vin"
                    ),
                    alias="$tag_vin",
                ),
                unit="percentunit",
                limits=thresholds(
                    "green", (brakes.soon, "yellow"), (brakes.due, "orange"), (brakes.overdue, "red")
                ),
            ),
            table(
                "Alert history",
                "Every alert transition in the time range, newest first.",
                Query(
                    in_range(
                        '"vin", "type", "transition", "state", "severity", "recommendation"',
                        ALERTS_MEASUREMENT,
                        PICKED_VEHICLES,
                        tail=NEWEST_FIRST,
                    ),  # fmt: skip
                    table=True,
                ),
                width=24,
            ),
        ),
    )


def traffic() -> Dashboard:
    speed = vss(SPEED)
    by_position = per_interval(
        f'{position_columns("MEAN")}, MEAN({speed}) AS "speed"',
        TELEMETRY_MEASUREMENT,
        PICKED_VEHICLES,
        by="vin",
    )
    slow = select(f'"{LATITUDE}", "{LONGITUDE}", "speed"', f"({by_position})", f'"speed" <= {SLOW_KMH:g}')
    slow_down_events = in_range(
        f'"{LATITUDE}", "{LONGITUDE}", "type", "vin"', EVENTS_MEASUREMENT, PICKED_VEHICLES,
        f'"type" =~ /^({"|".join(SLOW_DOWN_EVENTS)})$/',
    )  # fmt: skip
    return Dashboard(
        "roadwave-traffic",
        "roadwave: traffic",
        "Speeds over time and place, and where traffic slows down.",
        (
            timeseries(
                "Speed over time",
                "Mean, lowest and highest speed of the picked vehicles per interval.",
                Query(
                    per_interval(
                        f'MEAN({speed}) AS "mean", MIN({speed}) AS "min", MAX({speed}) AS "max"',
                        TELEMETRY_MEASUREMENT,
                        PICKED_VEHICLES,
                    ),  # fmt: skip
                ),
                unit=unit_of(SPEED),
                width=24,
            ),
            geomap(
                "Speed by position",
                "Mean position and speed per vehicle and interval.",
                Layer("Speed", Query(by_position, table=True), colour_by="speed"),
                colours="continuous-RdYlGr",
            ),
            geomap(
                "Slow-down hotspots",
                f"Heat: where vehicles drove at a mean speed of at most {SLOW_KMH:g} km/h in an interval "
                f"(the traffic-jam threshold). Markers: {', '.join(SLOW_DOWN_EVENTS)} events.",
                Layer("Slow traffic", Query(slow, table=True), kind="heatmap"),
                Layer("Slow-down events", Query(slow_down_events, table=True)),
            ),
        ),
    )


DASHBOARDS = (fleet_overview, vehicle_detail, safety_events, maintenance, traffic)


# --- files -----------------------------------------------------------------------------------


def render() -> dict[str, str]:
    """Every dashboard's file name and JSON text, as committed."""
    files: dict[str, str] = {}
    uids: set[str] = set()
    for build in DASHBOARDS:
        dashboard = build()
        if dashboard.uid in uids:
            raise DashboardError(f"dashboard uid {dashboard.uid} is used twice")
        uids.add(dashboard.uid)
        files[dashboard.file_name] = json.dumps(dashboard.to_json(), indent=2, ensure_ascii=False) + "\n"
    return files


def write(directory: Path = JSON_DIR) -> list[Path]:
    """Write every dashboard into ``directory``; remove other ``*.json`` files there (stale ones)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = render()
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in files:
            stale.unlink()
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def check(directory: Path = JSON_DIR) -> list[str]:
    """What differs between ``directory`` and the generator's output, one sentence each (empty: nothing)."""
    files = render()
    problems = []
    for name, text in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path} differs from the generator's output")
    problems += [
        f"{path} is not produced by the generator"
        for path in sorted(directory.glob("*.json"))
        if path.name not in files
    ]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dashboards.generate",
        description="Write the roadwave Grafana dashboards as JSON files.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are not up to date"
    )
    parser.add_argument(
        "--dir", type=Path, default=JSON_DIR, help=f"the dashboards folder (default: {JSON_DIR})"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m dashboards.generate` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    for path in write(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
