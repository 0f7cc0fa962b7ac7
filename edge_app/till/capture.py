"""Capture: owns the camera. A daemon thread reads frames from a device index, a video file or an
RTSP/HTTP URL through OpenCV into a ring buffer holding the last `camera.buffer_seconds`, reports
the camera going down and up, and reconnects with back-off.

No face or model work happens here: while the till is idle this thread is all that runs, so it
does as little as it can (issue 29): frames the ring buffer does not keep are grabbed but never
decoded, and an MJPG source's kept frames stay JPEG bytes (camera.keep_encoded) until a check
asks for one (Frame.bgr()) - a check decodes its five frames instead of the camera thread
decoding every frame. Frames live in memory only (privacy); nothing in this module writes an
image anywhere.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from cv2.typing import MatLike

from edge_app.config import CameraConfig

log = logging.getLogger(__name__)

CameraStatus = Literal["starting", "up", "down"]

# First retry after this long; doubles on each failure up to camera.reconnect_max_seconds.
_FIRST_RETRY_S = 0.5
# Network streams: give up opening/reading after this long instead of hanging the thread (a
# hung read would starve the watchdog, which is the right outcome only for a truly stuck driver).
_STREAM_TIMEOUT_MS = 5000
# Sleeps are sliced so the heartbeat stays fresh and stop() is prompt.
_TICK_S = 0.25
# A camera that stays down is logged once when it goes, then reminded at this interval, so the
# journal shows the outage without a line per retry.
REMIND_EVERY_S = 600.0


_MJPG = cv2.VideoWriter.fourcc(*"MJPG")


class FrameError(ValueError):
    """A kept frame whose bytes cannot be decoded (a damaged JPEG from the camera)."""


@dataclass(frozen=True)
class Frame:
    index: int  # increasing from 0 for the life of the Capture
    t: float  # time.monotonic() when it was grabbed
    image: MatLike | None = field(default=None, repr=False)  # BGR uint8, as OpenCV delivers it
    # Or the camera's JPEG bytes, decoded only when a check asks (bgr()); one of the two is set.
    encoded: MatLike | None = field(default=None, repr=False)

    def bgr(self) -> MatLike:
        """The frame as BGR uint8, decoding the JPEG bytes when that is what was kept. Raises
        FrameError when they cannot be decoded."""
        if self.image is not None:
            return self.image
        if self.encoded is None:
            raise FrameError(f"frame {self.index} holds no picture")
        # The same libjpeg decode (imdecode) OpenCV's V4L2 backend applies to an MJPG camera's
        # buffer when it converts every frame itself.
        img = cv2.imdecode(self.encoded, cv2.IMREAD_COLOR)
        if img is None:
            raise FrameError(f"frame {self.index}: the camera's JPEG cannot be decoded")
        return img


def is_jpeg(data: npt.NDArray[Any]) -> bool:
    """Whether a raw buffer from OpenCV is one JPEG picture (SOI marker first)."""
    return data.dtype == np.uint8 and data.size > 4 and int(data.flat[0]) == 0xFF and int(data.flat[1]) == 0xD8


@dataclass(frozen=True)
class SourceSpec:
    kind: Literal["device", "file", "stream"]
    target: int | str

    def describe(self) -> str:
        return {"device": "camera device", "file": "video file", "stream": "stream"}[self.kind] + f" {self.target}"


def parse_source(source: str) -> SourceSpec:
    """camera.source as text: a device index ("0"), a URL (rtsp://, http://...), or a file path."""
    s = source.strip()
    if s.isdigit():
        return SourceSpec("device", int(s))
    if "://" in s:
        return SourceSpec("stream", s)
    if s.startswith("/dev/video"):
        return SourceSpec("device", s)
    return SourceSpec("file", s)


class FrameBuffer:
    """Thread-safe ring of the most recent frames, pruned by age."""

    def __init__(self, seconds: float, fps: float):
        self.seconds = seconds
        self._frames: collections.deque[Frame] = collections.deque(maxlen=max(2, math.ceil(seconds * fps * 2) + 2))
        self._cond = threading.Condition()

    def append(self, frame: Frame) -> None:
        with self._cond:
            self._frames.append(frame)
            limit = frame.t - self.seconds
            while self._frames and self._frames[0].t < limit:
                self._frames.popleft()
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._frames.clear()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)

    def latest(self) -> Frame | None:
        with self._cond:
            return self._frames[-1] if self._frames else None

    def between(self, t0: float, t1: float) -> list[Frame]:
        with self._cond:
            return [f for f in self._frames if t0 <= f.t <= t1]

    def wait_after(self, index: int, timeout: float) -> Frame | None:
        """The newest frame with an index above `index`, waiting up to `timeout` seconds for one."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._frames and self._frames[-1].index > index:
                    return self._frames[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


class Capture:
    """Runs the camera thread. `on_status(status, reason)` is called on every change between
    up and down (from the capture thread; keep it quick)."""

    def __init__(self, cfg: CameraConfig, on_status: Callable[[CameraStatus, str], None] | None = None):
        self.cfg = cfg
        self.source = parse_source(cfg.source)
        self.buffer = FrameBuffer(cfg.buffer_seconds, cfg.fps)
        self._on_status = on_status
        self._status: CameraStatus = "starting"
        self._reason = "not started"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0
        self.heartbeat = time.monotonic()
        self.frames_read = 0
        self.open_attempts = 0
        self.remind_every_s = REMIND_EVERY_S
        self._down_since = self._last_said = time.monotonic()
        # Set once a source gave something other than JPEG in raw mode: it is then decoded by
        # OpenCV as before, for the life of this Capture.
        self._raw_refused = False
        # OpenCV logs an error for every failed open ("Camera index out of range"); our own log
        # lines say it once. 1 = fatal only; at DEBUG its lines are kept (edge_app.nativelog
        # shows them marked as native).
        cv2.setLogLevel(2 if log.isEnabledFor(logging.DEBUG) else 1)

    @property
    def status(self) -> CameraStatus:
        return self._status

    @property
    def reason(self) -> str:
        return self._reason

    def start(self) -> Capture:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.buffer.clear()

    # -- thread ------------------------------------------------------------------------------
    def _set_status(self, status: CameraStatus, reason: str) -> None:
        changed = status != self._status
        was = self._status
        if changed and status == "down":
            # Old frames would describe a scene the camera no longer sees; gone before anyone
            # can read the status as down.
            self.buffer.clear()
        self._status, self._reason = status, reason
        now = time.monotonic()
        if not changed:
            if status == "down" and now - self._last_said >= self.remind_every_s:
                self._last_said = now
                log.warning(
                    "camera still down after %.0f s: %s (%s); still retrying",
                    now - self._down_since,
                    self.source.describe(),
                    reason,
                )
            return
        if status == "up":
            after = f", after {now - self._down_since:.0f} s down" if was == "down" else ""
            log.info("camera up: %s (%s%s)", self.source.describe(), reason, after)
        else:
            self._down_since = self._last_said = now
            log.warning(
                "camera down: %s (%s); retrying with back-off up to %.0f s",
                self.source.describe(),
                reason,
                self.cfg.reconnect_max_seconds,
            )
        if self._on_status is not None:
            try:
                self._on_status(status, reason)
            except Exception:  # a listener must not take the camera thread with it
                log.exception("camera status listener failed")

    def _sleep(self, seconds: float) -> bool:
        """Sleep in slices, feeding the heartbeat; False when asked to stop."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            left = end - self.heartbeat
            if left <= 0:
                return True
            self._stop.wait(min(left, _TICK_S))
        return False

    def _open(self) -> tuple[cv2.VideoCapture | None, str]:
        src = self.source
        self.open_attempts += 1
        if src.kind == "file":
            p = Path(str(src.target))
            if not p.is_file():
                return None, f"video file {p} not found"
            cap = cv2.VideoCapture(str(p))
        elif src.kind == "stream":
            cap = cv2.VideoCapture(
                str(src.target),
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    _STREAM_TIMEOUT_MS,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    _STREAM_TIMEOUT_MS,
                ],
            )
        else:
            cap = cv2.VideoCapture(src.target)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
                cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        if not cap.isOpened():
            cap.release()
            return None, f"cannot open {src.describe()}"
        self._want_raw(cap)
        return cap, "opened"

    def _want_raw(self, cap: cv2.VideoCapture) -> bool:
        """Ask OpenCV for the source's JPEG bytes instead of decoded pictures, where the source
        is MJPG and camera.keep_encoded allows it. True when asked (the first frame tells whether
        it worked: _read checks for a JPEG)."""
        if not self.cfg.keep_encoded or self._raw_refused or int(cap.get(cv2.CAP_PROP_FOURCC)) != _MJPG:
            return False
        if self.source.kind == "device":
            # V4L2: the MJPG buffer as it came from the camera, unconverted.
            return bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))
        # FFmpeg (files, streams): the demuxed packets, each one JPEG picture for MJPG.
        return bool(cap.set(cv2.CAP_PROP_FORMAT, -1))

    def _run(self) -> None:
        retry = _FIRST_RETRY_S
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            cap, why = self._open()
            if cap is None:
                self._set_status("down", why)
                if not self._sleep(retry):
                    break
                retry = min(retry * 2, self.cfg.reconnect_max_seconds)
                continue
            try:
                ended, why = self._read(cap)
            finally:
                cap.release()
            if self._stop.is_set():
                break
            if ended and self.source.kind == "file":
                if self.cfg.loop:
                    continue  # reopen at once: a vanished file shows up as a failed open
                self._set_status("down", "video file ended (camera.loop is false)")
                log.info("video file ended and camera.loop is false: the camera stays down")
                self._sleep(math.inf)
                break
            self._set_status("down", why)
            if not self._sleep(retry):
                break
            retry = min(retry * 2, self.cfg.reconnect_max_seconds)

    def _read(self, cap: cv2.VideoCapture) -> tuple[bool, str]:
        """Read until the source fails. Returns (ended_normally, reason)."""
        is_file = self.source.kind == "file"
        keep_every = 1.0 / self.cfg.fps
        # A file plays at its own rate (or camera.fps when it does not say); a camera paces itself.
        file_fps = cap.get(cv2.CAP_PROP_FPS) if is_file else 0.0
        pace = 1.0 / (file_fps if 1.0 <= file_fps <= 120.0 else self.cfg.fps) if is_file else 0.0
        last_kept = -math.inf
        next_due = time.monotonic()
        got_any = False
        raw: bool | None = None  # whether kept frames are JPEG bytes; known from the first frame
        while not self._stop.is_set():
            if pace:
                wait = next_due - time.monotonic()
                if wait > 0 and not self._sleep(wait):
                    break
                next_due = max(next_due + pace, time.monotonic() - pace)
            # grab() only: a frame the ring buffer does not keep is never decoded or converted.
            ok = cap.grab()
            now = time.monotonic()
            self.heartbeat = now
            if not ok:
                if is_file:
                    return True, "end of video file"
                return False, "no frame from the camera (unplugged or stream ended)"
            # Keep at most camera.fps frames a second (the slack absorbs capture jitter).
            if got_any and now - last_kept < keep_every * 0.75:
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                if is_file:
                    return True, "end of video file"
                return False, "no frame from the camera (unplugged or stream ended)"
            if raw is None:
                raw = image.ndim == 2 and image.shape[0] == 1 and is_jpeg(image)
                if not raw and (image.ndim == 2 and image.shape[0] == 1):
                    # Raw mode gave something that is not a JPEG: decode as before from now on.
                    self._raw_refused = True
                    return False, "the camera's raw frames are not JPEG; reopening it decoded"
            frame = Frame(self._index, now, encoded=image.reshape(-1).copy()) if raw else None
            if not got_any:
                got_any = True
                try:
                    h, w = (frame.bgr() if frame is not None else image).shape[:2]
                except FrameError as exc:
                    return False, str(exc)
                self._set_status("up", f"{w}x{h}")
            last_kept = now
            if frame is None:
                if image.ndim == 2:
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                frame = Frame(self._index, now, image)
            self.buffer.append(frame)
            self._index += 1
            self.frames_read += 1
        return False, "stopped"
