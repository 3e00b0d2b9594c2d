"""One simulated car: from ring-road kinematics to the physical value of every reference DBC signal.

The ring is driven counter-clockwise seen from above, so the car turns left all the
time: lateral acceleration, yaw rate, steering angle and lead azimuth are positive
(ISO 8855: y to the left, counter-clockwise positive). Values are physical (DBC units)
and not yet clamped to the DBC ranges; :mod:`roadwave.sim.fleet` clamps and encodes.
Integrity counters/checksums and multiplexer selectors are framing, added by the fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

SignalValue = float | int | str

#: IUGG mean Earth radius (m); plenty for placing a ring of a few hundred metres.
EARTH_RADIUS_M = 6_371_008.8
GRAVITY = 9.80665


@dataclass(frozen=True, slots=True)
class Kinematics:
    """One car's state on the ring at one instant (SI units)."""

    time_s: float  # since the traffic simulation started
    position_m: float  # unwrapped distance of the front bumper along the ring from its origin
    travelled_m: float  # since the traffic simulation started
    speed: float
    accel: float
    gap: float  # bumper to bumper, to the car ahead
    lead_speed: float


@dataclass(frozen=True, slots=True)
class RingSite:
    """Where the ring is and the weather there."""

    centre_lat: float = 35.1815  # deg; central Nagoya, Japan
    centre_lon: float = 136.9066  # deg
    altitude_m: float = 15.0
    ambient_c: float = 18.0

    def __post_init__(self) -> None:
        if not -85.0 <= self.centre_lat <= 85.0:
            raise ValueError(f"RingSite.centre_lat must be within [-85, 85] deg, got {self.centre_lat!r}")
        if not -180.0 <= self.centre_lon <= 180.0:
            raise ValueError(f"RingSite.centre_lon must be within [-180, 180] deg, got {self.centre_lon!r}")
        for name in ("altitude_m", "ambient_c"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"RingSite.{name} must be finite, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class VehicleParameters:
    """A generic mid-size petrol car with a 6-speed automatic (typical figures, not sourced)."""

    wheelbase_m: float = 2.7
    steering_ratio: float = 15.0
    width_m: float = 1.8
    wheel_radius_m: float = 0.31
    gear_ratios: tuple[float, ...] = (3.6, 2.1, 1.4, 1.0, 0.8, 0.65)
    upshift_kmh: tuple[float, ...] = (15.0, 30.0, 50.0, 70.0, 95.0)  # gear n -> n + 1 above
    final_drive: float = 3.9
    idle_rpm: float = 750.0
    rolling_resistance: float = 0.012  # coefficient
    drag_per_mass: float = 3.0e-4  # 1/m: rho * Cd * A / (2 m)
    pedal_response_s: float = 0.3  # the driver's pedals follow the acceleration this smoothly
    engine_brake_decel: float = 0.5  # m/s^2 available without the brakes
    full_throttle_accel: float = 4.0  # m/s^2 traction at 100 % pedal
    brake_bar_per_mps2: float = 12.0  # master cylinder pressure per m/s^2 of friction braking
    brake_pedal_pct_per_mps2: float = 10.0
    hold_brake_bar: float = 15.0  # driver holds the car at standstill
    hold_brake_pct: float = 20.0
    abs_decel: float = 8.0  # m/s^2; ABS intervenes beyond this
    lane_width_m: float = 3.5
    lane_wander_m: float = 0.15  # standard deviation of the lateral offset
    lane_wander_time_s: float = 4.0  # correlation time of the lateral offset
    battery_charging_v: float = 14.1
    battery_noise_v: float = 0.02
    coolant_target_c: float = 90.0
    coolant_warmup_s: float = 100.0  # time constant of the warm-up
    tank_litres: float = 50.0
    idle_litres_per_hour: float = 0.8
    litres_per_100km: float = 6.5

    def __post_init__(self) -> None:
        for field in fields(self):
            name, value = field.name, getattr(self, field.name)
            values = value if isinstance(value, tuple) else (value,)
            if not values or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"VehicleParameters.{name} must be finite and > 0, got {value!r}")
        if len(self.gear_ratios) != len(self.upshift_kmh) + 1:
            raise ValueError(
                f"VehicleParameters needs one upshift speed fewer than gears: "
                f"{len(self.gear_ratios)} gear ratios, {len(self.upshift_kmh)} upshift speeds"
            )
        if list(self.upshift_kmh) != sorted(set(self.upshift_kmh)):
            raise ValueError(
                f"VehicleParameters.upshift_kmh must be strictly increasing, got {self.upshift_kmh!r}"
            )


class VehicleModel:
    """Physical signal values of one car; per-car randomness comes from its own generator."""

    #: Every signal :meth:`signals` returns.
    SIGNALS = frozenset(
        {
            "VehicleSpeed", "LongitudinalAccel", "LateralAccel", "YawRate", "SteeringAngle",
            "ABSActive", "BrakePedalPosition", "BrakePressure",
            "EngineSpeed", "AcceleratorPedal", "GearSelected", "GearCurrent",
            "LeadValid", "LeadRange", "LeadRangeRate", "LeadAzimuth", "LeadWidth",
            "LaneLateralOffset", "LaneWidth", "TurnSignalLeft", "TurnSignalRight",
            "Odometer", "HazardLights",
            "BatteryVoltage", "CoolantTemp", "FuelLevel", "AmbientTemp",
            "Latitude", "Longitude", "Heading", "Altitude",
        }
    )  # fmt: skip
    #: Signals whose value is a DBC value-table label rather than a number.
    LABEL_SIGNALS = frozenset({"GearSelected"})

    #: Lead objects further than this are reported with LeadValid = 0.
    RADAR_VALID_RANGE_M = 150.0

    def __init__(
        self,
        ring_radius_m: float,
        rng: np.random.Generator,
        site: RingSite = RingSite(),
        params: VehicleParameters = VehicleParameters(),
    ) -> None:
        if not (math.isfinite(ring_radius_m) and ring_radius_m > params.wheelbase_m):
            raise ValueError(
                f"ring radius must exceed the wheelbase ({params.wheelbase_m} m), got {ring_radius_m!r}"
            )
        self.radius_m = ring_radius_m
        self.site = site
        self.params = params
        self._rng = rng
        self.start_odometer_km = round(float(rng.uniform(5_000.0, 150_000.0)), 1)
        self.start_fuel_pct = float(rng.uniform(35.0, 95.0))
        self._lane_offset = float(rng.normal(0.0, params.lane_wander_m))
        self._lane_time_s = 0.0
        self._pedal_accel: float | None = None
        self._pedal_time_s = 0.0
        # Constant for a circle: kinematic bicycle model delta = atan(L / R).
        self._steering_deg = math.degrees(math.atan(params.wheelbase_m / ring_radius_m)) * (
            params.steering_ratio
        )
        self._wheel_rpm_per_mps = 60.0 / (2.0 * math.pi * params.wheel_radius_m)
        self._lat_deg_per_m = math.degrees(1.0 / EARTH_RADIUS_M)
        self._lon_deg_per_m = math.degrees(1.0 / (EARTH_RADIUS_M * math.cos(math.radians(site.centre_lat))))

    def _gear(self, speed_kmh: float) -> int:
        gear = 1
        for threshold in self.params.upshift_kmh:
            if speed_kmh < threshold:
                break
            gear += 1
        return gear

    def _lane_offset_at(self, time_s: float) -> float:
        """Advance the Ornstein-Uhlenbeck lateral wander to ``time_s`` (exact update)."""
        dt = time_s - self._lane_time_s
        if dt > 0:
            p = self.params
            decay = math.exp(-dt / p.lane_wander_time_s)
            noise = p.lane_wander_m * math.sqrt(1.0 - decay * decay) * float(self._rng.standard_normal())
            self._lane_offset = self._lane_offset * decay + noise
            self._lane_time_s = time_s
        return self._lane_offset

    def _pedal_accel_at(self, time_s: float, accel: float) -> float:
        """Acceleration low-pass filtered with the driver's pedal response time."""
        if self._pedal_accel is None:
            self._pedal_accel = accel
        else:
            weight = 1.0 - math.exp(-(time_s - self._pedal_time_s) / self.params.pedal_response_s)
            self._pedal_accel += (accel - self._pedal_accel) * weight
        self._pedal_time_s = time_s
        return self._pedal_accel

    def signals(self, state: Kinematics) -> dict[str, SignalValue]:
        """Physical value of every signal in :data:`SIGNALS` for ``state``.

        Calls must come in non-decreasing time order: the lane wander and noise are stateful.
        """
        p, site = self.params, self.site
        v, accel, radius = state.speed, state.accel, self.radius_m
        speed_kmh = v * 3.6
        moving = v > 0.05

        # Pedals: traction needed = (smoothed) acceleration + rolling and air resistance.
        traction = self._pedal_accel_at(state.time_s, accel) + (
            p.rolling_resistance * GRAVITY + p.drag_per_mass * v * v if moving else 0.0
        )
        accelerator = 0.0
        brake_pressure = brake_pedal = 0.0
        if traction > 0:
            accelerator = 100.0 * traction / p.full_throttle_accel
        elif not moving:
            brake_pressure, brake_pedal = p.hold_brake_bar, p.hold_brake_pct
        elif -traction > p.engine_brake_decel:
            friction = -traction - p.engine_brake_decel
            brake_pressure = friction * p.brake_bar_per_mps2
            brake_pedal = friction * p.brake_pedal_pct_per_mps2

        gear = self._gear(speed_kmh) if moving else 1
        engine_rpm = max(
            p.idle_rpm,
            v * self._wheel_rpm_per_mps * p.gear_ratios[gear - 1] * p.final_drive,
        )

        angle = state.position_m / radius  # rad, counter-clockwise from east
        east, north = radius * math.cos(angle), radius * math.sin(angle)
        travelled_km = state.travelled_m / 1000.0
        hours = state.time_s / 3600.0
        fuel_used_l = p.idle_litres_per_hour * hours + p.litres_per_100km * travelled_km / 100.0
        warm = 1.0 - math.exp(-state.time_s / p.coolant_warmup_s)

        return {
            "VehicleSpeed": speed_kmh,
            "LongitudinalAccel": accel,
            "LateralAccel": v * v / radius,
            "YawRate": math.degrees(v / radius),
            "SteeringAngle": self._steering_deg,
            "ABSActive": int(moving and accel < -p.abs_decel),
            "BrakePedalPosition": brake_pedal,
            "BrakePressure": brake_pressure,
            "EngineSpeed": engine_rpm,
            "AcceleratorPedal": accelerator,
            "GearSelected": "D",
            "GearCurrent": gear,
            "LeadValid": int(state.gap <= self.RADAR_VALID_RANGE_M),
            "LeadRange": state.gap,
            "LeadRangeRate": state.lead_speed - v,
            # Tangent-chord angle: a point an arc s ahead on the circle is s / (2R) off the heading.
            "LeadAzimuth": math.degrees(state.gap / (2.0 * radius)),
            "LeadWidth": p.width_m,
            "LaneLateralOffset": self._lane_offset_at(state.time_s),
            "LaneWidth": p.lane_width_m,
            "TurnSignalLeft": 0,
            "TurnSignalRight": 0,
            "Odometer": self.start_odometer_km + travelled_km,
            "HazardLights": 0,
            "BatteryVoltage": p.battery_charging_v + p.battery_noise_v * float(self._rng.standard_normal()),
            "CoolantTemp": site.ambient_c + (p.coolant_target_c - site.ambient_c) * warm,
            "FuelLevel": self.start_fuel_pct - 100.0 * fuel_used_l / p.tank_litres,
            "AmbientTemp": site.ambient_c,
            "Latitude": site.centre_lat + north * self._lat_deg_per_m,
            "Longitude": site.centre_lon + east * self._lon_deg_per_m,
            # Counter-clockwise travel: the velocity points along (-sin, cos) in (east, north).
            "Heading": math.degrees(-angle) % 360.0,
            "Altitude": site.altitude_m,
        }
