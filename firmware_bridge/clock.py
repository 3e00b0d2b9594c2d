"""Mapping the MCU's microsecond clock to host epoch time, without drift.

Model. The MCU stamps an event at uptime ``m`` (microseconds); the host reads the frame
at epoch time ``r = t(m) + d``, where ``t(m) = a + b * m`` is the event's true host time
(``b`` = host seconds per MCU microsecond, 1e-6 for a perfect crystal, off by the skew)
and ``d >= d_min`` is the transport delay: USB polling, the serial driver, scheduling.
Delays are positive and heavy-tailed, so the least-delayed samples carry the information.

Estimator. With ``x = m - m0`` (s) and ``y = r - r0 - x``, samples lie on or above the
line ``y = alpha + beta * x`` (shifted by ``d_min``). Samples are grouped into bins of
``bin_s`` MCU seconds and only each bin's minimum is kept (the running minimum-delay
sample); a sliding window of ``window_bins`` closed bins is fitted by the line below all
of them that passes closest to them on average: the edge of their lower convex hull
above the mean ``x`` (the linear-programming fit of Moon, Skelly and Towsley, 1999).
``beta`` is the skew; it adapts slowly, as bins enter and leave the window. The open
bin only sets the line until the first bin closes.

What it does not know: ``d_min`` itself. Mapped times are the event times plus the
minimum one-way delay of the link (tens to hundreds of microseconds on USB).

Discontinuities: 32-bit stamps are unwrapped against the latest time seen (frames may be
up to ``reorder_us`` out of order); the 64-bit heartbeat uptime re-anchors the high word.
Uptime going backwards means the MCU restarted; a sample ``step_s`` below the line, or
``STEP_BINS`` bin minima in a row ``step_s`` above it, means the host clock was stepped
(NTP on a device without RTC). Each restarts the estimate. Mapping is monotonic in MCU
time between restarts.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

logger = logging.getLogger(__name__)

WRAP_US = 1 << 32
_HALF_WRAP_US = WRAP_US // 2
#: Bin minima in a row above the line that mean the host clock stepped forward.
STEP_BINS = 10

_Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class ClockEstimate:
    """The current mapping: ``host = boot_time + uptime_s * rate``.

    ``skew_ppm`` is the MCU clock's rate error against the host clock; positive means the
    MCU counts fast. ``bins`` is the number of closed bins in the fit, ``resets`` the
    number of restarts (MCU restart, host clock step, :meth:`McuClock.reset`).
    """

    boot_time: float
    rate: float
    bins: int
    resets: int

    @property
    def skew_ppm(self) -> float:
        """MCU clock rate error in parts per million (positive: MCU runs fast)."""
        return (1.0 / self.rate - 1.0) * 1e6


def _cross(o: _Point, a: _Point, b: _Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _lower_hull(points: deque[_Point]) -> list[_Point]:
    """Lower convex hull of points sorted by x (Andrew's monotone chain)."""
    hull: list[_Point] = []
    for point in points:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) <= 0:
            hull.pop()
        hull.append(point)
    return hull


class McuClock:
    """Maps MCU stamps to host epoch seconds; feed it every stamp with its arrival time."""

    def __init__(
        self,
        *,
        bin_s: float = 1.0,
        window_bins: int = 120,
        max_skew_ppm: float = 1000.0,
        step_s: float = 0.05,
        reorder_us: int = 1_000_000,
    ) -> None:
        if not bin_s > 0 or window_bins < 2 or not max_skew_ppm >= 0 or not step_s > 0 or reorder_us < 0:
            raise ValueError(
                "McuClock needs bin_s > 0, window_bins >= 2, max_skew_ppm >= 0, step_s > 0 and "
                f"reorder_us >= 0; got {bin_s}, {window_bins}, {max_skew_ppm}, {step_s}, {reorder_us}"
            )
        self._bin_s = bin_s
        self._max_slope = max_skew_ppm * 1e-6
        self._step_s = step_s
        self._reorder_us = reorder_us
        self._bins: deque[_Point] = deque(maxlen=window_bins)
        self._resets = 0
        self._clear()

    def reset(self) -> None:
        """Forget everything: the next stamp starts a new estimate (e.g. after a reconnect)."""
        self._clear()
        self._resets += 1

    def _clear(self) -> None:
        self._last_us: int | None = None  # latest MCU time seen, 64-bit
        self._ref_us = 0  # MCU time and host time of x = 0
        self._ref_host = 0.0
        self._clear_fit()

    def _restart_fit(self) -> None:
        self._clear_fit()
        self._resets += 1

    def _clear_fit(self) -> None:
        self._bins.clear()
        self._open: tuple[int, float, float] | None = None  # bin index, x, y of its minimum
        self._alpha = self._beta = 0.0
        self._above = 0
        self._mono: tuple[int, float] | None = None  # latest (MCU us, host time) returned

    @property
    def estimate(self) -> ClockEstimate | None:
        """The current mapping, or ``None`` before the first stamp."""
        if self._last_us is None:
            return None
        rate = (1.0 + self._beta) * 1e-6
        boot_time = self._ref_host + self._alpha - self._ref_us * rate
        return ClockEstimate(boot_time, rate * 1e6, len(self._bins), self._resets)

    def map_stamp(self, stamp_us: int, host_time: float) -> float:
        """Host epoch time of a 32-bit wrapping MCU stamp that arrived at ``host_time``."""
        if self._last_us is None:
            uptime = stamp_us  # high word unknown until a heartbeat anchors it
        else:
            delta = (stamp_us - self._last_us) % WRAP_US
            uptime = self._last_us + (delta - WRAP_US if delta >= _HALF_WRAP_US else delta)
            if uptime < self._last_us - self._reorder_us:
                logger.warning("MCU stamp went back %.3f s: MCU restarted?", (self._last_us - uptime) / 1e6)
                self.reset()
                uptime = stamp_us
        return self._map(uptime, host_time)

    def map_uptime(self, uptime_us: int, host_time: float) -> float:
        """Host epoch time of a 64-bit MCU uptime (a heartbeat); re-anchors the 32-bit stamps."""
        if self._last_us is not None:
            behind = self._last_us - uptime_us
            if behind > self._reorder_us or -behind >= _HALF_WRAP_US:
                # Back in time: the MCU restarted. Far ahead: the stamps' assumed high word was wrong.
                logger.info("MCU uptime %.3f s does not continue its stamps: new estimate", uptime_us / 1e6)
                self.reset()
        return self._map(uptime_us, host_time)

    def _map(self, uptime_us: int, host_time: float) -> float:
        if self._last_us is None:
            self._ref_us, self._ref_host = uptime_us, host_time
            self._last_us = uptime_us
        else:
            self._last_us = max(self._last_us, uptime_us)
        x = (uptime_us - self._ref_us) * 1e-6
        self._observe(x, host_time - self._ref_host - x)
        mapped = self._ref_host + x + self._alpha + self._beta * x
        if self._mono is not None and uptime_us >= self._mono[0]:
            mapped = max(mapped, self._mono[1])
        if self._mono is None or uptime_us >= self._mono[0]:
            self._mono = (uptime_us, mapped)
        return mapped

    def _line(self, x: float) -> float:
        return self._alpha + self._beta * x

    def _observe(self, x: float, y: float) -> None:
        fitted = self._open is not None
        if fitted and y < self._line(x) - self._step_s:
            logger.warning("host clock stepped back by about %.3f s", self._line(x) - y)
            self._restart_fit()
        index = math.floor(x / self._bin_s)
        if self._open is not None:
            open_index, open_x, open_y = self._open
            if index < open_index or (index == open_index and y >= open_y):
                return  # a late or slower sample: mapped, but no news for the fit
            if index > open_index:
                self._close(open_x, open_y)
        self._open = (index, x, y)
        if not self._bins:
            self._alpha, self._beta = y, 0.0

    def _close(self, x: float, y: float) -> None:
        if self._bins and y > self._line(x) + self._step_s:
            self._above += 1
            if self._above >= STEP_BINS:
                logger.warning("host clock stepped forward by about %.3f s", y - self._line(x))
                self._restart_fit()
                return
        else:
            self._above = 0
        self._bins.append((x, y))
        self._fit()

    def _fit(self) -> None:
        """The window's lower-hull edge above the mean x; slope clamped to the skew limit."""
        hull = _lower_hull(self._bins)
        beta = 0.0
        if len(hull) > 1:
            mean_x = sum(x for x, _ in self._bins) / len(self._bins)
            for (x0, y0), (x1, y1) in zip(hull, hull[1:], strict=False):
                if x1 >= mean_x:
                    beta = (y1 - y0) / (x1 - x0)
                    break
        self._beta = min(max(beta, -self._max_slope), self._max_slope)
        self._alpha = min(y - self._beta * x for x, y in self._bins)
