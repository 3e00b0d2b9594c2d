"""MQTT topics of the V2X cloud relay, partitioned by quadkey tiles (see docs/v2x.md).

Part of the wire contract: vehicles (``edge.v2x.transport``) and the relay
(``roadwave v2x-relay``) both build and parse their topics here.

Topics::

    roadwave/v2x/v1/up/{sender}/{kind}/{quadkey}     a vehicle's packet, for the relay to check
    roadwave/v2x/v1/tile/{kind}/{d1}/{d2}/.../{dN}   checked packets, one level per quadkey digit

``kind`` is ``cam`` or ``denm``; ``quadkey`` is the tile of the packet's position (a CAM's
sender, a DENM's event) at :data:`PUBLISH_ZOOM`; ``sender`` is the vehicle's MQTT client
id, so a broker ACL can let each vehicle write only its own upload topics. A vehicle
subscribes to the tiles around it at the coarser :data:`SUBSCRIBE_ZOOM`, one filter per
tile, ``roadwave/v2x/v1/tile/+/{d1}/.../{d14}/#``: ``+`` takes both kinds, ``#`` every
smaller tile inside. With one digit per level a subscriber may pick any zoom level
without the publishers knowing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from roadwave.contract import TOPIC_ROOT, TopicError, vehicle_topic

V2X_TOPIC_VERSION: Final = "v1"
V2X_ROOT: Final = f"{TOPIC_ROOT}/v2x/{V2X_TOPIC_VERSION}"
UPLOAD: Final = "up"
TILE: Final = "tile"
CAM: Final = "cam"
DENM: Final = "denm"
KINDS: Final = (CAM, DENM)
#: Zoom of the tile in a published topic: about 150 m at the equator, 100 m at 48° N.
PUBLISH_ZOOM: Final = 18
#: Zoom of the tiles a vehicle subscribes to: about 2.4 km at the equator, 1.6 km at 48° N.
SUBSCRIBE_ZOOM: Final = 14
#: Tiles on each side of the vehicle's own: 1 gives the 3 x 3 block around it.
SUBSCRIBE_RADIUS: Final = 1
#: What the relay subscribes to: every vehicle's uploads.
UPLOAD_SUBSCRIPTION: Final = f"{V2X_ROOT}/{UPLOAD}/+/+/+"
#: The kind of a vehicle topic (``roadwave/v1/{fleet}/{vin}/v2x-warning``) that carries its warnings.
WARNING: Final = "v2x-warning"
SENDER_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Largest packet the relay forwards and a vehicle takes from a tile topic: GeoNetworking
#: headers, a DENM with long traces and a TS 103 097 signature with its certificate fit.
MAX_PACKET_BYTES: Final = 4096
#: Deepest quadkey (one digit per zoom level; zoom 23 is about 5 m at the equator).
MAX_ZOOM: Final = 23
QUADKEY_PATTERN: Final = re.compile(rf"[0-3]{{1,{MAX_ZOOM}}}")


@dataclass(frozen=True, slots=True)
class UploadAddress:
    """The parts of an upload topic."""

    sender: str
    kind: str
    quadkey: str


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise TopicError(f"V2X message kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def _check_quadkey(quadkey: str) -> str:
    if not isinstance(quadkey, str) or not QUADKEY_PATTERN.fullmatch(quadkey):
        raise TopicError(f"quadkey {quadkey!r} is not 1 .. {MAX_ZOOM} digits 0-3")
    return quadkey


def check_sender(sender: str) -> str:
    """Return ``sender`` if it can stand in an upload topic, else raise ``TopicError``."""
    if not isinstance(sender, str) or not SENDER_PATTERN.fullmatch(sender):
        raise TopicError(f"invalid V2X sender {sender!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    return sender


def tile_topic(kind: str, quadkey: str) -> str:
    """The topic a checked packet of ``kind`` at the tile ``quadkey`` is published to."""
    return "/".join((V2X_ROOT, TILE, _check_kind(kind), *_check_quadkey(quadkey)))


def tile_filter(quadkey: str) -> str:
    """The subscription for every packet inside the tile ``quadkey`` (any kind, any smaller tile)."""
    return "/".join((V2X_ROOT, TILE, "+", *_check_quadkey(quadkey), "#"))


def upload_topic(sender: str, kind: str, quadkey: str) -> str:
    """The topic a vehicle publishes a packet to for the relay."""
    return "/".join((V2X_ROOT, UPLOAD, check_sender(sender), _check_kind(kind), _check_quadkey(quadkey)))


def parse_upload_topic(topic: str) -> UploadAddress:
    """Split an upload topic; raises ``TopicError`` for anything else."""
    prefix = f"{V2X_ROOT}/{UPLOAD}/"
    parts = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
    if len(parts) != 3:
        raise TopicError(f"topic {topic!r} is not {prefix}SENDER/KIND/QUADKEY")
    sender, kind, quadkey = parts
    try:
        return UploadAddress(check_sender(sender), _check_kind(kind), _check_quadkey(quadkey))
    except TopicError as exc:
        raise TopicError(f"topic {topic!r}: {exc}") from exc


def warning_topic(fleet: str, vin: str) -> str:
    """The vehicle's own topic for the V2X warnings it raises."""
    return vehicle_topic(fleet, vin, WARNING)
