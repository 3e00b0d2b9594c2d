"""The shared MQTT connection helper: reconnection backoff with jitter."""

from __future__ import annotations

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from roadwave.mqtt import RECONNECT_JITTER, MqttSettings, _jittered_backoff


def test_each_reconnection_sequence_starts_at_a_random_point_within_the_jitter() -> None:
    settings = MqttSettings(reconnect_min_s=2.0, reconnect_max_s=30.0)
    client = paho.Client(CallbackAPIVersion.VERSION2)
    firsts = set()
    for _ in range(200):
        _jittered_backoff(client, settings)
        first, cap = client._reconnect_min_delay, client._reconnect_max_delay  # paho keeps no getter
        assert RECONNECT_JITTER[0] * 2.0 <= first <= RECONNECT_JITTER[1] * 2.0 and cap == 30.0
        firsts.add(round(first, 3))
    assert len(firsts) > 100, "the start of the backoff is not spread over the fleet"
