"""On-board diagnostics over CAN: OBD-II PIDs and trouble codes, UDS ReadDTCInformation.

Modules:

- :mod:`edge.diagnostics.dtc`: the DTC model (``P0301`` form, ISO 14229 status bits,
  short descriptions) and the payloads of UDS ReadDTCInformation (0x19).
- :mod:`edge.diagnostics.obd`: OBD-II mode 01 PIDs with their formulas, and the payloads
  of modes 01, 03, 04 and 07.
- :mod:`edge.diagnostics.client`: ISO-TP (ISO 15765-2) on a python-can bus, the
  request/response client and the periodic poller.
- :mod:`edge.diagnostics.agent`: the agent's ``[diagnostics]`` settings, the poller run
  for the agent's lifetime, and reports in the wire contract's form.

The package's exceptions live here, so every module raises from one tree::

    DiagnosticError
     +-- DiagnosticConfigError (ValueError)   settings out of range
     +-- EncodeError (ValueError)             values that do not fit a request or response
     +-- DtcError (ValueError)                text or bytes that are no DTC
     +-- ResponseFormatError (ValueError)     a response that breaks its service's layout
     +-- IsoTpFrameError (ValueError)         a CAN frame that breaks ISO 15765-2
     +-- IsoTpTransferError                   a multi-frame send the peer refused or let lapse
     +-- NegativeResponseError                the ECU answered 0x7F
     +-- DiagnosticTimeout (TimeoutError)     the ECU did not answer in time

``ResponseFormatError`` and ``IsoTpFrameError`` carry a short ``reason`` that callers
count by.
"""

from __future__ import annotations


class DiagnosticError(Exception):
    """Root of the diagnostics exceptions."""


class DiagnosticConfigError(DiagnosticError, ValueError):
    """A diagnostics setting is out of range or of the wrong type."""


class EncodeError(DiagnosticError, ValueError):
    """Values that do not fit the request or response being built."""


class DtcError(DiagnosticError, ValueError):
    """Text or bytes that do not form a diagnostic trouble code."""


class ResponseFormatError(DiagnosticError, ValueError):
    """A response payload that does not follow its service's layout.

    ``reason`` is a short, stable key (``"length"``, ``"dtc count"``...) for counters.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class IsoTpFrameError(DiagnosticError, ValueError):
    """A CAN frame that breaks ISO 15765-2; ``reason`` is a short key for counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class IsoTpTransferError(DiagnosticError):
    """A multi-frame send failed: no flow control in time, overflow, or too many waits."""


class NegativeResponseError(DiagnosticError):
    """An ECU answered a request with a negative response (0x7F)."""

    def __init__(self, ecu: int, service: int, code: int, name: str) -> None:
        super().__init__(f"ECU 0x{ecu:03X} refused service 0x{service:02X}: 0x{code:02X} {name}")
        self.ecu, self.service, self.code, self.name = ecu, service, code, name


class DiagnosticTimeout(DiagnosticError, TimeoutError):
    """No (complete) response arrived in time."""
