"""A minimal SLCAN adapter (Lawicel protocol, CANable-style) on a pseudo-terminal.

Enough for python-can's ``slcan`` interface: commands are ASCII lines ending in CR; the
adapter answers CR for success and BEL for an error. Understood:

=========================  ==================================================
``S0``-``S9``, ``sXXYY``   nominal bit rate (table or BTR registers), closed only
``Y2``, ``Y5``             CAN FD data bit rate 2 or 5 Mbit/s (CANable 2.0), closed only
``O``, ``L``, ``C``        open, open listen-only, close the channel
``V``, ``N``               version (``V`` + hardware and software, 2 digits each), serial
``t`` ``T`` ``r`` ``R``    transmit classic data/remote frame (11-bit lower, 29-bit upper case)
``d`` ``D`` ``b`` ``B``    transmit CAN FD frame, without / with bit-rate switch
(empty line)               ignored (python-can sends one when there is no data bit rate)
=========================  ==================================================

A transmit is answered ``z`` (11-bit) or ``Z`` (29-bit) then CR, as Lawicel adapters do.
Received frames are sent in the same letters while the channel is open. Timestamps
(``Z1``) are not offered: python-can's ``slcan`` stamps frames on arrival.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

import can
from can.util import dlc2len, len2dlc

from firmware_bridge.ptylink import PtyDevice

logger = logging.getLogger(__name__)

_OK, _ERROR = b"\r", b"\a"
_POLL_S = 0.05
#: ``S<n>`` bit rates (Lawicel S0-S8; S9 is python-can's 83.3 kbit/s).
BITRATES = {
    "0": 10_000,
    "1": 20_000,
    "2": 50_000,
    "3": 100_000,
    "4": 125_000,
    "5": 250_000,
    "6": 500_000,
    "7": 800_000,  # Lawicel; python-can asks for 750 kbit/s with S7
    "8": 1_000_000,
    "9": 83_300,
}
DATA_BITRATES = {"2": 2_000_000, "5": 5_000_000}
#: Frame letter -> (extended id, remote, CAN FD, bit-rate switch).
_KINDS = {
    "t": (False, False, False, False),
    "T": (True, False, False, False),
    "r": (False, True, False, False),
    "R": (True, True, False, False),
    "d": (False, False, True, False),
    "D": (True, False, True, False),
    "b": (False, False, True, True),
    "B": (True, False, True, True),
}


def format_frame(message: can.Message) -> str:
    """The SLCAN line (without CR) for ``message``."""
    id_text = f"{message.arbitration_id:08X}" if message.is_extended_id else f"{message.arbitration_id:03X}"
    if message.is_fd:
        letter = "b" if message.bitrate_switch else "d"
        length = f"{len2dlc(len(message.data)):X}"
    else:
        letter = "r" if message.is_remote_frame else "t"
        length = str(message.dlc)
    data = "" if message.is_remote_frame else message.data.hex().upper()
    return f"{letter.upper() if message.is_extended_id else letter}{id_text}{length}{data}"


def parse_frame(line: str) -> can.Message:
    """The message of a transmit command; ``ValueError`` if the line is not a valid one."""
    if not line or line[0] not in _KINDS:
        raise ValueError(f"not an SLCAN frame: {line!r}")
    extended, remote, fd, brs = _KINDS[line[0]]
    id_end = 9 if extended else 4
    if len(line) < id_end + 1:
        raise ValueError(f"SLCAN frame too short: {line!r}")
    arbitration_id = int(line[1:id_end], 16)
    dlc = int(line[id_end], 16)
    if not fd and dlc > 8:
        raise ValueError(f"classic CAN DLC {dlc} > 8 in {line!r}")
    length = dlc2len(dlc)
    data = bytes.fromhex(line[id_end + 1 :])
    if len(data) != (0 if remote else length):
        raise ValueError(f"SLCAN frame {line!r}: DLC {dlc} but {len(data)} data bytes")
    return can.Message(
        arbitration_id=arbitration_id,
        is_extended_id=extended,
        is_remote_frame=remote,
        is_fd=fd,
        bitrate_switch=brs,
        dlc=length,
        data=data,
        check=True,
    )


class SlcanSimulator:
    """An SLCAN adapter at ``path``; frames the host sends land in :attr:`received`."""

    def __init__(
        self, path: Path, *, version: tuple[int, int] = (10, 13), serial_number: str = "RW01"
    ) -> None:
        self.path = Path(path)
        self.version = version
        self.serial_number = serial_number
        self.commands: list[str] = []  # every command line, in order
        self.received: queue.Queue[can.Message] = queue.Queue()
        self.bitrate: int | None = None
        self.data_bitrate: int | None = None
        self.listen_only = False
        self._open = threading.Event()
        self._lock = threading.Lock()
        self._device: PtyDevice | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._device = PtyDevice(self.path)
        self._thread = threading.Thread(
            target=self._serve, args=(self._device,), name=f"slcan-sim {self.path}"
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._device is not None:
            self._device.close()
            self._device = None

    @property
    def is_open(self) -> bool:
        """Whether the host has opened the CAN channel (``O`` or ``L``)."""
        return self._open.is_set()

    def wait_open(self, timeout: float) -> bool:
        """Wait until the host opens the channel; ``False`` on timeout."""
        return self._open.wait(timeout)

    def send_message(self, message: can.Message) -> None:
        """Report ``message`` as received from the bus; the channel must be open."""
        if not self.is_open:
            raise RuntimeError(f"the SLCAN channel at {self.path} is closed: the host has not sent O or L")
        self._reply(format_frame(message).encode("ascii") + _OK)

    def _reply(self, data: bytes) -> None:
        with self._lock:
            if self._device is None:
                raise RuntimeError(f"the SLCAN simulator at {self.path} is not running")
            self._device.write(data)

    def _serve(self, device: PtyDevice) -> None:
        pending = b""
        while not self._stop.is_set():
            *lines, pending = (pending + device.read(_POLL_S)).split(_OK)
            for line in lines:
                command = line.decode("ascii", errors="replace")
                self.commands.append(command)
                self._reply(self._answer(command))

    def _answer(self, command: str) -> bytes:
        """The reply to one command line (CR-terminated, or BEL)."""
        head, arg = command[:1], command[1:]
        closed = not self.is_open
        if head == "":
            return _OK
        if head == "S" and closed and arg in BITRATES:
            self.bitrate = BITRATES[arg]
        elif head == "Y" and closed and arg in DATA_BITRATES:
            self.data_bitrate = DATA_BITRATES[arg]
        elif head == "s" and closed and len(arg) == 4 and all(c in "0123456789abcdefABCDEF" for c in arg):
            self.bitrate = None  # custom BTR0/BTR1 timing
        elif head in ("O", "L") and closed and not arg:
            self.listen_only = head == "L"
            self._open.set()
        elif head == "C" and not closed and not arg:
            self._open.clear()
        elif head == "V" and not arg:
            return f"V{self.version[0]:02d}{self.version[1]:02d}".encode("ascii") + _OK
        elif head == "N" and not arg:
            return f"N{self.serial_number}".encode("ascii") + _OK
        elif head in _KINDS and not closed and not self.listen_only:
            try:
                message = parse_frame(command)
            except ValueError as exc:
                logger.debug("bad transmit command: %s", exc)
                return _ERROR
            self.received.put(message)
            return (b"Z" if message.is_extended_id else b"z") + _OK
        else:
            logger.debug("refused SLCAN command %r (channel %s)", command, "closed" if closed else "open")
            return _ERROR
        return _OK
