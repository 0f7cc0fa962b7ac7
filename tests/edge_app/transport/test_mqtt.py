"""MQTT link against a real Mosquitto: availability with Last Will, in-order delivery of the
outbox across a broker outage (nothing lost, nothing twice), and broker credentials that never
live in config.yaml."""

from __future__ import annotations

import json
import socket
import time

import pytest

from edge_app import config as C
from edge_app.config import ConfigError, MQTTConfig, TLSConfig
from edge_app.transport.mqtt import MqttLink, make_client, read_password
from edge_app.transport.outbox import Outbox
from tests.edge_app.service_util import REPO, Recorder, retained, wait_until

TOPIC = "agecheck/v1/store-001/till-01/events/check"


def _cfg(port: int):
    return C.from_dict({"mqtt": {"port": port, "keepalive": 5, "reconnect_max_seconds": 1}}, REPO)


def _link(tmp_path, port, state=None, messages=None):
    box = Outbox(tmp_path / "o.sqlite3", 10_000)
    got = messages if messages is not None else []
    link = MqttLink(_cfg(port), box, lambda leaf, p: got.append((leaf, p)), state or (lambda: {"camera": "up"}))
    return link, box


def _fill(box: Outbox, start: int, n: int) -> list[str]:
    ids = [f"{i:05d}" for i in range(start, start + n)]
    for eid in ids:
        box.put(TOPIC, json.dumps({"event_id": eid}).encode(), eid)
    return ids


def test_online_state_and_last_will(tmp_path, mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    link, box = _link(tmp_path, mqtt_broker.port, state=lambda: {"camera": "up", "outbox_depth": 0})
    link.start()
    try:
        rec.wait_last("availability", lambda p: p == b"online", what="online")
        assert json.loads(rec.wait_last("state", lambda p: True))["camera"] == "up"
        # Cut the TCP connection under paho's feet: the broker must publish the Last Will.
        link.client.socket().shutdown(socket.SHUT_RDWR)
        rec.wait_for(lambda m: any(t.endswith("/availability") and p == b"offline" for t, p, _ in m),
                     what="Last Will offline")
        rec.wait_last("availability", lambda p: p == b"online", what="online again after reconnect")
    finally:
        link.stop()
        box.close()
    assert retained(mqtt_broker.host, mqtt_broker.port, "agecheck/v1/store-001/till-01/availability") == b"offline"
    rec.close()


def test_backlog_is_delivered_in_order_across_an_outage(tmp_path, mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port, topic=TOPIC)  # its session outlives the outage
    mqtt_broker.stop()
    link, box = _link(tmp_path, mqtt_broker.port)
    first = _fill(box, 0, 150)  # stored while the broker was never reachable
    link.start()
    time.sleep(1.0)
    assert box.depth() == 150
    mqtt_broker.start()
    try:
        rec.wait_for(lambda m: len(m) >= 150, 30, "the first backlog")
        # Outage while events keep coming.
        mqtt_broker.stop()
        second = _fill(box, 150, 60)
        link.wake()
        time.sleep(1.5)
        mqtt_broker.start()
        rec.wait_for(lambda m: len({json.loads(p)["event_id"] for _, p, _ in m}) >= 210, 30, "all 210 events")
        wait_until(lambda: box.depth() == 0, 10, "outbox drained")
    finally:
        link.stop()
        box.close()
        rec.close()
    seen = [json.loads(p)["event_id"] for _, p, _ in rec.messages]
    expected = first + second
    # QoS 1 may deliver twice across a cut; de-duplicated by event_id nothing is missing and the
    # first arrival of each follows the stored order.
    firsts = list(dict.fromkeys(seen))
    assert firsts == expected
    assert len(seen) - len(firsts) <= 10  # at most one window re-sent


def test_scan_and_sale_messages_reach_the_handler(tmp_path, mqtt_broker):
    got = []
    link, box = _link(tmp_path, mqtt_broker.port, messages=got)
    link.start()
    try:
        wait_until(lambda: link.connected, 10, "connected")
        time.sleep(0.3)  # SUBACK
        from tests.edge_app.service_util import publish
        publish(mqtt_broker.host, mqtt_broker.port, "agecheck/v1/store-001/till-01/pos/scan", [b"hello"])
        publish(mqtt_broker.host, mqtt_broker.port, "agecheck/v1/store-001/till-01/pos/sale", [b"bye"])
        wait_until(lambda: len(got) == 2, 10, "two messages")
        assert got == [("pos/scan", b"hello"), ("pos/sale", b"bye")]
    finally:
        link.stop()
        box.close()


def test_password_from_file_or_systemd_credential(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    assert read_password(MQTTConfig(username="till", password_file=str(pw))) == "s3cret"
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "mqtt-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    assert read_password(MQTTConfig(username="till", password_credential="mqtt-password")) == "from-systemd"
    assert read_password(MQTTConfig()) is None
    # The unit's SetCredential= default when no password file was written: no password.
    (cred / "mqtt-password").write_text("\n")
    assert read_password(MQTTConfig(password_credential="mqtt-password")) is None


@pytest.mark.parametrize("m, key, words", [
    (MQTTConfig(username="u", password_file="/nonexistent/pw"), "mqtt.password_file", "cannot read"),
    (MQTTConfig(username="u", password_credential="nope"), "mqtt.password_credential", "cannot read credential"),
    (MQTTConfig(password_credential="mqtt-password"), "mqtt.username", "no username"),
    (MQTTConfig(tls=TLSConfig(enabled=True, ca_file="/nonexistent/ca.pem")), "mqtt.tls.ca_file", "does not exist"),
])
def test_broker_credential_problems_name_the_key(tmp_path, monkeypatch, m, key, words):
    cred = tmp_path / "creds"
    cred.mkdir()
    (cred / "mqtt-password").write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    with pytest.raises(ConfigError) as ei:
        make_client(m, "x")
    assert str(ei.value).startswith(key) and words in str(ei.value)


def test_credential_without_systemd_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY is not set .*LoadCredential="):
        read_password(MQTTConfig(username="u", password_credential="mqtt-password"))


def test_event_refused_by_the_broker_stays_in_the_outbox_until_allowed(tmp_path, monkeypatch, caplog):
    from edge_app.transport import mqtt as M
    from edge_app.devtools.sim import LocalBroker

    monkeypatch.setattr(M, "REFUSED_RETRY_S", 0.5)
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite agecheck/v1/store-001/till-01/availability\n"
                   "topic readwrite agecheck/v1/store-001/till-01/state\n"
                   "topic read agecheck/#\n")  # events/#: not allowed to publish
    with LocalBroker(extra_config=(f"acl_file {acl}",)) as broker:
        rec = Recorder(broker.host, broker.port, topic=TOPIC)
        link, box = _link(tmp_path, broker.port)
        ids = _fill(box, 0, 3)
        link.start()
        try:
            wait_until(lambda: "refused outbox event" in caplog.text, 10, "the refusal")
            assert box.depth() == 3 and "retried" in caplog.text and not rec.messages
            acl.write_text("topic readwrite agecheck/#\n")
            broker.reload()
            rec.wait_for(lambda m: {json.loads(p)["event_id"] for _, p, _ in m} >= set(ids), 15, "events once allowed")
            wait_until(lambda: box.depth() == 0, 10, "outbox drained")
            rec.close()
        finally:
            link.stop()
            box.close()


@pytest.mark.parametrize("mqtt_cfg, expected", [
    ({"host": "127.0.0.1"}, []),
    ({"host": "localhost"}, []),
    ({"host": "::1"}, []),
    ({"host": "127.0.0.53"}, []),
    ({"host": "broker.store.lan", "username": "till-01", "tls": {"enabled": True, "ca_file": None}}, []),
    ({"host": "192.168.1.20", "username": "till-01"}, ["mqtt.tls.enabled is false"]),
    ({"host": "broker.store.lan", "tls": {"enabled": True}}, ["no mqtt.username"]),
    ({"host": "10.0.0.5"}, ["mqtt.tls.enabled is false", "no mqtt.username"]),
    ({"host": "10.0.0.5", "username": "t", "tls": {"enabled": True, "insecure": True}}, ["mqtt.tls.insecure is true"]),
])
def test_trust_warnings_for_a_broker_elsewhere(mqtt_cfg, expected):
    from edge_app.config import from_dict
    from edge_app.transport.mqtt import trust_warnings

    got = trust_warnings(from_dict({"mqtt": mqtt_cfg}).mqtt)
    assert len(got) == len(expected), got
    for text, words in zip(got, expected):
        assert words in text, text
