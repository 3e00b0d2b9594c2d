"""ADAS and driving events detected on the edge from decoded VSS records (docs/events.md)."""

from edge.events.config import DETECTOR_KINDS, EventsConfig, parse_events_config
from edge.events.engine import EventEngine
from roadwave.contract.events import ENDED, EVENT_SCHEMA_VERSION, ONGOING, Event, EventFormatError

__all__ = [
    "DETECTOR_KINDS",
    "ENDED",
    "EVENT_SCHEMA_VERSION",
    "ONGOING",
    "Event",
    "EventEngine",
    "EventFormatError",
    "EventsConfig",
    "parse_events_config",
]
