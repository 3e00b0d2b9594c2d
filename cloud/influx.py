"""InfluxDB access: line protocol, writers for the v1 and v2 APIs, InfluxQL queries.

* ``api = "v1"``: ``POST /write`` and ``/query`` (InfluxDB 1.x, what Debian ships;
  also 2.x and 3.x through their v1 compatibility endpoints).
* ``api = "v2"``: writes through ``influxdb-client`` (``/api/v2/write``, InfluxDB
  1.8+, 2.x, 3.x) with a token; queries still use InfluxQL on ``/query``, the one
  language all three major versions answer (2.x needs a DBRP mapping for it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3

Scalar = bool | int | float | str


class InfluxError(RuntimeError):
    """InfluxDB could not be reached or refused a request."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        #: True for outages (connection refused, 5xx, timeouts); False when the
        #: data itself was refused (4xx), which retrying cannot fix.
        self.retryable = retryable


# --- line protocol ----------------------------------------------------------------

_MEASUREMENT_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_STRING_ESCAPES = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": r"\n"})


def format_field(value: Scalar) -> str:
    """A field value in line protocol: ``true``, ``12i``, ``1.5``, ``"text"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"InfluxDB cannot store {value!r}")
        return repr(value)
    return f'"{value.translate(_STRING_ESCAPES)}"'


def escape_key(key: str) -> str:
    """A tag key, tag value or field key escaped for line protocol."""
    return key.translate(_KEY_ESCAPES)


def format_line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, Scalar], t_ns: int) -> str:
    """One point in line protocol with a nanosecond timestamp; tags sorted by key."""
    tag_text = "".join(
        f",{k.translate(_KEY_ESCAPES)}={v.translate(_KEY_ESCAPES)}" for k, v in sorted(tags.items()) if v
    )
    field_text = ",".join(f"{k.translate(_KEY_ESCAPES)}={format_field(v)}" for k, v in fields.items())
    return f"{measurement.translate(_MEASUREMENT_ESCAPES)}{tag_text} {field_text} {t_ns}"


# --- clients --------------------------------------------------------------------


@dataclass(frozen=True)
class InfluxSettings:
    """How to reach InfluxDB. ``database`` is the v1 database or v2/3 bucket name."""

    url: str = "http://127.0.0.1:8086"
    api: str = "v1"
    database: str = "roadwave"
    username: str | None = None
    password: str | None = None
    token: str | None = None
    org: str | None = None
    timeout_s: float = 10.0


class InfluxClient:
    """Writes line protocol and runs InfluxQL queries against one database."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=settings.timeout_s), retries=False, maxsize=4
        )
        self._headers: dict[str, str] = {}
        if settings.token:
            self._headers["Authorization"] = f"Token {settings.token}"
        elif settings.username:
            self._headers.update(
                urllib3.make_headers(basic_auth=f"{settings.username}:{settings.password or ''}")
            )
        self._v2_write = None
        if settings.api == "v2":
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            self._v2_client = InfluxDBClient(
                url=settings.url,
                token=settings.token or "",
                org=settings.org or "-",
                timeout=int(settings.timeout_s * 1000),
            )
            self._v2_write = self._v2_client.write_api(write_options=SYNCHRONOUS)

    def _request(
        self, path: str, params: dict[str, str], body: bytes | None = None
    ) -> urllib3.BaseHTTPResponse:
        """POST to ``path`` with query ``params``; raise :class:`InfluxError` on failure."""
        url = f"{self.settings.url.rstrip('/')}{path}?{urlencode(params)}"
        try:
            response = self._http.request("POST", url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise InfluxError(f"InfluxDB at {self.settings.url} unreachable: {exc}", retryable=True) from exc
        if response.status >= 300:
            text = response.data.decode(errors="replace").strip()[:500]
            raise InfluxError(
                f"InfluxDB {path} answered {response.status}: {text}",
                retryable=response.status >= 500,
            )
        return response

    def write_lines(self, lines: Iterable[str]) -> None:
        """Write points given as line protocol with nanosecond timestamps."""
        body = "\n".join(lines)
        if not body:
            return
        if self._v2_write is None:
            self._request("/write", {"db": self.settings.database, "precision": "ns"}, body.encode())
            return
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._v2_write.write(
                bucket=self.settings.database,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # typed as str upstream
            )
        except ApiException as exc:
            raise InfluxError(
                f"InfluxDB v2 write answered {exc.status}: {exc.body}",
                retryable=exc.status is None or exc.status >= 500,
            ) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise InfluxError(f"InfluxDB at {self.settings.url} unreachable: {exc}", retryable=True) from exc

    def query(self, influxql: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the rows as dicts (time in ns since the epoch).

        Rows of grouped series carry their tags as extra keys.

        Raises:
            InfluxError: the server is unreachable or the statement failed.
        """
        params = {"db": self.settings.database, "q": influxql, "epoch": "ns"}
        document = json.loads(self._request("/query", params).data or b"{}")
        rows: list[dict[str, Any]] = []
        for result in document.get("results", []):
            if "error" in result:
                raise InfluxError(f"InfluxQL {influxql!r} failed: {result['error']}", retryable=False)
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                columns = series["columns"]
                rows.extend(
                    {**tags, **dict(zip(columns, values, strict=True))} for values in series.get("values", [])
                )
        return rows

    def create_database(self) -> None:
        """Create the database (InfluxDB 1.x; a no-op if it exists)."""
        name = self.settings.database.replace('"', r"\"")
        self.query(f'CREATE DATABASE "{name}"')

    def close(self) -> None:
        """Release connections."""
        self._http.clear()
        if self._v2_write is not None:
            self._v2_client.close()
