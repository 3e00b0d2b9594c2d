"""``RoadwaveBus``: the vehicle-bus microcontroller as an ordinary python-can bus.

``can.Bus(interface="roadwave", channel="/dev/ttyACM0", bitrate=500_000)`` opens the
serial port (a USB CDC device, a UART or a pseudo-terminal) and speaks the protocol of
:mod:`firmware_bridge.protocol`. A reader thread owns the port: it decodes frames, maps
MCU stamps to host time (:class:`~firmware_bridge.clock.McuClock`), queues CAN frames
for :meth:`recv`, answers waiting :meth:`send` calls and, when the device goes away,
reopens the same path with exponential backoff (``reconnect=True``).

Received messages carry the MCU controller index as ``channel``; ``send`` uses
``msg.channel`` when it is an int, else controller 0. GNSS sentences go to the
``on_gnss`` callback (called on the reader thread: hand off, do not block) or, without
one, into a bounded queue read with :meth:`RoadwaveBus.recv_gnss`. Every loss is counted
in :attr:`RoadwaveBus.counters`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import can
import serial

from firmware_bridge.clock import ClockEstimate, McuClock
from firmware_bridge.protocol import (
    DELIMITER,
    Ack,
    AckStatus,
    BusStatus,
    CanFrame,
    Config,
    ErrorState,
    Frame,
    GnssFrame,
    Heartbeat,
    LastError,
    StreamDecoder,
    TransmitRequest,
    encode_frame,
)

logger = logging.getLogger(__name__)

#: Longest a blocking read or queue wait lasts before the reader or ``recv`` looks around.
_POLL_S = 0.2
_JOIN_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class GnssSentence:
    """An NMEA sentence from the MCU's GNSS receiver, stamped in host epoch seconds."""

    timestamp: float
    sentence: str


@dataclasses.dataclass(frozen=True, slots=True)
class BridgeCounters:
    """Everything the bridge received, dropped or survived since the bus was created.

    The first five are the stream decoder's (:class:`~firmware_bridge.protocol.DecoderStats`);
    ``bus_errors`` counts bus status reports carrying an error code; ``rx_dropped`` and
    ``gnss_dropped`` count items lost because their queue was full; ``reconnects`` counts
    successful reopenings after the device was lost.
    """

    frames_ok: int
    crc_errors: int
    malformed: int
    bytes_discarded: int
    resyncs: int
    can_frames: int
    heartbeats: int
    gnss_sentences: int
    bus_errors: int
    rx_dropped: int
    gnss_dropped: int
    reconnects: int


class RoadwaveBus(can.BusABC):
    """A python-can bus on the roadwave CAN microcontroller, over a serial device.

    :param channel: the serial device (or a symlink to it, e.g. a udev rule's name).
    :param bitrate: nominal bit rate to configure on every controller when the port opens;
        ``None`` keeps the MCU's own configuration.
    :param data_bitrate: CAN FD data-phase bit rate (needs ``bitrate``); ``None``: classic CAN.
    :param listen_only: configure the controllers not to acknowledge or send frames.
    :param reconnect: reopen the device after it is lost, waiting ``reconnect_delay``
        seconds at first and twice as long after each failure, up to ``reconnect_max_delay``.
    :param ack_timeout: how long :meth:`send` (with ``timeout=None``) and the initial
        configuration wait for the MCU's acknowledgement.
    :param tty_baudrate: serial line rate for a UART; USB CDC devices ignore it.
    :param rx_queue_size: received frames buffered for :meth:`recv`; more are dropped and counted.
    :param on_gnss: called on the reader thread with every :class:`GnssSentence`.
    :param gnss_queue_size: sentences buffered for :meth:`recv_gnss` when there is no ``on_gnss``.
    """

    def __init__(
        self,
        channel: str = "/dev/ttyACM0",
        can_filters: can.typechecking.CanFilters | None = None,
        *,
        bitrate: int | None = None,
        data_bitrate: int | None = None,
        listen_only: bool = False,
        reconnect: bool = True,
        reconnect_delay: float = 0.1,
        reconnect_max_delay: float = 5.0,
        ack_timeout: float = 1.0,
        tty_baudrate: int = 115_200,
        rx_queue_size: int = 10_000,
        on_gnss: Callable[[GnssSentence], None] | None = None,
        gnss_queue_size: int = 256,
        **kwargs: Any,
    ) -> None:
        if bitrate is None and (data_bitrate is not None or listen_only):
            raise ValueError("data_bitrate and listen_only are sent with bitrate: give bitrate as well")
        if rx_queue_size < 1 or gnss_queue_size < 1:
            raise ValueError(f"queue sizes must be >= 1, got {rx_queue_size} and {gnss_queue_size}")
        if not 0 < reconnect_delay <= reconnect_max_delay:
            raise ValueError(
                "need 0 < reconnect_delay <= reconnect_max_delay, "
                f"got {reconnect_delay} and {reconnect_max_delay}"
            )
        if not ack_timeout > 0:
            raise ValueError(f"ack_timeout must be > 0, got {ack_timeout}")
        self._device = str(channel)
        self.channel_info = f"roadwave MCU at {self._device}"
        self._config = (  # a template: every (re)open sends a copy with a fresh sequence number
            None
            if bitrate is None
            else Config(seq=0, bitrate=bitrate, data_bitrate=data_bitrate or 0, listen_only=listen_only)
        )
        self._can_protocol = can.CanProtocol.CAN_FD if data_bitrate else can.CanProtocol.CAN_20
        self._reconnect = reconnect
        self._reconnect_delay = reconnect_delay
        self._reconnect_max_delay = reconnect_max_delay
        self._ack_timeout = ack_timeout
        self._tty_baudrate = tty_baudrate
        self._on_gnss = on_gnss

        self._decoder = StreamDecoder()
        self._clock = McuClock()
        self._rx: queue.Queue[can.Message] = queue.Queue(rx_queue_size)
        self._gnss: queue.Queue[GnssSentence] = queue.Queue(gnss_queue_size)
        self._pending: dict[int, Future[AckStatus]] = {}
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._failure: Exception | None = None
        self._heartbeat: Heartbeat | None = None
        self._status: dict[int, BusStatus] = {}
        self._can_frames = self._heartbeats = self._gnss_sentences = self._bus_errors = 0
        self._rx_dropped = self._gnss_dropped = self._reconnects = 0

        try:
            self._port: serial.Serial | None = self._open_port()
        except (serial.SerialException, OSError) as exc:
            raise can.CanInitializationError(f"cannot open {self._device}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name=f"roadwave-bus {self._device}", daemon=True)
        self._thread.start()
        try:
            self._configure(wait=True)
        except can.CanError as exc:
            self._close()
            raise can.CanInitializationError(f"{self._device}: configuration failed: {exc}") from exc
        super().__init__(channel, can_filters, **kwargs)

    # -- public API ----------------------------------------------------------------------

    @property
    def counters(self) -> BridgeCounters:
        """A snapshot of the bridge's counters."""
        stats = self._decoder.stats
        return BridgeCounters(
            frames_ok=stats.frames_ok,
            crc_errors=stats.crc_errors,
            malformed=stats.malformed,
            bytes_discarded=stats.bytes_discarded,
            resyncs=stats.resyncs,
            can_frames=self._can_frames,
            heartbeats=self._heartbeats,
            gnss_sentences=self._gnss_sentences,
            bus_errors=self._bus_errors,
            rx_dropped=self._rx_dropped,
            gnss_dropped=self._gnss_dropped,
            reconnects=self._reconnects,
        )

    @property
    def connected(self) -> bool:
        """Whether the serial device is open right now."""
        return self._port is not None

    @property
    def firmware_version(self) -> tuple[int, int, int] | None:
        """The MCU firmware's version from its latest heartbeat."""
        return None if self._heartbeat is None else self._heartbeat.firmware_version

    @property
    def clock(self) -> ClockEstimate | None:
        """The current MCU-to-host clock mapping."""
        return self._clock.estimate

    @property
    def bus_status(self) -> dict[int, BusStatus]:
        """The latest status report of each controller, by index."""
        return dict(self._status)

    @property
    def state(self) -> can.BusState:
        """The worst controller state: bus-off is ``ERROR``, error-passive is ``PASSIVE``."""
        states = {status.state for status in self._status.values()}
        if ErrorState.BUS_OFF in states:
            return can.BusState.ERROR
        if ErrorState.PASSIVE in states:
            return can.BusState.PASSIVE
        return can.BusState.ACTIVE

    @state.setter
    def state(self, new_state: can.BusState) -> None:
        raise NotImplementedError(f"the MCU reports its controllers' state; it cannot be set to {new_state}")

    def recv_gnss(self, timeout: float | None = None) -> GnssSentence | None:
        """The next GNSS sentence, or ``None`` after ``timeout`` seconds (``None``: wait)."""
        if self._on_gnss is not None:
            raise RuntimeError("GNSS sentences go to the on_gnss callback of this bus, not to recv_gnss()")
        try:
            return self._gnss.get(timeout=timeout)
        except queue.Empty:
            return None

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Ask the MCU to transmit ``msg`` and wait for its acknowledgement.

        ``timeout``: seconds to wait for the acknowledgement (``None``: ``ack_timeout``;
        0: do not wait). Raises ``ValueError`` for a frame the protocol cannot carry,
        :class:`can.CanTimeoutError` without an answer and :class:`can.CanOperationError`
        when the MCU refuses the frame or the device is disconnected.
        """
        wait = self._ack_timeout if timeout is None else timeout
        status = self._request(TransmitRequest.from_message(msg, seq=self._next_seq()), wait)
        if status is not None and status is not AckStatus.OK:
            raise can.CanOperationError(
                f"{self._device}: MCU refused frame 0x{msg.arbitration_id:X}: {status.name}"
            )

    def shutdown(self) -> None:
        """Stop the reader thread and close the device; safe to call twice."""
        if self._is_shutdown:
            return
        super().shutdown()
        self._close()

    # -- python-can hooks ----------------------------------------------------------------

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        try:
            message = self._rx.get(timeout=_POLL_S if timeout is None else min(timeout, _POLL_S))
        except queue.Empty:
            if self._failure is not None:
                raise can.CanOperationError(
                    f"{self._device} was lost and reconnect is off: {self._failure}"
                ) from self._failure
            return None, False
        return message, False

    # -- the port and the reader thread --------------------------------------------------

    def _open_port(self) -> serial.Serial:
        port = serial.Serial(
            self._device,
            baudrate=self._tty_baudrate,
            timeout=_POLL_S,
            write_timeout=self._ack_timeout,
            exclusive=True,
        )
        try:
            port.write(DELIMITER)  # ends whatever partial frame the MCU may have buffered
        except serial.SerialException:
            port.close()
            raise
        self._decoder.reset()
        self._clock.reset()  # a reopened device has usually restarted its MCU
        return port

    def _configure(self, wait: bool) -> None:
        if self._config is None:
            return
        config = dataclasses.replace(self._config, seq=self._next_seq())
        status = self._request(config, self._ack_timeout if wait else 0)
        if status is not None and status is not AckStatus.OK:
            raise can.CanOperationError(f"MCU refused {config}: {status.name}")

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq = (self._seq + 1) & 0xFFFF
            return self._seq

    def _request(self, frame: TransmitRequest | Config, wait: float) -> AckStatus | None:
        """Send a request; with ``wait`` > 0, return the MCU's answer to it."""
        future: Future[AckStatus] | None = Future() if wait > 0 else None
        if future is not None:
            self._pending[frame.seq] = future
        try:
            self._write(encode_frame(frame))
            if future is None:
                return None
            try:
                return future.result(timeout=wait)
            except TimeoutError:
                raise can.CanTimeoutError(
                    f"{self._device}: no answer from the MCU to request {frame.seq} within {wait} s"
                ) from None
        finally:
            self._pending.pop(frame.seq, None)

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            if self._port is None:
                raise can.CanOperationError(f"{self._device} is disconnected")
            try:
                self._port.write(data)
            except serial.SerialTimeoutException as exc:
                raise can.CanTimeoutError(f"{self._device}: write timed out ({exc})") from exc
            except (serial.SerialException, OSError) as exc:
                raise can.CanOperationError(f"{self._device}: write failed ({exc})") from exc

    def _run(self) -> None:
        delay = self._reconnect_delay
        while not self._stop.is_set():
            port = self._port
            if port is None:
                if self._stop.wait(delay):
                    return
                delay = self._reopen(delay)
                continue
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError) as exc:
                if self._stop.is_set():
                    return
                self._lose(exc)
                if not self._reconnect:
                    self._failure = exc
                    return
                continue
            if data:
                self._receive(data, time.time())

    def _lose(self, exc: Exception) -> None:
        logger.warning("lost %s: %s", self._device, exc)
        with self._write_lock:
            if self._port is not None:
                self._port.close()
                self._port = None

    def _reopen(self, delay: float) -> float:
        """Try to reopen the device; return the delay before the next attempt."""
        try:
            port = self._open_port()
        except (serial.SerialException, OSError) as exc:
            logger.debug("reopening %s failed: %s", self._device, exc)
            return min(delay * 2, self._reconnect_max_delay)
        with self._write_lock:
            self._port = port
        self._reconnects += 1
        logger.warning("reconnected to %s (reconnect %d)", self._device, self._reconnects)
        try:
            self._configure(wait=False)
        except can.CanError as exc:
            logger.error("%s: cannot configure after reconnecting: %s", self._device, exc)
        return self._reconnect_delay

    def _close(self) -> None:
        self._stop.set()
        with self._write_lock:
            if self._port is not None:
                self._port.cancel_read()  # wakes the reader thread
        self._thread.join(_JOIN_S)
        with self._write_lock:
            if self._port is not None:
                self._port.close()
                self._port = None

    def _receive(self, data: bytes, host_time: float) -> None:
        for frame in self._decoder.feed(data):
            self._dispatch(frame, host_time)

    def _dispatch(self, frame: Frame, host_time: float) -> None:
        match frame:
            case CanFrame():
                self._can_frames += 1
                message = frame.to_message(self._clock.map_stamp(frame.timestamp_us, host_time))
                try:
                    self._rx.put_nowait(message)
                except queue.Full:
                    self._rx_dropped += 1
            case Heartbeat():
                self._heartbeats += 1
                self._clock.map_uptime(frame.uptime_us, host_time)
                if self._heartbeat is None or self._heartbeat.firmware_version != frame.firmware_version:
                    logger.info("%s: firmware %d.%d.%d", self._device, *frame.firmware_version)
                self._heartbeat = frame
            case BusStatus():
                self._clock.map_stamp(frame.timestamp_us, host_time)
                previous = self._status.get(frame.channel)
                if previous is None or previous.state is not frame.state:
                    logger.info("%s controller %d: %s", self._device, frame.channel, frame.state.name)
                if frame.last_error is not LastError.NONE:
                    self._bus_errors += 1
                self._status[frame.channel] = frame
            case GnssFrame():
                self._gnss_sentences += 1
                sentence = GnssSentence(self._clock.map_stamp(frame.timestamp_us, host_time), frame.sentence)
                self._deliver_gnss(sentence)
            case Ack():
                future = self._pending.get(frame.seq)
                if future is not None:
                    future.set_result(frame.status)
                elif frame.status is not AckStatus.OK:
                    logger.error("%s: MCU refused request %d: %s", self._device, frame.seq, frame.status.name)

    def _deliver_gnss(self, sentence: GnssSentence) -> None:
        if self._on_gnss is None:
            try:
                self._gnss.put_nowait(sentence)
            except queue.Full:
                self._gnss_dropped += 1
            return
        try:
            self._on_gnss(sentence)
        except Exception:
            logger.exception("%s: on_gnss callback failed", self._device)
