"""MQTT connection settings and a connected paho-mqtt client, shared by edge and cloud."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from roadwave.configfile import Table

LOGGER = logging.getLogger(__name__)

#: A reconnection sequence starts at a random multiple of ``reconnect_min_s`` in this range.
RECONNECT_JITTER = (0.5, 1.5)


class MqttConnectError(ConnectionError):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker, and how to come back after losing it."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0

    @classmethod
    def read(cls, table: Table) -> MqttSettings:
        """Read an ``[mqtt]`` table."""
        settings = cls(
            host=table.text("host", cls.host),
            port=table.integer("port", cls.port, minimum=1, maximum=65535),
            client_id=table.text("client_id", None),
            keepalive_s=table.integer("keepalive_s", cls.keepalive_s, minimum=5),
            reconnect_min_s=table.number("reconnect_min_s", cls.reconnect_min_s, minimum=0.1),
            reconnect_max_s=table.number("reconnect_max_s", cls.reconnect_max_s, minimum=0.1),
        )
        if settings.reconnect_max_s < settings.reconnect_min_s:
            raise table.error(
                f"reconnect_max_s ({settings.reconnect_max_s:g}) is below "
                f"reconnect_min_s ({settings.reconnect_min_s:g})"
            )
        table.finish()
        return settings


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client that vanished (MQTT last will)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def _jittered_backoff(client: paho.Client, settings: MqttSettings) -> None:
    """Start the next reconnection sequence at a random delay, so a fleet does not return at once.

    paho doubles the delay after every failed attempt up to the maximum.
    """
    low, high = RECONNECT_JITTER
    first = settings.reconnect_min_s * random.uniform(low, high)
    # paho annotates whole seconds but computes with any number.
    client.reconnect_delay_set(min_delay=first, max_delay=max(first, settings.reconnect_max_s))  # type: ignore[arg-type]


def connect(
    settings: MqttSettings,
    client_id: str,
    *,
    subscriptions: Sequence[tuple[str, int]] = (),
    on_message: Callable[[paho.Client, Any, paho.MQTTMessage], None] | None = None,
    on_connected: Callable[[paho.Client], None] | None = None,
    persistent: bool = False,
    will: Will | None = None,
    manual_ack: bool = False,
    timeout_s: float | None = 10.0,
    max_inflight: int = 100,
) -> paho.Client:
    """Return a paho client connected (and subscribed) to the broker, its loop running.

    ``subscriptions`` are (topic filter, QoS) pairs, made again after every
    reconnection; ``on_message`` receives their messages in paho's network
    thread; ``on_connected`` runs after every successful (re)connection, before
    the subscriptions. A ``persistent`` session survives disconnections: the
    broker keeps the subscriptions and queues QoS 1 messages for the client,
    and unacknowledged messages are sent again on both sides. With
    ``manual_ack`` a received QoS 1 message is acknowledged only when the
    caller calls ``client.ack(mid, qos)``. paho reconnects by itself, with
    exponential backoff starting at a random point (:data:`RECONNECT_JITTER`).
    With ``timeout_s=None`` the client is returned at once and keeps trying to
    connect in the background (for a vehicle that starts out of coverage).

    Raises:
        MqttConnectError: the broker did not accept the connection, or refused a
            subscription, within ``timeout_s``.
    """
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(max_inflight)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    ready = threading.Event()
    failures: list[str] = []

    def handle_connect(
        client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            failures.append(f"connection refused: {reason}")
            return
        LOGGER.info("connected to mqtt://%s:%d as %s", settings.host, settings.port, client_id)
        if on_connected is not None:
            on_connected(client)
        if subscriptions:
            client.subscribe(list(subscriptions))
        else:
            ready.set()

    def handle_subscribe(
        _client: Any, _userdata: Any, _mid: int, reasons: list[ReasonCode], _props: Any
    ) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            failures.append(f"subscription refused: {', '.join(refused)}")
            LOGGER.error("broker refused subscription(s) %s: %s", subscriptions, refused)
            return
        ready.set()

    def handle_disconnect(
        client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            LOGGER.warning("disconnected from the broker (%s); reconnecting", reason)
            _jittered_backoff(client, settings)

    def handle_connect_fail(_client: Any, _userdata: Any) -> None:
        LOGGER.warning("cannot reach mqtt://%s:%d; retrying", settings.host, settings.port)

    client.on_connect = handle_connect
    client.on_connect_fail = handle_connect_fail
    client.on_subscribe = handle_subscribe
    client.on_disconnect = handle_disconnect
    if on_message is not None:
        client.on_message = on_message
    _jittered_backoff(client, settings)
    if timeout_s is None:
        client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s)
        client.loop_start()
        return client
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:
        raise MqttConnectError(
            f"cannot reach the MQTT broker at {settings.host}:{settings.port}: {exc}"
        ) from exc
    client.loop_start()
    if not ready.wait(timeout_s) or failures:
        client.loop_stop()
        client.disconnect()
        why = failures[-1] if failures else "no answer"
        raise MqttConnectError(
            f"MQTT broker at {settings.host}:{settings.port} did not accept {client_id!r}: {why}"
        )
    return client
