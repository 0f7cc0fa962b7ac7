"""Sessions bound to users (issue 26): on a real Mosquitto running the shipped agecheck-secure.conf
and acl (with the documented window block filled in for till-01), another user connecting with a
till's, the feed's or the cashier window's client id and a clean start cannot wipe that program's
session: the messages queued for it while it was away still reach it. Before, the POS login
wiped a till's 3 queued scans. And each program's default client id is its login."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_app.config import from_dict
from tests.edge_app.till.test_broker_acl import ROOT, SHIPPED, USERS, make_certs, secure_broker  # noqa: F401

WINDOW_USER = "till-01-display"


def acl_with_window_block(d: Path) -> Path:
    """The shipped acl with its commented window block for till-01 switched on, as the install
    guide says to."""
    lines = []
    for line in (SHIPPED / "acl").read_text().splitlines():
        if line.startswith(("#user till-01-display", "#topic ")):
            line = line[1:]
        lines.append(line)
    (d / "acl").write_text("\n".join(lines) + "\n")
    return d / "acl"


class Session:
    """A paho MQTT 5 client over TLS on a user's login, with a client id and clean start of the
    test's choosing."""

    def __init__(
        self, port: int, ca: Path, user: str, client_id: str, clean_start: bool, subscribe: str | None = None
    ) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.tls_set(ca_certs=str(ca))
        self.c.username_pw_set(user, USERS_ALL[user])
        self.messages: list[tuple[str, bytes]] = []
        self.session_present: bool | None = None
        self._cv = threading.Condition()
        self._subscribe = subscribe
        self.subscribed = threading.Event()

        def on_connect(cl, u, flags, rc, props):
            assert not rc.is_failure, rc
            with self._cv:
                self.session_present = bool(flags.session_present)
                self._cv.notify_all()
            if self._subscribe:
                cl.subscribe(self._subscribe, qos=1)

        def on_message(cl, u, msg):
            with self._cv:
                self.messages.append((msg.topic, bytes(msg.payload)))
                self._cv.notify_all()

        self.c.on_connect, self.c.on_message = on_connect, on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        self.c.loop_start()
        with self._cv:
            assert self._cv.wait_for(lambda: self.session_present is not None, 10), "no CONNACK"

    def wait_messages(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        with self._cv:
            self._cv.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


USERS_ALL = {**USERS, WINDOW_USER: "pw-till-01-display"}


@pytest.mark.parametrize(
    "victim, client_id, topic, publisher",
    [
        ("till-01", "agecheck-store-001-till-01", f"{ROOT}/till-01/pos/scan", "pos"),  # the till's old default id
        ("till-01", "till-01", f"{ROOT}/till-01/pos/scan", "pos"),  # its id now: its login
        ("feed", "agecheck-feed-store-001", f"{ROOT}/till-01/events/check", "till-01"),
        (WINDOW_USER, "agecheck-display-store-001-till-01", f"{ROOT}/till-01/events/alert", "till-01"),
    ],
)
def test_another_user_cannot_take_a_programs_session(tmp_path, victim, client_id, topic, publisher):
    broker, port = secure_broker(tmp_path, acl=acl_with_window_block(tmp_path), users=USERS_ALL)
    ca = tmp_path / "ca.crt"
    open_: list[Session] = []
    try:
        first = Session(port, ca, victim, client_id, clean_start=True, subscribe=topic)
        open_.append(first)
        assert first.subscribed.wait(10), "no SUBACK"
        first.close()
        open_.remove(first)
        # While the program is away, three messages are queued for it.
        pub = Session(port, ca, publisher, f"test-{publisher}-{time.time_ns()}", clean_start=True)
        open_.append(pub)
        for i in range(3):
            pub.publish(topic, f'{{"n": {i}}}'.encode())
        # The POS's login, the program's client id, a clean start: before, this wiped the session.
        thief = Session(port, ca, "pos", client_id, clean_start=True)
        open_.append(thief)
        thief.close()
        open_.remove(thief)
        back = Session(port, ca, victim, client_id, clean_start=False, subscribe=topic)
        open_.append(back)
        got = back.wait_messages(3)
        assert back.session_present, "the program's session was taken"
        assert [p for _, p in got] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}'], got
    finally:
        for s in open_:
            s.close()
        broker.close()


def test_each_programs_client_id_follows_its_login(tmp_path):
    from edge_app.manager.feed import Feed
    from edge_app.transport.mqtt import MqttLink
    from edge_app.transport.outbox import Outbox

    cfg = from_dict({"store_id": "store-001", "till_id": "till-01", "mqtt": {"username": "till-01"}})
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10)
    try:
        assert MqttLink(cfg, outbox, lambda *a: None).client_id == "till-01"
        anonymous = from_dict({"store_id": "store-001", "till_id": "till-01"})
        assert MqttLink(anonymous, outbox, lambda *a: None).client_id == "agecheck-store-001-till-01"
    finally:
        outbox.close()
    feed = Feed(from_dict({"mqtt": {"username": "feed"}}), tmp_path / "feed.sqlite3")
    try:
        assert feed.client_id == "feed"
    finally:
        feed.store.close()
