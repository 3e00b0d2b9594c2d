"""MQTT connection settings and a connected paho-mqtt client, shared by edge and cloud."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from roadwave.configfile import Table

LOGGER = logging.getLogger(__name__)


class MqttConnectError(ConnectionError):
    """The broker could not be reached or refused the connection."""


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None
    keepalive_s: int = 30

    @classmethod
    def read(cls, table: Table) -> MqttSettings:
        """Read an ``[mqtt]`` table."""
        settings = cls(
            host=table.text("host", cls.host),
            port=table.integer("port", cls.port, minimum=1, maximum=65535),
            client_id=table.text("client_id", None),
            keepalive_s=table.integer("keepalive_s", cls.keepalive_s, minimum=5),
        )
        table.finish()
        return settings


def connect(
    settings: MqttSettings,
    client_id: str,
    *,
    subscriptions: Sequence[tuple[str, int]] = (),
    on_message: Callable[[paho.Client, Any, paho.MQTTMessage], None] | None = None,
    timeout_s: float = 10.0,
    max_inflight: int = 100,
) -> paho.Client:
    """Return a paho client connected (and subscribed) to the broker, its loop running.

    ``subscriptions`` are (topic filter, QoS) pairs, made again after every
    reconnection; ``on_message`` receives their messages in paho's network
    thread. paho reconnects by itself after a lost connection.

    Raises:
        MqttConnectError: the broker did not accept the connection, or refused a
            subscription, within ``timeout_s``.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.max_inflight_messages_set(max_inflight)
    ready = threading.Event()
    failures: list[str] = []

    def handle_connect(
        client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            failures.append(f"connection refused: {reason}")
            return
        LOGGER.info("connected to mqtt://%s:%d as %s", settings.host, settings.port, client_id)
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

    def handle_disconnect(_client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            LOGGER.warning("disconnected from the broker (%s); reconnecting", reason)

    client.on_connect = handle_connect
    client.on_subscribe = handle_subscribe
    client.on_disconnect = handle_disconnect
    if on_message is not None:
        client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)
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
