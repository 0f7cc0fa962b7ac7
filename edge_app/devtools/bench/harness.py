"""Bench harness: what the measurements share to run real services - the user's config pointed
at the bench's video, broker and outbox (and written to a file for a child process), the
environment of those children, and a real MQTT subscriber that clocks each message's arrival."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from edge_app.core import events, topics
from edge_app.devtools.demo import demo_config
from edge_app.devtools.sim import Pos

CHILD_TIMEOUT_S = 120.0
# The checkout this bench runs from: edge_app/devtools/bench/harness.py -> the folder above edge_app.
_ROOT = Path(__file__).resolve().parents[3]


def bench_config(cfg, video: Path, port: int, state_dir: Path, till_id: str, **camera: Any):
    """The user's config (or the defaults) pointed at the bench's video, broker and outbox."""
    c = demo_config(cfg, video, port, state_dir)
    c = dataclasses.replace(
        c, till_id=till_id, outbox=dataclasses.replace(c.outbox, path=str(state_dir / f"outbox-{till_id}.sqlite3"))
    )
    if camera:
        c = dataclasses.replace(c, camera=dataclasses.replace(c.camera, **camera))
    return c


def write_config(cfg, path: Path) -> Path:
    # JSON first: tuples become lists, which YAML's safe dumper (and config.from_dict) accept.
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child_env() -> dict[str, str]:
    """Children import the same edge_app as this process (a checkout may shadow the install)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclasses.dataclass(frozen=True)
class CheckArrival:
    """A check event the bench's subscriber received, and when (time.monotonic())."""

    at: float
    event: events.CheckEvent


class Listener:
    """A real subscriber on the till's topics: arrival time (monotonic) of each message."""

    def __init__(self, host: str, port: int, topics: list[str], name: str):
        self.cond = threading.Condition()
        self.messages: list[tuple[float, str, bytes]] = []
        self._topics = topics
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"agecheck-bench-{name}-{os.getpid()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self._topics])
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("the bench's MQTT subscriber could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:
        t = time.monotonic()
        with self.cond:
            self.messages.append((t, msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def wait(
        self, pred: Callable[[float, str, bytes], bool], timeout: float, start: int = 0
    ) -> tuple[float, str, bytes] | None:
        """The first message from index `start` on that satisfies pred, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.messages):
                    m = self.messages[i]
                    i += 1
                    if pred(*m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait_check(self, txn: str, timeout: float, start: int = 0) -> CheckArrival | None:
        """The check event of transaction `txn`, from index `start` on, decoded once."""
        leaf = "/" + topics.event_leaf(events.CheckEvent)
        found: list[events.CheckEvent] = []

        def is_it(t: float, topic: str, payload: bytes) -> bool:
            ev = events.decode_event(payload) if topic.endswith(leaf) else None
            if isinstance(ev, events.CheckEvent) and ev.transaction_id == txn:
                found.append(ev)
                return True
            return False

        m = self.wait(is_it, timeout, start)
        return None if m is None else CheckArrival(at=m[0], event=found[0])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connected_pos(host: str, port: int, store_id: str, till_id: str):
    """The simulation kit's POS, once the broker has accepted it (its scans are clocked)."""
    pos = Pos(host, port, store_id, till_id, name="bench-pos")
    if not pos.connected.wait(10):
        pos.close()
        raise RuntimeError("the bench's POS could not connect to the broker")
    return pos
