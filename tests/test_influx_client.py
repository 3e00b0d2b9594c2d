"""Line protocol, and the InfluxDB client's requests and error classification."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from cloud.influx import InfluxClient, InfluxError, InfluxSettings, format_field, format_line
from roadwave.services import free_port


def test_line_protocol_escapes_and_types() -> None:
    line = format_line(
        "tele metry",
        {"vin": "A,B C=D", "empty": "", "bus": "can0"},
        {"Vehicle.Speed": 1.5, "gear": 3, "on": True, "note": 'say "hi"\\'},
        1_763_700_000_000_000_000,
    )
    assert line == (
        r"tele\ metry,bus=can0,vin=A\,B\ C\=D "
        r'Vehicle.Speed=1.5,gear=3i,on=true,note="say \"hi\"\\" 1763700000000000000'
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_fields_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="cannot store"):
        format_field(value)


class _Capture(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict, dict, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = urlsplit(self.path)
        headers = {key.lower(): value for key, value in self.headers.items()}
        _Capture.requests.append((parts.path, parse_qs(parts.query), headers, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def capture_server() -> Iterator[str]:
    """A local HTTP endpoint that records requests: checks what the v2 writer sends."""
    _Capture.requests = []
    server = HTTPServer(("127.0.0.1", free_port()), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_v2_writes_go_to_the_v2_api_with_token_org_bucket_and_ns_precision(capture_server) -> None:
    settings = InfluxSettings(url=capture_server, api="v2", database="fleet", token="s3cret", org="acme")
    client = InfluxClient(settings)
    lines = ["telemetry,vin=X a=1i 1", "telemetry,vin=Y a=2i 2"]
    client.write_lines(lines)
    client.close()
    ((path, query, headers, body),) = _Capture.requests
    assert path == "/api/v2/write"
    assert query["org"] == ["acme"] and query["bucket"] == ["fleet"] and query["precision"] == ["ns"]
    assert headers["authorization"] == "Token s3cret"
    assert body.decode() == "\n".join(lines)


def test_v1_writes_carry_database_precision_and_credentials(capture_server) -> None:
    settings = InfluxSettings(url=capture_server, database="fleet", username="rw", password="pw")
    InfluxClient(settings).write_lines(["m a=1i 1"])
    ((path, query, headers, body),) = _Capture.requests
    assert path == "/write" and body == b"m a=1i 1"
    assert query == {"db": ["fleet"], "precision": ["ns"]}  # credentials never in the URL
    assert headers["authorization"] == "Basic " + base64.b64encode(b"rw:pw").decode()


@pytest.mark.integration
def test_refused_data_is_not_retryable_and_outages_are(influxdb, influx_database) -> None:
    client = InfluxClient(InfluxSettings(url=influxdb.url, database=influx_database))
    with pytest.raises(InfluxError, match="answered 400") as refused:
        client.write_lines(["telemetry this is not line protocol"])
    assert not refused.value.retryable
    down = InfluxClient(InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="x", timeout_s=2))
    with pytest.raises(InfluxError, match="unreachable") as outage:
        down.write_lines(["m a=1i 1"])
    assert outage.value.retryable
    with pytest.raises(InfluxError, match="error parsing query"):
        client.query("SELECT nonsense FROM")


def test_telemetry_lines_equal_format_line_point_by_point() -> None:
    from cloud.schema import FLAGGED_MEASUREMENT, TELEMETRY_MEASUREMENT, telemetry_lines
    from roadwave.contract import RANGE, STALE, Record, TelemetryBatch

    t0 = 1_763_700_000_000_000_000
    speed, gear, hazard = (
        "Vehicle.Speed",
        "Vehicle.Powertrain.Transmission.CurrentGear",
        ("Vehicle.Body.Lights.Hazard.IsSignaling"),
    )
    records = [
        Record(t0, "can0", {speed: 12.0, gear: 3, hazard: True}),
        Record(t0 + 1, "body.1", {speed: 99.5, gear: -1, hazard: False}, {speed: RANGE, hazard: STALE}),
        Record(t0 + 2, "can0", {speed: 1e-7}, {speed: STALE}),
    ]
    batch = TelemetryBatch("RWDEM000000000001", "fleet-a", 0, records)
    tags = {"fleet": "fleet-a", "vin": "RWDEM000000000001"}
    expected = {
        format_line(TELEMETRY_MEASUREMENT, {**tags, "bus": "can0"}, records[0].signals, t0),
        format_line(TELEMETRY_MEASUREMENT, {**tags, "bus": "body.1"}, {gear: -1}, t0 + 1),
        format_line(FLAGGED_MEASUREMENT, {**tags, "bus": "body.1", "quality": RANGE}, {speed: 99.5}, t0 + 1),
        format_line(
            FLAGGED_MEASUREMENT, {**tags, "bus": "body.1", "quality": STALE}, {hazard: False}, t0 + 1
        ),
        format_line(FLAGGED_MEASUREMENT, {**tags, "bus": "can0", "quality": STALE}, {speed: 1e-7}, t0 + 2),
    }
    lines = telemetry_lines(batch)
    assert len(lines) == 5 and set(lines) == expected
