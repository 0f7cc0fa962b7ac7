"""Delivery: the on-disk outbox and the MQTT link that drains it."""
