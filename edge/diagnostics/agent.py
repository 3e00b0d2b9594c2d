"""Diagnostics in the edge agent: the ``[diagnostics]`` settings, the wire view of a report, the glue.

Example (every key optional; the section's presence switches diagnostics on)::

    [diagnostics]
    bus = "can0"                 # a live [[bus]]; default: the only live one
    interval_s = 60.0            # a read cycle at start, then this often
    pids = [0x05, "0x0C", "42"]  # mode 01 PIDs: integers, or strings read as hex
    obd_dtcs = true              # modes 03 and 07 from every OBD ECU
    uds_targets = [0x7E0, 0x7E1] # UDS 0x19 0x02, physically, from these request IDs
    # mil_signal = "..."         # a boolean VSS path the buses' mapping produces: true -> a cycle now
    response_timeout_s = 0.1     # how long ECUs get to answer

:class:`AgentDiagnostics` runs a :class:`DiagnosticPoller` for the agent's lifetime on the
notifier already reading the bus, feeds it the MIL from decoded records, and hands each
report, converted by :func:`contract_report`, to the agent's uplink.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass

import can

from edge.diagnostics import DiagnosticConfigError, obd
from edge.diagnostics.client import (
    DEFAULT_P2_S,
    DiagnosticClient,
    DiagnosticPoller,
    DiagnosticReport,
    PollerConfig,
    ProblemKind,
)
from edge.diagnostics.dtc import READ_DTC_INFORMATION
from roadwave.configfile import Table
from roadwave.contract import VSS_CATALOG, Record
from roadwave.contract.diagnostics import DiagnosticsReport, PidReading, ReportedDtc

#: Services whose answers make up the trouble-code list.
DTC_SERVICES = frozenset({obd.SHOW_STORED_DTCS, obd.SHOW_PENDING_DTCS, READ_DTC_INFORMATION})
#: Problems after which a trouble-code list may miss codes; a negative response is an answer.
INCOMPLETE_KINDS = frozenset({ProblemKind.TIMEOUT, ProblemKind.MALFORMED, ProblemKind.SEND_FAILED})
#: No signal of the reference DBC or of the VSS catalog carries the malfunction indicator
#: lamp, so by default the MIL is only read from the ECUs (PID 0x01) in each cycle.
DEFAULT_MIL_SIGNAL = None
#: Shortest interval between cycles: a cycle sends about ten requests.
MIN_INTERVAL_S = 1.0
_HEX = re.compile(r"(0[xX])?[0-9A-Fa-f]{1,8}")
_DEFAULTS = PollerConfig()


@dataclass(frozen=True)
class DiagnosticsSettings:
    """``[diagnostics]``: the live bus the ECUs answer on, what each cycle reads, the MIL signal."""

    bus: str
    poller: PollerConfig = _DEFAULTS
    mil_signal: str | None = DEFAULT_MIL_SIGNAL
    response_timeout_s: float = DEFAULT_P2_S

    @classmethod
    def read(
        cls, table: Table, live: Collection[str], replayed: Collection[str]
    ) -> DiagnosticsSettings | None:
        """Read a ``[diagnostics]`` table; None when ``enabled = false``.

        ``live`` and ``replayed`` are the names of the configured buses of each kind; the
        bus is checked only when enabled, every other key always.

        Raises:
            ConfigError: naming the file, the table, the key and the problem.
        """
        enabled = table.flag("enabled", True)
        bus = table.text("bus", None)
        try:
            poller = PollerConfig(
                interval_s=table.number("interval_s", _DEFAULTS.interval_s, minimum=MIN_INTERVAL_S),
                pids=_can_numbers(table, "pids", _DEFAULTS.pids),
                obd_dtcs=table.flag("obd_dtcs", _DEFAULTS.obd_dtcs),
                uds_targets=_can_numbers(table, "uds_targets", _DEFAULTS.uds_targets),
            )
        except DiagnosticConfigError as exc:
            raise table.error(str(exc)) from None
        mil_signal = table.text("mil_signal", DEFAULT_MIL_SIGNAL)
        response_timeout_s = table.number("response_timeout_s", DEFAULT_P2_S, minimum=0.01, maximum=10.0)
        table.finish()
        if mil_signal is not None:
            problem = mil_signal_problem(mil_signal)
            if problem:
                raise table.error(problem)
        if not enabled:
            return None
        if bus is None:
            if len(live) != 1:
                names = ", ".join(live) or "none is configured"
                raise table.error(f"bus is required: name the live [[bus]] the ECUs answer on ({names})")
            (bus,) = live
        problem = bus_problem(bus, live, replayed)
        if problem:
            raise table.error(problem)
        return cls(bus, poller, mil_signal, response_timeout_s)


def _can_numbers(table: Table, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """A list of integers or hex strings (``"0x0C"`` or ``"0C"``)."""
    items = table.array(key, None)
    if items is None:
        return default
    numbers = []
    for index, item in enumerate(items):
        if isinstance(item, str) and _HEX.fullmatch(item):
            numbers.append(int(item, 16))
        elif isinstance(item, int) and not isinstance(item, bool):
            numbers.append(item)
        else:
            raise table.error(f'{key}[{index}]: {item!r} is neither an integer nor a hex string like "0x0C"')
    return tuple(numbers)


def bus_problem(bus: str, live: Collection[str], replayed: Collection[str]) -> str | None:
    """Why ``bus`` cannot carry diagnostic requests, or None if it can."""
    if bus in replayed:
        return (
            f"bus {bus!r} replays a log, which cannot answer diagnostic requests: "
            "name a live bus (interface and channel)"
        )
    if bus not in live:
        return f"bus {bus!r} is not a configured [[bus]]; live buses: {', '.join(live) or 'none'}"
    return None


def mil_signal_problem(path: str) -> str | None:
    """Why ``path`` cannot be the MIL signal, or None if it can."""
    signal = VSS_CATALOG.get(path)
    if signal is None:
        return f"mil_signal {path!r} is not in the roadwave VSS catalog"
    if signal.datatype != "boolean":
        return f"mil_signal {path!r} is a {signal.datatype} signal; the lamp needs a boolean one"
    return None


def _ecu_hex(can_id: int) -> str:
    return f"{can_id:08X}" if can_id > 0x7FF else f"{can_id:03X}"


def dtcs_complete(report: DiagnosticReport, obd_dtcs: bool = True) -> bool:
    """Whether the report's trouble codes are all the ECUs hold.

    False when a DTC read (0x03, 0x07, 0x19) went unanswered, arrived broken or could not
    be sent, or when OBD codes were asked for and no OBD ECU was ever found.
    """
    if obd_dtcs and not report.ecus:
        return False
    return not any(p.service in DTC_SERVICES and p.kind in INCOMPLETE_KINDS for p in report.problems)


def contract_report(report: DiagnosticReport, obd_dtcs: bool = True) -> DiagnosticsReport:
    """The wire form of a poller's report (``obd_dtcs``: whether the cycle read modes 03/07)."""
    return DiagnosticsReport(
        t_ns=report.t_ns,
        trigger=report.trigger,
        mil_on=report.mil_on,
        dtcs_complete=dtcs_complete(report, obd_dtcs),
        readings=tuple(PidReading(_ecu_hex(r.ecu), r.pid, r.name, r.value, r.unit) for r in report.readings),
        dtcs=tuple(
            ReportedDtc(
                ecu=_ecu_hex(d.ecu),
                code=d.dtc.code,
                status=d.status.labels(),
                source=d.source.value,
                failure_type=d.dtc.failure_type,
                description=d.dtc.description,
            )
            for d in report.dtcs
        ),
        problems=dict(Counter(p.kind.value for p in report.problems)),
    )


class AgentDiagnostics:
    """The agent's diagnostics: a poller on a live bus, fed the MIL, publishing every report.

    :meth:`start` adds the client to the notifier that already reads the bus and starts
    the poller's thread; each report goes to ``publish`` (from that thread) in its wire
    form. :meth:`on_record` takes every decoded record: a good sample of the MIL signal
    that turns the lamp on triggers a cycle (records before :meth:`start` are not needed:
    the first cycle reads the MIL from the ECUs).
    """

    def __init__(self, settings: DiagnosticsSettings, publish: Callable[[DiagnosticsReport], None]) -> None:
        self.settings = settings
        self._publish = publish
        self._client: DiagnosticClient | None = None
        self._poller: DiagnosticPoller | None = None
        self.reports_sent = 0

    def start(self, bus: can.BusABC, notifier: can.Notifier) -> None:
        if self._client is not None:
            raise RuntimeError("the agent's diagnostics are already running")
        self._client = DiagnosticClient(bus, notifier, p2_s=self.settings.response_timeout_s)
        self._poller = DiagnosticPoller(self._client, self.settings.poller, self._send)
        self._poller.start()

    def stop(self) -> None:
        """Stop after the cycle under way and stop listening; idempotent."""
        if self._poller is not None:
            self._poller.stop()
        if self._client is not None:
            self._client.close()

    def on_record(self, record: Record) -> None:
        poller, path = self._poller, self.settings.mil_signal
        if poller is None or path is None or path in record.quality:  # stale or failed integrity
            return
        value = record.signals.get(path)
        if value is not None:
            poller.report_mil(bool(value))

    def counters(self) -> dict[str, int]:
        """Cycles, MIL triggers, failures, reports sent and problems by kind (``problems_timeout``...)."""
        if self._poller is None:
            return {"reports_sent": self.reports_sent}
        stats = self._poller.stats
        return {
            "cycles": stats.cycles,
            "mil_triggers": stats.mil_triggers,
            "cycle_errors": stats.cycle_errors,
            "publish_errors": stats.sink_errors,
            "reports_sent": self.reports_sent,
            **{f"problems_{kind}": count for kind, count in sorted(stats.problems.items())},
        }

    def _send(self, report: DiagnosticReport) -> None:
        self._publish(contract_report(report, self.settings.poller.obd_dtcs))
        self.reports_sent += 1
