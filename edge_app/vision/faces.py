"""Face pipeline shared by the till and the training code: load/validate an image, detect faces
with MediaPipe (models bundled in the wheel), choose the shopper, similarity-align to the
canonical template, and measure quality for the gate. The values it returns are in
edge_app.vision.found; the MediaPipe import in edge_app.vision.mediapipe_import.

The training code calls exactly this module, so the model learns on the crops the till makes.
"""

from __future__ import annotations

import io
import math
import os
import stat
import threading
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import FacesConfig
from edge_app.core.words import GateReason
from edge_app.vision.errors import ImageError
from edge_app.vision.found import (
    AlignedFace,
    Face,
    FrameFaces,
    Quality,
    Rejection,
    Track,
    box_centre,
    box_side,
    same_shopper,
    start_track,
)
from edge_app.vision.mediapipe_import import import_mediapipe

# Canonical template: where the detector's keypoints (subject's right eye, left eye, nose tip,
# mouth centre) land in the aligned crop, as fractions of its side at margin 0. Fitted as the
# symmetrised median of MediaPipe's keypoints on 400 UTKFace photos, so the crop reproduces the
# dlib-chip framing the pretrained age net was trained on (a tighter crop costs it accuracy).
TEMPLATE_VERSION = "mp-utk-v3"
TEMPLATE = np.array([[0.302, 0.309], [0.698, 0.309], [0.500, 0.537], [0.500, 0.727]], dtype=np.float64)
# The eyes set the geometry (they land on the template within a fraction of a pixel); nose and
# mouth carry a small weight that only steadies the fit when an eye keypoint is noisy. Measured
# with the pretrained net on 1,500 validation faces: MAE 4.88 with these weights, 4.90 with
# nose/mouth at 0.5 and 4.93 with all four equal.
_TEMPLATE_WEIGHTS = np.array([1.0, 1.0, 0.05, 0.05])
# Tight photos (a face that fills the picture) are retried with this much border on each side.
_RETRY_PAD = 0.3
# The short-range detector sees a 128x128 picture, so keypoints of a face that is small in a
# camera frame are coarse (several pixels of jitter), and the full-range one misses faces that
# fill the picture. So the frame is searched with the configured model, and the chosen face's
# keypoints always come from a second, short-range look at a window of _REFINE_WINDOW x its box:
# the same framing for a till frame and a training photo.
_REFINE_WINDOW = 2.2


def display_name(path: str | bytes | Path) -> str:
    """A file name that can always be printed: bytes that are not UTF-8 (kept by Python as
    surrogates) are shown as \\x escapes instead of making print() raise."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_image(path: str | bytes | Path, max_pixels: int = 40_000_000) -> tuple[np.ndarray, list[str]]:
    """Read a photo as RGB uint8. Returns the image and notes about conversions made; raises
    ImageError naming the problem for anything unusable.

    The bytes are read by Python and decoded from memory (cv2.imdecode), never by handing the
    path to OpenCV: cv2.imread crashed the whole process on a file name that is not valid UTF-8.
    The pixel count is read from the header first, so memory stays bounded by max_pixels."""
    name = display_name(path)
    p = Path(os.fsdecode(path))
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(f"{name}: file does not exist") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied (cannot look at the file)") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{name}: not a file")
    if st.st_size == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    # No compressed photo of max_pixels is bigger than raw 16-bit RGBA of that size.
    max_bytes = max_pixels * 8 + (1 << 20)
    if st.st_size > max_bytes:
        raise ImageError(
            f"{name}: file is {st.st_size / 1e6:.0f} MB, too big for an image of at most "
            f"{max_pixels / 1e6:.0f} MP (faces.max_image_pixels)"
        )
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except PermissionError:
        raise ImageError(f"{name}: permission denied (cannot read the file)") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror})") from None
    # The header first, so a huge image is refused before it is decoded into memory. Pillow is
    # deferred: only photos read from files (dev tools, training) need it, never the camera's frames.
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning; the limit that applies is ours, checked just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (format not recognised)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: cannot read image ({exc})") from None
    if w * h > max_pixels:
        raise ImageError(f"{name}: image too large ({w}x{h} = {w * h / 1e6:.0f} MP, limit {max_pixels / 1e6:.0f} MP)")
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    del data
    if raw is None:
        raise ImageError(f"{name}: not a readable image (decoding failed)")
    return to_rgb(raw, name)


def read_photos(paths, max_pixels: int = 40_000_000):
    """Each photo in turn as (name, rgb, notes, error); name is printable whatever bytes the
    file name holds. A bad photo yields its error message instead of an image and the loop goes
    on, so one broken file never stops a batch."""
    for path in paths:
        name = display_name(path)
        try:
            rgb, notes = load_image(path, max_pixels)
        except ImageError as exc:
            yield name, None, [], str(exc)
            continue
        yield name, rgb, notes, None


def to_rgb(raw: np.ndarray, name: str = "image") -> tuple[np.ndarray, list[str]]:
    """Normalise an OpenCV (BGR order) array of any common layout to RGB uint8."""
    notes: list[str] = []
    if raw.size == 0 or min(raw.shape[:2]) < 1:
        raise ImageError(f"{name}: image is empty (0 pixels)")
    if min(raw.shape[:2]) < 16:
        raise ImageError(f"{name}: image too small ({raw.shape[1]}x{raw.shape[0]}), need at least 16x16")
    if raw.dtype == np.uint16:
        raw = (raw / 257).astype(np.uint8)
        notes.append("16-bit image converted to 8-bit")
    elif raw.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {raw.dtype}")
    if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 1):
        notes.append("grey-scale image converted to RGB")
        return cv2.cvtColor(raw.reshape(raw.shape[:2]), cv2.COLOR_GRAY2RGB), notes
    if raw.ndim == 3 and raw.shape[2] == 4:
        notes.append("4-channel image: alpha channel dropped")
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB), notes
    if raw.ndim == 3 and raw.shape[2] == 3:
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB), notes
    raise ImageError(f"{name}: unsupported image layout {raw.shape}")


def choose_shopper(faces: tuple[Face, ...] | list[Face], frame_shape: tuple[int, ...]) -> int | None:
    """Index of the shopper: the largest face, discounted by its distance from the frame centre
    (someone queueing behind is smaller and off-centre)."""
    if not faces:
        return None
    h, w = frame_shape[:2]
    diag = math.hypot(w, h)

    def score(f: Face) -> float:
        cx, cy = f.box[0] + f.box[2] / 2, f.box[1] + f.box[3] / 2
        off = math.hypot(cx - w / 2, cy - h / 2) / (diag / 2)  # 0 centre .. 1 corner
        return f.area * (1.0 - 0.5 * off)

    return max(range(len(faces)), key=lambda i: score(faces[i]))


def template_points(output_size: int, margin: float) -> np.ndarray:
    """Template keypoints in crop pixels; margin > 0 shows more around the face."""
    return (0.5 + (TEMPLATE - 0.5) / (1.0 + margin)) * output_size


def similarity_matrix(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation) mapping src to
    dst, as a 2x3 matrix. Closed form, deterministic."""
    w = weights / weights.sum()
    mu_s = (src * w[:, None]).sum(0)
    mu_d = (dst * w[:, None]).sum(0)
    s = src - mu_s
    d = dst - mu_d
    # For a similarity [a -b; b a]: minimise sum w |A s - d|^2.
    denom = (w * (s**2).sum(1)).sum()
    a = (w * (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1])).sum() / denom
    b = (w * (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])).sum() / denom
    rot = np.array([[a, -b], [b, a]])
    t = mu_d - rot @ mu_s
    return np.hstack([rot, t[:, None]])


def estimate_pose(kp: np.ndarray) -> tuple[float, float]:
    """Rough yaw and pitch in degrees from the six detector keypoints: enough for a gate that
    refuses profile and strongly tilted faces, not a head-pose estimator."""
    reye, leye, nose, mouth, rear, lear = kp
    d_r = float(np.linalg.norm(nose - rear))
    d_l = float(np.linalg.norm(nose - lear))
    yaw = math.degrees(math.asin(float(np.clip((d_r - d_l) / max(d_r + d_l, 1e-6) * 1.6, -1, 1))))
    eye_mid = (reye + leye) / 2
    axis = mouth - eye_mid
    length = float(np.linalg.norm(axis))
    if length < 1e-6:
        return yaw, 0.0
    ratio = float(np.dot(nose - eye_mid, axis) / length**2)
    frontal = (TEMPLATE[2, 1] - TEMPLATE[0, 1]) / (TEMPLATE[3, 1] - TEMPLATE[0, 1])
    pitch = math.degrees(math.asin(float(np.clip((ratio - frontal) * 2.5, -1, 1))))
    return yaw, pitch


def measure_quality(face: Face, crop: np.ndarray) -> Quality:
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    # Centre of the crop only, so background texture does not count as sharp face detail.
    n = grey.shape[0]
    c = grey[n // 5 : n - n // 5, n // 5 : n - n // 5]
    sharp = float(cv2.Laplacian(c, cv2.CV_64F).var())
    yaw, pitch = estimate_pose(face.keypoints)
    return Quality(
        iod_px=round(face.iod, 2),
        sharpness=round(sharp, 2),
        yaw_deg=round(yaw, 1),
        pitch_deg=round(pitch, 1),
        brightness=round(float(c.mean()), 1),
    )


def gate(q: Quality, cfg: FacesConfig) -> tuple[Rejection, ...]:
    checks = (
        (q.iod_px < cfg.min_iod_px, GateReason.TOO_SMALL, f"eyes {q.iod_px:.0f} px apart, need {cfg.min_iod_px:.0f}"),
        (
            q.sharpness < cfg.min_sharpness,
            GateReason.BLURRED,
            f"sharpness {q.sharpness:.0f}, need {cfg.min_sharpness:.0f}",
        ),
        (abs(q.yaw_deg) > cfg.max_yaw_deg, GateReason.TURNED, f"yaw {q.yaw_deg:.0f} deg, limit {cfg.max_yaw_deg:.0f}"),
        (
            abs(q.pitch_deg) > cfg.max_pitch_deg,
            GateReason.TILTED,
            f"pitch {q.pitch_deg:.0f} deg, limit {cfg.max_pitch_deg:.0f}",
        ),
        (
            q.brightness < cfg.min_brightness,
            GateReason.TOO_DARK,
            f"brightness {q.brightness:.0f}, need {cfg.min_brightness:.0f}",
        ),
        (
            q.brightness > cfg.max_brightness,
            GateReason.TOO_BRIGHT,
            f"brightness {q.brightness:.0f}, limit {cfg.max_brightness:.0f}",
        ),
    )
    return tuple(Rejection(reason, f"{reason} ({measured})") for failed, reason, measured in checks if failed)


class FacePipeline:
    """Detector loaded once; call from one worker thread at a time (a lock enforces it, since
    MediaPipe graphs are not re-entrant)."""

    def __init__(self, cfg: FacesConfig):
        mp = import_mediapipe()  # heavy import, kept off module import time

        self.cfg = cfg
        fd = mp.solutions.face_detection.FaceDetection
        self._short = fd(model_selection=0, min_detection_confidence=cfg.min_confidence)
        self._full = (
            fd(model_selection=1, min_detection_confidence=cfg.min_confidence) if cfg.detector == "full" else None
        )
        self._lock = threading.Lock()
        self._dst = template_points(cfg.output_size, cfg.margin)

    def close(self) -> None:
        self._short.close()
        if self._full is not None:
            self._full.close()

    def __enter__(self) -> FacePipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, rgb: np.ndarray, pad: int, full: bool = False) -> list[Face]:
        img = rgb
        if pad:
            img = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        detector = self._full if full else self._short
        assert detector is not None  # full=True only when the full-range detector is loaded
        with self._lock:
            res = detector.process(np.ascontiguousarray(img))
        out: list[Face] = []
        h, w = img.shape[:2]
        for det in res.detections or []:
            bb = det.location_data.relative_bounding_box
            kp = np.array([[k.x * w - pad, k.y * h - pad] for k in det.location_data.relative_keypoints])
            out.append(
                Face(
                    box=(bb.xmin * w - pad, bb.ymin * h - pad, bb.width * w, bb.height * h),
                    score=float(det.score[0]),
                    keypoints=kp,
                )
            )
        return out

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB frame. A face that fills the picture is found by retrying with a
        border around it."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ImageError(f"expected an RGB uint8 image, got shape {rgb.shape} {rgb.dtype}")
        faces = self._run(rgb, 0, full=True) if self._full is not None else []
        if not faces:
            faces = self._run(rgb, 0)
        if not faces:
            faces = self._run(rgb, int(_RETRY_PAD * max(rgb.shape[:2])))
        return faces

    def _look_around(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> Face | None:
        """The face nearest the centre of a short-range look at a window of _REFINE_WINDOW x the
        box, in frame pixels; None when that look finds nothing."""
        side = box_side(box)
        cx, cy = box_centre(box)
        half = int(round(side * _REFINE_WINDOW / 2))
        x0, y0 = int(round(cx)) - half, int(round(cy)) - half
        h, w = rgb.shape[:2]
        # Out-of-frame parts of the window are black, as in the padded retry.
        window = np.zeros((2 * half, 2 * half, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + 2 * half), min(h, y0 + 2 * half)
        if sx1 <= sx0 or sy1 <= sy0:
            return None
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        found = self._run(window, 0)
        if not found:
            return None
        best = min(found, key=lambda f: math.hypot(f.box[0] + f.box[2] / 2 - half, f.box[1] + f.box[3] / 2 - half))
        off = np.array([x0, y0], float)
        return Face(
            box=(best.box[0] + x0, best.box[1] + y0, best.box[2], best.box[3]),
            score=best.score,
            keypoints=best.keypoints + off,
        )

    def refine(self, rgb: np.ndarray, face: Face) -> Face:
        """Look again, short-range, at a window around the face so its keypoints are as
        precise as on a close-up photo. Returns the face unchanged when the second look finds
        nothing."""
        return self._look_around(rgb, face.box) or face

    def follow(
        self, rgb: np.ndarray, track: Track, timings: dict[str, float] | None = None
    ) -> tuple[FrameFaces, Track] | None:
        """The shopper of `track` in a new frame, by one short-range look at a window around
        where they were (the same look a full search ends with, without the full-range search
        before it); aligned and gated as in `process`. None when the track is lost: nothing in
        the window, or a face that is not the same shopper (`same_shopper`).

        `timings` gets "follow" (the look) and "align", like `process`'s stages."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ImageError(f"expected an RGB uint8 image, got shape {rgb.shape} {rgb.dtype}")
        lap = _Laps(timings)
        window = track.window_box()
        face = self._look_around(rgb, window)
        lap("follow")
        if face is None or not same_shopper(track.face, face):
            return None
        aligned = self.align_and_gate(rgb, face)
        lap("align")
        res = FrameFaces(faces=(face,), chosen=0, aligned=aligned, found_box=window, followed=True)
        return res, Track(face, track.ratio, track.offset, track.followed + 1)

    def align(self, rgb: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
        """Aligned crop and the 2x3 frame->crop matrix."""
        m = similarity_matrix(face.keypoints[:4], self._dst, _TEMPLATE_WEIGHTS)
        n = self.cfg.output_size
        src, warp = rgb, m
        scale = math.hypot(m[0, 0], m[1, 0])
        if scale < 0.8:
            # A plain bilinear warp aliases when it shrinks a lot; shrink the face region with
            # area averaging first, so a 1080p frame and a 200 px photo give the same crop.
            inv = cv2.invertAffineTransform(m)
            corners = inv[:, :2] @ np.array([[0, 0], [n, 0], [0, n], [n, n]], float).T + inv[:, 2:]
            h, w = rgb.shape[:2]
            x0, y0 = (max(0, int(math.floor(v)) - 2) for v in corners.min(1))
            x1, y1 = min(w, int(math.ceil(corners[0].max())) + 2), min(h, int(math.ceil(corners[1].max())) + 2)
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                roi = rgb[y0:y1, x0:x1]
                size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
                src = cv2.resize(roi, size, interpolation=cv2.INTER_AREA)
                sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
                warp = m.copy()
                warp[:, 0] /= sx
                warp[:, 1] /= sy
                warp[:, 2] = m[:, 2] + m[:, :2] @ np.array([x0, y0], float)
        crop = cv2.warpAffine(src, warp, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return crop, m

    def align_and_gate(self, rgb: np.ndarray, face: Face) -> AlignedFace:
        crop, m = self.align(rgb, face)
        q = measure_quality(face, crop)
        return AlignedFace(face=face, crop=crop, matrix=m, quality=q, rejections=gate(q, self.cfg))

    def process(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> FrameFaces:
        """The whole face path for one RGB frame: detect, choose the shopper, refine, align, gate.

        `timings`, when given, is filled with the wall time (ms) of each stage that ran:
        "detect" (all faces and the choice of shopper), "refine" and "align" (align + gate); a
        frame without a face has only "detect". The result is the same with or without it."""
        lap = _Laps(timings)
        faces = tuple(self.detect(rgb))
        idx = choose_shopper(faces, rgb.shape)
        lap("detect")
        if idx is None:
            return FrameFaces(faces=faces, chosen=None, aligned=None)
        found = faces[idx].box
        faces = faces[:idx] + (self.refine(rgb, faces[idx]),) + faces[idx + 1 :]
        lap("refine")
        aligned = self.align_and_gate(rgb, faces[idx])
        lap("align")
        return FrameFaces(faces=faces, chosen=idx, aligned=aligned, found_box=found)


class Follower:
    """The face path for the frames of one check, in the order they are processed: the first
    frame is searched in full (`FacePipeline.process`, exactly as a one-frame check or training
    does), later ones follow the shopper (`FacePipeline.follow`) and the whole frame is searched
    again when the track is lost or after `full_every - 1` followed frames (1: every frame is
    searched in full, the path before following existed). One Follower per check, used from one
    thread at a time."""

    def __init__(self, pipeline: FacePipeline, full_every: int):
        if full_every < 1:
            raise ValueError(f"full_every must be at least 1, got {full_every}")
        self.pipeline = pipeline
        self.full_every = full_every
        self.track: Track | None = None
        self.full_searches = 0
        self.lost = 0  # tracks lost (a followed look that did not find the shopper)

    def look(self, rgb: np.ndarray, timings: dict[str, float] | None = None) -> FrameFaces:
        t = self.track
        if t is not None and t.followed + 1 < self.full_every:
            got = self.pipeline.follow(rgb, t, timings)
            if got is not None:
                res, self.track = got
                return res
            self.lost += 1
            if timings is not None:
                # The failed look is part of this frame's cost; the full search below adds its own.
                timings["lost"] = timings.pop("follow", 0.0)
        res = self.pipeline.process(rgb, timings)
        self.full_searches += 1
        self.track = start_track(res)
        return res


class _Laps:
    """Stage clock for FacePipeline.process: each call records the time since the previous one
    under a stage name; it reads no clock at all when nobody asked for timings."""

    def __init__(self, into: dict[str, float] | None):
        self._into = into
        self._last = time.perf_counter() if into is not None else 0.0

    def __call__(self, stage: str) -> None:
        if self._into is None:
            return
        now = time.perf_counter()
        self._into[stage] = (now - self._last) * 1000
        self._last = now
