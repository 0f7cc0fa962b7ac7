"""teacher_tune: the trainable rebuild of faceres-deep is the published network (same embedding on
real faces), and a tiny fine-tuning run checkpoints, resumes and writes targets train can read.

The network's files come from `scripts/fetch-weights` (run by scripts/test); these tests are
skipped with a reason when they or the UTKFace photos are absent."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.helpers import utk_sample
from tests.training.test_teacher import FACERES


@pytest.fixture(scope="module")
def faceres():
    if not FACERES.is_file():
        pytest.skip(f"faceres-deep not found at {FACERES} (run scripts/fetch-weights)")
    return FACERES


def test_the_rebuild_gives_the_published_networks_embedding_on_real_faces(faceres):
    from edge_app.vision.faces import FacePipeline, load_image
    from training.experiments.teacher_tune import build_backbone
    from training.teacher import EMBED_SIZE, FaceresTeacher, teacher_faces_config

    crops = []
    with FacePipeline(teacher_faces_config()) as pipe:
        for path, _age in utk_sample(40, seed=5):
            res = pipe.process(load_image(path)[0])
            if res.aligned is not None:
                crops.append(res.aligned.crop)
            if len(crops) == 8:
                break
    x = np.stack(crops)
    ref = FaceresTeacher(faceres).run(x)["embedding"]
    got = build_backbone(faceres, EMBED_SIZE, EMBED_SIZE).predict(x.astype(np.float32), verbose=0)
    assert got.shape == ref.shape == (8, 1024)
    # The same numbers up to float rounding; embeddings differ between faces by far more.
    assert np.abs(got - ref).max() < 1e-3 < np.abs(ref[0] - ref[1]).max()


def _cache(tmp, n_train=64, n_val=40, size=32):
    tmp.mkdir()
    rng = np.random.default_rng(0)
    n = n_train + n_val
    np.save(tmp / "crops.npy", rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    # Validation holds 20 minors (13-17) and 20 adults, so the gate's figures at 12 minors exist.
    ages = np.concatenate([rng.uniform(10, 60, n_train), np.repeat([15.0, 40.0], n_val // 2)])
    with open(tmp / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "file_name", "age", "split", "source", "gender"])
        for i in range(n):
            w.writerow([i, f"{i}.jpg", f"{ages[i]:.1f}", "train" if i < n_train else "val", "ab"[i % 2], i % 2])
    return tmp, n


def test_a_tiny_run_checkpoints_resumes_and_writes_targets_for_train(faceres, tmp_path, capsys):
    from training.experiments.teacher_tune import main
    from training.teacher import AGES, load_targets

    data, n = _cache(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--model", str(faceres), "--data", str(data), "--out", str(out), "--size", "32", "--batch", "32"]
    assert main([*common, "--epochs", "1"]) == 0
    state = json.loads((out / "state.json").read_text())
    assert [h["stage"] for h in state["history"]] == ["probe", "fine-tune"]
    # Asked for one more epoch, it picks up where it stopped instead of starting again.
    assert main([*common, "--epochs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "resuming after epoch 2" in printed and "epoch 3:" in printed and "epoch 1:" in printed.split("resuming")[0]
    state = json.loads((out / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert all((out / f"epoch{e}.weights.h5").is_file() for e in (1, 2, 3))
    probs = load_targets(out / "targets.npz", n)
    assert probs.shape == (n, AGES) and np.allclose(probs.sum(1), 1, atol=1e-2)
    # Resuming under other options would mix two runs: refused, with the option named.
    changed = [*common[:-4], "--size", "48", "--batch", "32"]
    assert main([*changed, "--epochs", "3"]) == 2
    assert "other options (size)" in capsys.readouterr().err


def test_a_file_that_is_not_the_network_is_named(tmp_path, capsys):
    from training.experiments.teacher_tune import main

    data, _ = _cache(tmp_path / "data")
    bad = tmp_path / "model.json"
    bad.write_text("{}")
    assert main(["--model", str(bad), "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert f"{bad}: not a TF.js graph model" in capsys.readouterr().err
