"""roadwave: connected-car telematics and V2X edge stack."""

__version__ = "0.1.0"
