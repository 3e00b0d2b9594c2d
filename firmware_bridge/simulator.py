"""A simulated roadwave CAN microcontroller, speaking the protocol over a pseudo-terminal.

For tests and demos without hardware::

    with FirmwareSimulator(tmp / "ttyRW0", clock=SimulatedClock(time.time() - 60, skew_ppm=50)) as mcu:
        bus = can.Bus(interface="roadwave", channel=str(mcu.path))
        mcu.send_message(can.Message(arbitration_id=0x123, data=b"hi"))

The MCU stamps every event with its own clock (:class:`SimulatedClock`: a boot time and
a crystal error), sends heartbeats on a background thread, acknowledges transmit and
configuration requests (and records them), and can misbehave on request: garbage bytes,
frames with a broken CRC, and unplugging (:meth:`FirmwareSimulator.disappear`) and
replugging (:meth:`FirmwareSimulator.reappear`) at the same device path.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import can

from firmware_bridge.clock import WRAP_US
from firmware_bridge.protocol import (
    DELIMITER,
    HOST_TO_MCU,
    Ack,
    AckStatus,
    BusStatus,
    CanFrame,
    Config,
    DecoderStats,
    ErrorState,
    Frame,
    GnssFrame,
    Heartbeat,
    LastError,
    StreamDecoder,
    TransmitRequest,
    cobs_encode,
    encode_frame,
    frame_bytes,
)
from firmware_bridge.ptylink import PtyDevice

logger = logging.getLogger(__name__)

_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class SimulatedClock:
    """The MCU's microsecond counter: started at host time ``boot_time``, off by ``skew_ppm``.

    Positive ``skew_ppm`` means the MCU's crystal runs fast.
    """

    boot_time: float
    skew_ppm: float = 0.0

    def uptime_us(self, host_time: float) -> int:
        """The MCU's uptime at ``host_time``."""
        return round((host_time - self.boot_time) * (1.0 + self.skew_ppm * 1e-6) * 1e6)

    def stamp(self, host_time: float) -> int:
        """The 32-bit wrapping stamp the MCU puts on an event at ``host_time``."""
        return self.uptime_us(host_time) % WRAP_US


class FirmwareSimulator:
    """The MCU end of the serial link, at ``path`` (a symlink, like a udev device name).

    ``ack_status`` is the answer to every request (``None``: stay silent); requests are
    recorded in :attr:`transmits` (a queue) and :attr:`configs`.
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: SimulatedClock | None = None,
        firmware_version: tuple[int, int, int] = (1, 0, 0),
        channels: int = 1,
        heartbeat_interval: float | None = 1.0,
    ) -> None:
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0 or None, got {heartbeat_interval}")
        self.path = Path(path)
        self.clock = clock or SimulatedClock(boot_time=time.time())
        self.firmware_version = firmware_version
        self.channels = channels
        self.heartbeat_interval = heartbeat_interval
        self.ack_status: AckStatus | None = AckStatus.OK
        self.transmits: queue.Queue[TransmitRequest] = queue.Queue()
        self.configs: list[Config] = []
        self._decoder = StreamDecoder(accept=HOST_TO_MCU)
        self._lock = threading.Lock()
        self._device: PtyDevice | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self.reappear()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disappear()

    @property
    def present(self) -> bool:
        """Whether the device exists (between :meth:`reappear` and :meth:`disappear`)."""
        return self._device is not None

    @property
    def stats(self) -> DecoderStats:
        """What the MCU's decoder made of the host's bytes."""
        return self._decoder.stats

    def reappear(self) -> None:
        """Plug the device in: a new pty at ``path``, heartbeats starting now."""
        if self._device is not None:
            raise RuntimeError(f"the simulated MCU at {self.path} is already present")
        self._decoder.reset()
        self._device = PtyDevice(self.path)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(self._device, self._stop), name=f"mcu-sim {self.path}"
        )
        self._thread.start()

    def disappear(self) -> None:
        """Unplug the device: the pty closes and ``path`` goes away (no-op when absent)."""
        if self._device is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            device, self._device = self._device, None
        device.close()

    def send(self, frame: Frame) -> None:
        """Send any frame to the host."""
        self.inject(encode_frame(frame))

    def send_corrupt(self, frame: Frame) -> bytes:
        """Send ``frame`` with its CRC inverted, as line noise would leave it; return its encoding."""
        raw = bytearray(frame_bytes(frame))
        raw[-1] ^= 0xFF
        encoded = cobs_encode(bytes(raw))
        self.inject(encoded + DELIMITER)
        return encoded

    def inject(self, data: bytes) -> None:
        """Write raw bytes (garbage, half frames) to the host."""
        with self._lock:
            if self._device is None:
                raise RuntimeError(f"the simulated MCU at {self.path} is unplugged")
            self._device.write(data)

    def send_message(self, message: can.Message, at: float | None = None) -> CanFrame:
        """Report ``message`` as received from the vehicle bus at host time ``at`` (default: now)."""
        frame = CanFrame.from_message(message, timestamp_us=self.clock.stamp(self._now(at)))
        self.send(frame)
        return frame

    def send_heartbeat(self, at: float | None = None) -> Heartbeat:
        """A heartbeat with the uptime at ``at`` (default: now)."""
        heartbeat = Heartbeat(self.clock.uptime_us(self._now(at)), self.firmware_version, self.channels)
        self.send(heartbeat)
        return heartbeat

    def send_gnss(self, sentence: str, at: float | None = None) -> GnssFrame:
        """Pass an NMEA sentence (without CR LF) from the GNSS receiver to the host."""
        frame = GnssFrame(self.clock.stamp(self._now(at)), sentence)
        self.send(frame)
        return frame

    def send_bus_status(
        self,
        state: ErrorState,
        tec: int = 0,
        rec: int = 0,
        last_error: LastError = LastError.NONE,
        channel: int = 0,
        rx_overruns: int = 0,
        at: float | None = None,
    ) -> BusStatus:
        """Report a controller's error state."""
        status = BusStatus(self.clock.stamp(self._now(at)), channel, state, tec, rec, last_error, rx_overruns)
        self.send(status)
        return status

    @staticmethod
    def _now(at: float | None) -> float:
        return time.time() if at is None else at

    def _serve(self, device: PtyDevice, stop: threading.Event) -> None:
        """Answer the host and send heartbeats until ``stop`` is set."""
        next_beat = time.monotonic()
        while not stop.is_set():
            wait = _POLL_S
            if self.heartbeat_interval is not None:
                now = time.monotonic()
                if now >= next_beat:
                    try:
                        self.send_heartbeat()
                    except TimeoutError as exc:  # the host stopped reading: the MCU drops it
                        logger.debug("heartbeat dropped: %s", exc)
                    next_beat = now + self.heartbeat_interval
                wait = min(wait, next_beat - now)
            for frame in self._decoder.feed(device.read(max(wait, 0.0))):
                self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        match frame:
            case TransmitRequest():
                logger.debug("host asks to send %s", frame)
                self.transmits.put(frame)
            case Config():
                logger.debug("host configures %s", frame)
                self.configs.append(frame)
            case _:
                return
        if self.ack_status is not None:
            self.send(Ack(frame.seq, self.ack_status))
