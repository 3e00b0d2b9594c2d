"""MQTT connection settings and a connected paho-mqtt client, shared by edge and cloud.

With ``ca_file`` the connection is TLS (1.2 or later) and the broker's certificate must
be signed by that CA and name the host connected to; ``cert_file`` and ``key_file`` add
the client certificate the fleet's broker requires (see docs/security.md).
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from roadwave.configfile import Table

LOGGER = logging.getLogger(__name__)

#: A reconnection sequence starts at a random multiple of ``reconnect_min_s`` in this range.
RECONNECT_JITTER = (0.5, 1.5)
#: The broker port when nothing else is said: plain MQTT, or MQTT over TLS (IANA).
PLAIN_PORT, TLS_PORT = 1883, 8883


class MqttConnectError(ConnectionError):
    """The broker could not be reached or refused the connection."""


class MqttTlsError(ValueError):
    """The TLS files are missing, unreadable, do not fit together or are not PEM."""


def _refuse_passphrase() -> bytes:
    # Without this, OpenSSL would prompt on the terminal and a service would hang.
    raise MqttTlsError("key_file is encrypted; the MQTT client needs an unencrypted key (kept 0600)")


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker, and how to come back after losing it."""

    host: str = "127.0.0.1"
    port: int = PLAIN_PORT
    client_id: str | None = None
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    #: The CA that signed the broker's certificate; setting it switches TLS on.
    ca_file: Path | None = None
    #: This client's certificate and key (PEM), for a broker that requires one.
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise MqttTlsError("cert_file and key_file go together: give both or neither")
        if self.cert_file is not None and self.ca_file is None:
            raise MqttTlsError("cert_file needs ca_file, the CA that signed the broker's certificate")
        if self.tls:
            self.tls_context()  # refuse unusable files now rather than at the first connection

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.ca_file is not None

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context trusting only ``ca_file``, with the client certificate if given.

        Raises:
            MqttTlsError: a file is missing, unreadable, not PEM, or the key does not
                belong to the certificate.
        """
        if self.ca_file is None:
            raise MqttTlsError("no ca_file: these settings are for plain MQTT")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise MqttTlsError(f"{name} {path}: no such file")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise MqttTlsError(f"ca_file {self.ca_file}: not a readable PEM certificate ({exc})") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file, password=_refuse_passphrase)
            except (OSError, ssl.SSLError) as exc:
                raise MqttTlsError(
                    f"cert_file {self.cert_file} with key_file {self.key_file}: not readable PEM, "
                    f"or the key does not belong to the certificate ({exc})"
                ) from exc
        return context

    @classmethod
    def read(cls, table: Table) -> MqttSettings:
        """Read an ``[mqtt]`` table; file paths are relative to the configuration file."""
        ca_file = table.path("ca_file", None)
        try:
            settings = cls(
                host=table.text("host", cls.host),
                port=table.integer(
                    "port", TLS_PORT if ca_file is not None else PLAIN_PORT, minimum=1, maximum=65535
                ),
                client_id=table.text("client_id", None),
                keepalive_s=table.integer("keepalive_s", cls.keepalive_s, minimum=5),
                reconnect_min_s=table.number("reconnect_min_s", cls.reconnect_min_s, minimum=0.1),
                reconnect_max_s=table.number("reconnect_max_s", cls.reconnect_max_s, minimum=0.1),
                ca_file=ca_file,
                cert_file=table.path("cert_file", None),
                key_file=table.path("key_file", None),
            )
        except MqttTlsError as exc:
            raise table.error(str(exc)) from exc
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
    A refusal (CONNACK, SUBACK, or the broker closing the connection first, as it
    does for a TLS client certificate it rejects) ends the wait at once.

    Raises:
        MqttConnectError: the broker did not accept the connection, or refused a
            subscription, within ``timeout_s``.
        MqttTlsError: the TLS files of ``settings`` cannot be used.
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
    if settings.tls:
        client.tls_set_context(settings.tls_context())
    scheme = "mqtts" if settings.tls else "mqtt"
    ready = threading.Event()  # subscribed, or refused
    accepted = threading.Event()  # the broker accepted a connection at least once
    failures: list[str] = []
    last_error: list[str] = []

    def refuse(why: str) -> None:
        if not ready.is_set():
            failures.append(why)
            ready.set()

    def capture_errors(_client: Any, _userdata: Any, level: int, text: str) -> None:
        # The only place paho tells why a connection broke, e.g. the TLS alert of a refused certificate.
        if level == paho.MQTT_LOG_ERR:
            last_error[:] = [text]

    def handle_connect(
        client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            refuse(f"connection refused: {reason}")
            return
        if not accepted.is_set():
            accepted.set()
            client.on_log = None  # paho formats every log line while a handler is set
        LOGGER.info("connected to %s://%s:%d as %s", scheme, settings.host, settings.port, client_id)
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
            LOGGER.error("broker refused subscription(s) %s: %s", subscriptions, refused)
            refuse(f"subscription refused: {', '.join(refused)}")
        ready.set()

    def handle_disconnect(
        client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if not accepted.is_set():
            why = last_error[0] if last_error else str(reason)
            LOGGER.warning("%s://%s:%d closed the connection: %s", scheme, settings.host, settings.port, why)
            refuse(f"the broker closed the connection before accepting it ({why})")
        elif reason.is_failure:
            LOGGER.warning("disconnected from the broker (%s); reconnecting", reason)
        if reason.is_failure:
            _jittered_backoff(client, settings)

    def handle_connect_fail(_client: Any, _userdata: Any) -> None:
        LOGGER.warning("cannot reach %s://%s:%d; retrying", scheme, settings.host, settings.port)

    client.on_connect = handle_connect
    client.on_log = capture_errors
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
    except ssl.SSLError as exc:  # e.g. the broker's certificate does not verify
        raise MqttConnectError(
            f"TLS handshake with the MQTT broker at {settings.host}:{settings.port} failed: {exc}"
        ) from exc
    except OSError as exc:
        raise MqttConnectError(
            f"cannot reach the MQTT broker at {settings.host}:{settings.port}: {exc}"
        ) from exc
    client.loop_start()
    if not ready.wait(timeout_s) or failures:
        client.loop_stop()
        client.disconnect()
        why = failures[0] if failures else "no answer"
        raise MqttConnectError(
            f"MQTT broker at {settings.host}:{settings.port} did not accept {client_id!r}: {why}"
        )
    return client
