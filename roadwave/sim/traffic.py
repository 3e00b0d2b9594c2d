"""Single-lane ring road driven by the Intelligent Driver Model (IDM), vectorised with numpy.

The default set-up is Sugiyama et al. (2008): 22 cars on a 230 m ring. With the IDM
parameters of Treiber & Kesting (v0 = 30 m/s, T = 1 s, s0 = 2 m, a = 1 m/s^2,
b = 1.5 m/s^2, delta = 4) the uniform flow is string-unstable and small random
accelerations grow into a stop-and-go wave within a few minutes; with T = 1.5 s it
stays smooth. Cars are numbered along the direction of travel: car ``i + 1`` (modulo
the number of cars) is the leader of car ``i``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Sugiyama et al. (2008), New J. Phys. 10 033001: 22 cars on a 230 m circuit.
SUGIYAMA_CARS = 22
SUGIYAMA_CIRCUMFERENCE_M = 230.0

#: Gap left behind the leader when a car is clamped, so rounding cannot make it negative.
_CLAMP_MARGIN_M = 1e-6


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _finite_positive(name: str, value: float) -> None:
    _require(math.isfinite(value) and value > 0, f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class IDMParameters:
    """Driver and car parameters of the Intelligent Driver Model (SI units)."""

    desired_speed: float = 30.0  # v0, m/s
    time_headway: float = 1.0  # T, s
    min_gap: float = 2.0  # s0, m (bumper to bumper at standstill)
    max_accel: float = 1.0  # a, m/s^2
    comfortable_decel: float = 1.5  # b, m/s^2
    accel_exponent: float = 4.0  # delta
    car_length: float = 5.0  # m

    def __post_init__(self) -> None:
        for name in (
            "desired_speed",
            "min_gap",
            "max_accel",
            "comfortable_decel",
            "accel_exponent",
            "car_length",
        ):
            _finite_positive(f"IDMParameters.{name}", getattr(self, name))
        _require(
            math.isfinite(self.time_headway) and self.time_headway >= 0,
            f"IDMParameters.time_headway must be a finite number >= 0, got {self.time_headway!r}",
        )

    def equilibrium_speed(self, gap: float) -> float:
        """Speed (m/s) at which the IDM acceleration is zero for a bumper-to-bumper ``gap`` (m)."""
        _require(math.isfinite(gap) and gap >= 0, f"gap must be a finite number >= 0, got {gap!r}")
        low, high = 0.0, self.desired_speed
        for _ in range(60):  # bisection: the residual below is increasing in v
            mid = 0.5 * (low + high)
            needed = (self.min_gap + mid * self.time_headway) / math.sqrt(
                1.0 - (mid / self.desired_speed) ** self.accel_exponent
            )
            if needed < gap:
                low = mid
            else:
                high = mid
        return low


@dataclass(frozen=True, slots=True)
class RingParameters:
    """Ring road geometry, integration step and noise."""

    cars: int = SUGIYAMA_CARS
    circumference_m: float = SUGIYAMA_CIRCUMFERENCE_M
    dt_s: float = 0.01  # ballistic integration step
    accel_noise: float = 0.1  # standard deviation (m/s^2) of white acceleration noise per step
    max_decel: float = 9.0  # m/s^2, physical braking limit (about 0.9 g)
    initial_speed: float | None = None  # m/s; None: the IDM equilibrium speed for the spacing

    def __post_init__(self) -> None:
        _require(
            isinstance(self.cars, int) and not isinstance(self.cars, bool) and self.cars >= 2,
            f"RingParameters.cars must be an integer >= 2, got {self.cars!r}",
        )
        _finite_positive("RingParameters.circumference_m", self.circumference_m)
        _finite_positive("RingParameters.dt_s", self.dt_s)
        _finite_positive("RingParameters.max_decel", self.max_decel)
        _require(
            math.isfinite(self.accel_noise) and self.accel_noise >= 0,
            f"RingParameters.accel_noise must be a finite number >= 0, got {self.accel_noise!r}",
        )
        if self.initial_speed is not None:
            _require(
                math.isfinite(self.initial_speed) and self.initial_speed >= 0,
                "RingParameters.initial_speed must be None or a finite number >= 0, "
                f"got {self.initial_speed!r}",
            )

    @classmethod
    def sugiyama(cls, cars: int = SUGIYAMA_CARS, **overrides: Any) -> RingParameters:
        """A ring with ``cars`` cars at the car density of Sugiyama's 22 cars on 230 m."""
        circumference = SUGIYAMA_CIRCUMFERENCE_M * cars / SUGIYAMA_CARS
        return cls(cars=cars, circumference_m=circumference, **overrides)

    @property
    def radius_m(self) -> float:
        """Radius of the ring (m)."""
        return self.circumference_m / (2.0 * math.pi)


class RingTraffic:
    """IDM traffic on a ring, advanced in fixed steps; deterministic for a given seed.

    Positions are unwrapped (metres from the ring's origin, growing without bound); the
    position on the ring is ``positions % circumference_m``. Array properties return
    read-only views that change on the next :meth:`step`.
    """

    def __init__(
        self,
        idm: IDMParameters = IDMParameters(),
        ring: RingParameters = RingParameters(),
        seed: int | np.random.SeedSequence = 0,
    ) -> None:
        spacing = ring.circumference_m / ring.cars
        free_gap = spacing - idm.car_length
        _require(
            free_gap > 0,
            f"a ring of {ring.circumference_m:g} m cannot hold {ring.cars} cars of "
            f"{idm.car_length:g} m (needs more than {ring.cars * idm.car_length:g} m)",
        )
        self.idm = idm
        self.ring = ring
        self._rng = np.random.default_rng(seed)
        speed = idm.equilibrium_speed(free_gap) if ring.initial_speed is None else ring.initial_speed
        self._initial = np.arange(ring.cars, dtype=np.float64) * spacing
        self._x = self._initial.copy()
        self._v = np.full(ring.cars, speed, dtype=np.float64)
        self._a = np.zeros(ring.cars, dtype=np.float64)
        self._lead_x = np.empty(ring.cars, dtype=np.float64)
        self._lead_v = np.empty(ring.cars, dtype=np.float64)
        self._gap = np.empty(ring.cars, dtype=np.float64)
        self._update_leaders()
        self._steps = 0
        self.clamped_collisions = 0
        self._sqrt_ab2 = 2.0 * math.sqrt(idm.max_accel * idm.comfortable_decel)

    @property
    def steps(self) -> int:
        """Number of completed integration steps."""
        return self._steps

    @property
    def time_s(self) -> float:
        """Simulated time since the start (s)."""
        return self._steps * self.ring.dt_s

    @property
    def positions(self) -> FloatArray:
        """Unwrapped position of each car's front bumper (m)."""
        return _read_only(self._x)

    @property
    def travelled(self) -> FloatArray:
        """Distance each car has travelled since the start (m)."""
        return _read_only(self._x - self._initial)

    @property
    def speeds(self) -> FloatArray:
        """Speed of each car (m/s), never negative."""
        return _read_only(self._v)

    @property
    def accels(self) -> FloatArray:
        """Acceleration each car applied during the last step (m/s^2); 0 before the first."""
        return _read_only(self._a)

    @property
    def gaps(self) -> FloatArray:
        """Bumper-to-bumper gap to the leader (m), never negative."""
        return _read_only(self._gap)

    @property
    def lead_speeds(self) -> FloatArray:
        """Speed of each car's leader (m/s)."""
        return _read_only(self._lead_v)

    def _update_leaders(self) -> None:
        x, lead_x = self._x, self._lead_x
        lead_x[:-1] = x[1:]
        lead_x[-1] = x[0] + self.ring.circumference_m
        np.subtract(lead_x, x, out=self._gap)
        self._gap -= self.idm.car_length
        self._lead_v[:-1] = self._v[1:]
        self._lead_v[-1] = self._v[0]

    def step(self) -> None:
        """Advance every car by one step: IDM acceleration plus noise, ballistic update."""
        idm, ring, dt = self.idm, self.ring, self.ring.dt_s
        v, gap = self._v, self._gap
        desired_gap = v * idm.time_headway + v * (v - self._lead_v) / self._sqrt_ab2
        np.maximum(desired_gap, 0.0, out=desired_gap)
        desired_gap += idm.min_gap
        accel = 1.0 - (v / idm.desired_speed) ** idm.accel_exponent
        accel -= (desired_gap / np.maximum(gap, 1e-3)) ** 2
        accel *= idm.max_accel
        if ring.accel_noise > 0:
            accel += ring.accel_noise * self._rng.standard_normal(ring.cars)
        np.maximum(accel, -ring.max_decel, out=accel)

        new_v = v + accel * dt
        stopping = new_v < 0.0
        moved = 0.5 * (v + new_v) * dt
        if stopping.any():  # stop within the step instead of rolling backwards
            moved[stopping] = v[stopping] ** 2 / (-2.0 * accel[stopping])
            new_v[stopping] = 0.0
        self._a = (new_v - v) / dt
        self._x += moved
        self._v = new_v
        self._update_leaders()
        if (self._gap < 0.0).any():
            self._clamp_collisions()
        self._steps += 1

    def _clamp_collisions(self) -> None:
        """Put every car that overlaps its leader right behind it, no faster than it.

        Rare with a 10 ms step; repeated because moving one car back can make its follower overlap.
        """
        while (overlap := self._gap < 0.0).any():
            count = int(overlap.sum())
            self.clamped_collisions += count
            logger.debug("clamped %d car(s) behind their leader at t=%.2f s", count, self.time_s)
            self._x[overlap] = self._lead_x[overlap] - (self.idm.car_length + _CLAMP_MARGIN_M)
            self._v[overlap] = np.minimum(self._v[overlap], self._lead_v[overlap])
            self._update_leaders()


def _read_only(array: FloatArray) -> FloatArray:
    view = array.view()
    view.flags.writeable = False
    return view
