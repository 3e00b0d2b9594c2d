"""Alert transitions in InfluxDB, measurement ``alerts``, and the queries of the two alert views.

One point per :class:`~cloud.maintenance.alerts.Notification`:

========  ==================  =====================================================================
part      name                content
========  ==================  =====================================================================
tags      ``fleet``, ``vin``  the vehicle
tag       ``type``            the alert type (``coolant_overtemp``, ``dtc_P0301``, ...)
tag       ``state``           the alert's state after the transition: active, acknowledged, cleared
tag       ``transition``      opened, updated, escalated, acknowledged, cleared
fields    ``id``              the alert id (string)
          ``severity``,       integers
          ``count``
          ``first_seen``      integer ns
          ``recommendation``  string
          ``value_<measure>`` one float per measure of the alert (``value_ect_c``)
          ``document``        the whole alert as its JSON document (schema v1), to rebuild it
time                          the notification's time (ns); strictly increasing per vehicle and type
========  ==================  =====================================================================

Tags are the few bounded things a view filters or groups by: series stay at
vehicles x alert types x a handful of states and transitions. Writing a transition
twice overwrites the same point.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cloud.influx import InfluxClient, Scalar, format_line
from cloud.maintenance.alerts import CLEARED, Alert, AlertFormatError, Notification
from roadwave.contract import check_fleet, check_vin

ALERTS_MEASUREMENT = "alerts"
VALUE_PREFIX = "value_"


def alert_line(note: Notification) -> str:
    """The line protocol point of one transition."""
    alert = note.alert
    tags = {
        "fleet": alert.fleet,
        "vin": alert.vin,
        "type": alert.type,
        "state": alert.state,
        "transition": note.transition,
    }
    fields: dict[str, Scalar] = {
        "id": alert.id,
        "severity": alert.severity,
        "count": alert.count,
        "first_seen": alert.first_seen_ns,
        "recommendation": alert.recommendation,
        **{VALUE_PREFIX + name: number for name, number in alert.value.items()},
        "document": json.dumps(alert.to_dict(), separators=(",", ":"), allow_nan=False),
    }
    return format_line(ALERTS_MEASUREMENT, tags, fields, note.t_ns)


def alert_lines(notes: Iterable[Notification]) -> list[str]:
    """The points of several transitions, for :meth:`cloud.influx.InfluxClient.write_lines`."""
    return [alert_line(note) for note in notes]


def _latest_query(condition: str, fleet: str | None) -> str:
    """InfluxQL for the latest transition per vehicle and type that meets ``condition``."""
    where = "" if fleet is None else f" WHERE fleet = '{check_fleet(fleet)}'"
    latest = (
        'SELECT LAST("count") AS "count", "id", "severity", "state", "first_seen", "recommendation", '
        f'"document" FROM {ALERTS_MEASUREMENT}{where} GROUP BY fleet, vin, "type"'
    )
    return f"SELECT * FROM ({latest}) WHERE {condition}"


def active_alerts_query(fleet: str | None = None) -> str:
    """InfluxQL for "active alerts now": the latest transition per vehicle and type, unless cleared.

    One row per open alert with ``fleet``, ``vin``, ``type``, ``state``, ``id``,
    ``severity``, ``count``, ``first_seen``, ``recommendation`` and ``document``;
    ``time`` is its latest transition.

    Raises:
        ContractError: an invalid fleet name.
    """
    return _latest_query(f"\"state\" != '{CLEARED}'", fleet)


def cleared_alerts_query(since_ns: int, fleet: str | None = None) -> str:
    """InfluxQL for the alerts cleared from ``since_ns`` on whose type has not been raised again since.

    Rows as in :func:`active_alerts_query`; ``time`` is the clear.

    Raises:
        ContractError: an invalid fleet name.
    """
    return _latest_query(f"\"state\" = '{CLEARED}' AND time >= {int(since_ns)}", fleet)


def history_query(vin: str, since_ns: int | None = None) -> str:
    """InfluxQL for "alert history of a VIN": every transition, oldest first (from ``since_ns``).

    Raises:
        ContractError: an invalid VIN.
    """
    since = "" if since_ns is None else f" AND time >= {int(since_ns)}"
    return f"SELECT * FROM {ALERTS_MEASUREMENT} WHERE vin = '{check_vin(vin)}'{since} ORDER BY time ASC"


def _alert(row: dict[str, Any]) -> Alert:
    try:
        document = json.loads(row["document"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise AlertFormatError(
            f"stored alert point at {row.get('time')} has no valid document: {exc}"
        ) from None
    return Alert.from_dict(document)


def _read_alerts(client: InfluxClient, influxql: str) -> list[Alert]:
    alerts = [_alert(row) for row in client.query(influxql)]
    return sorted(alerts, key=lambda alert: (alert.first_seen_ns, alert.id))


def read_active(client: InfluxClient, fleet: str | None = None) -> list[Alert]:
    """The open alerts (of a fleet, or all), oldest first: what :class:`AlertBook` restores at start.

    Raises:
        InfluxError: InfluxDB is unreachable or refused the query.
        AlertFormatError: a stored document is not a valid alert.
    """
    return _read_alerts(client, active_alerts_query(fleet))


def read_cleared(client: InfluxClient, since_ns: int, fleet: str | None = None) -> list[Alert]:
    """The alerts cleared from ``since_ns`` on (see :func:`cleared_alerts_query`), oldest first.

    Raises:
        InfluxError: InfluxDB is unreachable or refused the query.
        AlertFormatError: a stored document is not a valid alert.
    """
    return _read_alerts(client, cleared_alerts_query(since_ns, fleet))


def read_history(client: InfluxClient, vin: str, since_ns: int | None = None) -> list[Notification]:
    """Every stored transition of a vehicle's alerts, oldest first.

    Raises:
        InfluxError: InfluxDB is unreachable or refused the query.
        AlertFormatError: a stored document is not a valid alert.
    """
    rows = client.query(history_query(vin, since_ns))
    return [Notification(row["transition"], row["time"], _alert(row)) for row in rows]
