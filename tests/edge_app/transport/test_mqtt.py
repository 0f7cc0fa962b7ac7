"""MQTT link against a real Mosquitto: availability with Last Will, in-order delivery of the
outbox across a broker outage (nothing lost, nothing twice), and broker credentials that never
live in config.yaml."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import time

import pytest

from edge_app import config as C
from edge_app.config import ConfigError, MQTTConfig, TLSConfig
from edge_app.core.state import AVAILABILITY_LEAF, OFFLINE, ONLINE, STATE_LEAF, TillState
from edge_app.till.broker_link import SUBSCRIPTIONS
from edge_app.transport.mqtt import MqttLink
from edge_app.transport.mqtt_messages import Presence
from edge_app.transport.mqtt_setup import connect_error, login_refused, make_client, read_password, trust_warnings
from edge_app.transport.outbox import Outbox
from tests.edge_app.service_util import REPO, Recorder, retained, wait_until

TOPIC = "agecheck/v1/store-001/till-01/events/check"


def _cfg(port: int):
    return C.from_dict({"mqtt": {"port": port, "keepalive": 5, "reconnect_max_seconds": 1}}, REPO)


def _presence(state=TillState) -> Presence:
    """The till's retained availability and state, as the service keeps them."""
    return Presence(AVAILABILITY_LEAF, ONLINE, OFFLINE, STATE_LEAF, lambda: state().encode())


def _link(tmp_path, port, state=None, messages=None):
    box = Outbox(tmp_path / "o.sqlite3", 10_000)
    got = messages if messages is not None else []
    link = MqttLink(
        _cfg(port),
        box,
        lambda m: got.append((m.leaf, m.payload)),
        SUBSCRIPTIONS,
        presence=_presence(state or (lambda: TillState(camera="up"))),
    )
    return link, box


def _fill(box: Outbox, start: int, n: int) -> list[str]:
    ids = [f"{i:05d}" for i in range(start, start + n)]
    for eid in ids:
        box.put(TOPIC, json.dumps({"event_id": eid}).encode(), eid)
    return ids


def test_online_state_and_last_will(tmp_path, mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    link, box = _link(tmp_path, mqtt_broker.port, state=lambda: TillState(camera="up", outbox_depth=0))
    link.start()
    try:
        rec.wait_last("availability", lambda p: p == b"online", what="online")
        assert TillState.decode(rec.wait_last("state", lambda p: True)) == TillState(camera="up", outbox_depth=0)
        # Cut the TCP connection under paho's feet: the broker must publish the Last Will.
        link.client.socket().shutdown(socket.SHUT_RDWR)
        rec.wait_for(
            lambda m: any(t.endswith("/availability") and p == b"offline" for t, p, _ in m), what="Last Will offline"
        )
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
    wait_until(lambda: link.connect_failures >= 1, 10, "the link to try the absent broker")
    assert box.depth() == 150
    mqtt_broker.start()
    try:
        rec.wait_for(lambda m: len(m) >= 150, 30, "the first backlog")
        # Outage while events keep coming.
        mqtt_broker.stop()
        failures = link.connect_failures
        second = _fill(box, 150, 60)
        link.wake()
        # The link has tried to deliver the new events during the outage and failed at least once.
        wait_until(lambda: link.connect_failures > failures, 10, "a failed attempt during the outage")
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
        assert link.subscribed.wait(10), "no SUBACK for the POS topics"
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


@pytest.mark.parametrize(
    "m, key, words",
    [
        (MQTTConfig(username="u", password_file="/nonexistent/pw"), "mqtt.password_file", "cannot read"),
        (MQTTConfig(username="u", password_credential="nope"), "mqtt.password_credential", "cannot read credential"),
        (MQTTConfig(password_credential="mqtt-password"), "mqtt.username", "no username"),
        (MQTTConfig(tls=TLSConfig(enabled=True, ca_file="/nonexistent/ca.pem")), "mqtt.tls.ca_file", "does not exist"),
    ],
)
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
    from tests.edge_app.broker_util import Broker

    monkeypatch.setattr(M, "REFUSED_RETRY_S", 0.5)
    acl = tmp_path / "acl"
    acl.write_text(
        "topic readwrite agecheck/v1/store-001/till-01/availability\n"
        "topic readwrite agecheck/v1/store-001/till-01/state\n"
        "topic read agecheck/#\n"
    )  # events/#: not allowed to publish
    with Broker(extra_config=(f"acl_file {acl}",)) as broker:
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


@pytest.mark.parametrize(
    "mqtt_cfg, expected",
    [
        ({"host": "127.0.0.1"}, []),
        ({"host": "localhost"}, []),
        ({"host": "::1"}, []),
        ({"host": "127.0.0.53"}, []),
        ({"host": "broker.store.lan", "username": "till-01", "tls": {"enabled": True, "ca_file": None}}, []),
        ({"host": "192.168.1.20", "username": "till-01"}, ["mqtt.tls.enabled is false"]),
        ({"host": "broker.store.lan", "tls": {"enabled": True}}, ["no mqtt.username"]),
        ({"host": "10.0.0.5"}, ["mqtt.tls.enabled is false", "no mqtt.username"]),
        (
            {"host": "10.0.0.5", "username": "t", "tls": {"enabled": True, "insecure": True}},
            ["mqtt.tls.insecure is true"],
        ),
    ],
)
def test_trust_warnings_for_a_broker_elsewhere(mqtt_cfg, expected):
    from edge_app.config import from_dict

    got = trust_warnings(from_dict({"mqtt": mqtt_cfg}).mqtt)
    assert len(got) == len(expected), got
    for text, words in zip(got, expected):
        assert words in text, text


# -- errors that name their cause ------------------------------------------------------------------


def _errors(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_app.transport.mqtt" and words in r.getMessage()]


def test_wrong_password_backs_off_logs_once_and_says_so_in_state(tmp_path, caplog):
    import shutil
    import subprocess

    from tests.edge_app.broker_util import Broker

    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (Debian package mosquitto)")
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "till-01", "right"], check=True, capture_output=True, timeout=30
    )
    try:
        broker = Broker(extra_config=("allow_anonymous false", f"password_file {passwd}")).start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    pw = tmp_path / "till-pw"
    pw.write_text("wrong\n")
    pw.chmod(0o600)
    cfg = C.from_dict(
        {"mqtt": {"port": broker.port, "username": "till-01", "password_file": str(pw), "reconnect_max_seconds": 3}},
        REPO,
    )
    box = Outbox(tmp_path / "o.sqlite3", 100)
    link = MqttLink(
        cfg, box, lambda m: None, SUBSCRIPTIONS, presence=_presence(lambda: TillState(mqtt_error=link.error))
    )
    assert link.trust_warnings == []  # a 0600 password file on a loopback broker: nothing to say
    caplog.set_level(logging.INFO, logger="edge_app.transport.mqtt")
    link.start()
    try:
        # When the link logged the first refusal, not when this thread noticed it: a late poll
        # would shorten the interval measured below.
        first = wait_until(
            lambda: next((r.created for r in caplog.records if "refused the login" in r.getMessage()), None),
            10,
            "the first refused login",
        )
        wait_until(lambda: link.connect_failures >= 3, 20, "two more refused logins")
        # Backed off to the maximum at the first refusal: without it paho retries after 1 s, then 2 s.
        assert time.time() - first >= 2 * 3 - 0.5
        # Mosquitto answers a wrong password with "Not authorized" (MQTT 5 reason 0x87).
        assert link.error in (
            "broker refused the login: not authorized",
            "broker refused the login: bad user name or password",
        ), link.error
        assert TillState.decode(link._presence.state()).mqtt_error == link.error
        assert not link.connected
        lines = _errors(caplog, "refused the login")
        assert len(lines) == 1, lines  # three refusals, one line
        assert "as user 'till-01'" in lines[0] and "check mqtt.username and the password" in lines[0]
    finally:
        link.stop(flush_timeout=0.5)
        box.close()
        broker.close()


def test_password_file_readable_by_others_is_warned_about(tmp_path, caplog):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o644)
    cfg = C.from_dict({"mqtt": {"username": "till-01", "password_file": str(pw)}}, REPO)
    box = Outbox(tmp_path / "o.sqlite3", 100)
    link = MqttLink(cfg, box, lambda m: None, SUBSCRIPTIONS, presence=_presence())
    caplog.set_level(logging.INFO, logger="edge_app.transport.mqtt")
    link.start()
    link.stop(flush_timeout=0.1)
    box.close()
    lines = _errors(caplog, "password file")
    assert len(lines) == 1, lines
    assert str(pw) in lines[0] and f"chmod 600 {pw}" in lines[0] and "0644" in lines[0]
    assert lines[0] in " ".join(f"{link._name}: NOT SECURE: {w}" for w in link.trust_warnings)
    pw.chmod(0o600)
    assert trust_warnings(cfg.mqtt) == []


@pytest.mark.parametrize(
    "case, words",
    [
        ("other CA", "not signed by a CA trusted here"),
        ("other name", "not valid for the name '127.0.0.1'"),
    ],
)
def test_tls_failure_names_the_check_that_failed(tmp_path, caplog, case, words):
    from edge_app.devtools.sim import free_port
    from tests.edge_app.broker_util import Broker
    from tests.edge_app.tls_util import make_ca, server_cert

    broker_ca = make_ca(tmp_path, "broker-ca")
    cert, key = server_cert(
        tmp_path, broker_ca, "DNS:localhost,IP:127.0.0.1" if case == "other CA" else "DNS:broker.store.example"
    )
    trusted = make_ca(tmp_path, "till-ca")[0] if case == "other CA" else broker_ca[0]
    tls_port = free_port()
    try:
        broker = Broker(
            extra_config=(
                f"listener {tls_port} 127.0.0.1",
                f"cafile {broker_ca[0]}",
                f"certfile {cert}",
                f"keyfile {key}",
            )
        ).start()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cfg = C.from_dict(
        {"mqtt": {"port": tls_port, "reconnect_max_seconds": 2, "tls": {"enabled": True, "ca_file": str(trusted)}}},
        REPO,
    )
    box = Outbox(tmp_path / "o.sqlite3", 100)
    link = MqttLink(cfg, box, lambda m: None, SUBSCRIPTIONS, presence=_presence())
    caplog.set_level(logging.INFO, logger="edge_app.transport.mqtt")
    link.start()
    try:
        wait_until(lambda: link.connect_failures >= 2, 15, "two failed TLS handshakes")
        assert not link.connected
        assert link.error.startswith("TLS: ") and words in link.error, link.error
        lines = _errors(caplog, "TLS: ")
        assert len(lines) == 1 and words in lines[0], lines
        assert "cannot reach" not in lines[0]
    finally:
        link.stop(flush_timeout=0.5)
        box.close()
        broker.close()


def test_connect_errors_in_words():
    m = MQTTConfig(host="broker.lan", port=8883)
    assert "connection refused" in connect_error(ConnectionRefusedError(111, "Connection refused"), m)
    assert "cannot resolve the broker's name 'broker.lan'" in connect_error(
        socket.gaierror(-2, "Name or service not known"), m
    )
    wrong_port = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong_port.reason = "WRONG_VERSION_NUMBER"
    assert "did not answer in TLS" in connect_error(wrong_port, m)
    assert login_refused("Not authorized") == "broker refused the login: not authorized"


def test_manual_ack_holds_messages_until_acked_and_never_stalls(tmp_path, mqtt_broker):
    """manual_ack: a message its handler has not acknowledged is delivered again to the next
    client of the session (a crash before the record is stored loses nothing); one it has
    acknowledged is not. 40 held messages do not stop the 41st: Mosquitto's own default would hold
    back everything after 20 unacknowledged ones (the sale behind 16 waiting scans)."""
    from tests.edge_app.service_util import publish

    def session(got):
        box = Outbox(tmp_path / f"o{len(boxes)}.sqlite3", 100)
        boxes.append(box)
        return MqttLink(
            _cfg(mqtt_broker.port),
            box,
            lambda m: got.append((m.payload, m.ack)),
            SUBSCRIPTIONS,
            client_id="manual-ack-test",
            session_expiry_s=60,
            manual_ack=True,
        ).start()

    boxes: list[Outbox] = []
    first: list = []
    link = session(first)
    try:
        assert link.subscribed.wait(10)
        publish(
            mqtt_broker.host,
            mqtt_broker.port,
            "agecheck/v1/store-001/till-01/pos/scan",
            [str(i).encode() for i in range(40)],
        )
        publish(mqtt_broker.host, mqtt_broker.port, "agecheck/v1/store-001/till-01/pos/sale", [b"sale"])
        wait_until(lambda: len(first) == 41, 10, "all 41 messages with none acknowledged")
        for _, ack in first[:10]:
            ack()
            ack()  # a second call sends nothing more
        wait_until(lambda: link.acks_sent == 10, 5, "10 PUBACKs sent")
    finally:
        # Not link.stop(): the handler never finished with the rest; the process is gone.
        link.client.disconnect()
        link.client.loop_stop()
    second: list = []
    link = session(second)
    try:
        wait_until(lambda: len(second) == 31, 10, "the 31 unacknowledged messages delivered again")
        time.sleep(0.5)  # nothing else follows
        assert sorted(p for p, _ in second) == sorted([str(i).encode() for i in range(10, 40)] + [b"sale"])
        for _, ack in second:
            ack()
    finally:
        link.stop()
        for box in boxes:
            box.close()
