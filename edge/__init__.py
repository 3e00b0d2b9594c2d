"""roadwave edge agent: CAN frames in, VSS samples out over MQTT."""
