"""Bench video: the bench's camera, made from photos (the public-domain astronaut photo shipped
with agecheck by default, or a folder of face photos swaying in front of the demo backdrop like a
shopper at the till), and its frames decoded by OpenCV as the camera's are. Frames stay in memory;
only the video file is written, into the bench's temporary folder."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2

from edge_app.devtools.sim import background, make_demo_video, mjpg_writer, paste
from edge_app.vision.faces import read_photos

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class PhotosError(ValueError):
    """The --images folder cannot give the bench a video; the message names the problem."""


def photo_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PhotosError(f"--images {folder}: not a folder")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise PhotosError(f"--images {folder}: no photos ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def photo_video(
    paths: list[Path], out: Path, fps: float, width: int, height: int, seconds_each: float, max_pixels: int
) -> tuple[Path, int]:
    """An MJPG video showing each photo for `seconds_each`, swaying a little in front of the
    demo backdrop, like a shopper at the till. Returns the path and how many photos were used."""
    writer = mjpg_writer(out, fps, width, height)
    bg = background(width, height)
    used = 0
    try:
        for _, rgb, _, error in read_photos(paths, max_pixels):
            if rgb is None:
                print(f"agecheck bench: skipping {error}", file=sys.stderr)
                continue
            h, w = rgb.shape[:2]
            # As tall as the frame (a face photo then shows the head at a till-like size).
            s = min(width * 0.9 / w, height * 0.95 / h)
            img = cv2.resize(
                cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                (max(1, int(w * s)), max(1, int(h * s))),
                interpolation=cv2.INTER_AREA,
            )
            used += 1
            for i in range(max(1, int(round(seconds_each * fps)))):
                frame = bg.copy()
                dx = int(12 * math.sin(2 * math.pi * i / fps / 3.0))
                paste(frame, img, (width - img.shape[1]) // 2 + dx, (height - img.shape[0]) // 2)
                writer.write(frame)
    finally:
        writer.release()
    if not used:
        raise PhotosError("none of the photos could be read")
    return out, used


def make_video(
    images: Path | None, out: Path, fps: float, width: int, height: int, seconds: float, max_pixels: int
) -> tuple[Path, str]:
    """The bench's camera: the astronaut (default) or the photos of a folder, as a looping video."""
    if images is None:
        # The face stays in view the whole clip: every trigger finds the shopper at the till.
        make_demo_video(out, seconds=seconds, fps=fps, face_seconds=seconds, width=width, height=height)
        return out, "the NASA astronaut photo shipped with agecheck (public domain) played as video"
    paths = photo_paths(images)
    _, used = photo_video(paths, out, fps, width, height, max(0.5, seconds / max(1, len(paths))), max_pixels)
    return out, f"{used} photo(s) from {images} played as video"


def video_frames(path: Path, n: int) -> Iterator[Any]:
    """n BGR frames from the video, looping: decoded by OpenCV like the camera's frames."""
    got = 0
    while got < n:
        cap = cv2.VideoCapture(str(path))
        any_frame = False
        try:
            while got < n:
                ok, img = cap.read()
                if not ok:
                    break
                any_frame = True
                got += 1
                yield img
        finally:
            cap.release()
        if not any_frame:
            raise RuntimeError(f"no frame could be read from {path}")
