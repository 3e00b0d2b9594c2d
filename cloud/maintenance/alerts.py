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

The alert document (:class:`Alert`, schema version 1) is part of the wire contract:
:mod:`roadwave.contract.alerts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from cloud.maintenance.rules import SECOND_NS, Finding, Normal, Observation
from roadwave.contract import ContractError, check_fleet, is_finite_number
from roadwave.contract.alerts import (
    ACKNOWLEDGED,
    ACTIVE,
    CLEARED,
    Alert,
    AlertFormatError,
    check_actor,
    check_timestamp,
)

#: What happened to an alert: its transitions (acknowledged and cleared are also states).
OPENED, UPDATED, ESCALATED = "opened", "updated", "escalated"
TRANSITIONS = (OPENED, UPDATED, ESCALATED, ACKNOWLEDGED, CLEARED)


class AlertError(ValueError):
    """A request the alert book cannot take; the message says why."""


class UnknownAlertError(AlertError):
    """No open alert has the given id (it never existed, or it was cleared)."""


def _check_request(check: Any, *args: Any) -> Any:
    """Run a contract check on a request to the book, raising :class:`AlertError` with its message."""
    try:
        return check(*args)
    except AlertFormatError as exc:
        raise AlertError(str(exc)) from None


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
        _check_request(check_actor, by)
        _check_request(check_timestamp, "time", t_ns)
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
        _check_request(check_timestamp, "time", now_ns)
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
