"""The spool encrypted at rest: round trips, tamper detection, key handling, and the agent with a key."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from samples import Samples, replayed_samples
from waiting import wait_for

from edge.agent import EdgeAgent
from edge.config import BusSettings, EdgeConfig, UplinkSettings
from roadwave import REFERENCE_DBC
from roadwave.configfile import ConfigError
from roadwave.contract import TELEMETRY_SUBSCRIPTION, decode_telemetry
from roadwave.mqtt import MqttSettings
from roadwave.services import Mosquitto
from roadwave.sim.fleet import FleetSimulator, SimConfig, write_candump_logs
from roadwave.spool import KEY_BYTES, DiskQueue, SpoolKeyError, load_spool_key

KEY = bytes(range(KEY_BYTES))
OTHER_KEY = bytes(range(1, KEY_BYTES + 1))
SECRET = b'{"records":[{"s":{"Vehicle.Speed":52.31}}],"marker":"plaintext-must-not-reach-the-disk"}'
MARKER = b"plaintext-must-not-reach-the-disk"


def spool(path: Path, key: bytes | None = KEY, **options) -> DiskQueue:
    options.setdefault("max_bytes", 1_000_000)
    return DiskQueue(path, key=key, **options)


def file_bytes(path: Path) -> bytes:
    """The spool's database file and its write-ahead log, as they are on disk now."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


# --------------------------------------------------------------------------- round trips


def test_payloads_round_trip_in_order_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    with spool(path) as queue:
        first = queue.put("t/a", b"one", progress={"replay:a": 3})
        queue.put_many([("t/b", b"two"), ("t/a", b"")])
        last = queue.put("t/a", lambda seq: f"seq={seq}".encode())
        assert [(m.topic, m.payload) for m in queue.head(10)] == [
            ("t/a", b"one"),
            ("t/b", b"two"),
            ("t/a", b""),
            ("t/a", f"seq={last}".encode()),
        ]
        assert queue.size_bytes == len(b"onetwo") + len(f"seq={last}") + 4 * 28  # nonce and tag per row
        queue.remove([first])
    with spool(path) as reopened:
        assert [m.payload for m in reopened.head(10)] == [b"two", b"", f"seq={last}".encode()]
        assert reopened.progress("replay:a") == 3 and reopened.stats.dropped_tampered == 0


@pytest.mark.parametrize("key", [KEY, None], ids=["encrypted", "clear"])
def test_the_plaintext_never_reaches_the_file_or_its_write_ahead_log(
    tmp_path: Path, key: bytes | None
) -> None:
    path = tmp_path / "q.sqlite"
    with spool(path, key) as queue:
        for index in range(20):
            queue.put("roadwave/v1/demo/RWDEM000000000001/telemetry", SECRET + bytes([index]))
        assert path.with_name(path.name + "-wal").stat().st_size > 0
        on_disk_while_open = file_bytes(path)
        queue.remove([message.id for message in queue.head(5)])
    on_disk_after_close = file_bytes(path)  # checkpointed into the database file
    found = [MARKER in on_disk_while_open, MARKER in on_disk_after_close]
    assert found == ([False, False] if key else [True, True])  # the check does see plaintext


# --------------------------------------------------------------------------- tampering


def test_tampered_rows_are_reported_dropped_and_counted_and_the_rest_is_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "q.sqlite"
    with spool(path) as queue:
        ids = [queue.put(f"t/{index % 2}", f"message {index}".encode()) for index in range(8)]
    db = sqlite3.connect(path)
    stored = dict(db.execute("SELECT id, payload FROM messages"))
    flipped = bytearray(stored[ids[1]])
    flipped[-1] ^= 0x01
    with db:
        db.execute("UPDATE messages SET payload = ? WHERE id = ?", (bytes(flipped), ids[1]))
        # ids[2] and ids[4] have the same topic: swapping their payloads must not go unnoticed
        db.execute("UPDATE messages SET payload = ? WHERE id = ?", (stored[ids[4]], ids[2]))
        db.execute("UPDATE messages SET payload = ? WHERE id = ?", (stored[ids[2]], ids[4]))
        db.execute("UPDATE messages SET topic = 't/0' WHERE id = ?", (ids[5],))  # moved to another topic
        db.execute("UPDATE messages SET payload = ? WHERE id = ?", (b"short", ids[6]))
        db.execute("UPDATE messages SET payload = 'retyped as text' WHERE id = ?", (ids[7],))
    db.close()
    with caplog.at_level(logging.ERROR, logger="roadwave.spool"), spool(path) as queue:
        delivered = queue.head(10)
        assert [(m.id, m.payload) for m in delivered] == [(ids[0], b"message 0"), (ids[3], b"message 3")]
        assert queue.stats.dropped_tampered == 6 and len(queue) == 2
        assert queue.size_bytes == len(stored[ids[0]]) + len(stored[ids[3]])
        assert queue.head(10) == delivered  # dropped once, not reported again
    assert len(caplog.records) == 1
    assert ", ".join(str(ids[i]) for i in (1, 2, 4, 5, 6, 7)) in caplog.records[0].getMessage()
    assert "fail authentication" in caplog.records[0].getMessage()


# --------------------------------------------------------------------------- keys that do not fit the spool


def test_a_wrong_key_is_refused_at_open_before_any_row_is_read(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    with spool(path) as queue:
        queue.put("t", b"kept")
    with pytest.raises(SpoolKeyError, match="was encrypted with another key"):
        spool(path, OTHER_KEY)
    with spool(path) as queue:  # untouched by the refused attempt
        assert [m.payload for m in queue.head(10)] == [b"kept"]


def test_an_encrypted_spool_needs_its_key(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    spool(path).close()  # even while empty
    with pytest.raises(SpoolKeyError, match="is encrypted: it cannot be opened without its key"):
        spool(path, key=None)


def test_a_spool_that_held_plaintext_is_refused_with_a_key_and_an_unused_one_is_encrypted(
    tmp_path: Path,
) -> None:
    used, unused = tmp_path / "used.sqlite", tmp_path / "unused.sqlite"
    with spool(used, key=None) as queue:
        queue.remove([queue.put("t", b"delivered long ago")])  # empty, but its pages may keep it
    with pytest.raises(SpoolKeyError, match="was used without encryption and may hold plaintext"):
        spool(used)
    spool(unused, key=None).close()
    with spool(unused) as queue:
        queue.put("t", b"now encrypted")
    with pytest.raises(SpoolKeyError, match="is encrypted"):
        spool(unused, key=None)


def test_a_key_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpoolKeyError, match="a spool key has 32 bytes, not 16"):
        spool(tmp_path / "q.sqlite", bytes(16))


# --------------------------------------------------------------------------- key files


def key_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "spool.key"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "content",
    [KEY.hex().encode(), KEY.hex().upper().encode() + b"\n", b"  " + KEY.hex().encode() + b"\r\n", KEY],
)
def test_a_key_file_holds_64_hex_digits_or_32_raw_bytes(tmp_path: Path, content: bytes) -> None:
    assert load_spool_key(key_file(tmp_path, content)) == KEY


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620])
def test_a_key_file_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    with pytest.raises(
        SpoolKeyError, match=f"accessible to group or others \\(mode {mode:03o}\\).*chmod 600"
    ):
        load_spool_key(key_file(tmp_path, KEY.hex().encode(), mode))


@pytest.mark.parametrize(
    "content", [b"", KEY[:31], KEY + b"\n", KEY.hex()[:-1].encode(), b"g" * 64, (KEY.hex() + "00").encode()]
)
def test_a_key_file_without_a_key_is_refused(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(
        SpoolKeyError, match=f"must hold 32 raw bytes or 64 hex digits; its {len(content)} bytes"
    ):
        load_spool_key(key_file(tmp_path, content))


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpoolKeyError, match=r"spool key file .*absent.key cannot be read: No such file"):
        load_spool_key(tmp_path / "absent.key")


EDGE = """
[vehicle]
vin = "RWDEM000000000001"
fleet = "demo"

[uplink]
spool_key_file = "keys/spool.key"

[[bus]]
name = "can0"
dbc = ["{dbc}"]
interface = "virtual"
channel = "vehicle-1"
"""


def test_the_edge_config_reads_the_key_file_and_never_shows_the_key(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    key_file(tmp_path / "keys", KEY.hex().encode())
    path = tmp_path / "edge.toml"
    path.write_text(EDGE.format(dbc=REFERENCE_DBC))
    config = EdgeConfig.load(path)
    assert config.uplink.spool_key == KEY
    assert KEY.hex() not in repr(config) and repr(KEY) not in repr(config)
    (tmp_path / "keys" / "spool.key").chmod(0o644)
    with pytest.raises(ConfigError, match=r"edge.toml \[uplink\]: spool_key_file: .*mode 644"):
        EdgeConfig.load(path)


# --------------------------------------------------------------------------- the agent with a key


@pytest.fixture
def drive(tmp_path: Path) -> tuple[str, Path, Samples]:
    sim = FleetSimulator(SimConfig(vehicles=1, duration_s=4.0, seed=5))
    ((vin, log),) = write_candump_logs(sim, tmp_path / "logs").items()
    return vin, log, replayed_samples(vin, log, REFERENCE_DBC)


@pytest.mark.integration
def test_an_offline_agent_spools_ciphertext_and_the_next_run_delivers_every_sample(
    start_server, drive: tuple[str, Path, Samples], tmp_path: Path
) -> None:
    vin, log, expected = drive
    broker = Mosquitto(tmp_path / "broker")
    start_server(broker)
    broker.stop()  # it has a port, and nobody listens there
    spool_path = tmp_path / "spool.sqlite"

    def config(key: bytes) -> EdgeConfig:
        return EdgeConfig(
            vin=vin,
            fleet="enc",
            buses=(BusSettings(name="can0", dbc=(REFERENCE_DBC,), log=log),),
            uplink=UplinkSettings(spool=spool_path, compression="none", spool_key=key),
            mqtt=MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5),
        )

    offline = EdgeAgent(config(KEY)).run(threading.Event(), drain_timeout_s=0.5)
    assert not offline.delivered and offline.uplink["spool_depth"] > 0
    assert b"Vehicle.Speed" not in file_bytes(spool_path)  # uncompressed JSON would show it
    with pytest.raises(SpoolKeyError, match="another key"):
        EdgeAgent(config(OTHER_KEY)).run(threading.Event())

    broker.start()
    received: Samples = {}
    tap = paho.Client(CallbackAPIVersion.VERSION2, client_id="enc-tap")

    def on_message(_client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        batch = decode_telemetry(message.topic, bytes(message.payload))
        for record in batch.records:
            for path, value in record.signals.items():
                received[(batch.vin, record.bus, record.t_ns, path)] = (value, record.quality.get(path))

    subscribed = threading.Event()
    tap.on_message = on_message
    tap.on_subscribe = lambda *_: subscribed.set()
    tap.connect(broker.host, broker.port)
    tap.subscribe(TELEMETRY_SUBSCRIPTION, 1)
    tap.loop_start()
    try:
        assert subscribed.wait(20)
        online = EdgeAgent(config(KEY)).run(threading.Event())
        assert online.delivered and online.uplink["batches_recovered"] == offline.uplink["batches_sent"]
        wait_for(lambda: received.keys() == expected.keys(), "every sample at the subscriber")
        assert received == expected
    finally:
        tap.loop_stop()
        tap.disconnect()
