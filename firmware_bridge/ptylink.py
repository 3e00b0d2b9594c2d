"""The device end of a pseudo-terminal, reachable at a stable symlink path.

Simulated devices use it like a USB serial adapter: the client opens ``path`` (a
symlink to the pty's client end, as udev names a real device); :meth:`PtyDevice.close`
makes the device disappear (client reads fail, the path is gone), and a new
:class:`PtyDevice` at the same path makes it return.
"""

from __future__ import annotations

import logging
import os
import select
import tty
from pathlib import Path

logger = logging.getLogger(__name__)


class PtyDevice:
    """A raw-mode pseudo-terminal; ``path`` links to the end that clients open."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._device, self._client = os.openpty()
        os.set_blocking(self._device, False)
        # Raw mode before any client opens it: no echo, no CR/LF translation, no signals.
        # Holding the client end open keeps the pty alive between client sessions.
        tty.setraw(self._client)
        self.tty_name = os.ttyname(self._client)
        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        staging.unlink(missing_ok=True)
        staging.symlink_to(self.tty_name)
        staging.replace(self.path)  # atomic: a client never sees the path missing while we return
        logger.debug("pty %s at %s", self.tty_name, self.path)

    def read(self, timeout: float) -> bytes:
        """Bytes the client wrote, after waiting up to ``timeout`` seconds (``b""`` if none)."""
        ready, _, _ = select.select([self._device], [], [], timeout)
        return os.read(self._device, 65536) if ready else b""

    def write(self, data: bytes, timeout: float = 1.0) -> None:
        """Send ``data`` to the client; ``TimeoutError`` if it reads nothing for ``timeout`` seconds."""
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [self._device], [], timeout)
            if not ready:
                raise TimeoutError(f"{self.path}: the client has not read for {timeout} s, the pty is full")
            view = view[os.write(self._device, view) :]

    def close(self) -> None:
        """Remove the path and close the pty: the client's next read fails."""
        if self.path.is_symlink() and self.path.readlink() == Path(self.tty_name):
            self.path.unlink()
        os.close(self._device)
        os.close(self._client)
