"""Diagnostic requests over ISO-TP on a shared python-can bus, and the periodic poller.

Layers, bottom up:

- ISO-TP (ISO 15765-2, classic CAN, normal 11-bit addressing): :func:`segment` cuts a
  payload into single / first / consecutive frames, :class:`Reassembler` puts one
  sender's frames back together (pure: the caller passes the time), and
  :class:`IsoTpEndpoint` is a :class:`can.Listener` that runs both on a bus another
  component may be reading too: it is added to that component's :class:`can.Notifier`,
  drops foreign IDs after one dictionary lookup, sends flow control, and honours the
  peer's flow control (block size, STmin, wait frames) when it sends multi-frame.
- Request/response (ISO 15765-4 addressing): functional requests go to 0x7DF and every
  OBD ECU answers from 0x7E8-0x7EF; physical requests go to 0x7E0-0x7E7 and the answer
  comes from the ID + 8. :class:`ResponseCollector` (pure) matches answers to a request,
  follows negative responses including 0x78 responsePending, and decides when waiting
  is over. :class:`DiagnosticClient` wraps it with the high-level reads.
- :class:`DiagnosticPoller` runs a read cycle every ``interval_s`` and at once when told
  the MIL came on, and hands each :class:`DiagnosticReport` to a callback.

ECUs are named by the CAN ID they answer from (0x7E8 is usually the engine).
29-bit OBD addressing (0x18DB33F1) and CAN FD frames are not supported.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Generic, Self, TypeVar

import can

from edge.diagnostics import (
    DiagnosticConfigError,
    DiagnosticError,
    DiagnosticTimeout,
    EncodeError,
    IsoTpFrameError,
    IsoTpTransferError,
    NegativeResponseError,
    obd,
)
from edge.diagnostics.dtc import (
    POSITIVE_OFFSET,
    READ_DTC_INFORMATION,
    REPORT_BY_STATUS_MASK,
    Dtc,
    DtcStatus,
    parse_dtc_report,
    read_dtc_request,
)

LOGGER = logging.getLogger(__name__)

# --- addressing (ISO 15765-4) -------------------------------------------------------------

FUNCTIONAL_REQUEST_ID = 0x7DF
PHYSICAL_REQUEST_IDS = range(0x7E0, 0x7E8)
RESPONSE_IDS = range(0x7E8, 0x7F0)
#: A physical response comes from the request ID + 8 (and flow control goes the other way).
RESPONSE_OFFSET = 8
#: The top 13 bits of 29-bit diagnostic IDs (ISO 15765-4): 0x18DA<target><source> for physical
#: and 0x18DB<target><source> for functional addressing (0x18DB33F1: every OBD ECU).
DIAGNOSTIC_29BIT_PREFIXES = frozenset({0x18DA, 0x18DB})


def is_diagnostic_id(can_id: int, extended: bool) -> bool:
    """Whether a CAN ID carries OBD/UDS requests or responses (ISO 15765-4 addressing).

    11-bit: 0x7DF and 0x7E0-0x7EF; 29-bit: 0x18DAxxxx and 0x18DBxxxx.
    """
    if extended:
        return can_id >> 16 in DIAGNOSTIC_29BIT_PREFIXES
    return can_id == FUNCTIONAL_REQUEST_ID or PHYSICAL_REQUEST_IDS.start <= can_id < RESPONSE_IDS.stop


# --- ISO-TP framing (ISO 15765-2) ---------------------------------------------------------

FRAME_BYTES = 8
MAX_MESSAGE_BYTES = 4095
SINGLE_FRAME_MAX = FRAME_BYTES - 1
FIRST_FRAME_DATA = FRAME_BYTES - 2
CONSECUTIVE_FRAME_DATA = FRAME_BYTES - 1


class FrameType(enum.IntEnum):
    """The protocol control information type, the high nibble of byte 0."""

    SINGLE = 0
    FIRST = 1
    CONSECUTIVE = 2
    FLOW_CONTROL = 3


class FlowStatus(enum.IntEnum):
    CONTINUE = 0
    WAIT = 1
    OVERFLOW = 2


@dataclass(frozen=True, slots=True)
class FlowControl:
    """A decoded flow control frame; ``block_size`` 0 means "send everything"."""

    status: FlowStatus
    block_size: int
    separation_s: float


def _pad(frame: bytes, padding: int) -> bytes:
    return frame + bytes([padding]) * (FRAME_BYTES - len(frame))


def segment(payload: bytes, padding: int = 0xAA) -> list[bytes]:
    """The frames carrying ``payload``: one single frame, or a first frame and consecutive frames.

    Frames are padded to 8 bytes, as ISO 15765-4 requires for OBD.
    """
    if not 1 <= len(payload) <= MAX_MESSAGE_BYTES:
        raise EncodeError(f"an ISO-TP message carries 1 to {MAX_MESSAGE_BYTES} bytes, got {len(payload)}")
    if len(payload) <= SINGLE_FRAME_MAX:
        return [_pad(bytes([len(payload)]) + payload, padding)]
    size = len(payload)
    frames = [bytes([FrameType.FIRST << 4 | size >> 8, size & 0xFF]) + payload[:FIRST_FRAME_DATA]]
    for n, start in enumerate(range(FIRST_FRAME_DATA, size, CONSECUTIVE_FRAME_DATA), 1):
        chunk = payload[start : start + CONSECUTIVE_FRAME_DATA]
        frames.append(_pad(bytes([FrameType.CONSECUTIVE << 4 | n & 0x0F]) + chunk, padding))
    return frames


def flow_control_frame(status: FlowStatus, block_size: int, st_min_ms: int, padding: int = 0xAA) -> bytes:
    """A flow control frame; ``st_min_ms`` is the minimum gap between consecutive frames."""
    return _pad(bytes([FrameType.FLOW_CONTROL << 4 | status, block_size, st_min_ms]), padding)


def parse_flow_control(data: bytes) -> FlowControl:
    """Decode a flow control frame; reserved STmin values count as 127 ms (ISO 15765-2)."""
    if len(data) < 3:
        raise IsoTpFrameError("short frame", f"a flow control frame has 3 bytes, got {bytes(data).hex()}")
    try:
        status = FlowStatus(data[0] & 0x0F)
    except ValueError:
        raise IsoTpFrameError("flow status", f"flow status {data[0] & 0x0F} is reserved") from None
    st_min = data[2]
    if st_min <= 0x7F:
        separation = st_min / 1000
    elif 0xF1 <= st_min <= 0xF9:
        separation = (st_min - 0xF0) / 10_000
    else:
        separation = 0.127
    return FlowControl(status, data[1], separation)


@dataclass(frozen=True, slots=True)
class Fed:
    """What one frame fed to a :class:`Reassembler` produced."""

    payload: bytes | None = None  # a complete message
    flow_control: bytes | None = None  # to send to the peer now
    abandoned: str | None = None  # why an unfinished message was given up


class Reassembler:
    """Reassembles the single, first and consecutive frames of one sender.

    Pure: ``now`` (seconds, any monotonic clock) comes with every call. Invalid frames
    raise :class:`IsoTpFrameError` and leave a transfer in progress untouched, except a
    wrong sequence number or a short consecutive frame, which end it.
    """

    def __init__(self, block_size: int, st_min_ms: int, n_cr_s: float, padding: int = 0xAA) -> None:
        self._flow_control = flow_control_frame(FlowStatus.CONTINUE, block_size, st_min_ms, padding)
        self._block_size = block_size
        self._n_cr_s = n_cr_s
        self._buffer: bytearray | None = None
        self._length = self._next_sn = self._in_block = 0
        self._deadline = 0.0

    @property
    def deadline(self) -> float | None:
        """When the transfer in progress lapses without its next frame; None when idle."""
        return None if self._buffer is None else self._deadline

    def expire(self, now: float) -> str | None:
        """Drop a transfer whose next consecutive frame is overdue; returns the reason if so."""
        if self._buffer is not None and now > self._deadline:
            self._buffer = None
            return "consecutive frame timeout"
        return None

    def abandon(self) -> bool:
        """Drop the transfer in progress, if any; returns whether there was one."""
        busy, self._buffer = self._buffer is not None, None
        return busy

    def _interrupted(self) -> str | None:
        return "interrupted transfer" if self.abandon() else None

    def feed(self, data: bytes, now: float) -> Fed:
        """Take one frame's data bytes (SF, FF or CF; flow control is the endpoint's)."""
        if not data:
            raise IsoTpFrameError("empty frame", "a frame without data bytes")
        kind = data[0] >> 4
        if kind == FrameType.SINGLE:
            length = data[0] & 0x0F
            if not 1 <= length <= len(data) - 1:
                raise IsoTpFrameError(
                    "single frame length", f"length {length} in a frame of {len(data)} bytes: {data.hex()}"
                )
            return Fed(payload=bytes(data[1 : 1 + length]), abandoned=self._interrupted())
        if kind == FrameType.FIRST:
            if len(data) < FRAME_BYTES:
                raise IsoTpFrameError("short frame", f"a first frame has 8 bytes, got {data.hex()}")
            length = (data[0] & 0x0F) << 8 | data[1]
            if length <= SINGLE_FRAME_MAX:
                raise IsoTpFrameError(
                    "first frame length",
                    f"a first frame announces 8 to {MAX_MESSAGE_BYTES} bytes, got {length}",
                )
            abandoned = self._interrupted()
            self._buffer = bytearray(data[2:FRAME_BYTES])
            self._length, self._next_sn, self._in_block = length, 1, 0
            self._deadline = now + self._n_cr_s
            return Fed(flow_control=self._flow_control, abandoned=abandoned)
        if kind == FrameType.CONSECUTIVE:
            return self._consecutive(data, now)
        raise IsoTpFrameError("reserved frame type", f"frame type {kind} in {data.hex()}")

    def _consecutive(self, data: bytes, now: float) -> Fed:
        if self._buffer is None:
            raise IsoTpFrameError("unexpected consecutive frame", f"no transfer in progress: {data.hex()}")
        sn = data[0] & 0x0F
        if sn != self._next_sn:
            self._buffer = None
            raise IsoTpFrameError("sequence number", f"expected {self._next_sn}, got {sn}; transfer dropped")
        need = min(CONSECUTIVE_FRAME_DATA, self._length - len(self._buffer))
        if len(data) - 1 < need:
            self._buffer = None
            raise IsoTpFrameError(
                "short frame", f"{need} data bytes expected, got {data.hex()}; transfer dropped"
            )
        self._buffer += data[1 : 1 + need]
        self._next_sn = (sn + 1) & 0x0F
        if len(self._buffer) == self._length:
            payload, self._buffer = bytes(self._buffer), None
            return Fed(payload=payload)
        self._deadline = now + self._n_cr_s
        if self._block_size:
            self._in_block += 1
            if self._in_block == self._block_size:
                self._in_block = 0
                return Fed(flow_control=self._flow_control)
        return Fed()


@dataclass(frozen=True, slots=True)
class IsoTpConfig:
    """ISO-TP settings of one endpoint.

    ``block_size`` and ``st_min_ms`` go into the flow control we send (0: no limit);
    ``n_bs_s`` is how long we wait for the peer's flow control, ``n_cr_s`` for its next
    consecutive frame (1 s each in ISO 15765-2); ``max_wait_frames`` caps the FC.WAIT
    frames accepted in a row (N_WFTmax).
    """

    block_size: int = 0
    st_min_ms: int = 0
    n_bs_s: float = 1.0
    n_cr_s: float = 1.0
    max_wait_frames: int = 10
    padding: int = 0xAA

    def __post_init__(self) -> None:
        limits = (("block_size", 0xFF), ("st_min_ms", 0x7F), ("max_wait_frames", 1000), ("padding", 0xFF))
        for name, high in limits:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
                raise DiagnosticConfigError(f"IsoTpConfig.{name} must be an integer 0-{high}, got {value!r}")
        for name in ("n_bs_s", "n_cr_s"):
            _check_seconds(f"IsoTpConfig.{name}", getattr(self, name))


def _check_seconds(name: str, value: object, maximum: float = 60.0) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= maximum:
        raise DiagnosticConfigError(f"{name} must be a number of seconds in (0, {maximum:g}], got {value!r}")


PayloadHandler = Callable[[int, bytes], None]


class IsoTpEndpoint(can.Listener):
    """ISO-TP for a set of peers on a bus that a :class:`can.Notifier` reads.

    ``routes`` maps each CAN ID we receive from to the ID our flow control goes to, or to
    None for a functional ID, which may only carry single frames. Complete messages go to
    ``on_payload(source_id, payload)`` in the notifier's thread, which must not block.
    :meth:`send` blocks its caller (never call it from the notifier thread) while it
    waits for flow control. ``accept_transfer(source_id)``, when given, decides whether a
    first frame gets our flow control (a tester answers only its own requests' responses).
    Problems are counted by reason in :meth:`counts`.
    """

    def __init__(
        self,
        bus: can.BusABC,
        routes: Mapping[int, int | None],
        on_payload: PayloadHandler,
        config: IsoTpConfig = IsoTpConfig(),
        clock: Callable[[], float] = time.monotonic,
        accept_transfer: Callable[[int], bool] | None = None,
    ) -> None:
        self._bus = bus
        self._routes = dict(routes)
        self._on_payload = on_payload
        self._accept = accept_transfer
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._reassemblers = {
            source: Reassembler(config.block_size, config.st_min_ms, config.n_cr_s, config.padding)
            for source in self._routes
        }
        self._flow_controls: dict[int, queue.Queue[FlowControl]] = {}  # peers we are sending to
        self._counts: Counter[str] = Counter()

    def counts(self) -> dict[str, int]:
        """Frames and transfers dropped so far, by reason."""
        with self._lock:
            return dict(self._counts)

    def count(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] += 1

    def on_message_received(self, msg: can.Message) -> None:
        source = msg.arbitration_id
        if source not in self._routes or msg.is_extended_id or msg.is_error_frame or msg.is_remote_frame:
            return
        try:
            self._receive(source, bytes(msg.data))
        except Exception:  # never let a bug here stop the notifier other listeners rely on
            LOGGER.exception("ISO-TP frame from 0x%03X: unexpected error", source)
            self.count("internal error")

    def _receive(self, source: int, data: bytes) -> None:
        kind = data[0] >> 4 if data else None
        if kind == FrameType.FLOW_CONTROL:
            self._flow_control_received(source, data)
            return
        reply_to = self._routes[source]
        if reply_to is None and kind not in (None, FrameType.SINGLE):
            self.count("multi-frame on functional ID")
            return
        if kind == FrameType.FIRST and self._accept is not None and not self._accept(source):
            self.count("unsolicited first frame")  # no flow control: another tester's answer
            return
        with self._lock:
            reassembler = self._reassemblers[source]
            now = self._clock()
            lapsed = reassembler.expire(now)
            if lapsed:
                self._counts[lapsed] += 1
            try:
                fed = reassembler.feed(data, now)
            except IsoTpFrameError as exc:
                self._counts[exc.reason] += 1
                LOGGER.debug("ISO-TP frame from 0x%03X dropped: %s", source, exc)
                return
            if fed.abandoned:
                self._counts[fed.abandoned] += 1
        if fed.flow_control is not None and reply_to is not None:
            try:
                self._send_frame(reply_to, fed.flow_control)
            except can.CanError as exc:
                LOGGER.warning("ISO-TP flow control to 0x%03X not sent: %s", reply_to, exc)
                with self._lock:
                    reassembler.abandon()
                    self._counts["send failed"] += 1
        if fed.payload is not None:
            self._on_payload(source, fed.payload)

    def _flow_control_received(self, source: int, data: bytes) -> None:
        try:
            flow = parse_flow_control(data)
        except IsoTpFrameError as exc:
            self.count(exc.reason)
            return
        with self._lock:
            mailbox = self._flow_controls.get(source)
            if mailbox is None:
                self._counts["unexpected flow control"] += 1
                return
        try:
            mailbox.put_nowait(flow)
        except queue.Full:
            self.count("unexpected flow control")

    def transfers(self, sources: Iterable[int]) -> dict[int, float]:
        """Deadlines of the unfinished messages from ``sources``; lapsed ones are dropped and counted."""
        now = self._clock()
        active: dict[int, float] = {}
        with self._lock:
            for source in sources:
                reassembler = self._reassemblers.get(source)
                if reassembler is None:
                    continue
                reason = reassembler.expire(now)
                if reason:
                    self._counts[reason] += 1
                deadline = reassembler.deadline
                if deadline is not None:
                    active[source] = deadline
        return active

    def send(self, target: int, payload: bytes, flow_control_from: int | None) -> None:
        """Send ``payload`` to CAN ID ``target``; a multi-frame message waits for flow control
        from ``flow_control_from`` (None: only single frames are allowed, as for functional IDs).

        Raises :class:`EncodeError`, :class:`IsoTpTransferError`, or :class:`can.CanError`.
        """
        frames = segment(payload, self.config.padding)
        if len(frames) == 1:
            self._send_frame(target, frames[0])
            return
        if flow_control_from is None:
            raise EncodeError(
                f"a message to 0x{target:03X} must fit one single frame ({SINGLE_FRAME_MAX} bytes), "
                f"got {len(payload)}"
            )
        mailbox: queue.Queue[FlowControl] = queue.Queue(maxsize=4)
        with self._lock:
            if flow_control_from in self._flow_controls:
                raise IsoTpTransferError(f"a send waiting for 0x{flow_control_from:03X} is already under way")
            self._flow_controls[flow_control_from] = mailbox
        try:
            self._send_frame(target, frames[0])
            self._send_blocks(target, frames[1:], mailbox, flow_control_from)
        finally:
            with self._lock:
                del self._flow_controls[flow_control_from]

    def _send_blocks(
        self, target: int, frames: list[bytes], mailbox: queue.Queue[FlowControl], peer: int
    ) -> None:
        waits = 0
        while frames:
            try:
                flow = mailbox.get(timeout=self.config.n_bs_s)
            except queue.Empty:
                raise IsoTpTransferError(
                    f"no flow control from 0x{peer:03X} within {self.config.n_bs_s:g} s"
                ) from None
            if flow.status == FlowStatus.OVERFLOW:
                raise IsoTpTransferError(f"0x{peer:03X} refused the message (flow control overflow)")
            if flow.status == FlowStatus.WAIT:
                waits += 1
                if waits > self.config.max_wait_frames:
                    raise IsoTpTransferError(
                        f"0x{peer:03X} sent more than {self.config.max_wait_frames} wait frames in a row"
                    )
                continue
            waits = 0
            size = flow.block_size or len(frames)
            block, frames = frames[:size], frames[size:]
            for index, frame in enumerate(block):
                if index:
                    time.sleep(flow.separation_s)
                self._send_frame(target, frame)

    def _send_frame(self, target: int, data: bytes) -> None:
        self._bus.send(can.Message(arbitration_id=target, data=data, is_extended_id=False))


# --- request / response ---------------------------------------------------------------------

NEGATIVE_RESPONSE = 0x7F
RESPONSE_PENDING = 0x78
#: Names of the negative response codes of ISO 14229-1 that ECUs commonly send.
NRC_NAMES = {
    0x10: "generalReject",
    0x11: "serviceNotSupported",
    0x12: "subFunctionNotSupported",
    0x13: "incorrectMessageLengthOrInvalidFormat",
    0x14: "responseTooLong",
    0x21: "busyRepeatRequest",
    0x22: "conditionsNotCorrect",
    0x31: "requestOutOfRange",
    0x33: "securityAccessDenied",
    RESPONSE_PENDING: "requestCorrectlyReceivedResponsePending",
    0x7E: "subFunctionNotSupportedInActiveSession",
    0x7F: "serviceNotSupportedInActiveSession",
}


def nrc_name(code: int) -> str:
    return NRC_NAMES.get(code, "unknown")


@dataclass(frozen=True, slots=True)
class ExchangeResult:
    """The answers to one request, by responding CAN ID."""

    positive: dict[int, bytes]
    negative: dict[int, int]  # NRC
    missing: frozenset[int]  # expected (or announced by 0x78) but no final answer


class ResponseCollector:
    """Matches responses to one request and decides when waiting is over. Pure: pass ``now``.

    ``sources`` are the CAN IDs that may answer; ``expect`` those whose final answer ends
    the wait early (None: wait the whole ``p2_s`` window, as for a first functional
    request). A responsePending (0x78) gives its ECU ``p2_star_s`` more each time; a
    message still being reassembled (see :meth:`IsoTpEndpoint.transfers`) is waited for.
    """

    def __init__(
        self,
        request: bytes,
        sources: Collection[int],
        expect: Collection[int] | None,
        now: float,
        p2_s: float,
        p2_star_s: float,
    ) -> None:
        self.service = request[0]
        # 0x19 answers echo the subfunction; the PIDs of mode 01 are checked when parsed.
        echo = request[1:2] if self.service == READ_DTC_INFORMATION else b""
        self._positive_head = bytes([self.service + POSITIVE_OFFSET]) + echo
        self.sources = frozenset(sources)
        self.expect = None if expect is None else frozenset(expect)
        self._deadline = now + p2_s
        self._p2_star_s = p2_star_s
        self.positive: dict[int, bytes] = {}
        self.negative: dict[int, int] = {}
        self._pending: dict[int, float] = {}

    def offer(self, source: int, payload: bytes, now: float) -> str | None:
        """Take a complete message; returns why it was ignored, or None if it counted."""
        if source not in self.sources:
            return "unexpected source"
        if source in self.positive or source in self.negative:
            return "duplicate response"
        if payload[:1] == bytes([NEGATIVE_RESPONSE]):
            if len(payload) != 3:
                return "negative response length"
            if payload[1] != self.service:
                return "unrelated response"
            if payload[2] == RESPONSE_PENDING:
                self._pending[source] = now + self._p2_star_s
            else:
                self._pending.pop(source, None)
                self.negative[source] = payload[2]
            return None
        if not payload.startswith(self._positive_head):
            return "unrelated response"
        self._pending.pop(source, None)
        self.positive[source] = payload
        return None

    def _waiting_for(self, now: float, transfers: Mapping[int, float]) -> list[float]:
        answered = self.positive.keys() | self.negative.keys()
        deadlines = [t for s, t in self._pending.items() if s not in answered and t > now]
        deadlines += [t for s, t in transfers.items() if s not in answered]
        return deadlines

    def done(self, now: float, transfers: Mapping[int, float]) -> bool:
        if self.expect is not None and self.expect <= self.positive.keys() | self.negative.keys():
            return True
        return now >= self._deadline and not self._waiting_for(now, transfers)

    def wake_at(self, now: float, transfers: Mapping[int, float]) -> float:
        """When :meth:`done` may change without a new response."""
        candidates = self._waiting_for(now, transfers)
        if now < self._deadline:
            candidates.append(self._deadline)
        return min(candidates, default=now)

    def result(self) -> ExchangeResult:
        answered = self.positive.keys() | self.negative.keys()
        missing = ((self.expect or frozenset()) | self._pending.keys()) - answered
        return ExchangeResult(dict(self.positive), dict(self.negative), frozenset(missing))


class ProblemKind(enum.StrEnum):
    TIMEOUT = "timeout"
    NEGATIVE_RESPONSE = "negative_response"
    MALFORMED = "malformed"
    SEND_FAILED = "send_failed"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that went wrong in one read; ``ecu`` is None when no ECU is to blame."""

    ecu: int | None
    service: int
    kind: ProblemKind
    detail: str


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What a read produced, and what went wrong on the way."""

    items: tuple[T, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
class Reading:
    """One mode 01 value."""

    ecu: int
    pid: int
    name: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class EcuPids:
    ecu: int
    supported: frozenset[int]


@dataclass(frozen=True, slots=True)
class EcuMonitorStatus:
    ecu: int
    status: obd.MonitorStatus


class DtcSource(enum.StrEnum):
    STORED = "obd_mode_03"
    PENDING = "obd_mode_07"
    UDS = "uds_0x19_02"


@dataclass(frozen=True, slots=True)
class EcuDtc:
    """A DTC one ECU reported. OBD modes carry no status byte: mode 03 gives CONFIRMED,
    mode 07 gives PENDING."""

    ecu: int
    dtc: Dtc
    status: DtcStatus
    source: DtcSource


_SOURCE_STATUS = {DtcSource.STORED: DtcStatus.CONFIRMED, DtcSource.PENDING: DtcStatus.PENDING}
_OBD_DTC_SOURCE = {obd.SHOW_STORED_DTCS: DtcSource.STORED, obd.SHOW_PENDING_DTCS: DtcSource.PENDING}
_BITMAP_REQUEST = tuple(sorted(obd.BITMAP_PIDS))[: obd.MAX_PIDS_PER_REQUEST]  # 0x00 ... 0xA0
#: Default UDS status mask: DTCs failing now, pending, confirmed or lighting the MIL.
DEFAULT_STATUS_MASK = (
    DtcStatus.TEST_FAILED | DtcStatus.PENDING | DtcStatus.CONFIRMED | DtcStatus.WARNING_INDICATOR_REQUESTED
)


def _supporting(ecus: Collection[EcuPids] | None, pids: Collection[int]) -> list[int] | None:
    """The ECUs that support any of ``pids``; None (wait the whole window) when ECUs are unknown."""
    return None if ecus is None else [e.ecu for e in ecus if e.supported & set(pids)]


def _parse_readings(chunk: Collection[int], ecu: int, payload: bytes) -> list[Reading]:
    data = obd.parse_pid_response(payload, chunk)
    return [
        Reading(ecu, pid, obd.PIDS[pid].name, obd.PIDS[pid].decode(raw), obd.PIDS[pid].unit)
        for pid, raw in data.items()
    ]


#: How long the client waits for answers by default: ISO 15765-4 gives ECUs P2 = 50 ms; the
#: rest leaves room for a loaded bus and host.
DEFAULT_P2_S = 0.1


class DiagnosticClient:
    """Sends diagnostic requests on ``bus`` and collects the answers, one request at a time.

    Its :class:`IsoTpEndpoint` is added to ``notifier``, the one already reading ``bus``
    (python-can allows one notifier per bus); :meth:`close` removes it. ``p2_s`` is how
    long to wait for answers (ISO 15765-4 gives ECUs 50 ms; the default leaves room for
    a loaded bus and host), ``p2_star_s`` how long after each responsePending. Use one
    client per bus: like two scan tools on one car, two clients asking at the same time
    would both send flow control for the same responses.
    """

    def __init__(
        self,
        bus: can.BusABC,
        notifier: can.Notifier,
        *,
        isotp: IsoTpConfig = IsoTpConfig(),
        p2_s: float = DEFAULT_P2_S,
        p2_star_s: float = 5.0,
    ) -> None:
        _check_seconds("p2_s", p2_s)
        _check_seconds("p2_star_s", p2_star_s)
        self.p2_s, self.p2_star_s = p2_s, p2_star_s
        self._notifier = notifier
        self._cond = threading.Condition()
        self._collector: ResponseCollector | None = None
        self._ignored: Counter[str] = Counter()
        self._one_at_a_time = threading.Lock()
        routes = {rid: rid - RESPONSE_OFFSET for rid in RESPONSE_IDS}
        self.endpoint = IsoTpEndpoint(bus, routes, self._on_payload, isotp, accept_transfer=self._awaits)
        notifier.add_listener(self.endpoint)

    def close(self) -> None:
        """Stop listening; idempotent."""
        with contextlib.suppress(ValueError):  # already removed
            self._notifier.remove_listener(self.endpoint)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def counts(self) -> dict[str, int]:
        """Dropped frames, abandoned transfers and ignored responses so far, by reason."""
        with self._cond:
            ignored = dict(self._ignored)
        return self.endpoint.counts() | ignored

    def _awaits(self, source: int) -> bool:
        collector = self._collector  # read without the lock: the notifier thread must not wait
        return collector is not None and source in collector.sources

    def _on_payload(self, source: int, payload: bytes) -> None:
        with self._cond:
            collector = self._collector
            reason = (
                "unsolicited response"
                if collector is None
                else collector.offer(source, payload, time.monotonic())
            )
            if reason:
                self._ignored[reason] += 1
                LOGGER.debug("response from 0x%03X ignored (%s): %s", source, reason, payload[:16].hex())
            self._cond.notify_all()

    def exchange(
        self, payload: bytes, *, target: int | None = None, expect: Collection[int] | None = None
    ) -> ExchangeResult:
        """Send ``payload`` physically to ``target`` (0x7E0-0x7E7) or functionally (None: 0x7DF).

        A physical request expects its ECU's answer. Raises :class:`EncodeError` for a
        payload that cannot be sent that way and :class:`IsoTpTransferError` when sending
        fails; ECUs that do not answer are listed in ``missing``, not raised.
        """
        if target is None:
            sources: Collection[int] = RESPONSE_IDS
            destination, flow_control_from = FUNCTIONAL_REQUEST_ID, None
        elif target in PHYSICAL_REQUEST_IDS:
            sources = expect = (target + RESPONSE_OFFSET,)
            destination, flow_control_from = target, target + RESPONSE_OFFSET
        else:
            raise EncodeError(f"physical requests go to 0x7E0-0x7E7, got {target!r}")
        if not payload:
            raise EncodeError("an empty diagnostic request")
        with self._one_at_a_time:
            with self._cond:
                now = time.monotonic()
                collector = ResponseCollector(payload, sources, expect, now, self.p2_s, self.p2_star_s)
                self._collector = collector
            try:
                try:
                    self.endpoint.send(destination, payload, flow_control_from)
                except can.CanError as exc:
                    raise IsoTpTransferError(f"request to 0x{destination:03X} not sent: {exc}") from exc
                with self._cond:
                    while True:
                        now = time.monotonic()
                        transfers = self.endpoint.transfers(collector.sources)
                        if collector.done(now, transfers):
                            return collector.result()
                        self._cond.wait(max(collector.wake_at(now, transfers) - now, 0.001))
            finally:
                with self._cond:
                    self._collector = None

    def request(self, target: int, payload: bytes) -> bytes:
        """A physical request's positive response; raises NegativeResponseError or DiagnosticTimeout."""
        result = self.exchange(payload, target=target)
        ecu = target + RESPONSE_OFFSET
        if ecu in result.negative:
            code = result.negative[ecu]
            raise NegativeResponseError(ecu, payload[0], code, nrc_name(code))
        if ecu not in result.positive:
            raise DiagnosticTimeout(f"no answer from 0x{ecu:03X} to service 0x{payload[0]:02X}")
        return result.positive[ecu]

    def _collect(
        self,
        request: bytes,
        parse: Callable[[int, bytes], Iterable[T]],
        *,
        target: int | None = None,
        expect: Collection[int] | None = None,
    ) -> Outcome[T]:
        """Run one exchange and parse each positive answer; every failure becomes a Problem."""
        service = request[0]
        if expect is not None and not expect:
            return Outcome((), ())  # no ECU would answer
        try:
            result = self.exchange(request, target=target, expect=expect)
        except IsoTpTransferError as exc:
            return Outcome((), (Problem(None, service, ProblemKind.SEND_FAILED, str(exc)),))
        items: list[T] = []
        problems = [
            Problem(ecu, service, ProblemKind.NEGATIVE_RESPONSE, f"0x{code:02X} {nrc_name(code)}")
            for ecu, code in sorted(result.negative.items())
        ]
        problems += [
            Problem(ecu, service, ProblemKind.TIMEOUT, f"no answer within {self.p2_s:g} s")
            for ecu in sorted(result.missing)
        ]
        for ecu, payload in sorted(result.positive.items()):
            try:
                items.extend(parse(ecu, payload))
            except DiagnosticError as exc:  # ResponseFormatError, DtcError
                reason = getattr(exc, "reason", type(exc).__name__)
                with self._cond:
                    self._ignored[f"malformed {reason}"] += 1
                problems.append(Problem(ecu, service, ProblemKind.MALFORMED, str(exc)))
        return Outcome(tuple(items), tuple(problems))

    def read_supported_pids(self) -> Outcome[EcuPids]:
        """Which mode 01 PIDs each OBD ECU supports (bitmaps 0x00-0xA0); this finds the ECUs.

        Waits the whole ``p2_s`` window, since any number of ECUs may answer. The other
        OBD reads take its items as ``ecus``: the wait then ends when they have answered.
        """

        def parse(ecu: int, payload: bytes) -> list[EcuPids]:
            data = obd.parse_pid_response(payload, _BITMAP_REQUEST)
            announced = (obd.decode_supported(base, raw) for base, raw in data.items())
            supported = frozenset(data).union(*announced)  # the bitmaps answered are supported too
            return [EcuPids(ecu, supported)]

        return self._collect(obd.pid_request(_BITMAP_REQUEST), parse)

    def read_monitor_status(self, ecus: Collection[EcuPids] | None = None) -> Outcome[EcuMonitorStatus]:
        """PID 0x01 of each OBD ECU: MIL and confirmed-DTC count."""

        def parse(ecu: int, payload: bytes) -> list[EcuMonitorStatus]:
            data = obd.parse_pid_response(payload, (obd.MONITOR_STATUS,))
            return [EcuMonitorStatus(ecu, obd.MonitorStatus.decode(data[obd.MONITOR_STATUS]))]

        request = obd.pid_request([obd.MONITOR_STATUS])
        return self._collect(request, parse, expect=_supporting(ecus, [obd.MONITOR_STATUS]))

    def read_pids(self, pids: Collection[int], ecus: Collection[EcuPids] | None = None) -> Outcome[Reading]:
        """Numeric PIDs (:data:`obd.PIDS`), up to six per request, from every OBD ECU that has them.

        With ``ecus``, PIDs that none of them supports are not asked for.
        """
        unknown = [f"0x{pid:02X}" for pid in pids if pid not in obd.PIDS]
        if unknown:
            raise EncodeError(f"not numeric PIDs roadwave decodes: {unknown}; known: {sorted(obd.PIDS)}")
        offered = frozenset(pids) if ecus is None else frozenset().union(*(e.supported for e in ecus))
        ordered = sorted(offered & set(pids))
        readings: list[Reading] = []
        problems: list[Problem] = []
        for start in range(0, len(ordered), obd.MAX_PIDS_PER_REQUEST):
            chunk = ordered[start : start + obd.MAX_PIDS_PER_REQUEST]
            parse = functools.partial(_parse_readings, chunk)
            outcome = self._collect(obd.pid_request(chunk), parse, expect=_supporting(ecus, chunk))
            readings += outcome.items
            problems += outcome.problems
        return Outcome(tuple(readings), tuple(problems))

    def read_obd_dtcs(self, mode: int, ecus: Collection[EcuPids] | None = None) -> Outcome[EcuDtc]:
        """Confirmed (mode 0x03) or pending (mode 0x07) DTCs of every OBD ECU."""
        source = _OBD_DTC_SOURCE.get(mode)
        if source is None:
            raise EncodeError(f"DTC lists are read with mode 0x03 or 0x07, got {mode!r}")
        status = _SOURCE_STATUS[source]

        def parse(ecu: int, payload: bytes) -> list[EcuDtc]:
            return [EcuDtc(ecu, dtc, status, source) for dtc in obd.parse_dtc_response(payload, mode)]

        expect = None if ecus is None else [e.ecu for e in ecus]
        return self._collect(obd.dtc_request(mode), parse, expect=expect)

    def read_uds_dtcs(self, target: int, status_mask: int = DEFAULT_STATUS_MASK) -> Outcome[EcuDtc]:
        """UDS ReadDTCInformation reportDTCByStatusMask (0x19 0x02) from one ECU, physically."""

        def parse(ecu: int, payload: bytes) -> list[EcuDtc]:
            availability, records = parse_dtc_report(payload)
            return [EcuDtc(ecu, r.dtc, r.status & availability, DtcSource.UDS) for r in records]

        return self._collect(read_dtc_request(REPORT_BY_STATUS_MASK, status_mask), parse, target=target)


# --- the poller -----------------------------------------------------------------------------

#: The mode 01 PIDs read by default.
DEFAULT_PIDS = (0x04, 0x05, 0x0C, 0x0D, 0x1F, 0x2F, 0x31, 0x42, 0x5C, 0xA6)


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """What a read cycle reads and how often.

    ``uds_targets`` are the physical request IDs (0x7E0-0x7E7) asked for 0x19 0x02; the
    default reads the engine (0x7E0) and the brake ECU (0x7E1), whose chassis codes OBD
    modes 03/07 do not report. ``rediscover_every`` repeats the ECU discovery (supported
    PIDs) every so many cycles. Error messages name the fields as the ``[diagnostics]``
    configuration table does.
    """

    interval_s: float = 60.0
    pids: tuple[int, ...] = DEFAULT_PIDS
    obd_dtcs: bool = True
    uds_targets: tuple[int, ...] = (0x7E0, 0x7E1)
    uds_status_mask: int = int(DEFAULT_STATUS_MASK)
    rediscover_every: int = 10

    def __post_init__(self) -> None:
        _check_seconds("interval_s", self.interval_s, maximum=86_400.0)
        for name, allowed, what in (
            ("pids", obd.PIDS, f"PIDs roadwave decodes ({', '.join(_hex(p) for p in sorted(obd.PIDS))})"),
            ("uds_targets", PHYSICAL_REQUEST_IDS, "physical request IDs 0x7E0-0x7E7"),
        ):
            values = getattr(self, name)
            wrong = [_hex(value) for value in values if value not in allowed]
            if wrong:
                raise DiagnosticConfigError(f"{name}: {', '.join(wrong)} not among the {what}")
            repeated = sorted({_hex(value) for value in values if values.count(value) > 1})
            if repeated:
                raise DiagnosticConfigError(f"{name}: {', '.join(repeated)} given more than once")
        if not isinstance(self.uds_status_mask, int) or not 0 < self.uds_status_mask <= 0xFF:
            raise DiagnosticConfigError(f"uds_status_mask must be a byte 1-255, got {self.uds_status_mask!r}")
        if not isinstance(self.rediscover_every, int) or self.rediscover_every < 1:
            raise DiagnosticConfigError(
                f"rediscover_every must be an integer >= 1, got {self.rediscover_every!r}"
            )


def _hex(value: object) -> str:
    """``0x0C`` for an integer; anything else as its repr."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return f"0x{value:02X}" if is_int else repr(value)


@dataclass(frozen=True, slots=True)
class DiagnosticReport:
    """The result of one read cycle; ``trigger`` is "start", "periodic", "mil" or "manual"."""

    t_ns: int
    trigger: str
    ecus: tuple[EcuPids, ...]
    readings: tuple[Reading, ...]
    monitors: tuple[EcuMonitorStatus, ...]
    dtcs: tuple[EcuDtc, ...]
    problems: tuple[Problem, ...]

    @property
    def mil_on(self) -> bool | None:
        """Whether any ECU lights the MIL; None when no ECU reported PID 0x01."""
        return any(m.status.mil_on for m in self.monitors) if self.monitors else None

    def codes(self) -> tuple[str, ...]:
        """The distinct DTC codes of every ECU and source, sorted, without failure types."""
        return tuple(sorted({entry.dtc.code for entry in self.dtcs}))

    def count(self, kind: ProblemKind) -> int:
        return sum(problem.kind == kind for problem in self.problems)


@dataclass
class PollerStats:
    cycles: int = 0
    mil_triggers: int = 0
    cycle_errors: int = 0
    sink_errors: int = 0
    problems: Counter[str] = field(default_factory=Counter)


class DiagnosticPoller:
    """Runs read cycles with a :class:`DiagnosticClient`; each report goes to ``sink``.

    :meth:`start` runs a cycle at once and then every ``interval_s`` in a thread;
    :meth:`report_mil` (the MIL as the vehicle's own CAN frames show it) runs one at
    once when the MIL comes on. :meth:`run_cycle` is the same cycle, synchronously.
    """

    def __init__(
        self,
        client: DiagnosticClient,
        config: PollerConfig,
        sink: Callable[[DiagnosticReport], None],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.client, self.config, self._sink, self._clock_ns = client, config, sink, clock_ns
        self.stats = PollerStats()
        self.last_report: DiagnosticReport | None = None
        self._ecus: tuple[EcuPids, ...] = ()
        self._mil: bool | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_cycle(self, trigger: str = "manual") -> DiagnosticReport:
        """Read everything configured once and return the report (also kept as ``last_report``)."""
        client, config = self.client, self.config
        t_ns = self._clock_ns()
        problems: list[Problem] = []
        if not self._ecus or self.stats.cycles % config.rediscover_every == 0:
            found = client.read_supported_pids()  # the whole P2 window: any ECU may answer
            problems += found.problems
            self._ecus = found.items or self._ecus
        readings: tuple[Reading, ...] = ()
        monitors: tuple[EcuMonitorStatus, ...] = ()
        dtcs: list[EcuDtc] = []
        if self._ecus:
            monitor = client.read_monitor_status(self._ecus)
            read = client.read_pids(config.pids, self._ecus)
            monitors, readings = monitor.items, read.items
            problems += [*monitor.problems, *read.problems]
            if config.obd_dtcs:
                for mode in (obd.SHOW_STORED_DTCS, obd.SHOW_PENDING_DTCS):
                    listed = client.read_obd_dtcs(mode, self._ecus)
                    dtcs += listed.items
                    problems += listed.problems
        else:
            problems.append(Problem(None, obd.SHOW_CURRENT_DATA, ProblemKind.TIMEOUT, "no OBD ECU answered"))
        for target in config.uds_targets:
            listed = client.read_uds_dtcs(target, config.uds_status_mask)
            dtcs += listed.items
            problems += listed.problems
        report = DiagnosticReport(t_ns, trigger, self._ecus, readings, monitors, tuple(dtcs), tuple(problems))
        self.stats.cycles += 1
        self.stats.problems.update(problem.kind.value for problem in problems)
        self.last_report = report
        return report

    def report_mil(self, on: bool) -> None:
        """The MIL as last seen on the vehicle bus; a change to on triggers a cycle now."""
        if on and self._mil is not True:
            self.stats.mil_triggers += 1
            self._wake.set()
        self._mil = on

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the diagnostic poller is already running")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="diagnostics", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the cycle under way (if any); idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        trigger = "start"
        while not self._stop.is_set():
            self._wake.clear()  # a MIL report from now on asks for one more cycle
            try:
                report = self.run_cycle(trigger)
            except Exception:  # a bug or a dead bus: log it, try again next time
                self.stats.cycle_errors += 1
                LOGGER.exception("diagnostics: read cycle failed")
            else:
                try:
                    self._sink(report)
                except Exception:  # the sink is the caller's code; keep polling whatever it does
                    self.stats.sink_errors += 1
                    LOGGER.exception("diagnostics: the report sink failed")
            woken = self._wake.wait(self.config.interval_s)
            trigger = "mil" if woken else "periodic"
