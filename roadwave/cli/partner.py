"""``roadwave partner ...``: the reference client of a partner receiving maintenance alerts.

``watch`` prints each of the partner's alerts as a JSON line (the alert document, schema
v1): first the current state of every alert, from the broker's retained messages, then
every change as it happens. ``--ack`` acknowledges alerts once connected, so the
acknowledged state arrives among the changes. ``ack`` acknowledges one alert and exits.
See docs/alerts.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import paho.mqtt.client as paho

from roadwave import mqtt
from roadwave.cli.broker_options import add_broker_arguments, broker_settings
from roadwave.configfile import ConfigError
from roadwave.contract import ContractError, PayloadError
from roadwave.contract.alerts import (
    MAX_ACK_BY,
    Acknowledgement,
    ack_topic,
    decode_alert,
    encode_ack,
    partner_alerts_filter,
)

#: How long to wait for the broker to confirm an acknowledgement.
PUBLISH_TIMEOUT_S = 10.0


def add_subparser(subparsers: Any) -> None:
    """Register ``roadwave partner`` and its commands."""
    parser = subparsers.add_parser("partner", help="receive and acknowledge maintenance alerts as a partner")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--partner", required=True, help="partner id: its certificate's Common Name")
    add_broker_arguments(common)
    by_help = f"who acknowledges, 1-{MAX_ACK_BY} printable characters; recorded as PARTNER:BY"

    watch = commands.add_parser(
        "watch",
        parents=[common],
        help="print the partner's alerts as JSON lines: current state, then changes",
        description="Print each alert of the partner as a JSON line: the current state of every alert "
        "(retained messages) on connecting, then each change. Stops on SIGINT/SIGTERM, after --count "
        "alerts or after --timeout seconds (exit status 1 if --count was not reached by then).",
    )
    watch.add_argument(
        "--ack", metavar="ALERT_ID", action="append", default=[], help="acknowledge this alert (repeatable)"
    )
    watch.add_argument("--by", help=f"{by_help} (needed with --ack)")
    watch.add_argument("--count", type=int, help="stop after printing this many alerts")
    watch.add_argument("--timeout", type=float, help="stop after this many seconds")
    watch.set_defaults(func=run_watch)

    ack = commands.add_parser(
        "ack",
        parents=[common],
        help="acknowledge an alert",
        description="Publish an acknowledgement of ALERT_ID (QoS 1) and exit once the broker has it. "
        "The alerting service takes it only if the partner serves the alert's vehicle and the alert "
        "is open; `watch` shows the acknowledged state.",
    )
    ack.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id, as in its document")
    ack.add_argument("--by", required=True, help=by_help)
    ack.set_defaults(func=run_ack)


def _acknowledgements(args: argparse.Namespace, alert_ids: Sequence[str]) -> list[Acknowledgement]:
    if alert_ids and args.by is None:
        raise ConfigError("--ack needs --by, who acknowledges")
    return [Acknowledgement(args.partner, alert_id, args.by) for alert_id in alert_ids]


def _send(client: paho.Client, acks: Sequence[Acknowledgement]) -> None:
    """Publish acknowledgements (QoS 1) and wait until the broker has each.

    Raises:
        MqttConnectError: the broker did not confirm one in time.
    """
    for ack in acks:
        info = client.publish(ack_topic(ack.partner), encode_ack(ack), qos=1)
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        except RuntimeError as exc:  # paho: the connection is gone
            raise mqtt.MqttConnectError(f"acknowledgement of {ack.alert_id} not sent: {exc}") from exc
        if not info.is_published():
            raise mqtt.MqttConnectError(f"the broker did not confirm the acknowledgement of {ack.alert_id}")


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` while inside (the previous handlers come back after)."""
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Printer:
    """Prints each valid alert as a JSON line; sets ``done`` after ``count`` of them."""

    def __init__(self, count: int | None, done: threading.Event) -> None:
        self.count, self.done, self.printed = count, done, 0
        self._lock = threading.Lock()

    def on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if not message.payload:
            return  # a cleared alert's retained state was removed: nothing to show
        try:
            _, alert = decode_alert(message.topic, bytes(message.payload))
        except PayloadError as exc:
            print(f"roadwave partner watch: ignored a message on {message.topic}: {exc}", file=sys.stderr)
            return
        with self._lock:
            print(json.dumps(alert.to_dict()), flush=True)
            self.printed += 1
            if self.count is not None and self.printed >= self.count:
                self.done.set()


def run_watch(args: argparse.Namespace) -> int:
    """Print the partner's alerts until stopped; exit status 1 if --count was not reached in --timeout."""
    try:
        settings = broker_settings(args, f"{args.partner}-{os.getpid()}")
        acks = _acknowledgements(args, args.ack)
        topic_filter = partner_alerts_filter(args.partner)
    except (ConfigError, ContractError) as exc:
        print(f"roadwave partner watch: {exc}", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1 or args.timeout is not None and args.timeout <= 0:
        print("roadwave partner watch: --count must be >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    done = threading.Event()
    printer = _Printer(args.count, done)
    with _stop_on_signals(done):
        try:
            client = mqtt.connect(
                settings,
                str(settings.client_id),
                subscriptions=[(topic_filter, 1)],
                on_message=printer.on_message,
            )
        except mqtt.MqttConnectError as exc:
            print(f"roadwave partner watch: {exc}", file=sys.stderr)
            return 3
        try:
            _send(client, acks)
            deadline = None if args.timeout is None else time.monotonic() + args.timeout
            while not done.wait(0.2):  # short waits keep the main thread responsive to signals
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except mqtt.MqttConnectError as exc:
            print(f"roadwave partner watch: {exc}", file=sys.stderr)
            return 3
        finally:
            client.disconnect()
            client.loop_stop()
    if args.count is not None and printer.printed < args.count:
        print(
            f"roadwave partner watch: {printer.printed} of {args.count} alerts in {args.timeout} s",
            file=sys.stderr,
        )
        return 1
    return 0


def run_ack(args: argparse.Namespace) -> int:
    """Acknowledge one alert; exit once the broker has the acknowledgement."""
    try:
        settings = broker_settings(args, f"{args.partner}-{os.getpid()}")
        acks = _acknowledgements(args, [args.alert_id])
    except (ConfigError, ContractError) as exc:
        print(f"roadwave partner ack: {exc}", file=sys.stderr)
        return 2
    try:
        client = mqtt.connect(settings, str(settings.client_id))
        try:
            _send(client, acks)
        finally:
            client.disconnect()
            client.loop_stop()
    except mqtt.MqttConnectError as exc:
        print(f"roadwave partner ack: {exc}", file=sys.stderr)
        return 3
    print(json.dumps({"event": "sent", "id": args.alert_id, "by": acks[0].actor}), flush=True)
    return 0
