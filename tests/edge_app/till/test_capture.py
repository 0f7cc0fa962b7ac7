"""Capture: the ring buffer, a video file played as a camera, and a camera that vanishes and
comes back (status down/up, reconnect with back-off, the thread never dies)."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from edge_app.config import CameraConfig
from edge_app.till.capture import Capture, Frame, FrameBuffer, parse_source
from tests.edge_app.service_util import FPS, astronaut_video, wait_until


def _frame(i: int, t: float) -> Frame:
    return Frame(i, t, np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize(
    "text, kind, target",
    [
        ("0", "device", 0),
        (" 2 ", "device", 2),
        ("/dev/video1", "device", "/dev/video1"),
        ("rtsp://cam.local/stream", "stream", "rtsp://cam.local/stream"),
        ("http://10.0.0.5/mjpg", "stream", "http://10.0.0.5/mjpg"),
        ("demo.avi", "file", "demo.avi"),
    ],
)
def test_parse_source(text, kind, target):
    s = parse_source(text)
    assert (s.kind, s.target) == (kind, target)


def test_ring_buffer_keeps_only_the_last_seconds():
    buf = FrameBuffer(seconds=1.0, fps=10)
    for i in range(40):
        buf.append(_frame(i, 100.0 + i * 0.1))
    ts = [f.t for f in buf.between(0, 1e9)]
    assert ts[-1] == pytest.approx(103.9)
    assert ts[0] >= 103.9 - 1.0 - 1e-9
    assert len(ts) <= 11
    assert [f.index for f in buf.between(103.45, 103.75)] == [35, 36, 37]


def test_wait_after_returns_the_newest_new_frame_or_times_out():
    buf = FrameBuffer(seconds=5, fps=10)
    buf.append(_frame(0, 1.0))
    assert buf.wait_after(0, 0.05) is None

    def later():
        time.sleep(0.1)  # the point: frames that arrive while wait_after is already blocked
        buf.append(_frame(1, 1.1))
        buf.append(_frame(2, 1.2))

    threading.Thread(target=later).start()
    got = buf.wait_after(0, 5)
    assert got is not None and got.index in (1, 2)


def test_video_file_fills_the_buffer_at_the_camera_rate(tmp_path):
    video = astronaut_video(tmp_path / "a.avi", seconds=1.0)
    cap = Capture(CameraConfig(source=str(video), loop=True, fps=FPS, buffer_seconds=1.0)).start()
    try:
        wait_until(lambda: cap.status == "up", 10, "camera up")
        wait_until(lambda: cap.frames_read > 18, 10, "the 15-frame clip to loop")
        frames = cap.buffer.between(0, time.monotonic())
        first = frames[0].bgr()
        assert first.shape == (480, 640, 3) and first.dtype == np.uint8
        # ~buffer_seconds of frames at ~fps (generous: the box is busy)
        assert 8 <= len(frames) <= 17, len(frames)
        assert all(b.t > a.t and b.index > a.index for a, b in zip(frames, frames[1:]))
        assert frames[-1].t - frames[0].t <= 1.0 + 1e-6
    finally:
        cap.stop()


def test_camera_vanishes_and_comes_back(tmp_path):
    video = astronaut_video(tmp_path / "cam.avi", seconds=0.5)
    changes: list[tuple[str, str]] = []
    cap = Capture(
        CameraConfig(source=str(video), loop=True, fps=FPS, reconnect_max_seconds=0.5),
        on_status=lambda s, r: changes.append((s, r)),
    ).start()
    try:
        wait_until(lambda: cap.status == "up", 10, "camera up")
        hidden = video.rename(tmp_path / "unplugged.avi")
        wait_until(lambda: cap.status == "down", 10, "camera down")
        assert "not found" in cap.reason
        assert len(cap.buffer) == 0  # frames of a scene the camera no longer sees are dropped
        beat = cap.heartbeat
        # the thread keeps running while the camera is away
        wait_until(lambda: cap.heartbeat > beat, 10, "a heartbeat while the camera is away")
        hidden.rename(video)
        wait_until(lambda: cap.status == "up", 10, "camera back up")
        n = cap.frames_read
        wait_until(lambda: cap.frames_read > n + 3, 10, "frames again")
    finally:
        cap.stop()
    assert [s for s, _ in changes] == ["up", "down", "up"]


def test_missing_device_is_down_and_retried_without_crashing():
    cap = Capture(CameraConfig(source="/dev/video97", reconnect_max_seconds=0.2)).start()
    try:
        wait_until(lambda: cap.status == "down", 10, "camera down")
        assert "cannot open camera device /dev/video97" in cap.reason
        beat = cap.heartbeat
        wait_until(lambda: cap.heartbeat > beat, 10, "a heartbeat while the device is missing")
    finally:
        cap.stop()


def test_video_without_loop_ends_down(tmp_path):
    video = astronaut_video(tmp_path / "short.avi", seconds=0.4)
    cap = Capture(CameraConfig(source=str(video), loop=False, fps=FPS)).start()
    try:
        wait_until(lambda: cap.status == "down", 10, "end of video")
        assert "camera.loop is false" in cap.reason
    finally:
        cap.stop()


def _capture_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_app.till.capture"]


def test_a_camera_that_stays_down_logs_once_not_per_retry(caplog, capfd):
    """60 failed opens of a camera index that is not there (OpenCV's "Camera index out of
    range"), the retry rate of a minute-long outage at 1 s back-off: one log line, and nothing
    from OpenCV on the process's stderr."""
    caplog.set_level(logging.INFO, logger="edge_app.till.capture")
    cap = Capture(CameraConfig(source="7", reconnect_max_seconds=0.1)).start()
    try:
        wait_until(lambda: cap.open_attempts >= 60, 60, "60 camera retries")
    finally:
        cap.stop()
    lines = _capture_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith("camera down: camera device 7"), lines
    err = capfd.readouterr().err
    assert "Camera index out of range" not in err and "[ERROR" not in err, err


def test_a_long_outage_is_reminded_and_its_end_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge_app.till.capture")
    video = astronaut_video(tmp_path / "cam.avi", seconds=0.5)
    hidden = video.rename(tmp_path / "unplugged.avi")
    cap = Capture(CameraConfig(source=str(video), loop=True, fps=FPS, reconnect_max_seconds=0.1))
    cap.remind_every_s = 1.0
    cap.start()
    try:
        wait_until(lambda: any("still down" in m for m in _capture_lines(caplog)), 10, "a reminder")
        attempts = cap.open_attempts
        hidden.rename(video)
        wait_until(lambda: cap.status == "up", 10, "camera back up")
    finally:
        cap.stop()
    lines = _capture_lines(caplog)
    assert attempts > 5  # many retries behind those few lines
    assert lines[0].startswith("camera down:")
    assert any(m.startswith("camera still down after") for m in lines[1:-1])
    assert "s down)" in lines[-1] and lines[-1].startswith("camera up:")
    assert len(lines) <= 4, lines


@pytest.mark.parametrize("keep_encoded", [True, False])
def test_an_mjpg_source_is_kept_encoded_and_decoded_when_asked(tmp_path, keep_encoded):
    """camera.keep_encoded: the ring buffer holds the video's JPEG bytes (a few tens of kB, not a
    decoded 900 kB picture), and bgr() gives the picture OpenCV's own decoding gives, within JPEG
    decoders' rounding; false keeps decoded pictures as before."""
    import cv2

    video = astronaut_video(tmp_path / "a.avi", seconds=1.0)
    ref = cv2.VideoCapture(str(video))
    decoded = []
    for _ in range(15):
        ok, img = ref.read()
        assert ok
        decoded.append(img)
    ref.release()
    cap = Capture(
        CameraConfig(source=str(video), loop=False, fps=FPS, buffer_seconds=2.0, keep_encoded=keep_encoded)
    ).start()
    try:
        wait_until(lambda: cap.frames_read >= 15, 10, "the clip played")
        frames = cap.buffer.between(0, time.monotonic())[:15]
    finally:
        cap.stop()
    for f in frames:
        if keep_encoded:
            assert f.image is None and f.encoded is not None and f.encoded.nbytes < 200_000
        else:
            assert f.encoded is None and f.image is not None
        got = f.bgr()
        assert got.shape == (480, 640, 3)
        # Frames are matched by content: on a busy machine the capture may skip one.
        assert min(np.abs(got.astype(int) - d.astype(int)).mean() for d in decoded) < 2.0


def test_a_damaged_jpeg_is_a_frame_error():
    from edge_app.till.capture import FrameError

    f = Frame(3, 1.0, encoded=np.frombuffer(b"\xff\xd8\xff\xe0 not a picture", np.uint8))
    with pytest.raises(FrameError, match="frame 3"):
        f.bgr()
