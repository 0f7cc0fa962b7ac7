"""Face pipeline on real photos: detection, shopper choice, alignment geometry, quality gate,
bad input, and the detection rate on UTKFace."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_app.config import FacesConfig
from edge_app.vision.errors import ImageError
from edge_app.vision.faces import (
    FacePipeline,
    Follower,
    choose_shopper,
    load_image,
    similarity_matrix,
    template_points,
    to_rgb,
)
from edge_app.vision.found import Face, same_shopper
from tests.helpers import astronaut, utk_sample


@pytest.fixture(scope="module")
def pipe():
    with FacePipeline(FacesConfig()) as p:
        yield p


def _warp(img: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float], size: tuple[int, int]):
    m = cv2.getRotationMatrix2D((img.shape[1] / 2, img.shape[0] / 2), angle_deg, scale)
    m[:, 2] += shift
    out = cv2.warpAffine(img, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
    return out, m


def test_finds_the_astronaut(pipe):
    res = pipe.process(astronaut())
    assert len(res.faces) == 1
    assert res.aligned is not None and res.aligned.ok, res.aligned.rejected
    n = FacesConfig().output_size
    assert res.aligned.crop.shape == (n, n, 3) and res.aligned.crop.dtype == np.uint8
    f = res.faces[0]
    # Subject's right eye is on the image's left.
    assert f.keypoints[0, 0] < f.keypoints[1, 0]


@pytest.mark.parametrize("angle, scale, shift", [(15, 0.8, (40, -20)), (-20, 1.2, (-60, 30)), (0, 0.6, (100, 120))])
def test_alignment_puts_eyes_on_template(pipe, angle, scale, shift):
    """On a synthetic similarity warp of a real photo, the eyes land on the template within
    1 px, and the crop is the same as the one from the unwarped photo."""
    img = astronaut()
    warped, m = _warp(img, angle, scale, shift, (640, 560))
    base = pipe.process(img)
    res = pipe.process(warped)
    assert res.aligned is not None
    kp = res.faces[res.chosen].keypoints
    a = res.aligned.matrix
    eyes_in_crop = (a[:, :2] @ kp[:2].T + a[:, 2:]).T
    n = pipe.cfg.output_size
    dst = template_points(n, 0.0)[:2]
    assert np.abs(eyes_in_crop - dst).max() < 1.0, eyes_in_crop - dst
    # Keypoints follow the warp (detector equivariance), within 2% of the inter-ocular distance
    # measured in the original photo.
    expect = (m[:, :2] @ base.faces[0].keypoints[:2].T + m[:, 2:]).T
    assert np.abs(expect - kp[:2]).max() < 0.05 * base.faces[0].iod * scale + 1.5
    # The face itself (centre of the crop) looks the same as in the unwarped photo.
    c = slice(n // 4, 3 * n // 4)
    diff = np.abs(res.aligned.crop[c, c].astype(int) - base.aligned.crop[c, c].astype(int)).mean()
    print(f"crop difference in the face region: {diff:.1f} grey levels")
    assert diff < 12, diff


def test_similarity_matrix_exact_on_exact_points():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (4, 2))
    ang, s, t = math.radians(30), 1.7, np.array([5.0, -3.0])
    rot = s * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    dst = src @ rot.T + t
    m = similarity_matrix(src, dst, np.ones(4))
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], t)


def test_two_faces_chooses_large_central_one(pipe):
    img = astronaut()
    canvas = np.full((720, 1280, 3), 60, np.uint8)
    canvas[150:662, 640:1152] = img  # shopper: nearer the centre, larger
    small = cv2.resize(img, (420, 420), interpolation=cv2.INTER_AREA)
    canvas[0:420, 0:420] = small  # someone queueing behind: smaller, in the corner
    res = pipe.process(canvas)
    assert len(res.faces) == 2
    chosen = res.faces[res.chosen]
    assert chosen.box[0] > 640 and chosen.box[2] > 90


def test_choose_shopper_prefers_central_when_similar_size():
    kp = np.zeros((6, 2))
    left = Face(box=(0, 200, 110, 110), score=0.9, keypoints=kp)
    centre = Face(box=(270, 190, 100, 100), score=0.9, keypoints=kp)
    assert choose_shopper([left, centre], (480, 640, 3)) == 1
    assert choose_shopper([], (480, 640, 3)) is None


def test_tight_crop_found_with_padding(pipe):
    img = astronaut()
    res0 = pipe.process(img)
    x, y, w, h = (int(v) for v in res0.faces[0].box)
    tight = np.ascontiguousarray(img[y + h // 10 : y + h - h // 10, x + w // 10 : x + w - w // 10])
    res = pipe.process(tight)
    assert res.faces, "a face filling the picture must still be found"


def test_quality_gate_names_reasons(pipe):
    img = astronaut()
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    dark = (img * 0.12).astype(np.uint8)
    tiny = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
    tiny = cv2.copyMakeBorder(tiny, 200, 200, 200, 200, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    r = pipe.process(blurred)
    assert r.aligned is not None and any("blurred" in x for x in r.aligned.rejected)
    r = pipe.process(dark)
    assert r.aligned is not None and any("too dark" in x for x in r.aligned.rejected)
    r = pipe.process(tiny)
    if r.aligned is not None:  # the detector may or may not see a 10 px face; the gate must refuse it
        assert any("too small" in x for x in r.aligned.rejected)


def test_deterministic(pipe):
    img = astronaut()
    a, b = pipe.process(img), pipe.process(img)
    assert np.array_equal(a.aligned.crop, b.aligned.crop)


def test_stage_timings_add_up_and_change_nothing(pipe):
    """The bench's per-stage figures come from process() itself: every stage that ran is timed,
    the stages together fit inside the call, and the result is the one without timings."""
    import time

    img = astronaut()
    plain = pipe.process(img)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    timed = pipe.process(img, timings)
    wall_ms = (time.perf_counter() - t0) * 1000
    assert list(timings) == ["detect", "refine", "align"]
    assert all(v > 0 for v in timings.values()), timings
    assert sum(timings.values()) <= wall_ms
    assert timed.chosen == plain.chosen and np.array_equal(timed.aligned.crop, plain.aligned.crop)
    assert timed.aligned.quality == plain.aligned.quality

    empty: dict[str, float] = {}
    res = pipe.process(np.full((240, 320, 3), 128, np.uint8), empty)
    assert res.aligned is None and list(empty) == ["detect"] and empty["detect"] > 0


# --- bad input -------------------------------------------------------------------------------


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("not a picture at all")
    with pytest.raises(ImageError, match="not an image"):
        load_image(tmp_path / "text.jpg")
    big = np.zeros((3000, 3000), np.uint8)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png", max_pixels=4_000_000)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    # A file too big to be a photo of at most max_pixels is refused before it is read.
    (tmp_path / "padded.png").write_bytes(b"\x89PNG" + b"\0" * 2_000_000)
    with pytest.raises(ImageError, match="too big for an image of at most"):
        load_image(tmp_path / "padded.png", max_pixels=1000)


def test_load_image_takes_any_bytes_as_a_name(tmp_path):
    import os

    name = os.path.join(os.fsencode(tmp_path), b"\xff\xfe-photo.png")
    with open(name, "wb") as f:
        f.write(cv2.imencode(".png", cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes())
    rgb, _ = load_image(name)
    assert rgb.shape == (512, 512, 3)
    rgb2, _ = load_image(os.fsdecode(name))  # the str Python makes of it (surrogates)
    assert (rgb == rgb2).all()


def test_grey_and_rgba_are_converted(tmp_path):
    img = astronaut()
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    rgb, notes = load_image(tmp_path / "g.png")
    assert rgb.shape == (512, 512, 3) and "grey-scale" in notes[0]
    rgba = cv2.cvtColor(img, cv2.COLOR_RGB2BGRA)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    rgb, notes = load_image(tmp_path / "a.png")
    assert rgb.shape == (512, 512, 3) and "alpha" in notes[0]
    with pytest.raises(ImageError, match="empty"):
        to_rgb(np.zeros((0, 0, 3), np.uint8))


# --- real faces ------------------------------------------------------------------------------


def test_detection_rate_on_utkface(pipe):
    """The dataset's photos are tight 200x200 crops; the detector (with the padding retry) must
    find a face in more than 97% of them. A seeded sample keeps the test short; the full-set
    figure is printed by `python -m training.prepare`."""
    sample = utk_sample(1500, seed=7)
    found = 0
    for path, _ in sample:
        rgb, _ = load_image(path)
        found += bool(pipe.detect(rgb))
    rate = found / len(sample)
    print(f"\nUTKFace detection rate: {rate:.2%} of {len(sample)} photos")
    assert rate > 0.97


# --- following the shopper between frames (issue 29) -----------------------------------------


def _stage(photo: np.ndarray, x: int, y: int, size: int, canvas: np.ndarray | None = None) -> np.ndarray:
    """A 640x480 RGB frame: the demo backdrop (or `canvas`) with the photo pasted at (x, y) as a
    size x size square, clipped at the frame's edges."""
    from edge_app.devtools.sim import background

    frame = np.ascontiguousarray(background(640, 480)[:, :, ::-1]) if canvas is None else canvas.copy()
    s = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(640, x + size), min(480, y + size)
    frame[y0:y1, x0:x1] = s[y0 - y : y1 - y, x0 - x : x1 - x]
    return frame


def _eye_error(res, truth: np.ndarray, iod: float) -> float:
    """Largest eye-keypoint distance from where the eyes truly are, in inter-ocular distances."""
    return float(np.abs(res.faces[res.chosen].keypoints[:2] - truth).max() / iod)


def _shifted_photos() -> list[np.ndarray]:
    from tests.helpers import need_utkface

    need_utkface()
    photos = [astronaut()]
    for path, _ in utk_sample(40, seed=29):
        rgb, _ = load_image(path)
        photos.append(rgb)
        if len(photos) == 7:
            break
    return photos


def test_a_followed_face_moving_across_frames_keeps_the_alignment_of_a_full_search(pipe):
    """Real faces (the astronaut and UTKFace photos) moving across the frame: after the first
    frame every frame is found by following, and its eyes land where they truly are (the first
    frame's keypoints moved by the shift) as closely as a full search of the same frame does."""

    err_full, err_followed, gap = [], [], []
    for photo in _shifted_photos():
        first = pipe.process(_stage(photo, 150, 80, 280))
        if first.aligned is None:
            continue  # the detector's miss on this photo is test_detection_rate's business
        base = first.faces[first.chosen]
        follower = Follower(pipe, full_every=100)
        for i in range(8):
            shift = np.array([7.0 * i, 3.0 * i])  # a shopper drifting a few pixels a frame
            rgb = _stage(photo, 150 + int(shift[0]), 80 + int(shift[1]), 280)
            got, full = follower.look(rgb), pipe.process(rgb)
            assert got.followed == (i > 0)
            assert got.aligned is not None and full.aligned is not None
            truth = base.keypoints[:2] + shift
            (err_followed if i else err_full).append(_eye_error(got, truth, base.iod))
            if i:
                err_full.append(_eye_error(full, truth, base.iod))
                gap.append(_eye_error(got, full.faces[full.chosen].keypoints[:2], base.iod))
                assert got.aligned.ok == full.aligned.ok, (got.aligned.rejected, full.aligned.rejected)
        assert follower.full_searches == 1 and follower.lost == 0
    print(
        f"\neye error / IOD: full search mean {np.mean(err_full):.3f} max {max(err_full):.3f}; "
        f"followed mean {np.mean(err_followed):.3f} max {max(err_followed):.3f}; "
        f"followed vs full mean {np.mean(gap):.3f}"
    )
    assert len(err_followed) >= 5 * 7
    assert np.mean(err_followed) <= np.mean(err_full) * 1.25 + 0.01
    assert max(err_followed) < 0.12


def test_a_second_face_entering_does_not_take_the_track(pipe):
    """Someone smaller walks in from the side and stops beside the shopper: followed frames stay
    on the shopper, and the scheduled full search sees both faces and still chooses the shopper."""

    shopper = astronaut()
    other = _shifted_photos()[1]
    follower = Follower(pipe, full_every=4)
    for i in range(8):
        frame = _stage(shopper, 120, 60, 400)
        frame = _stage(other, -90 + 32 * i, 30, 90, canvas=frame)  # enters from the left
        res = follower.look(frame)
        assert res.followed == (i % 4 != 0), i
        cx = res.faces[res.chosen].box[0] + res.faces[res.chosen].box[2] / 2
        assert abs(cx - 320) < 40, (i, res.faces[res.chosen].box)  # the shopper, every frame
        if i == 4:
            assert len(res.faces) == 2, "the full search must see the second face"
    assert follower.lost == 0


def test_the_track_is_lost_when_the_shopper_goes_and_found_again(pipe):
    """The shopper leaves (empty till), then comes back elsewhere: the followed look fails, the
    full search runs, finds nobody, and starts a new track when the shopper is back."""
    from edge_app.devtools.sim import background

    empty = np.ascontiguousarray(background(640, 480)[:, :, ::-1])
    face = astronaut()
    frames = [_stage(face, 150 + 8 * i, 90, 280) for i in range(3)] + [empty, empty]
    frames += [_stage(face, 330 + 8 * i, 150, 240) for i in range(3)]
    follower = Follower(pipe, full_every=100)
    got = [follower.look(f) for f in frames]
    assert [r.followed for r in got] == [False, True, True, False, False, False, True, True]
    assert [r.aligned is not None for r in got] == [True] * 3 + [False] * 2 + [True] * 3
    assert follower.lost == 1 and follower.full_searches == 4
    assert got[-1].faces[0].box[0] > 330  # the track followed the shopper to the new place


def test_a_different_face_in_the_window_is_not_the_shopper():
    kp = np.zeros((6, 2))
    last = Face(box=(200, 100, 100, 100), score=0.9, keypoints=kp)
    assert same_shopper(last, Face(box=(215, 95, 105, 100), score=0.9, keypoints=kp))
    assert not same_shopper(last, Face(box=(270, 100, 100, 100), score=0.9, keypoints=kp))  # moved too far
    assert not same_shopper(last, Face(box=(220, 120, 60, 60), score=0.9, keypoints=kp))  # a smaller face


def test_full_every_one_is_the_full_search_of_every_frame(pipe):

    img = astronaut()
    follower = Follower(pipe, full_every=1)
    got = [follower.look(img) for _ in range(3)]
    assert not any(r.followed for r in got) and follower.full_searches == 3
    assert all(np.array_equal(r.aligned.crop, pipe.process(img).aligned.crop) for r in got)
    with pytest.raises(ValueError):
        Follower(pipe, full_every=0)
