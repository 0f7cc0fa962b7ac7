"""The shipped secure store broker (deploy/mosquitto/agecheck-secure.conf with the shipped `acl`,
unchanged) in a real Mosquitto, with a password file and TLS certificates made by the test. The
real till service (blank camera: every check raises an alert) and the real manager feed log in
as the ACL expects. Another till, the POS and the feed itself try to forge the cashier's answer
and other records: the broker refuses each, and the unanswered alert still becomes an integrity
event in the feed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_app.config import from_dict
from edge_app.core import events
from edge_app.core.times import now_iso
from edge_app.core.words import Answer
from edge_app.devtools.sim import free_port
from edge_app.manager.feed import Feed
from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import db_query, wait_until
from tests.edge_app.till.test_integrity_service import MODEL, REPO, blank_video

SHIPPED = REPO / "deploy" / "mosquitto"
ROOT = "agecheck/v1/store-001"
USERS = {"till-01": "pw-till-01", "till-02": "pw-till-02", "pos": "pw-pos", "feed": "pw-feed"}


def make_certs(d: Path) -> dict[str, Path]:
    """A CA and a broker certificate for localhost / 127.0.0.1, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=agecheck test CA")
    run("req", *ec, "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "broker.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return {"cafile": d / "ca.crt", "certfile": d / "broker.crt", "keyfile": d / "broker.key"}


def secure_broker(d: Path, acl: Path | None = None, users: dict[str, str] = USERS) -> tuple[Broker, int]:
    """The shipped agecheck-secure.conf with only paths and the TLS port made local; the ACL file
    is the shipped one as it is, unless `acl` names another."""
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd is not installed (Debian package mosquitto)")
    passwd = d / "passwd"
    for i, (user, pw) in enumerate(users.items()):
        subprocess.run(
            ["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, pw],
            check=True,
            capture_output=True,
            timeout=30,
        )
    certs = make_certs(d)
    tls_port = free_port()
    lines = []
    for line in (SHIPPED / "agecheck-secure.conf").read_text().splitlines():
        words = line.split()
        if not words or line.startswith("#"):
            continue
        key = words[0]
        if line == "listener 1883 127.0.0.1":
            continue  # Broker's own loopback listener (on a free port) stands for it
        if line == "listener 8883":
            line = f"listener {tls_port} 127.0.0.1"
        elif key == "password_file":
            line = f"password_file {passwd}"
        elif key == "acl_file":
            line = f"acl_file {acl or SHIPPED / 'acl'}"
        elif key in certs:
            line = f"{key} {certs[key]}"
        lines.append(line)
    try:
        broker = Broker(extra_config=tuple(lines))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return broker.start(), tls_port


class Client:
    """A paho MQTT 5 client over TLS with a user's password; publish() returns the PUBACK reason."""

    def __init__(self, port: int, ca: Path, user: str | None, pw: str | None = None) -> None:
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{time.time_ns()}", protocol=mqtt.MQTTv5
        )
        self.c.tls_set(ca_certs=str(ca))
        if user:
            self.c.username_pw_set(user, pw)
        self._acks: dict[int, object] = {}
        self._subacks: dict[int, list] = {}
        self._cv = threading.Condition()
        self.connack = None
        self.messages: list[tuple[str, bytes]] = []

        def on_connect(cl, u, flags, rc, props):
            with self._cv:
                self.connack = rc
                self._cv.notify_all()

        def on_publish(cl, u, mid, rc, props):
            with self._cv:
                self._acks[mid] = rc
                self._cv.notify_all()

        def on_subscribe(cl, u, mid, rcs, props):
            with self._cv:
                self._subacks[mid] = rcs
                self._cv.notify_all()

        def on_message(cl, u, msg):
            with self._cv:
                self.messages.append((msg.topic, bytes(msg.payload)))

        self.c.on_connect, self.c.on_publish = on_connect, on_publish
        self.c.on_subscribe, self.c.on_message = on_subscribe, on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        with self._cv:
            assert self._cv.wait_for(lambda: self.connack is not None, 10), "no CONNACK"

    def publish(self, topic: str, payload: bytes | str, retain: bool = False):
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        with self._cv:
            assert self._cv.wait_for(lambda: info.mid in self._acks, 10), f"no PUBACK for {topic}"
            return self._acks[info.mid]

    def subscribe(self, topic: str):
        _, mid = self.c.subscribe(topic, qos=1)
        with self._cv:
            assert self._cv.wait_for(lambda: mid in self._subacks, 10), f"no SUBACK for {topic}"
            return self._subacks[mid][0]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_shipped_acl_refuses_a_forged_ack_and_the_integrity_event_is_still_published(tmp_path):
    from edge_app.till.service import Service

    if not MODEL.is_file():
        pytest.skip(f"the shipped model {MODEL} is missing")
    broker, tls_port = secure_broker(tmp_path)
    ca = tmp_path / "ca.crt"
    for user, pw in USERS.items():
        (tmp_path / f"{user}.pw").write_text(pw + "\n")
        (tmp_path / f"{user}.pw").chmod(0o600)  # a password file open to others is warned about

    def cfg_for(user: str) -> dict:
        return {
            "host": "127.0.0.1",
            "port": tls_port,
            "username": user,
            "password_file": str(tmp_path / f"{user}.pw"),
            "reconnect_max_seconds": 1,
            "tls": {"enabled": True, "ca_file": str(ca)},
        }

    till_cfg = from_dict(
        {
            "mqtt": cfg_for("till-01"),
            "camera": {
                "source": str(blank_video(tmp_path / "blank.avi")),
                "loop": True,
                "fps": 15,
                "width": 320,
                "height": 240,
            },
            "check": {"time_budget_ms": 400, "extra_frames": 2},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
            "integrity": {"grace_seconds": 0.5},
            "model": {"path": str(MODEL), "threads": 1},
        },
        REPO,
    )
    feed_cfg = from_dict({"mqtt": cfg_for("feed")}, REPO)
    db = tmp_path / "feed.sqlite3"
    service = feed = None
    clients: list[Client] = []
    try:
        # The feed's own login may publish nothing. Tried before the feed starts: the broker keys
        # sessions on the login, so a second client on it would take the feed's session over.
        feed_user = Client(tls_port, ca, "feed", USERS["feed"])
        clients.append(feed_user)
        forged_early = events.AckEvent(
            store_id="store-001",
            till_id="till-01",
            transaction_id="T-ACL",
            alert_event_id=str(uuid.uuid4()),
            answer=Answer.ID_CHECKED_OVER_AGE,
            decision_time_s=2.0,
        )
        rc = feed_user.publish(f"{ROOT}/till-01/events/ack", forged_early.encode())
        assert rc.is_failure and "authori" in str(rc).lower(), rc
        assert feed_user.publish(f"{ROOT}/till-01/events/check", b"{}").is_failure
        feed_user.close()
        clients.remove(feed_user)
        feed = Feed(feed_cfg, db, out=io.StringIO()).start()
        assert feed.subscribed.wait(15), "the ACL refused the feed's subscription"
        service = Service(till_cfg).start()
        # Subscribed to pos/scan, pos/sale and events/ack: the ACL grants the till what it needs.
        wait_until(service.link.subscribed.is_set, timeout=15, what="the till's subscriptions")
        pos, other_till = (Client(tls_port, ca, u, USERS[u]) for u in ("pos", "till-02"))
        clients += [pos, other_till]

        anonymous = Client(tls_port, ca, None)
        clients.append(anonymous)
        assert anonymous.connack.is_failure, anonymous.connack  # no anonymous access at all

        def stored(kind: str, txn: str) -> list[dict]:
            return [
                json.loads(r[0])
                for r in db_query(db, "SELECT payload FROM events WHERE kind = ? AND transaction_id = ?", kind, txn)
            ]

        assert not pos.publish(
            f"{ROOT}/till-01/pos/scan",
            json.dumps({"sku": "5000112637922", "category": "alcohol", "transaction_id": "T-ACL"}),
        ).is_failure
        wait_until(lambda: stored("alert", "T-ACL"), timeout=30, what="the alert in the feed")
        alert = stored("alert", "T-ACL")[0]

        # Forged answers: from another till's login and the POS's (the feed's, above). All refused.
        forged = events.AckEvent(
            store_id="store-001",
            till_id="till-01",
            transaction_id="T-ACL",
            alert_event_id=alert["event_id"],
            answer=Answer.ID_CHECKED_OVER_AGE,
            decision_time_s=2.0,
        )
        for who in (other_till, pos):
            rc = who.publish(f"{ROOT}/till-01/events/ack", forged.encode())
            assert rc.is_failure and "authori" in str(rc).lower(), (who, rc)
        # Other forgeries the issue found on an open broker.
        assert other_till.publish(f"{ROOT}/till-01/availability", b"online", retain=True).is_failure
        assert other_till.publish(f"{ROOT}/till-01/pos/scan", b"{}").is_failure  # only the POS scans
        # Mosquitto grants any subscription and checks read access per message: another till
        # subscribed to till-01's events gets none of them (checked after the integrity event).
        assert not other_till.subscribe(f"{ROOT}/till-01/events/#").is_failure
        assert not other_till.subscribe(f"{ROOT}/till-02/state").is_failure

        assert not pos.publish(
            f"{ROOT}/till-01/pos/sale", json.dumps({"transaction_id": "T-ACL", "ts": now_iso()})
        ).is_failure
        wait_until(lambda: stored("integrity", "T-ACL"), timeout=20, what="the integrity event in the feed")
        ev = events.validate(stored("integrity", "T-ACL")[0])
        assert ev["alert_event_id"] == alert["event_id"] and ev["reason"] == "unanswered"
        assert service.counts["acks_received"] == 0 and stored("ack", "T-ACL") == []
        # A sentinel on till-02's own topic, published after the integrity event: once it is
        # back, anything of till-01's that the broker would have let through would be here too.
        assert not other_till.publish(f"{ROOT}/till-02/state", b"sentinel").is_failure
        wait_until(
            lambda: (f"{ROOT}/till-02/state", b"sentinel") in other_till.messages,
            timeout=10,
            what="till-02's own message back",
        )
        assert [t for t, _ in other_till.messages if "/till-01/" in t] == []
        assert service.state().security_warnings == ()
    finally:
        for c in clients:
            c.close()
        if service is not None:
            service.stop()
        if feed is not None:
            feed.stop()
        broker.close()
