"""``roadwave v2x-relay``: check vehicles' V2X uploads and forward them to their quadkey tile.

Vehicles publish each packet to ``roadwave/v2x/v1/up/{sender}/{kind}/{quadkey}`` and
subscribe to the tile topics around them (``edge.v2x.topics``). The relay takes every
upload, refuses what is too large or malformed, and republishes the same bytes to
``roadwave/v2x/v1/tile/{kind}/{digits...}``. An unsecured packet is parsed down to the
CAM or DENM, which must match the topic's kind, and its position (a CAM's sender, a
DENM's destination area centre) must lie in the topic's tile. A secured packet is
forwarded on its GeoNetworking basic header alone: the relay holds no trust store, and
the receiving vehicles verify the signature.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as paho

from edge.v2x.codec import decode_its_pdu
from edge.v2x.errors import V2xDecodeError
from edge.v2x.geonet import BTP_PORT_CAM, BTP_PORT_DENM, GbcHeader, ShbHeader, parse_packet
from edge.v2x.model import Cam, Denm
from edge.v2x.quadkey import Tile
from edge.v2x.transport import send_without_delay
from roadwave import mqtt
from roadwave.cli.broker_options import add_broker_arguments, broker_settings
from roadwave.configfile import ConfigError
from roadwave.contract import ContractError, TopicError, shared_subscription
from roadwave.contract import v2x as topics

#: Per kind: the BTP-B port, the GeoNetworking extended header and the message.
_EXPECTED: dict[str, tuple[int, type, type]] = {
    topics.CAM: (BTP_PORT_CAM, ShbHeader, Cam),
    topics.DENM: (BTP_PORT_DENM, GbcHeader, Denm),
}


class UploadRefused(ValueError):
    """An upload the relay does not forward; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_upload(topic: str, payload: bytes, max_packet_bytes: int = topics.MAX_PACKET_BYTES) -> str:
    """The tile topic to forward an upload to; raises :class:`UploadRefused` with the reason."""
    try:
        address = topics.parse_upload_topic(topic)
    except TopicError as exc:
        raise UploadRefused("topic", str(exc)) from exc
    if len(payload) > max_packet_bytes:
        raise UploadRefused("too_large", f"{len(payload)} bytes, at most {max_packet_bytes}")
    try:
        packet = parse_packet(payload)
    except V2xDecodeError as exc:
        raise UploadRefused("geonetworking", str(exc)) from exc
    body = packet.body
    if body is not None:  # unsecured: everything can be checked here
        port, header, message = _EXPECTED[address.kind]
        if body.btp.destination_port != port or not isinstance(body.extended, header):
            raise UploadRefused("kind", f"not a {address.kind} packet (BTP port {body.btp.destination_port})")
        try:
            decoded = decode_its_pdu(body.payload)
        except V2xDecodeError as exc:
            raise UploadRefused("message", str(exc)) from exc
        if not isinstance(decoded, message):
            raise UploadRefused("kind", f"a {type(decoded).__name__} is not a {address.kind}")
        where = body.extended.area if isinstance(body.extended, GbcHeader) else body.extended.source
        tile = Tile.from_quadkey(address.quadkey)
        if Tile.at(where.latitude_deg, where.longitude_deg, tile.zoom) != tile:
            raise UploadRefused("tile", f"the packet's position is not in tile {address.quadkey}")
    return topics.tile_topic(address.kind, address.quadkey)


class V2xRelay:
    """Subscribes to the uploads and forwards what :func:`check_upload` accepts."""

    def __init__(
        self,
        settings: mqtt.MqttSettings,
        *,
        client_id: str = "roadwave-v2x-relay",
        group: str | None = None,
        max_packet_bytes: int = topics.MAX_PACKET_BYTES,
    ) -> None:
        self.settings, self.client_id, self.max_packet_bytes = settings, client_id, max_packet_bytes
        subscription = topics.UPLOAD_SUBSCRIPTION
        self.subscription = subscription if group is None else shared_subscription(group, subscription)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> dict[str, int]:
        """Forward uploads until ``stop`` is set; returns the counters."""
        client = mqtt.connect(
            self.settings,
            self.client_id,
            subscriptions=[(self.subscription, 0)],
            on_message=self._on_message,
            on_connected=send_without_delay,
        )
        self.ready.set()
        try:
            stop.wait()
        finally:
            client.disconnect()
            client.loop_stop()
        with self._lock:
            return dict(sorted(self.counts.items()))

    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            target = check_upload(message.topic, bytes(message.payload), self.max_packet_bytes)
        except UploadRefused as refused:
            self._count(f"refused.{refused.reason}")
            return
        client.publish(target, message.payload, qos=0)
        self._count("forwarded")

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1


DEFAULT_CLIENT_ID = "roadwave-v2x-relay"


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave v2x-relay``."""
    parser = subparsers.add_parser(
        "v2x-relay",
        help="forward vehicles' V2X packets to the quadkey tiles around them",
        description="Check every V2X packet vehicles upload over MQTT and republish it to the topic "
        "of its quadkey tile (docs/v2x.md). Prints a JSON line when ready and one with its counters "
        "when stopped (SIGINT/SIGTERM).",
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--client-id", help=f"MQTT client id (overrides the file; default {DEFAULT_CLIENT_ID})"
    )
    parser.add_argument(
        "--group", help="share the uploads among the relays of this group (shared subscription)"
    )
    parser.add_argument(
        "--max-packet-bytes",
        type=int,
        default=topics.MAX_PACKET_BYTES,
        help=f"refuse larger packets (default, and at most, {topics.MAX_PACKET_BYTES})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the relay until SIGINT/SIGTERM."""
    if not 1 <= args.max_packet_bytes <= topics.MAX_PACKET_BYTES:
        print(
            f"roadwave v2x-relay: --max-packet-bytes must be 1-{topics.MAX_PACKET_BYTES} "
            "(vehicles drop larger packets)",
            file=sys.stderr,
        )
        return 2
    try:
        settings = broker_settings(args, DEFAULT_CLIENT_ID)
        relay = V2xRelay(
            settings,
            client_id=args.client_id or settings.client_id or DEFAULT_CLIENT_ID,
            group=args.group,
            max_packet_bytes=args.max_packet_bytes,
        )
    except (ContractError, ConfigError) as exc:
        print(f"roadwave v2x-relay: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    outcome: list[dict[str, int] | Exception] = []

    def serve() -> None:
        try:
            outcome.append(relay.run(stop))
        except mqtt.MqttConnectError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=serve, name="v2x-relay")
    worker.start()
    while worker.is_alive() and not relay.ready.wait(0.1):
        pass
    if relay.ready.is_set():
        print(json.dumps({"event": "ready", "subscription": relay.subscription}), flush=True)
    while worker.is_alive():
        worker.join(0.2)  # short joins keep the main thread responsive to signals
    result = outcome[0] if outcome else RuntimeError("the relay ended unexpectedly")
    if isinstance(result, Exception):
        print(f"roadwave v2x-relay: {result}", file=sys.stderr)
        return 3
    print(json.dumps({"event": "stopped", "counters": result}), flush=True)
    return 0
