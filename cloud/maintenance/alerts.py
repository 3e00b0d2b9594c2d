"""The alert lifecycle: observations in, alerts and the notifications to deliver out.

An alert is ``active`` (unacknowledged) when opened, ``acknowledged`` once someone
acknowledges it, and ``cleared`` once its condition has been gone for a hold time.
:class:`AlertBook` keeps at most one open (active or acknowledged) alert per fleet,
vehicle and alert type:

* a :class:`~cloud.maintenance.rules.Finding` opens an alert, or updates the open one:
  ``count`` + 1, ``last_seen``, latest ``value``, and the highest ``severity`` with its
  recommendation. A rise in severity *escalates* it: notified at once and active
  (unacknowledged) again, since it needs new attention.
* a :class:`~cloud.maintenance.rules.Normal` starts the hold: the alert clears once
  ``hold_s`` passes without a finding; ``cleared_at`` is when the hold ran out. A
  finding within the hold cancels it, so a condition that comes and goes keeps one
  alert and counts, instead of flapping. A finding after a clear opens a new alert,
  with a new id.
* updates are notified at most once per ``notify_interval_s`` per alert; the ones in
  between are coalesced into the next notification, which :meth:`AlertBook.tick`
  delivers when nothing else does. Openings, escalations, acknowledgements and clears
  are notified at once.

Every method returns the :class:`Notification` objects to deliver (and to store, see
``cloud.maintenance.store``). The book is deterministic: time only comes from the
arguments, and an alert's clock never runs backwards (an earlier time counts as the
latest one the alert has seen). Notification times strictly increase per fleet,
vehicle and alert type, so stored transitions never overwrite each other.

Alert JSON document, schema version 1 (:meth:`Alert.to_dict`; times in ns since the epoch)::

    {"v": 1, "id": "coolant_overtemp-RWDEM000000000001-1763700000000000000",
     "fleet": "demo", "vin": "RWDEM000000000001", "type": "coolant_overtemp",
     "severity": 3, "state": "acknowledged",
     "first_seen": 1763700000000000000, "last_seen": 1763700090000000000, "count": 2,
     "value": {"ect_c": 118.0, "above_s": 30.0}, "recommendation": "...",
     "acknowledged_by": "ops@example.com", "acknowledged_at": 1763700100000000000,
     "cleared_at": null}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from cloud.maintenance.rules import (
    MEASURE_PATTERN,
    SECOND_NS,
    SEVERITIES,
    TYPE_PATTERN,
    Finding,
    Normal,
    Observation,
    is_finite_number,
    is_timestamp,
)
from roadwave.contract import ContractError, check_fleet, check_vin

#: The alert JSON schema version :meth:`Alert.to_dict` writes and :meth:`Alert.from_dict` reads.
ALERT_SCHEMA_VERSION = 1
ACTIVE, ACKNOWLEDGED, CLEARED = "active", "acknowledged", "cleared"
STATES = (ACTIVE, ACKNOWLEDGED, CLEARED)
#: What happened to an alert: its transitions (acknowledged and cleared are also states).
OPENED, UPDATED, ESCALATED = "opened", "updated", "escalated"
TRANSITIONS = (OPENED, UPDATED, ESCALATED, ACKNOWLEDGED, CLEARED)
MAX_RECOMMENDATION = 1000
MAX_ACTOR = 128
MAX_MEASURES = 16


class AlertFormatError(ValueError):
    """An alert (document or value) that does not follow the alert schema; the message says where."""


class AlertError(ValueError):
    """A request the alert book cannot take; the message says why."""


class UnknownAlertError(AlertError):
    """No open alert has the given id (it never existed, or it was cleared)."""


def _check_time(name: str, value: Any) -> None:
    if not is_timestamp(value):
        raise AlertFormatError(f"{name!r}: {value!r} is not integer nanoseconds within years 2000-2099")


def _check_now(t_ns: Any) -> int:
    """A time given to the book: integer nanoseconds within the contract's years."""
    try:
        _check_time("time", t_ns)
    except AlertFormatError as exc:
        raise AlertError(str(exc)) from None
    return int(t_ns)


def check_actor(by: Any) -> str:
    """Return ``by`` if it names who acknowledges (1-128 printable characters), else raise AlertError."""
    if not isinstance(by, str) or not 0 < len(by) <= MAX_ACTOR or not by.isprintable():
        raise AlertError(f"who acknowledges must be 1-{MAX_ACTOR} printable characters, got {by!r}")
    return by


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert over its life (see the module docstring); times in ns since the epoch.

    ``value`` holds the latest measures (names carry units); ``recommendation`` is
    the plain-language advice of the most severe finding. Construction validates.
    """

    fleet: str
    vin: str
    type: str
    severity: int
    state: str
    first_seen_ns: int
    last_seen_ns: int
    count: int
    value: dict[str, float]
    recommendation: str
    acknowledged_by: str | None = None
    acknowledged_at_ns: int | None = None
    cleared_at_ns: int | None = None

    def __post_init__(self) -> None:
        try:
            check_fleet(self.fleet)
            check_vin(self.vin)
        except ContractError as exc:
            raise AlertFormatError(str(exc)) from None
        if not isinstance(self.type, str) or not TYPE_PATTERN.fullmatch(self.type):
            raise AlertFormatError(f"'type' {self.type!r} is not an alert type (a-z, 0-9, _ or dtc_<code>)")
        if type(self.severity) is not int or self.severity not in SEVERITIES:
            raise AlertFormatError(f"'severity' must be 1, 2 or 3, got {self.severity!r}")
        if self.state not in STATES:
            raise AlertFormatError(f"'state' must be one of {', '.join(STATES)}, got {self.state!r}")
        _check_time("first_seen", self.first_seen_ns)
        _check_time("last_seen", self.last_seen_ns)
        if self.last_seen_ns < self.first_seen_ns:
            raise AlertFormatError("'last_seen' is before 'first_seen'")
        if type(self.count) is not int or self.count < 1:
            raise AlertFormatError(f"'count' must be an integer >= 1, got {self.count!r}")
        self._check_value()
        text = self.recommendation
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_RECOMMENDATION:
            raise AlertFormatError(f"'recommendation' must be text of 1-{MAX_RECOMMENDATION} characters")
        self._check_acknowledgement()
        if self.state == CLEARED and self.cleared_at_ns is None:
            raise AlertFormatError("a cleared alert needs 'cleared_at'")
        if self.state != CLEARED and self.cleared_at_ns is not None:
            raise AlertFormatError(f"only a cleared alert has 'cleared_at' (state is {self.state})")
        if self.cleared_at_ns is not None:
            _check_time("cleared_at", self.cleared_at_ns)
            if self.cleared_at_ns < self.last_seen_ns:
                raise AlertFormatError("'cleared_at' is before 'last_seen'")

    def _check_value(self) -> None:
        value = self.value
        if not isinstance(value, dict) or len(value) > MAX_MEASURES:
            raise AlertFormatError(f"'value' must be an object of at most {MAX_MEASURES} measures")
        for name, number in value.items():
            if not isinstance(name, str) or not MEASURE_PATTERN.fullmatch(name):
                raise AlertFormatError(f"'value': {name!r} is not a measure name (a-z, 0-9, _)")
            if not is_finite_number(number):
                raise AlertFormatError(f"'value': {name} must be a finite number, got {number!r}")
        # InfluxDB fixes a field's type at its first write: measures are always floats.
        object.__setattr__(self, "value", {name: float(number) for name, number in value.items()})

    def _check_acknowledgement(self) -> None:
        by, at = self.acknowledged_by, self.acknowledged_at_ns
        if (by is None) != (at is None):
            raise AlertFormatError("'acknowledged_by' and 'acknowledged_at' go together")
        if self.state == ACKNOWLEDGED and by is None:
            raise AlertFormatError("an acknowledged alert needs 'acknowledged_by' and 'acknowledged_at'")
        if self.state == ACTIVE and by is not None:
            raise AlertFormatError("an active alert is not acknowledged: no 'acknowledged_by'")
        if by is not None:
            try:
                check_actor(by)
            except AlertError as exc:
                raise AlertFormatError(f"'acknowledged_by': {exc}") from None
            _check_time("acknowledged_at", at)

    @property
    def id(self) -> str:
        """Identifies the alert across its updates: type, VIN and first sighting."""
        return f"{self.type}-{self.vin}-{self.first_seen_ns}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready document (schema :data:`ALERT_SCHEMA_VERSION`)."""
        return {
            "v": ALERT_SCHEMA_VERSION,
            "id": self.id,
            "fleet": self.fleet,
            "vin": self.vin,
            "type": self.type,
            "severity": self.severity,
            "state": self.state,
            "first_seen": self.first_seen_ns,
            "last_seen": self.last_seen_ns,
            "count": self.count,
            "value": dict(self.value),
            "recommendation": self.recommendation,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at_ns,
            "cleared_at": self.cleared_at_ns,
        }

    @classmethod
    def from_dict(cls, document: Any) -> Alert:
        """Read and validate an alert document; keys it does not know are ignored.

        Raises:
            AlertFormatError: naming the key and the problem.
        """
        if not isinstance(document, dict):
            raise AlertFormatError("an alert must be a JSON object")
        version = _get(document, "v", int)
        if version != ALERT_SCHEMA_VERSION:
            raise AlertFormatError(f"alert schema version {version} is not {ALERT_SCHEMA_VERSION}")
        alert = cls(
            fleet=_get(document, "fleet", str),
            vin=_get(document, "vin", str),
            type=_get(document, "type", str),
            severity=_get(document, "severity", int),
            state=_get(document, "state", str),
            first_seen_ns=_get(document, "first_seen", int),
            last_seen_ns=_get(document, "last_seen", int),
            count=_get(document, "count", int),
            value=_get(document, "value", dict),
            recommendation=_get(document, "recommendation", str),
            acknowledged_by=_get(document, "acknowledged_by", str, nullable=True),
            acknowledged_at_ns=_get(document, "acknowledged_at", int, nullable=True),
            cleared_at_ns=_get(document, "cleared_at", int, nullable=True),
        )
        if _get(document, "id", str) != alert.id:
            raise AlertFormatError(
                f"'id' {document['id']!r} does not match type, vin and first_seen ({alert.id!r})"
            )
        return alert


def _get(document: dict[str, Any], key: str, kind: type, nullable: bool = False) -> Any:
    if key not in document:
        raise AlertFormatError(f"missing {key!r}")
    value = document[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        raise AlertFormatError(
            f"{key!r} must be {kind.__name__}{' or null' if nullable else ''}, got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Notification:
    """One transition to deliver: what happened (:data:`TRANSITIONS`), when, and the alert after it."""

    transition: str
    t_ns: int
    alert: Alert


Key = tuple[str, str, str]


class _Open:
    """An open alert and its lifecycle bookkeeping."""

    __slots__ = ("alert", "clock_ns", "notified_ns", "unnotified", "normal_since_ns", "hold_ns")

    def __init__(self, alert: Alert, t_ns: int) -> None:
        self.alert = alert
        #: Latest time this alert has seen; earlier times count as this one.
        self.clock_ns = t_ns
        self.notified_ns = t_ns
        #: Updates not notified yet (coalesced).
        self.unnotified = False
        #: When its condition was measured as gone, and how long it must stay gone.
        self.normal_since_ns: int | None = None
        self.hold_ns = 0

    def at(self, t_ns: int) -> int:
        """``t_ns``, or the alert's clock if that is later; advances the clock."""
        self.clock_ns = max(self.clock_ns, t_ns)
        return self.clock_ns


class AlertBook:
    """The open alerts of a fleet service and their transitions (see the module docstring).

    ``alerts`` restores open alerts, e.g. the "active now" view of the store at start.

    Raises:
        AlertError: a negative or non-finite interval, a cleared or duplicate alert to restore.
    """

    def __init__(self, notify_interval_s: float = 3600.0, alerts: Iterable[Alert] = ()) -> None:
        if not is_finite_number(notify_interval_s) or notify_interval_s < 0:
            raise AlertError(f"notify_interval_s must be a finite number >= 0, got {notify_interval_s!r}")
        self.notify_interval_ns = round(notify_interval_s * SECOND_NS)
        self._open: dict[Key, _Open] = {}
        self._by_id: dict[str, Key] = {}
        #: Time of the latest notification per key, so that the next one is later.
        self._last_note_ns: dict[Key, int] = {}
        for alert in alerts:
            key = (alert.fleet, alert.vin, alert.type)
            if alert.state == CLEARED or key in self._open:
                raise AlertError(f"cannot restore alert {alert.id}: it is cleared or its type is open twice")
            clock = max(alert.last_seen_ns, alert.acknowledged_at_ns or 0)
            self._add(key, _Open(alert, clock))
            self._last_note_ns[key] = clock

    def _add(self, key: Key, entry: _Open) -> None:
        self._open[key] = entry
        self._by_id[entry.alert.id] = key

    def _stamp(self, key: Key, t_ns: int) -> int:
        """The time of a notification at ``t_ns``: after the key's previous one."""
        stamped = max(t_ns, self._last_note_ns.get(key, t_ns - 1) + 1)
        self._last_note_ns[key] = stamped
        return stamped

    def _notify(self, entry: _Open, transition: str, t_ns: int) -> Notification:
        entry.notified_ns, entry.unnotified = t_ns, False
        entry.clock_ns = max(entry.clock_ns, t_ns)
        return Notification(transition, t_ns, entry.alert)

    def _settle(self, key: Key, entry: _Open, now_ns: int) -> list[Notification]:
        """Clear the alert if its condition has been gone for the hold time by ``now_ns``."""
        since = entry.normal_since_ns
        if since is None or now_ns <= since + entry.hold_ns:
            return []
        t_ns = self._stamp(key, since + entry.hold_ns)
        entry.alert = replace(entry.alert, state=CLEARED, cleared_at_ns=t_ns)
        del self._open[key], self._by_id[entry.alert.id]
        return [self._notify(entry, CLEARED, t_ns)]

    def observe(self, fleet: str, observations: Iterable[Observation]) -> list[Notification]:
        """Take a fleet's findings and normal readings (from the rules), in time order per vehicle.

        Raises:
            AlertError: an invalid fleet name or something that is not an observation.
            AlertFormatError: a finding that makes an invalid alert (the message names the part).
        """
        try:
            check_fleet(fleet)
        except ContractError as exc:
            raise AlertError(str(exc)) from None
        notes: list[Notification] = []
        for observation in observations:
            if isinstance(observation, Finding):
                notes += self._found(fleet, observation)
            elif isinstance(observation, Normal):
                notes += self._normal(fleet, observation)
            else:
                raise AlertError(f"expected a Finding or Normal, got {observation!r}")
        return notes

    def _found(self, fleet: str, finding: Finding) -> list[Notification]:
        key = (fleet, finding.vin, finding.type)
        entry = self._open.get(key)
        notes = [] if entry is None else self._settle(key, entry, finding.t_ns)
        entry = self._open.get(key)
        if entry is None:
            t_ns = self._stamp(key, finding.t_ns)
            alert = Alert(
                fleet, finding.vin, finding.type, finding.severity, ACTIVE, t_ns, t_ns, 1,
                finding.value, finding.recommendation,
            )  # fmt: skip
            entry = _Open(alert, t_ns)
            self._add(key, entry)
            return [*notes, self._notify(entry, OPENED, t_ns)]
        t_ns = entry.at(finding.t_ns)
        entry.normal_since_ns = None
        alert = entry.alert
        escalated = finding.severity > alert.severity
        changes: dict[str, Any] = {"last_seen_ns": t_ns, "count": alert.count + 1, "value": finding.value}
        if finding.severity >= alert.severity:
            changes.update(severity=finding.severity, recommendation=finding.recommendation)
        if escalated:
            changes.update(state=ACTIVE, acknowledged_by=None, acknowledged_at_ns=None)
        entry.alert = replace(alert, **changes)
        if escalated:
            notes.append(self._notify(entry, ESCALATED, self._stamp(key, t_ns)))
        elif t_ns - entry.notified_ns >= self.notify_interval_ns:
            notes.append(self._notify(entry, UPDATED, self._stamp(key, t_ns)))
        else:
            entry.unnotified = True
        return notes

    def _normal(self, fleet: str, normal: Normal) -> list[Notification]:
        key = (fleet, normal.vin, normal.type)
        entry = self._open.get(key)
        if entry is None:
            return []
        notes = self._settle(key, entry, normal.t_ns)
        if key in self._open and entry.normal_since_ns is None:
            entry.normal_since_ns = entry.at(normal.t_ns)
            entry.hold_ns = round(normal.hold_s * SECOND_NS)
        return notes

    def acknowledge(self, alert_id: str, by: str, t_ns: int) -> list[Notification]:
        """``by`` acknowledges an open alert at ``t_ns``.

        Acknowledging twice changes nothing (returns no notification). If the alert's
        hold ran out by ``t_ns``, it is cleared instead and that is the notification.

        Raises:
            UnknownAlertError: no open alert has this id.
            AlertError: ``by`` is not 1-128 printable characters, or the time is invalid.
        """
        check_actor(by)
        _check_now(t_ns)
        key = self._by_id.get(alert_id)
        if key is None:
            raise UnknownAlertError(f"no open alert has id {alert_id!r} (unknown, or cleared already)")
        entry = self._open[key]
        t_ns = entry.at(t_ns)
        notes = self._settle(key, entry, t_ns)
        if notes or entry.alert.state == ACKNOWLEDGED:
            return notes
        t_ns = self._stamp(key, t_ns)
        entry.alert = replace(entry.alert, state=ACKNOWLEDGED, acknowledged_by=by, acknowledged_at_ns=t_ns)
        return [self._notify(entry, ACKNOWLEDGED, t_ns)]

    def tick(self, now_ns: int, vin: str | None = None) -> list[Notification]:
        """Let time pass to ``now_ns`` (for one vehicle, or all): due clears and coalesced updates.

        Use the clock of the observations: e.g. after each telemetry batch, the
        batch's latest frame time for its vehicle.

        Raises:
            AlertError: ``now_ns`` is not integer nanoseconds within years 2000-2099.
        """
        _check_now(now_ns)
        notes: list[Notification] = []
        for key, entry in list(self._open.items()):
            if vin is not None and key[1] != vin:
                continue
            cleared = self._settle(key, entry, now_ns)
            notes += cleared
            if not cleared and entry.unnotified and now_ns - entry.notified_ns >= self.notify_interval_ns:
                notes.append(self._notify(entry, UPDATED, self._stamp(key, entry.at(now_ns))))
        return notes

    def open_alerts(self, vin: str | None = None) -> list[Alert]:
        """The open alerts (of one vehicle, or all), oldest first."""
        alerts = (entry.alert for key, entry in self._open.items() if vin is None or key[1] == vin)
        return sorted(alerts, key=lambda alert: (alert.first_seen_ns, alert.id))
