"""roadwave: connected-car telematics and V2X edge stack."""

from pathlib import Path

__version__ = "0.1.0"

#: The reference vehicle's DBC, with its VSS overlay beside it (``.vss.yaml``).
REFERENCE_DBC = Path(__file__).resolve().parents[1] / "dbc" / "roadwave_car.dbc"
