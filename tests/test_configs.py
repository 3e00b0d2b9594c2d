"""Edge and ingest configuration files: valid ones load, invalid ones say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.ingest import IngestConfig
from edge.config import EdgeConfig
from roadwave.cli import main
from roadwave.configfile import ConfigError

REPO = Path(__file__).resolve().parents[1]
DBC = REPO / "dbc" / "roadwave_car.dbc"

EDGE = f"""
[vehicle]
vin = "RWDEM000000000001"
fleet = "demo"

[mqtt]
host = "127.0.0.1"
port = 1884

[batch]
max_records = 200
max_age_s = 0.5

[[bus]]
name = "can0"
dbc = ["{DBC}"]
interface = "virtual"
channel = "vehicle-1"
options = {{ preserve_timestamps = true }}
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_edge_config_loads_with_defaults_filled_in(tmp_path) -> None:
    config = EdgeConfig.load(write(tmp_path, EDGE))
    assert config.vin == "RWDEM000000000001"
    assert config.client_id == "roadwave-edge-RWDEM000000000001"
    assert config.mqtt.port == 1884 and config.mqtt.keepalive_s == 30
    assert config.batch.max_records == 200 and config.batch.max_age_s == 0.5
    assert config.uplink.spool == tmp_path / "spool" / "RWDEM000000000001.sqlite"
    assert (config.uplink.compression, config.uplink.max_in_flight) == ("zlib", 20)
    (bus,) = config.buses
    assert bus.dbc == (DBC,) and bus.options == {"preserve_timestamps": True} and bus.log is None


def test_relative_paths_resolve_against_the_config_folder(tmp_path) -> None:
    (tmp_path / "car.dbc").write_text(DBC.read_text())
    (tmp_path / "drive.log").write_text("")
    text = EDGE.replace(f'["{DBC}"]', '["car.dbc"]').replace(
        'interface = "virtual"\nchannel = "vehicle-1"\n', 'log = "drive.log"\n'
    )
    config = EdgeConfig.load(write(tmp_path, text))
    assert config.buses[0].dbc == (tmp_path / "car.dbc",)
    assert config.buses[0].log == tmp_path / "drive.log"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('vin = "RWDEM000000000001"', 'vin = "RWDEMO0000000001"', r"\[vehicle\] invalid VIN"),
        ('fleet = "demo"', "", r"\[vehicle\]: fleet is required"),
        ("port = 1884", 'port = "1884"', "port must be int"),
        ("port = 1884", "port = 70000", "port must be <= 65535"),
        ("max_records = 200", "max_records = 0", "max_records must be >= 1"),
        ("max_age_s = 0.5", "max_age = 0.5", r"unknown key\(s\) max_age"),
        ('channel = "vehicle-1"', "", "needs both interface and channel"),
        ('channel = "vehicle-1"', 'channel = "vehicle-1"\nlog = "x.log"', "either interface and channel"),
        ('name = "can0"', 'name = "can 0"', "bus name 'can 0'"),
        (f'["{DBC}"]', '["absent.dbc"]', "file not found: .*absent.dbc"),
        (f'["{DBC}"]', "[]", "non-empty list of paths"),
        ("[[bus]]", "[bus]", r"\[\[bus\]\] must be|bus must be list"),
        ("[mqtt]", "[mqtt]\ntls = true", r"\[mqtt\]: unknown key\(s\) tls"),
        ("[mqtt]", "[mqtt]\nreconnect_min_s = 5.0\nreconnect_max_s = 2.0", "reconnect_max_s .2. is below"),
        ("[batch]", "[uplink]\ncompression = 'lz4'\n\n[batch]", "compression must be one of zlib, none"),
        ("[batch]", "[uplink]\nspool_max_mb = 1\n\n[batch]", "spool_max_mb must be >= 8"),
        ("[batch]", "[uplink]\nmax_in_flight = 0\n\n[batch]", "max_in_flight must be >= 1"),
    ],
)
def test_invalid_edge_configs_name_file_key_and_problem(tmp_path, old: str, new: str, message: str) -> None:
    assert old in EDGE
    path = write(tmp_path, EDGE.replace(old, new, 1))
    with pytest.raises(ConfigError, match=message) as info:
        EdgeConfig.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[events]\nvehicle_class = 'tram'", "vehicle_class must be one of car, van, truck"),
        ("[events]\nenabled = false\npost_s = 99", "post_s must be within"),
        ("[v2x]\nstation_id = 1", r"\[v2x\]: no transport"),
        ("[v2x]\n[v2x.udp]\ngroup = '10.0.0.1'", r"\[udp\]: multicast group '10.0.0.1'"),
        ("[v2x]\nstation_type = 'tank'\n[v2x.udp]", "station_type must be one of"),
        ("[v2x]\nstation_id = -1\n[v2x.udp]", "station_id must be >= 0"),
        ("[v2x]\n[v2x.relay]\nsubscribe_zoom = 19", "subscribe_zoom 19 must not exceed"),
        ("[v2x]\npcap = 'no/such/x.pcap'\n[v2x.udp]", "folder .*no/such does not exist"),
        (
            "[v2x]\n[v2x.udp]\n[v2x.security]\nkey = 'k.pem'\nticket = 't.oer'\ntrusted = ['r.oer']",
            r"\[security\]: key .*k.pem: cannot read",
        ),
    ],
)
def test_invalid_events_and_v2x_sections(tmp_path, section: str, message: str) -> None:
    path = write(tmp_path, f"{EDGE}\n{section}\n")
    with pytest.raises(ConfigError, match=message) as info:
        EdgeConfig.load(path)
    assert str(path) in str(info.value)


def test_edge_config_needs_a_bus(tmp_path) -> None:
    text = EDGE.split("[[bus]]")[0]
    with pytest.raises(ConfigError, match=r"no \[\[bus\]\] configured"):
        EdgeConfig.load(write(tmp_path, text))


def test_duplicate_bus_names_are_refused(tmp_path) -> None:
    bus = EDGE[EDGE.index("[[bus]]") :]
    with pytest.raises(ConfigError, match="bus names must be unique"):
        EdgeConfig.load(write(tmp_path, EDGE + bus))


def test_unreadable_configs(tmp_path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        EdgeConfig.load(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        EdgeConfig.load(write(tmp_path, "[vehicle\n"))


INGEST = """
[mqtt]
port = 1884

[influx]
api = "v1"
url = "http://127.0.0.1:8087"
database = "fleet"

[ingest]
batch_lines = 2000
dead_letter_dir = "rejected"
"""


def test_ingest_config_loads(tmp_path) -> None:
    config = IngestConfig.load(write(tmp_path, INGEST))
    assert config.mqtt.port == 1884
    assert (config.influx.url, config.influx.database, config.influx.api) == (
        "http://127.0.0.1:8087",
        "fleet",
        "v1",
    )
    assert config.ingest.batch_lines == 2000
    assert config.ingest.dead_letter_dir == tmp_path / "rejected"
    assert config.client_id == "roadwave-ingest"
    assert config.subscriptions == [
        "$share/roadwave-ingest/roadwave/v1/+/+/telemetry",
        "$share/roadwave-ingest/roadwave/v1/+/+/events",
        "$share/roadwave-ingest/roadwave/v1/+/+/diagnostics",
    ]
    partitioned = IngestConfig.load(write(tmp_path, INGEST + 'partition = "1/3"\n'))
    assert partitioned.ingest.partition == (1, 3)
    assert partitioned.subscriptions == [
        "roadwave/v1/+/+/telemetry",
        "roadwave/v1/+/+/events",
        "roadwave/v1/+/+/diagnostics",
    ]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('api = "v1"', 'api = "v4"', "api must be one of v1, v2"),
        ('api = "v1"', 'api = "v2"', "needs a token"),
        ('url = "http://127.0.0.1:8087"', 'url = "127.0.0.1:8087"', "must start with http"),
        ("batch_lines = 2000", "batch_lines = 0", "batch_lines must be >= 1"),
        ("[influx]", "[influx]\nbucket = 'x'", r"unknown key\(s\) bucket"),
        ("batch_lines = 2000", 'partition = "2/2"', 'partition must look like "0/2"'),
        ("batch_lines = 2000", 'share_group = "a/b"', "share_group 'a/b'"),
        ("batch_lines = 2000", "buffer_max_mb = 0.5", "buffer_max_mb must be >= 1"),
        ("batch_lines = 2000", "buffer_max_mb = 1e308", "buffer_max_mb must be <= 1048576"),
    ],
)
def test_invalid_ingest_configs(tmp_path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        IngestConfig.load(write(tmp_path, INGEST.replace(old, new, 1)))


def test_events_and_v2x_sections(tmp_path) -> None:
    assert EdgeConfig.load(write(tmp_path, EDGE)).events is not None  # on by default, no V2X
    assert EdgeConfig.load(write(tmp_path, EDGE)).v2x is None
    off = EdgeConfig.load(write(tmp_path, EDGE + "\n[events]\nenabled = false\n"))
    assert off.events is None
    root, station = tmp_path / "root", tmp_path / "station"
    for args in (("root", "--dir", str(root)), ("ticket", "--root", str(root), "--out", str(station))):
        assert main(["v2x-pki", *args]) == 0
    text = EDGE + (
        '\n[events]\nvehicle_class = "truck"\n'
        '\n[v2x]\nstation_id = 7\nstation_type = "heavy_truck"\nlength_m = 16.5\npcap = "v2x.pcap"\n'
        "[v2x.udp]\nport = 47002\n[v2x.relay]\nvia_relay = false\n"
        '[v2x.security]\nkey = "station/station.key.pem"\nticket = "station/station.oer"\n'
        'trusted = ["root/root.oer"]\n'
    )
    config = EdgeConfig.load(write(tmp_path, text))
    assert config.events is not None and config.events.vehicle_class == "truck"
    v2x = config.v2x
    assert v2x is not None and v2x.station_id == 7 and v2x.vehicle.station_type == 8
    assert v2x.vehicle.length_m == 16.5 and v2x.pcap == tmp_path / "v2x.pcap"
    assert v2x.udp is not None and v2x.udp.port == 47002 and v2x.udp.group == "239.255.0.47"
    assert v2x.relay is not None and not v2x.relay.via_relay
    assert v2x.security is not None and v2x.security.trusted == (root / "root.oer",)
    wrong = text.replace('ticket = "station/station.oer"', 'ticket = "root/root.oer"')
    with pytest.raises(ConfigError, match="ticket .*root.oer: ticket is self-signed"):
        EdgeConfig.load(write(tmp_path, wrong))
