"""How GeoNetworking packets leave and reach the vehicle: UDP multicast or the MQTT relay.

A :class:`V2xTransport` stands in for the ITS-G5 or PC5 radio. ``open(receive)`` starts
it, ``send(packet, route)`` transmits, ``receive(packet)`` is called (in the transport's
own thread) for every packet heard, ``on_position`` tells it where the vehicle is, and
``close()`` stops it. Every transport drops the echo of its own packets (multicast loops
them back; the relay sends them to the sender's tiles too). Sending raises
:class:`TransportError`; a failing ``receive`` callback is logged and the transport
goes on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from edge.v2x.errors import V2xError
from edge.v2x.quadkey import MAX_ZOOM, Tile, quadkey
from roadwave import mqtt
from roadwave.contract import TopicError
from roadwave.contract import v2x as topics

LOGGER = logging.getLogger(__name__)

Receive = Callable[[bytes], None]

#: How many of its own recent packets a transport recognises when they come back.
ECHO_MEMORY = 256
#: The largest UDP payload over IPv4.
MAX_UDP_PAYLOAD = 65_507
#: An organisation-local multicast group and a port (a roadwave choice).
DEFAULT_GROUP = "239.255.0.47"
DEFAULT_PORT = 47_001
_POLL_S = 0.2


class TransportError(V2xError):
    """A transport that cannot be set up, opened or used; the message says why."""


@dataclass(frozen=True, slots=True)
class PacketRoute:
    """What a transport may need to know about a packet: its kind and the position it is about."""

    kind: str
    latitude_deg: float
    longitude_deg: float


class _EchoFilter:
    """Remembers digests of the last packets sent, to recognise them when they come back."""

    def __init__(self, size: int = ECHO_MEMORY) -> None:
        self._order: deque[bytes] = deque()
        self._known: set[bytes] = set()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def _digest(packet: bytes) -> bytes:
        return hashlib.blake2b(packet, digest_size=16).digest()

    def remember(self, packet: bytes) -> None:
        digest = self._digest(packet)
        with self._lock:
            if digest in self._known:
                return
            self._order.append(digest)
            self._known.add(digest)
            if len(self._order) > self._size:
                self._known.discard(self._order.popleft())

    def __contains__(self, packet: bytes) -> bool:
        digest = self._digest(packet)
        with self._lock:
            return digest in self._known


class V2xTransport(ABC):
    """A way to broadcast packets to nearby vehicles and hear theirs (see the module docstring)."""

    #: Short name for counters and logs.
    name: str = "transport"

    def __init__(self) -> None:
        self._receive: Receive | None = None
        self._echoes = _EchoFilter()
        self.echoes_dropped = 0
        #: Packets dropped unread for exceeding the transport's size cap.
        self.oversize = 0

    def open(self, receive: Receive) -> None:
        """Start sending and receiving; ``receive`` gets every packet heard from others."""
        self._receive = receive
        self._open()

    def send(self, packet: bytes, route: PacketRoute) -> None:
        """Broadcast one packet; raises :class:`TransportError` when it cannot be sent."""
        self._echoes.remember(packet)
        self._send(bytes(packet), route)

    def on_position(self, latitude_deg: float, longitude_deg: float) -> None:  # noqa: B027 - optional hook
        """The vehicle's position changed (default: nothing to do)."""

    @abstractmethod
    def close(self) -> None:
        """Stop and release everything; closing twice is harmless."""

    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _send(self, packet: bytes, route: PacketRoute) -> None: ...

    def _deliver(self, packet: bytes) -> None:
        if packet in self._echoes:
            self.echoes_dropped += 1
            return
        receive = self._receive
        if receive is None:
            return
        try:
            receive(packet)
        except Exception:  # a bug in the receiver must not stop the transport
            LOGGER.exception("%s: the receive callback failed", self.name)


def send_without_delay(client: paho.Client) -> None:
    """Turn off Nagle's algorithm on the client's connection (paho leaves it on).

    Otherwise a small packet waits for the broker to acknowledge the previous one, which
    with delayed acknowledgements costs tens of milliseconds: too much for a warning.
    """
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _integer(value: int, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise TransportError(f"{what} {value!r} is not an integer {low} .. {high}")
    return value


def _ipv4(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise TransportError(f"{what} {value!r} is not an IPv4 address") from exc


class UdpMulticastTransport(V2xTransport):
    """Packets as UDP datagrams to a multicast group on one network interface.

    ``interface`` is the address of the interface to send and listen on (loopback by
    default, so nothing leaves the machine); ``ttl`` 1 keeps packets on the local link,
    like a single radio hop. Several transports on one machine share the group and port.
    """

    name = "udp"

    def __init__(
        self,
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        *,
        interface: str = "127.0.0.1",
        ttl: int = 1,
    ) -> None:
        super().__init__()
        if not _ipv4(group, "multicast group").is_multicast:
            raise TransportError(f"multicast group {group!r} is not in 224.0.0.0/4")
        _ipv4(interface, "interface address")
        self.group, self.interface = group, interface
        self.port, self.ttl = _integer(port, "port", 1, 65535), _integer(ttl, "ttl", 1, 255)
        self._sender: socket.socket | None = None
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self) -> None:
        interface = socket.inet_aton(self.interface)
        try:
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((self.group, self.port))
            listener.setsockopt(
                socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(self.group) + interface
            )
            listener.settimeout(_POLL_S)
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        except OSError as exc:
            raise TransportError(
                f"cannot open UDP multicast {self.group}:{self.port} on {self.interface}: {exc}"
            ) from exc
        self._listener, self._sender = listener, sender
        self._thread = threading.Thread(target=self._listen, name=f"v2x-udp-{self.port}", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            try:
                packet, _source = listener.recvfrom(65_535)
            except TimeoutError:
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    LOGGER.error("udp %s:%d: receive failed: %s", self.group, self.port, exc)
                return
            self._deliver(packet)

    def _send(self, packet: bytes, route: PacketRoute) -> None:
        if self._sender is None:
            raise TransportError("the UDP transport is not open")
        if len(packet) > MAX_UDP_PAYLOAD:
            raise TransportError(f"a packet of {len(packet)} bytes does not fit a UDP datagram")
        try:
            self._sender.sendto(packet, (self.group, self.port))
        except OSError as exc:
            raise TransportError(f"cannot send to {self.group}:{self.port}: {exc}") from exc

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for sock in (self._listener, self._sender):
            if sock is not None:
                sock.close()
        self._listener = self._sender = None


class MqttRelayTransport(V2xTransport):
    """Packets through an MQTT broker, by quadkey tile (topic scheme: ``roadwave.contract.v2x``).

    Sends to the upload topic of ``sender`` (default: the client id; the agent uses its
    VIN, the identity a broker ACL knows it by) for the relay to check and forward
    (``via_relay``), or straight to the tile topic. Subscribes to the ``(2 * radius + 1)**2`` tiles at
    ``subscribe_zoom`` around the vehicle and moves the subscriptions with it
    (subscribing to new tiles before leaving old ones); nothing is received before the
    first position. QoS 0: a late V2X message is worth nothing, so none is queued. A
    packet larger than the relay forwards (:data:`roadwave.contract.v2x.MAX_PACKET_BYTES`)
    did not come through it: it is counted in :attr:`oversize` and dropped unread.
    ``connect_timeout_s=None`` returns at once and connects in the background (a vehicle
    that starts out of coverage); until then ``send`` raises :class:`TransportError`.
    """

    name = "mqtt"

    def __init__(
        self,
        settings: mqtt.MqttSettings,
        client_id: str,
        *,
        sender: str | None = None,
        via_relay: bool = True,
        publish_zoom: int = topics.PUBLISH_ZOOM,
        subscribe_zoom: int = topics.SUBSCRIBE_ZOOM,
        radius: int = topics.SUBSCRIBE_RADIUS,
        connect_timeout_s: float | None = 10.0,
    ) -> None:
        super().__init__()
        sender = client_id if sender is None else sender
        try:
            topics.check_sender(sender)
        except TopicError as exc:
            raise TransportError(f"sender: {exc}") from exc
        self.settings, self.client_id, self.sender, self.via_relay = settings, client_id, sender, via_relay
        self.publish_zoom = _integer(publish_zoom, "publish_zoom", 1, MAX_ZOOM)
        self.subscribe_zoom = _integer(subscribe_zoom, "subscribe_zoom", 1, publish_zoom)
        self.radius = _integer(radius, "radius (tiles on each side)", 0, 3)
        self.connect_timeout_s = connect_timeout_s
        self._client: paho.Client | None = None
        self._lock = threading.RLock()
        self._acknowledged = threading.Condition(self._lock)
        self._centre: Tile | None = None
        self._tiles: set[str] = set()
        self._pending: dict[int, set[str]] = {}  # SUBSCRIBE message id -> its tiles
        self._confirmed: set[str] = set()  # tiles the broker has acknowledged

    def _open(self) -> None:
        try:
            client = mqtt.connect(
                self.settings,
                self.client_id,
                on_message=self._on_message,
                on_connected=self._subscribe_all,
                timeout_s=self.connect_timeout_s,
            )
        except mqtt.MqttConnectError as exc:
            raise TransportError(str(exc)) from exc
        # ``connect`` watches SUBACKs only for its own initial subscriptions, of which there are none;
        # tiles known before now are subscribed again so that their SUBACKs are seen here.
        client.on_subscribe = self._on_subscribe
        self._client = client
        self._subscribe_all(client)

    @property
    def tiles(self) -> frozenset[str]:
        """The quadkeys of the tiles subscribed to (or being subscribed to)."""
        with self._lock:
            return frozenset(self._tiles)

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait until the broker has acknowledged the subscription of every tile; False on timeout or none."""
        with self._acknowledged:
            return self._acknowledged.wait_for(
                lambda: bool(self._tiles) and self._tiles <= self._confirmed, timeout_s
            )

    def on_position(self, latitude_deg: float, longitude_deg: float) -> None:
        centre = Tile.at(latitude_deg, longitude_deg, self.subscribe_zoom)
        with self._lock:
            if centre == self._centre:
                return
            wanted = {tile.quadkey for tile in centre.neighbours(self.radius)}
            added, removed = wanted - self._tiles, self._tiles - wanted
            self._centre, self._tiles = centre, wanted
            client = self._client
            if client is None:
                return
            self._subscribe(client, added)
            if removed:
                self._confirmed -= removed
                client.unsubscribe([topics.tile_filter(key) for key in sorted(removed)])

    def _subscribe_all(self, client: paho.Client) -> None:
        """After every (re)connection: the broker forgot the subscriptions of a clean session."""
        send_without_delay(client)
        with self._lock:
            self._pending.clear()
            self._confirmed.clear()
            self._subscribe(client, self._tiles)

    def _subscribe(self, client: paho.Client, tiles: set[str]) -> None:
        if tiles:
            result, mid = client.subscribe([(topics.tile_filter(key), 0) for key in sorted(tiles)])
            if result == paho.MQTT_ERR_SUCCESS and mid is not None:  # else: subscribed on connection
                self._pending[mid] = set(tiles)

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, reasons: list[Any], _props: Any) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            LOGGER.error("mqtt: the broker refused tile subscriptions: %s", ", ".join(refused))
        with self._acknowledged:
            tiles = self._pending.pop(mid, set())
            if not refused:
                self._confirmed |= tiles & self._tiles
            self._acknowledged.notify_all()

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        if len(message.payload) > topics.MAX_PACKET_BYTES:
            self.oversize += 1  # only paho's network thread writes it
            LOGGER.debug("mqtt: dropped a packet of %d bytes on %s", len(message.payload), message.topic)
            return
        self._deliver(bytes(message.payload))

    def _send(self, packet: bytes, route: PacketRoute) -> None:
        client = self._client
        if client is None:
            raise TransportError("the MQTT transport is not open")
        try:
            key = quadkey(route.latitude_deg, route.longitude_deg, self.publish_zoom)
            if self.via_relay:
                topic = topics.upload_topic(self.sender, route.kind, key)
            else:
                topic = topics.tile_topic(route.kind, key)
        except ValueError as exc:  # TopicError, QuadkeyError
            raise TransportError(f"no topic for this packet: {exc}") from exc
        result = client.publish(topic, packet, qos=0)
        if result.rc != paho.MQTT_ERR_SUCCESS:
            raise TransportError(f"cannot publish to {topic}: {paho.error_string(result.rc)}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
