"""The bench's camera from a folder of photos: real photos become a real MJPG video that OpenCV
plays back (looping), unreadable files are skipped by name, and a folder that cannot give a
video is refused with a message naming it."""

from __future__ import annotations

import cv2
import pytest

from edge_app.devtools.bench.video import PhotosError, photo_paths, photo_video, video_frames
from tests.edge_app.service_util import astronaut_bgr


def test_photos_folder_becomes_a_video_and_bad_files_are_skipped(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.png"), astronaut_bgr())
    (photos / "b.jpg").write_bytes(b"not a picture")
    (photos / "notes.txt").write_text("ignored: not an image suffix")
    video, used = photo_video(photo_paths(photos), tmp_path / "v.avi", 15.0, 640, 480, 0.5, 10**8)
    assert used == 1
    assert "b.jpg" in capsys.readouterr().err
    frames = list(video_frames(video, 10))  # loops the 8-frame clip
    assert len(frames) == 10 and frames[0].shape == (480, 640, 3)


def test_unusable_photo_folders_are_refused_with_a_message(tmp_path):
    with pytest.raises(PhotosError, match="no photos"):
        photo_paths(tmp_path)
    with pytest.raises(PhotosError, match="not a folder"):
        photo_paths(tmp_path / "missing")
    (tmp_path / "b.jpg").write_bytes(b"not a picture")
    with pytest.raises(PhotosError, match="none of the photos"):
        photo_video(photo_paths(tmp_path), tmp_path / "v.avi", 15.0, 640, 480, 0.5, 10**8)
