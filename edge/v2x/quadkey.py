"""Positions on the map: Bing-style quadkey tiles and short distances between positions.

Tiles follow the Bing Maps tile system (Web Mercator): at zoom level ``z`` the world
between latitudes ±85.05112878° is a grid of ``2**z`` by ``2**z`` tiles, ``x`` counting
east from 180° W and ``y`` south from the top edge. A quadkey names a tile with one digit
per level, so the quadkey of a tile starts with the quadkeys of the larger tiles that
contain it: digit ``n`` is ``bit(x) + 2 * bit(y)`` of bit ``z - n`` of the tile numbers.

Distances use a spherical Earth of the IUGG mean radius, good to about 0.5 % over the
few kilometres V2X cares about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.v2x.errors import V2xError
from roadwave.contract.v2x import MAX_ZOOM

MAX_LATITUDE_DEG = 85.05112878
"""Web Mercator stops here: tiles do not cover positions nearer the poles."""

EARTH_RADIUS_M = 6_371_008.8
"""IUGG mean Earth radius."""


class QuadkeyError(V2xError, ValueError):
    """A position, zoom level or quadkey the tile system cannot express; the message says which."""


def _check_zoom(zoom: int) -> int:
    if isinstance(zoom, bool) or not isinstance(zoom, int) or not 1 <= zoom <= MAX_ZOOM:
        raise QuadkeyError(f"zoom level {zoom!r} is not an integer 1 .. {MAX_ZOOM}")
    return zoom


def _check_position(latitude_deg: float, longitude_deg: float) -> None:
    for name, value, limit in (
        ("latitude", latitude_deg, MAX_LATITUDE_DEG),
        ("longitude", longitude_deg, 180.0),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise QuadkeyError(f"{name} {value!r} is not a finite number of degrees")
        if abs(value) > limit:
            raise QuadkeyError(f"{name} {value!r} deg is outside ±{limit:g} deg, which quadkey tiles cover")


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: column ``x``, row ``y`` at ``zoom``."""

    x: int
    y: int
    zoom: int

    @classmethod
    def at(cls, latitude_deg: float, longitude_deg: float, zoom: int) -> Tile:
        """The tile holding a WGS84 position (180° E is the same meridian as 180° W)."""
        _check_zoom(zoom)
        _check_position(latitude_deg, longitude_deg)
        size = 1 << zoom
        sin_latitude = math.sin(math.radians(latitude_deg))
        east = (longitude_deg + 180.0) / 360.0
        south = 0.5 - math.log((1 + sin_latitude) / (1 - sin_latitude)) / (4 * math.pi)
        # At the Mercator limits ``south`` is 0 or 1 up to rounding: those points belong to the edge rows.
        row = min(max(math.floor(south * size), 0), size - 1)
        return cls(math.floor(east * size) % size, row, zoom)

    @classmethod
    def from_quadkey(cls, quadkey: str) -> Tile:
        """The tile a quadkey names."""
        if not isinstance(quadkey, str) or not 1 <= len(quadkey) <= MAX_ZOOM or quadkey.strip("0123") != "":
            raise QuadkeyError(f"quadkey {quadkey!r} is not 1 .. {MAX_ZOOM} digits 0-3")
        x = y = 0
        for digit in quadkey:
            value = int(digit)
            x = x << 1 | value & 1
            y = y << 1 | value >> 1
        return cls(x, y, len(quadkey))

    @property
    def quadkey(self) -> str:
        bits = range(self.zoom - 1, -1, -1)
        return "".join(str((self.x >> bit & 1) + 2 * (self.y >> bit & 1)) for bit in bits)

    def neighbours(self, radius: int = 1) -> list[Tile]:
        """The block of ``2 * radius + 1`` tiles square centred on this one (itself included).

        Columns wrap around the antimeridian; rows past the top or bottom edge do not exist
        and are left out, as are repeats on the smallest grids.
        """
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
            raise QuadkeyError(f"radius {radius!r} is not an integer >= 0")
        size = 1 << self.zoom
        tiles: dict[Tile, None] = {}
        for row in range(self.y - radius, self.y + radius + 1):
            if 0 <= row < size:
                for column in range(self.x - radius, self.x + radius + 1):
                    tiles[Tile(column % size, row, self.zoom)] = None
        return list(tiles)


def quadkey(latitude_deg: float, longitude_deg: float, zoom: int) -> str:
    """The quadkey of the tile holding a position at ``zoom``."""
    return Tile.at(latitude_deg, longitude_deg, zoom).quadkey


def distance_m(
    latitude1_deg: float, longitude1_deg: float, latitude2_deg: float, longitude2_deg: float
) -> float:
    """Great-circle distance between two positions (haversine)."""
    phi1, phi2 = math.radians(latitude1_deg), math.radians(latitude2_deg)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(longitude2_deg - longitude1_deg) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(
    latitude1_deg: float, longitude1_deg: float, latitude2_deg: float, longitude2_deg: float
) -> float:
    """Initial bearing from the first position to the second, clockwise from north, 0 .. 360."""
    phi1, phi2 = math.radians(latitude1_deg), math.radians(latitude2_deg)
    dlambda = math.radians(longitude2_deg - longitude1_deg)
    east = math.sin(dlambda) * math.cos(phi2)
    north = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlambda)
    return math.degrees(math.atan2(east, north)) % 360.0


def local_offset_m(
    origin_latitude_deg: float, origin_longitude_deg: float, latitude_deg: float, longitude_deg: float
) -> tuple[float, float]:
    """East and north offset of a position from an origin a few kilometres away at most."""
    dlambda = (longitude_deg - origin_longitude_deg + 180.0) % 360.0 - 180.0
    east = math.radians(dlambda) * EARTH_RADIUS_M * math.cos(math.radians(origin_latitude_deg))
    return east, math.radians(latitude_deg - origin_latitude_deg) * EARTH_RADIUS_M


def angle_between_deg(first_deg: float, second_deg: float) -> float:
    """The smaller angle between two directions, 0 .. 180."""
    difference = abs(first_deg - second_deg) % 360.0
    return min(difference, 360.0 - difference)
