"""Helpers shared by the feed, integrity and display tests: synthetic events (and a week of them),
a QoS 1 publisher that waits for PUBACK, a till's outbox and MQTT link numbering and delivering
events, a config file pointing at a test broker, and a subprocess whose output is collected line
by line."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from edge_app.config import from_dict
from edge_app.core import event_parts, events, topics
from edge_app.core.bands import age_band
from edge_app.manager.store import FeedStore
from edge_app.transport.mqtt import MqttLink
from edge_app.transport.outbox import Outbox
from tests.helpers import wait_until  # noqa: F401  (re-exported: the feed tests import it from here)

REPO = Path(__file__).resolve().parents[2]
WEEK_START = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)


LAGER = event_parts.Product(sku="5000112637922", category="alcohol", name="Lager 4x440ml")


def _at(ts: str | None) -> dict:
    """The `ts` keyword of an event: the given time, or now (the event's default)."""
    return {"ts": ts} if ts else {}


def check_event(
    store="store-001", till="till-01", txn="T-1", decision="check_id", age=21.0, ts: str | None = None, **extra
) -> dict:
    """A check's wire dict (a test changes its keys to make a bad one)."""
    low, high = (None, None) if age is None else (age - 2.0, age + 2.0)
    band = None if age is None else age_band(age)
    return events.CheckEvent(
        store_id=store,
        till_id=till,
        transaction_id=txn,
        **_at(ts),
        trigger=event_parts.TriggerInfo(LAGER, source="pos"),
        frames_used=5,
        faces_seen=1,
        decision=decision,
        age=age,
        age_low=low,
        age_high=high,
        age_band=band,
        policy=event_parts.PolicyInfo(legal_age=18, challenge_age=25, margin_years=0.0),
        model_id="age_resnet10_int8",
        latency_ms=event_parts.Latency(total=120.0),
        **extra,
    ).to_dict()


def alert_event(check: dict, ts: str | None = None) -> dict:
    c = events.from_dict(check)
    return events.AlertEvent(
        store_id=c.store_id,
        till_id=c.till_id,
        transaction_id=c.transaction_id,
        **_at(ts),
        check_event_id=c.event_id,
        decision=c.decision,
        age_band=c.age_band,
        item=c.trigger.product,
    ).to_dict()


def ack_event(alert: dict, answer: str, seconds: float = 3.0, ts: str | None = None, **fields) -> dict:
    return events.AckEvent(
        store_id=alert["store_id"],
        till_id=alert["till_id"],
        transaction_id=alert["transaction_id"],
        **_at(ts),
        alert_event_id=alert["event_id"],
        answer=answer,
        decision_time_s=seconds,
        **fields,
    ).to_dict()


def typed_check(**kw) -> events.CheckEvent:
    """check_event(...) as the typed event the service and the broker link hand a listener."""
    return events.from_dict(check_event(**kw))


def typed_alert(check: events.CheckEvent, ts: str | None = None) -> events.AlertEvent:
    return events.from_dict(alert_event(check.to_dict(), ts))


def event_topic(ev: dict) -> str:
    return topics.topic(ev["store_id"], ev["till_id"], f"events/{ev['kind']}")


def store_events(db: str | Path, evs: list[dict]) -> None:
    """Store the events in a feed store under their topics, as the feed does: each must be new to it."""
    st = FeedStore(db)
    for ev in evs:
        assert st.add(event_topic(ev), events.encode(ev)).status == "new"
    st.close()


class Publisher:
    """QoS 1 publishes that return only once the broker has acknowledged them."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{os.getpid()}-{time.time_ns()}")
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def raw(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=10)

    def event(self, ev: dict) -> None:
        self.raw(event_topic(ev), events.encode(ev))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Collector:
    """Subscribes and keeps every message (topic, decoded JSON or raw bytes). persistent=True:
    a broker-side session (MQTT 3.1.1 clean_session=False) that keeps collecting for us while we
    reconnect after a broker restart."""

    def __init__(self, port: int, topic: str, persistent: bool = False) -> None:
        self.messages: list[tuple[str, object]] = []
        self._cv = threading.Condition()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.time_ns()}", clean_session=not persistent
        )
        self.c.reconnect_delay_set(1, 2)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.on_connect = lambda client, *a: client.subscribe(topic, qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        try:
            body: object = json.loads(msg.payload)
        except ValueError:
            body = msg.payload
        with self._cv:
            self.messages.append((msg.topic, body))
            self._cv.notify_all()

    def wait_for(self, pred: Callable[[str, object], bool], timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for t, b in self.messages:
                    if pred(t, b):
                        return b
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message within {timeout}s; got {self.messages!r}")
                self._cv.wait(left)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def write_config(path: Path, port: int, **sections) -> Path:
    data = {"store_id": "store-001", "till_id": "till-01", "mqtt": {"host": "127.0.0.1", "port": port}}
    data.update(sections)
    path.write_text(yaml.safe_dump(data))
    return path


class Proc:
    """`python -m edge_app.cli ...` with stdout+stderr collected by a reader thread."""

    def __init__(self, args: list[str], env: dict | None = None, cwd: Path | None = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.p = subprocess.Popen(
            [sys.executable, "-m", "edge_app.cli", *args],
            cwd=cwd or REPO,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait_line(self, needle: str, timeout: float = 15.0, after: int = 0) -> int:
        """Index of the first line (from `after`) containing needle."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for i in range(after, len(self.lines)):
                    if needle in self.lines[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self._t.is_alive()):
                    raise AssertionError(f"no line with {needle!r}; output:\n" + "\n".join(self.lines))
                self._cv.wait(min(left, 0.2))

    @property
    def output(self) -> str:
        with self._cv:
            return "\n".join(self.lines)

    def stop(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._t.join(timeout=2)
        return self.p.returncode


def db_query(path: Path, sql: str, *params) -> list[tuple]:
    if not path.exists():
        return []
    con = sqlite3.connect(str(path), timeout=5)
    try:
        return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # the feed has not created its tables yet
    finally:
        con.close()


def week_of(till: str, n_sales: int, start: datetime = WEEK_START, store: str = "store-001") -> list[dict]:
    """n_sales restricted sales spread over 7 days, each a check, an alert and an answer."""
    out = []
    step = timedelta(days=7) / n_sales
    for i in range(n_sales):
        t = start + i * step
        c = check_event(store=store, till=till, txn=f"{store}-{till}-{i}", ts=_iso(t))
        a = alert_event(c, ts=_iso(t + timedelta(seconds=1)))
        out += [c, a, ack_event(a, "id_checked_over_age", ts=_iso(t + timedelta(seconds=4)))]
    return out


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Till:
    """What a till service does with an event: number it in its outbox (seq, publisher = the
    till), deliver it in order over the real MQTT link."""

    def __init__(self, tmp: Path, port: int, till: str, store: str = "store-001") -> None:
        self.cfg = from_dict({"store_id": store, "till_id": till, "mqtt": {"host": "127.0.0.1", "port": port}})
        self.outbox = Outbox(tmp / f"{store}-{till}-outbox.sqlite3", 100_000)

    def store(self, evs: list[dict]) -> None:
        for ev in evs:
            self.outbox.put_event(
                topics.topic(self.cfg.store_id, ev["till_id"], f"events/{ev['kind']}"),
                events.from_dict(ev),
                ev["till_id"],
            )

    def deliver(self, timeout: float = 60.0) -> None:
        """Connect, send everything stored, disconnect (a link is not started twice)."""
        link = MqttLink(self.cfg, self.outbox, lambda m: None, client_id=f"test-{self.cfg.store_id}-{self.cfg.till_id}")
        link.start()
        try:
            wait_until(lambda: self.outbox.depth() == 0, timeout, f"{self.cfg.till_id}'s outbox delivered")
        finally:
            link.stop(flush_timeout=5)

    def close(self) -> None:
        self.outbox.close()


def numbered(evs: list[dict], publisher: str, skip=frozenset()) -> list[dict]:
    """Give events the numbers their till's outbox would have; numbers in `skip` never arrive."""
    out, n = [], 0
    for ev in evs:
        n += 1
        while n in skip:
            n += 1
        out.append({**ev, "publisher": publisher, "seq": n})
    return out
