"""teacher_frames: a prepared dataset's real photos re-aligned at the teacher's framing, row for
row, are the faces `training.teacher embed` read; teacher_tune starts from the head fitted on those
embeddings, and refuses crops of another framing.

Skipped with a reason when the network's files, the CC0 weights or the UTKFace photos are absent
(`scripts/fetch-weights`, run by scripts/test, brings the first two)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.training.test_teacher import FACERES
from tests.training.test_train import ONNX, tiny_dataset


@pytest.fixture(scope="module")
def framed(tmp_path_factory):
    if not FACERES.is_file() or not ONNX.exists():
        pytest.skip(f"faceres-deep ({FACERES}) or the CC0 weights ({ONNX}) not found (run scripts/fetch-weights)")
    from training.experiments.teacher_frames import frame_dataset
    from training.teacher import FaceresTeacher, embed_dataset

    tmp = tmp_path_factory.mktemp("frames")
    data, images, _ = tiny_dataset(tmp, 40, seed=12)
    embed_dataset(FaceresTeacher(FACERES), data, {"utkface": images}, log=lambda *_: None)
    out = frame_dataset(data, {"utkface": images}, tmp / "frames", log=lambda *_: None)
    return data, out, images


def _rows(folder):
    with open(folder / "index.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_framed_rows_are_the_faces_the_teacher_embedded(framed):
    from training.teacher import EMBED_SIZE, EMBEDDINGS_FILE, FaceresTeacher

    data, out, _ = framed
    emb = np.load(data / EMBEDDINGS_FILE)["embedding"].astype(np.float32)
    crops = np.load(out / "crops.npy")
    assert crops.shape == (len(_rows(data)), EMBED_SIZE, EMBED_SIZE, 3)
    listed = [int(r["row"]) for r in _rows(out)]
    # Row numbers, labels and splits are the prepared folder's, kept only where a face was found.
    assert listed == [i for i in range(len(emb)) if np.isfinite(emb[i]).all()] and len(listed) > 20
    by_row = {int(r["row"]): r for r in _rows(data)}
    assert all(by_row[int(r["row"])] == r for r in _rows(out))
    again = FaceresTeacher(FACERES).run(crops[listed[:8]])["embedding"]
    assert np.abs(again - emb[listed[:8]]).max() < 0.05 < np.abs(emb[listed[0]] - emb[listed[1]]).max()
    assert json.loads((out / "dataset.json").read_text())["faces"] == len(listed)


def test_the_tune_starts_from_the_head_on_those_embeddings_and_refuses_other_crops(framed, tmp_path, capsys):
    from training.experiments.teacher_tune import main
    from training.teacher import AGES, load_targets

    data, out, _ = framed
    run = tmp_path / "run"
    common = ["--model", str(FACERES), "--out", str(run), "--size", "224", "--batch", "8", "--head-epochs", "3"]
    assert main([*common, "--data", str(out), "--head-from", str(data), "--epochs", "0"]) == 0
    state = json.loads((run / "state.json").read_text())
    assert [h["stage"] for h in state["history"]] == ["head from embeddings"]
    assert "head epoch 3" in capsys.readouterr().out
    probs = load_targets(run / "targets.npz", len(_rows(data)))
    listed = [int(r["row"]) for r in _rows(out)]
    missing = sorted(set(range(len(probs))) - set(listed))
    assert np.isfinite(probs[listed]).all() and np.allclose(probs[listed].sum(1), 1, atol=1e-2)
    assert np.isnan(probs[missing]).all() and probs.shape[1] == AGES
    # The till's crops of the same rows (at their own size) are not the teacher's framing: named,
    # not trained on.
    till = ["--model", str(FACERES), "--size", "112", "--batch", "8", "--head-epochs", "3", "--epochs", "0"]
    assert main([*till, "--out", str(tmp_path / "wrong"), "--data", str(data), "--head-from", str(data)]) == 2
    assert "embeddings are not these crops'" in capsys.readouterr().err
    # The embeddings were read at the crops' own size; another --size would rescale them first.
    resized = [*till[:2], "--size", "160", *till[4:]]
    assert main([*resized, "--out", str(tmp_path / "resized"), "--data", str(out), "--head-from", str(data)]) == 2
    assert "--size 224" in capsys.readouterr().err


def test_a_second_run_resumes_and_another_folders_crops_are_refused(framed, tmp_path, monkeypatch):
    import shutil

    from training.experiments import teacher_frames
    from training.experiments.teacher_frames import frame_dataset
    from training.teacher import TeacherError, teacher_framed

    data, out, images = framed
    before = (out / "index.csv").read_text()
    aligned = []

    def counted(rows, images, todo):
        for i, crop in teacher_framed(rows, images, todo):
            aligned.append(i)
            yield i, crop

    monkeypatch.setattr(teacher_frames, "teacher_framed", counted)
    frame_dataset(data, {"utkface": images}, out, log=lambda *_: None)
    # Every row was done: no photo is aligned again, and the table is the same.
    assert aligned == [] and (out / "index.csv").read_text() == before
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    with pytest.raises(TeacherError, match="framed from"):
        frame_dataset(copy, {"utkface": images}, out, log=lambda *_: None)


def test_a_folder_inside_the_repository_is_refused(framed, capsys):
    from pathlib import Path

    from training.experiments.teacher_frames import main

    data, _, _ = framed
    inside = Path(__file__).resolve().parents[3] / "frames-here"
    assert main(["--data", str(data), "--images", "utkface=/nowhere", "--out", str(inside)]) == 2
    assert "inside the repository" in capsys.readouterr().err and not inside.exists()
