"""Helpers for the till-service tests: real face videos played through OpenCV, a real MQTT
subscriber that records what the service publishes, a config pointing at both, and `agecheck
run` started as a process of its own.

Videos are written to the test's tmp_path (never the repo); UTKFace photos are read in place
from the shared folder and skipped with a reason when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edge_app import config as C
from edge_app.devtools.sim import background
from tests.helpers import wait_until  # noqa: F401  (re-exported: the service tests import it from here)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AGECHECK_SHARED", REPO.parent / "shared"))
UTK_IMAGES = SHARED / "datasets" / "utkface" / "images"
FPS = 15.0
W, H = 640, 480


def astronaut_bgr() -> np.ndarray:
    """The public-domain NASA portrait shipped with agecheck, BGR."""
    from edge_app.devtools.sim import demo_photo_bgr

    return demo_photo_bgr()


def astronaut_head() -> np.ndarray:
    """Her head and shoulders (a tighter crop, so a second, smaller face fits in a frame)."""
    a = astronaut_bgr()
    # Box found by the MediaPipe detector on the 512x512 photo, widened by half on each side.
    return a[35:225, 130:320]


def utk_photo(age: int) -> np.ndarray:
    """The first UTKFace photo (by name) of someone of `age`, BGR, read in place."""
    if not UTK_IMAGES.is_dir():
        pytest.skip(f"UTKFace photos not found at {UTK_IMAGES} (set AGECHECK_SHARED to the shared folder)")
    names = sorted(UTK_IMAGES.glob(f"{age}_*.jpg"))
    if not names:
        pytest.skip(f"no UTKFace photo of age {age} under {UTK_IMAGES}")
    img = cv2.imread(str(names[0]))
    assert img is not None, names[0]
    return img


def paste(frame: np.ndarray, img: np.ndarray, cx: int, cy: int, size: int) -> tuple[int, int, int, int]:
    """Paste img resized to size x size centred on (cx, cy); returns the pasted box x, y, w, h."""
    s = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    x0, y0 = cx - size // 2, cy - size // 2
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + size), min(frame.shape[0], y0 + size)
    frame[fy0:fy1, fx0:fx1] = s[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return fx0, fy0, fx1 - fx0, fy1 - fy0


def scene(*people: tuple[np.ndarray, int, int, int], sway: int = 0) -> np.ndarray:
    """A 640x480 BGR frame: the backdrop with each (photo, cx, cy, size) pasted in order."""
    frame = background(W, H)
    for img, cx, cy, size in people:
        paste(frame, img, cx + sway, cy, size)
    return frame


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def still_video(path: Path, frame_fn: Callable[[int], np.ndarray], seconds: float = 2.0) -> Path:
    """A looping-friendly clip of `seconds` whose frame i is frame_fn(i)."""
    return write_video(path, (frame_fn(i) for i in range(int(seconds * FPS))))


def astronaut_video(path: Path, seconds: float = 2.0) -> Path:
    a = astronaut_bgr()
    return still_video(path, lambda i: scene((a, W // 2, 250, 528), sway=int(10 * np.sin(i / 4))), seconds)


def empty_video(path: Path, seconds: float = 2.0) -> Path:
    return still_video(path, lambda i: background(W, H), seconds)


def service_config(tmp_path: Path, video: Path, broker=None, **sections) -> C.Config:
    """A validated Config for a test service: the video as camera (looping), the test broker,
    an outbox in tmp_path; `sections` override whole config sections (dicts)."""
    data: dict = {
        "camera": {"source": str(video), "loop": True, "fps": FPS, "buffer_seconds": 1.5, "reconnect_max_seconds": 0.5},
        "mqtt": {"host": "127.0.0.1", "port": broker.port if broker else 1, "keepalive": 5, "reconnect_max_seconds": 1},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "integrity": {"grace_seconds": 0},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return C.from_dict(data, REPO)


def start_service(cfg_path: Path, log: Path) -> subprocess.Popen:
    """`agecheck run` on the config file, its output appended to `log` (which outlives restarts)."""
    return subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "run", "--config", str(cfg_path)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


class Recorder:
    """A real MQTT subscriber on agecheck/#: keeps every message (topic, payload, retain) and
    waits for conditions. It holds a persistent session (clean_session false), so across a
    restart of the (persistent) test broker it misses nothing, whoever reconnects first."""

    def __init__(self, host: str, port: int, topic: str = "agecheck/#"):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._topic = topic
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-recorder-{id(self)}", clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self._topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "recorder could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list], bool], timeout: float = 20.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = [t for t, _, _ in self.messages][-20:]
                    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last topics: {topics}")
                self._cond.wait(min(left, 0.2))
            return list(self.messages)

    def events(self, kind: str | None = None) -> list[dict]:
        """Event documents received so far (anything that is not a JSON object is skipped)."""
        with self._cond:
            raw = [p for t, p, _ in self.messages if "/events/" in t]
        out = []
        for p in raw:
            try:
                ev = json.loads(p)
            except ValueError:
                continue
            if isinstance(ev, dict) and (kind is None or ev.get("kind") == kind):
                out.append(ev)
        return out

    def wait_events(self, kind: str, n: int, timeout: float = 20.0) -> list[dict]:
        self.wait_for(lambda m: len(self.events(kind)) >= n, timeout, f"{n} {kind} event(s)")
        return self.events(kind)

    def last(self, leaf: str) -> bytes | None:
        with self._cond:
            hits = [p for t, p, _ in self.messages if t.endswith("/" + leaf)]
        return hits[-1] if hits else None

    def wait_last(self, leaf: str, pred: Callable[[bytes], bool], timeout: float = 20.0, what: str = "") -> bytes:
        def ok(msgs: list) -> bool:
            hits = [p for t, p, _ in msgs if t.endswith("/" + leaf)]
            return bool(hits) and pred(hits[-1])

        self.wait_for(ok, timeout, what or f"{leaf} to match")
        return self.last(leaf)  # type: ignore[return-value]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(host: str, port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on `topic` as a new subscriber sees it (None when there is none)."""
    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-retained-{time.monotonic_ns()}")
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)

    def on_message(cl, u, msg):
        if msg.retain:
            got.append(bytes(msg.payload))
            done.set()

    c.on_message = on_message
    c.connect(host, port)
    c.loop_start()
    done.wait(timeout)
    c.disconnect()
    c.loop_stop()
    return got[-1] if got else None


def publish(host: str, port: int, topic: str, payloads: list[bytes | str]) -> None:
    """Publish with QoS 1 and wait for each PUBACK."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pos-{time.monotonic_ns()}")
    c.connect(host, port)
    c.loop_start()
    try:
        for p in payloads:
            c.publish(topic, p, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()
