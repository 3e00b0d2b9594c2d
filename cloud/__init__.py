"""Cloud side: MQTT ingest into InfluxDB."""
