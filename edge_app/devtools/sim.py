"""Simulation kit: the throw-away parts that stand in for a till's surroundings, shared by the
demo, the benchmark and the tests:

* `LocalBroker` - a Mosquitto on a free 127.0.0.1 port with a temporary config (persistent on
  request, for outage tests);
* `make_demo_video` - a short video made from the public-domain NASA astronaut portrait shipped
  in the package (a face that moves a little, then an empty till);
* `Pos` - a till's POS on MQTT: a scan of the demo item, the sale that closes it, on request;
* `SimulatedPos` - publishes an alcohol scan (and, shortly after, the sale) over MQTT every few
  seconds, like a till's POS would;
* `SimulatedCashier` - answers every other alert over MQTT, as a second cashier display would,
  so the demo shows answered alerts and, for the others, integrity events;
* `Xvfb` - a private X server for the cashier window where there is no screen (bench, tests).
"""

from __future__ import annotations

import itertools
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt

from edge_app import resources
from edge_app.core import events, topics
from edge_app.core.events import AlertEvent
from edge_app.core.pos import Item, Sale, Scan
from edge_app.core.words import AckVia, Answer

SCAN_EVERY_S = 4.0
SALE_AFTER_S = 2.5
DEMO_ITEM = Item(sku="5010677850100", category="alcohol", min_age=18, name="Lager 4x440ml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def end_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` s; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def find_mosquitto() -> str:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise FileNotFoundError("mosquitto is not installed: apt-get install mosquitto (or brew install mosquitto)")


class LocalBroker:
    """A private Mosquitto on 127.0.0.1. stop() and start() again keep the same port, for outage
    tests; with `persistent` it also keeps retained messages and client sessions across that
    restart (saved on SIGTERM, like a production broker). Its config, log and database live in a
    temporary folder removed by close()."""

    def __init__(self, port: int | None = None, persistent: bool = False, extra_config: tuple[str, ...] = ()):
        self.binary = find_mosquitto()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="agecheck-mosquitto-"))
        self.log_path = self.dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true" if persistent else "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        if persistent:
            lines.append(f"persistence_location {self.dir}/")
        # A shipped config (deploy/mosquitto) passed in extra_config decides its own options.
        given = {ln.split()[0] for ln in extra_config if ln.strip() and not ln.lstrip().startswith("#")}
        lines = [ln for ln in lines if ln.split()[0] not in given or ln.split()[0] in ("listener", "log_dest")]
        lines += list(extra_config)
        if os.geteuid() == 0:
            # Run as root only because we are root already; otherwise it drops to 'mosquitto',
            # which cannot write the log in our temporary folder.
            lines.append("user root")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def _port_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((self.host, self.port)) == 0

    def start(self, timeout: float = 10.0) -> LocalBroker:
        # Its own session: a Ctrl-C in the terminal must not kill the broker before the service
        # has published `offline` through it.
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._port_open():
            if self.proc.poll() is not None:
                text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited with code {self.proc.returncode}: {text.strip()[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not open port {self.port} within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
            self.proc = None

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its ACL and password files."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def paste(frame: np.ndarray, img: np.ndarray, x0: int, y0: int) -> None:
    """Draw img onto frame with its top-left corner at (x0, y0), clipped to the frame."""
    h, w = img.shape[:2]
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(frame.shape[1], x0 + w), min(frame.shape[0], y0 + h)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = img[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]


def background(width: int, height: int) -> np.ndarray:
    """A plain shop-ish backdrop (BGR): a vertical grey gradient with a counter edge."""
    g = np.linspace(150, 95, height, dtype=np.float32)[:, None]
    bg = np.repeat(np.repeat(g, width, axis=1)[:, :, None], 3, axis=2)
    bg[int(height * 0.85) :] = (60, 70, 80)
    return bg.astype(np.uint8)


def demo_photo_bgr() -> np.ndarray:
    """The public-domain NASA astronaut portrait shipped with agecheck (BGR uint8, 512x512)."""
    path = resources.path(resources.DEMO_PHOTO)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot decode the demo photo {path}; reinstall agecheck")
    return img


def mjpg_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """An open OpenCV writer of an MJPG .avi (a codec every OpenCV build can write and read)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MJPG video to {path}")
    return writer


def make_demo_video(
    path: str | Path,
    seconds: float = 12.0,
    fps: float = 15.0,
    face_seconds: float = 8.0,
    width: int = 640,
    height: int = 480,
) -> Path:
    """Write an MJPG .avi: the astronaut portrait (public domain, shipped in the package) swaying
    a little for `face_seconds`, then the empty backdrop for the rest."""
    portrait = demo_photo_bgr()
    size = int(height * 1.1)  # her face then spans ~22% of the frame width, like a shopper at a till
    portrait = cv2.resize(portrait, (size, size), interpolation=cv2.INTER_AREA)
    bg = background(width, height)
    path = Path(path)
    writer = mjpg_writer(path, fps, width, height)
    try:
        for i in range(int(round(seconds * fps))):
            t = i / fps
            frame = bg.copy()
            if t < face_seconds:
                dx = int(18 * math.sin(2 * math.pi * t / 3.0))
                dy = int(6 * math.sin(2 * math.pi * t / 2.0))
                paste(frame, portrait, (width - size) // 2 + dx, int(height * 0.02) + dy)
            writer.write(frame)
    finally:
        writer.release()
    return path


class Pos:
    """A till's POS on MQTT: publishes a scan of the demo item and the sale that closes its
    transaction (QoS 1, as a POS must not lose either). `connected` is set once the broker
    has accepted the connection."""

    def __init__(self, host: str, port: int, store_id: str, till_id: str, name: str = "pos"):
        self._scan_topic = topics.topic(store_id, till_id, Scan.TOPIC)
        self._sale_topic = topics.topic(store_id, till_id, Sale.TOPIC)
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"agecheck-{name}-{till_id}-{os.getpid()}"
        )
        self.client.on_connect = lambda *a: self.connected.set()
        # Asynchronous: a POS that starts before its broker connects when the broker comes up.
        self.client.connect_async(host, port)
        self.client.loop_start()

    def scan(self, txn: str) -> float:
        """Publish a scan of the demo item; returns the monotonic time just before it was handed
        to the client (a clock for how long the till takes to answer)."""
        payload = Scan(DEMO_ITEM, txn).encode()
        t = time.monotonic()
        self.client.publish(self._scan_topic, payload, qos=1)
        return t

    def sale(self, txn: str) -> None:
        self.client.publish(self._sale_topic, Sale(txn).encode(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SimulatedPos:
    """Publishes `pos/scan` for an alcohol item every `every_s` seconds (new transaction each
    time) and the matching `pos/sale` `sale_after_s` later."""

    def __init__(
        self,
        host: str,
        port: int,
        store_id: str,
        till_id: str,
        every_s: float = SCAN_EVERY_S,
        sale_after_s: float = SALE_AFTER_S,
        first_after_s: float = 2.0,
    ):
        self._where = (host, port, store_id, till_id)
        self.every_s, self.sale_after_s, self.first_after_s = every_s, sale_after_s, first_after_s
        self._pos: Pos | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-pos", daemon=True)
        self.scans = 0

    def start(self) -> SimulatedPos:
        self._pos = Pos(*self._where, name="demo-pos")
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._pos is not None
        if self._stop.wait(self.first_after_s):
            return
        for n in itertools.count(1):
            txn = f"demo-{n:04d}"
            self._pos.scan(txn)
            self.scans += 1
            if self._stop.wait(self.sale_after_s):
                return
            self._pos.sale(txn)
            if self._stop.wait(max(0.0, self.every_s - self.sale_after_s)):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._pos is not None:
            self._pos.close()


class Xvfb:
    """A private X server on 127.0.0.1 only, on a free display number that Xvfb picks itself
    (-displayfd), so parallel runs never race for one. start() returns once it accepts clients;
    stop() ends it. It does not touch $DISPLAY: the caller decides who draws on it."""

    def __init__(self, width: int = 1280, height: int = 800):
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        self.display: str | None = None  # ":N" once started

    def start(self, timeout: float = 15.0) -> Xvfb:
        binary = shutil.which("Xvfb")
        if binary is None:
            raise FileNotFoundError("Xvfb is not installed: apt-get install xvfb")
        r, w = os.pipe()
        # -noreset: the server stays as it is when its last client (a window under test) closes.
        self.proc = subprocess.Popen(
            [
                binary,
                "-displayfd",
                str(w),
                "-screen",
                "0",
                f"{self.width}x{self.height}x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ],
            pass_fds=(w,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(w)
        try:
            self.display = ":" + self._read_display(r, time.monotonic() + timeout)
        except RuntimeError:
            self.stop()
            raise
        finally:
            os.close(r)
        return self

    def _read_display(self, fd: int, deadline: float) -> str:
        """The display number Xvfb writes (with a newline) once it is ready for clients."""
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            # select, not a bare read: an Xvfb that hangs must not hang its caller.
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError("Xvfb did not report a display within the time allowed")
            chunk = os.read(fd, 16)
            if not chunk:
                code = self.proc.poll() if self.proc else None
                raise RuntimeError(f"Xvfb exited (code {code}) before reporting its display number")
            buf += chunk
        return buf.decode().strip()

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
            self.proc = None

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimulatedCashier:
    """Hears this till's alerts and answers every `answer_every`-th one "ID checked – over age"
    `after_s` seconds later (before the simulated sale), publishing the ack as a standalone
    cashier display would; the others are left for the person at the window, or for the
    integrity check."""

    def __init__(self, host: str, port: int, store_id: str, till_id: str, answer_every: int = 2, after_s: float = 1.5):
        self._events = events
        self.store_id, self.till_id = store_id, till_id
        self.answer_every, self.after_s = answer_every, after_s
        self._alert_topic = topics.event_topic(store_id, till_id, events.AlertEvent)
        self._ack_topic = topics.event_topic(store_id, till_id, events.AckEvent)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"agecheck-demo-cashier-{till_id}")
        self.client.on_connect = lambda c, *a: c.subscribe(self._alert_topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async(host, port)
        self.alerts = 0
        self.answered = 0
        self._timers: list[threading.Timer] = []

    def start(self) -> SimulatedCashier:
        self.client.loop_start()
        return self

    def _on_message(self, client, userdata, msg) -> None:
        try:
            alert = self._events.decode_event(msg.payload)
        except ValueError:  # PayloadError and SchemaError: not an alert it can answer
            return
        if not isinstance(alert, self._events.AlertEvent):
            return
        self.alerts += 1
        if self.alerts % self.answer_every:
            return
        t = threading.Timer(self.after_s, self._answer, (alert,))
        t.daemon = True
        self._timers.append(t)
        t.start()

    def _answer(self, alert: AlertEvent) -> None:
        ack = self._events.AckEvent(
            store_id=self.store_id,
            till_id=self.till_id,
            transaction_id=alert.transaction_id,
            alert_event_id=alert.event_id,
            answer=Answer.ID_CHECKED_OVER_AGE,
            decision_time_s=self.after_s,
            check_event_id=alert.check_event_id,
            via=AckVia.SIMULATED,
        )
        self.client.publish(self._ack_topic, ack.encode(), qos=1)
        self.answered += 1

    def stop(self) -> None:
        for t in self._timers:
            t.cancel()
        self.client.disconnect()
        self.client.loop_stop()
