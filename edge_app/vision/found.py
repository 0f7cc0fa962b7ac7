"""What a look at a frame finds, as frozen values: the detected faces, the aligned and gated
crop with its quality, the result of one frame, and the track that follows the shopper from frame
to frame of one check (with the pure rule for whether a face is still the same shopper). The
MediaPipe side that produces them is edge_app.vision.faces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edge_app.core.words import GateReason

# A followed face counts as the same shopper only when the face found in the window is centred
# within this fraction of the last box's side from where the shopper was, and its size changed by
# less than this factor: a shopper moves a few pixels between the frames of a check, while a
# second face that enters the window is off-centre or of another size (then the track is lost
# and the whole frame is searched again).
_FOLLOW_MAX_SHIFT = 0.5
_FOLLOW_MAX_SCALE = 1.4


@dataclass(frozen=True)
class Face:
    """One detection in frame pixel coordinates."""

    box: tuple[float, float, float, float]  # x, y, width, height
    score: float
    # (6, 2): subject's right eye, left eye, nose tip, mouth centre, right ear, left ear.
    keypoints: np.ndarray = field(repr=False)

    @property
    def iod(self) -> float:
        return float(np.linalg.norm(self.keypoints[1] - self.keypoints[0]))

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


@dataclass(frozen=True)
class Quality:
    iod_px: float
    sharpness: float
    yaw_deg: float
    pitch_deg: float
    brightness: float


@dataclass(frozen=True)
class Rejection:
    """One reason the quality gate refused a face: the word the till counts and sends, and the
    sentence a person reads ("blurred (sharpness 9, need 15)")."""

    reason: GateReason
    text: str


@dataclass(frozen=True)
class AlignedFace:
    face: Face
    crop: np.ndarray = field(repr=False)  # RGB uint8, output_size x output_size
    matrix: np.ndarray = field(repr=False)  # 2x3 frame -> crop
    quality: Quality
    rejections: tuple[Rejection, ...]  # why the gate refused it; empty when usable

    @property
    def ok(self) -> bool:
        return not self.rejections

    @property
    def rejected(self) -> tuple[str, ...]:
        """The rejections as sentences, for a person (the photo tools, training's reports)."""
        return tuple(r.text for r in self.rejections)


@dataclass(frozen=True)
class FrameFaces:
    faces: tuple[Face, ...]
    chosen: int | None  # index into faces
    aligned: AlignedFace | None  # the chosen face, aligned and gated
    # Where the shopper was found before the second look (the full-range box on a full search,
    # the track's window box on a followed frame): the box the second look's window is cut around.
    found_box: tuple[float, float, float, float] | None = None
    followed: bool = False  # True: found by following the track, not by searching the frame


@dataclass(frozen=True)
class Track:
    """The shopper between frames of one check: the box the next window is cut around, in the
    terms of a full search's box, so a followed frame's second look sees the face at the same
    scale as after a full search (the same keypoint precision, hence the same crop).

    `face` is the last refined (short-range) face; `ratio` and `offset` relate the full-range box
    to the short-range box (side ratio, and centre offset in units of the short box's side), as
    measured on the frame that was last searched in full."""

    face: Face
    ratio: float
    offset: tuple[float, float]
    followed: int = 0  # frames followed since the last full search

    def window_box(self) -> tuple[float, float, float, float]:
        """The box a full search would most likely have given for the shopper now."""
        side = box_side(self.face.box)
        cx, cy = box_centre(self.face.box)
        big = side * self.ratio
        cx, cy = cx + self.offset[0] * side, cy + self.offset[1] * side
        return (cx - big / 2, cy - big / 2, big, big)


def box_side(box: tuple[float, float, float, float]) -> float:
    return max(box[2], box[3], 8.0)


def box_centre(box: tuple[float, float, float, float]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def start_track(res: FrameFaces) -> Track | None:
    """A track from a fully searched frame's result; None when it has no shopper."""
    if res.chosen is None or res.found_box is None:
        return None
    face = res.faces[res.chosen]
    side = box_side(face.box)
    (fx, fy), (sx, sy) = box_centre(res.found_box), box_centre(face.box)
    return Track(face, box_side(res.found_box) / side, ((fx - sx) / side, (fy - sy) / side))


def same_shopper(last: Face, found: Face) -> bool:
    """Whether a face found in the track's window is the shopper of the last frame (pure)."""
    side = box_side(last.box)
    (lx, ly), (fx, fy) = box_centre(last.box), box_centre(found.box)
    scale = box_side(found.box) / side
    return (
        math.hypot(fx - lx, fy - ly) <= _FOLLOW_MAX_SHIFT * side and 1 / _FOLLOW_MAX_SCALE <= scale <= _FOLLOW_MAX_SCALE
    )
