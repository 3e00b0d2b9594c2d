"""Fleet simulator: IDM ring-road traffic rendered as per-vehicle CAN frame streams."""

from roadwave.sim.fleet import (
    DEFAULT_DBC,
    FleetSimulator,
    SimConfig,
    SimFrame,
    ground_truth_jsonl,
    make_vin,
    stream_to_buses,
    write_candump_logs,
)
from roadwave.sim.traffic import IDMParameters, RingParameters, RingTraffic
from roadwave.sim.vehicle import Kinematics, RingSite, VehicleModel, VehicleParameters

__all__ = [
    "DEFAULT_DBC",
    "FleetSimulator",
    "IDMParameters",
    "Kinematics",
    "RingParameters",
    "RingSite",
    "RingTraffic",
    "SimConfig",
    "SimFrame",
    "VehicleModel",
    "VehicleParameters",
    "ground_truth_jsonl",
    "make_vin",
    "stream_to_buses",
    "write_candump_logs",
]
