"""Maintenance alerts on the wire: the alert document (schema v1), partner topics, acknowledgements.

The alerting service (``cloud.alerting``) delivers each alert to every partner that
serves the vehicle (``roadwave.registry``), and partners acknowledge alerts back::

    roadwave/v1/partners/{partner}/alerts/{fleet}/{vin}/{type}   alert document (QoS 1, retained)
    roadwave/v1/partners/{partner}/ack                           acknowledgement (QoS 1)

The retained message of an alert topic is the current state of the vehicle's alert of
that type; an empty retained message removes a cleared one (docs/alerts.md).

Alert document, schema version 1 (:meth:`Alert.to_dict`; times in ns since the epoch)::

    {"v": 1, "id": "coolant_overtemp-RWDEM000000000001-1763700000000000000",
     "fleet": "demo", "vin": "RWDEM000000000001", "type": "coolant_overtemp",
     "severity": 3, "state": "acknowledged",
     "first_seen": 1763700000000000000, "last_seen": 1763700090000000000, "count": 2,
     "value": {"ect_c": 118.0, "above_s": 30.0}, "recommendation": "...",
     "acknowledged_by": "acme-garage:alice", "acknowledged_at": 1763700100000000000,
     "cleared_at": null}

Acknowledgement, schema version 1: ``{"v": 1, "id": "<alert id>", "by": "alice"}``. The
topic names the partner; the alert records ``acknowledged_by`` as ``{partner}:{by}``.
Readers ignore keys they do not know, so additions they may ignore stay version 1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from roadwave.contract import (
    TOPIC_ROOT,
    TOPIC_VERSION,
    ContractError,
    PayloadError,
    TopicError,
    _reject_constant,
    check_fleet,
    check_vin,
    dump_payload,
    is_finite_number,
    is_timestamp,
    read_field,
)
from roadwave.pki import PARTNER, PkiError, check_identity

#: The alert JSON schema version :meth:`Alert.to_dict` writes and :meth:`Alert.from_dict` reads.
ALERT_SCHEMA_VERSION: Final = 1
ACK_SCHEMA_VERSION: Final = 1
ACTIVE, ACKNOWLEDGED, CLEARED = "active", "acknowledged", "cleared"
STATES: Final = (ACTIVE, ACKNOWLEDGED, CLEARED)
SEVERITIES: Final = (1, 2, 3)
TYPE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,31}|dtc_[PCBU][0-3][0-9A-F]{3}")
MEASURE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ID_PATTERN: Final = re.compile(rf"({TYPE_PATTERN.pattern})-([^-]+)-([0-9]{{1,19}})")
MAX_RECOMMENDATION: Final = 1000
MAX_ACTOR: Final = 128
MAX_MEASURES: Final = 16
#: A partner id is at most 64 characters, so ``{partner}:{by}`` fits into :data:`MAX_ACTOR`.
MAX_ACK_BY: Final = MAX_ACTOR - 64 - 1
#: Largest alert and acknowledgement payloads accepted, in bytes.
MAX_ALERT_BYTES: Final = 16 * 1024
MAX_ACK_BYTES: Final = 1024

PARTNERS: Final = "partners"
PARTNER_ALERTS: Final = "alerts"
PARTNER_ACK: Final = "ack"
PARTNER_ROOT: Final = f"{TOPIC_ROOT}/{TOPIC_VERSION}/{PARTNERS}"
#: What the alerting service publishes to: every partner's alerts.
ALL_ALERTS_FILTER: Final = f"{PARTNER_ROOT}/+/{PARTNER_ALERTS}/#"
#: What the alerting service subscribes to: every partner's acknowledgements.
ACK_SUBSCRIPTION: Final = f"{PARTNER_ROOT}/+/{PARTNER_ACK}"


class AlertFormatError(PayloadError):
    """An alert (document or value) that does not follow the alert schema; the message says where."""


def check_timestamp(name: str, value: Any) -> int:
    """Return ``value`` if it is a time of the contract, else raise :class:`AlertFormatError` naming it."""
    if not is_timestamp(value):
        raise AlertFormatError(f"{name!r}: {value!r} is not integer nanoseconds within years 2000-2099")
    return int(value)


def check_actor(by: Any, limit: int = MAX_ACTOR) -> str:
    """Return ``by`` if it names who acknowledges (1-``limit`` printable characters), else raise."""
    if not isinstance(by, str) or not 0 < len(by) <= limit or not by.isprintable():
        raise AlertFormatError(f"who acknowledges must be 1-{limit} printable characters, got {by!r}")
    return by


def parse_alert_id(alert_id: Any) -> tuple[str, str, int]:
    """The type, VIN and first sighting (ns) an alert id is made of (see :attr:`Alert.id`).

    Raises:
        AlertFormatError: ``alert_id`` is not ``{type}-{vin}-{first_seen}``.
    """
    match = _ID_PATTERN.fullmatch(alert_id) if isinstance(alert_id, str) else None
    if match is None or not is_timestamp(int(match[3])):
        raise AlertFormatError(f"alert id {alert_id!r} is not TYPE-VIN-FIRST_SEEN_NS")
    try:
        check_vin(match[2])
    except ContractError as exc:
        raise AlertFormatError(f"alert id {alert_id!r}: {exc}") from None
    return match[1], match[2], int(match[3])


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert over its life (docs/maintenance.md); times in ns since the epoch.

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
        check_timestamp("first_seen", self.first_seen_ns)
        check_timestamp("last_seen", self.last_seen_ns)
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
            check_timestamp("cleared_at", self.cleared_at_ns)
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
            except AlertFormatError as exc:
                raise AlertFormatError(f"'acknowledged_by': {exc}") from None
            check_timestamp("acknowledged_at", at)

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
    return read_field(document, key, kind, error=AlertFormatError, nullable=nullable)


# --- partner topics -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertAddress:
    """The parts of a partner alert topic."""

    partner: str
    fleet: str
    vin: str
    type: str


def check_partner(partner: str) -> str:
    """Return ``partner`` if it is a partner id (its certificate's Common Name), else raise TopicError."""
    try:
        return check_identity(PARTNER, partner)
    except PkiError as exc:
        raise TopicError(str(exc)) from None


def partner_alerts_filter(partner: str, fleet: str | None = None, vin: str | None = None) -> str:
    """The topic filter of a partner's alerts: all of them, a fleet's, or one vehicle's of a fleet."""
    scope = f"/{check_fleet(fleet)}" if fleet is not None else ""
    if vin is not None:
        if fleet is None:
            raise TopicError("a vehicle's alert filter needs its fleet")
        scope += f"/{check_vin(vin)}"
    return f"{PARTNER_ROOT}/{check_partner(partner)}/{PARTNER_ALERTS}{scope}/#"


def alert_topic(partner: str, alert: Alert) -> str:
    """The topic of ``partner``'s copy of an alert: the vehicle's alert of that type."""
    partner = check_partner(partner)
    return f"{PARTNER_ROOT}/{partner}/{PARTNER_ALERTS}/{alert.fleet}/{alert.vin}/{alert.type}"


def parse_alert_topic(topic: str) -> AlertAddress:
    """Split a partner alert topic into partner, fleet, VIN and alert type.

    Raises:
        TopicError: ``topic`` is not ``roadwave/v1/partners/{partner}/alerts/{fleet}/{vin}/{type}``.
    """
    parts = topic.split("/")
    if len(parts) != 8 or "/".join(parts[:3]) != PARTNER_ROOT or parts[4] != PARTNER_ALERTS:
        raise TopicError(f"topic {topic!r} is not {PARTNER_ROOT}/PARTNER/{PARTNER_ALERTS}/FLEET/VIN/TYPE")
    if not TYPE_PATTERN.fullmatch(parts[7]):
        raise TopicError(f"topic {topic!r}: {parts[7]!r} is not an alert type")
    try:
        return AlertAddress(check_partner(parts[3]), check_fleet(parts[5]), check_vin(parts[6]), parts[7])
    except ContractError as exc:
        raise TopicError(f"topic {topic!r}: {exc}") from None


def ack_topic(partner: str) -> str:
    """The topic a partner publishes its acknowledgements to."""
    return f"{PARTNER_ROOT}/{check_partner(partner)}/{PARTNER_ACK}"


def parse_ack_topic(topic: str) -> str:
    """The partner of an acknowledgement topic.

    Raises:
        TopicError: ``topic`` is not ``roadwave/v1/partners/{partner}/ack``.
    """
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PARTNER_ROOT or parts[4] != PARTNER_ACK:
        raise TopicError(f"topic {topic!r} is not {PARTNER_ROOT}/PARTNER/{PARTNER_ACK}")
    return check_partner(parts[3])


# --- payloads -----------------------------------------------------------------------------


def _load(payload: bytes, max_bytes: int, what: str) -> Any:
    if len(payload) > max_bytes:
        raise PayloadError(f"{what} of {len(payload)} bytes exceeds {max_bytes}")
    try:
        return json.loads(payload, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of more than 4300 digits
        raise PayloadError(f"{what} is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(f"{what} nests too deeply") from None


def encode_alert(alert: Alert) -> bytes:
    """The payload of an alert topic: the alert document, compact JSON."""
    return dump_payload(alert.to_dict())


def decode_alert(topic: str, payload: bytes) -> tuple[AlertAddress, Alert]:
    """The address and alert of a message received on a partner alert topic.

    An empty payload is not an alert: it removes the retained one (check before calling).

    Raises:
        PayloadError: the topic or payload breaks the contract (an :class:`AlertFormatError`
            when the document itself is wrong, or names another vehicle or type than the topic).
    """
    try:
        address = parse_alert_topic(topic)
    except TopicError as exc:
        raise PayloadError(str(exc)) from None
    alert = Alert.from_dict(_load(payload, MAX_ALERT_BYTES, "alert"))
    if (alert.fleet, alert.vin, alert.type) != (address.fleet, address.vin, address.type):
        raise AlertFormatError(
            f"alert {alert.id} of fleet {alert.fleet!r} was published on {topic!r}, another vehicle or type"
        )
    return address, alert


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """A partner acknowledges an alert; ``by`` names the person or system at the partner."""

    partner: str
    alert_id: str
    by: str

    def __post_init__(self) -> None:
        try:
            check_partner(self.partner)
        except TopicError as exc:
            raise AlertFormatError(str(exc)) from None
        parse_alert_id(self.alert_id)
        check_actor(self.by, MAX_ACK_BY)

    @property
    def actor(self) -> str:
        """Who acknowledged, as the alert records it: ``{partner}:{by}``."""
        return f"{self.partner}:{self.by}"


def encode_ack(ack: Acknowledgement) -> bytes:
    """The payload of an acknowledgement (its topic, :func:`ack_topic`, names the partner)."""
    return dump_payload({"v": ACK_SCHEMA_VERSION, "id": ack.alert_id, "by": ack.by})


def decode_ack(topic: str, payload: bytes) -> Acknowledgement:
    """The acknowledgement received on ``topic``.

    Raises:
        PayloadError: the topic or payload breaks the contract; the message says which part.
    """
    try:
        partner = parse_ack_topic(topic)
    except TopicError as exc:
        raise PayloadError(str(exc)) from None
    document = _load(payload, MAX_ACK_BYTES, "acknowledgement")
    if not isinstance(document, dict):
        raise AlertFormatError("an acknowledgement must be a JSON object")
    version = _get(document, "v", int)
    if version != ACK_SCHEMA_VERSION:
        raise AlertFormatError(f"acknowledgement schema version {version} is not {ACK_SCHEMA_VERSION}")
    return Acknowledgement(partner, _get(document, "id", str), _get(document, "by", str))
