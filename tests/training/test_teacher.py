"""teacher: faceres-deep read from its npm package's TF.js files behaves as the published network
on real faces; its weights reader, the head fitted on embeddings (leave-one-out respected) and the
distillation term of train's loss.

The network's files come from `scripts/fetch-weights` (run by scripts/test); the real-face check
is skipped with a reason when they or the UTKFace photos are absent."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import utk_sample

FACERES = (
    Path(os.environ.get("AGECHECK_CACHE", Path.home() / ".cache" / "agecheck"))
    / "weights"
    / "human-models-3.0.4"
    / "faceres-deep.json"
)


@pytest.fixture(scope="module")
def teacher_and_faces():
    if not FACERES.is_file():
        pytest.skip(f"faceres-deep not found at {FACERES} (run scripts/fetch-weights)")
    from edge_app.vision.faces import FacePipeline, load_image
    from training.teacher import FaceresTeacher, teacher_faces_config

    sample = utk_sample(300, seed=11)
    with open(sample[0][0].parent.parent / "labels.csv", newline="") as fh:
        sex = {r["file_name"]: r["gender"] for r in csv.DictReader(fh)}
    crops, ages, males = [], [], []
    with FacePipeline(teacher_faces_config()) as pipe:
        for path, age in sample[:60]:
            res = pipe.process(load_image(path)[0])
            if res.aligned is not None and sex.get(path.name) in ("0", "1"):
                crops.append(res.aligned.crop)
                ages.append(age)
                males.append(sex[path.name] == "0")
    return FaceresTeacher(FACERES), np.stack(crops), np.array(ages), np.array(males)


def test_import_reads_real_faces_as_the_published_network(teacher_and_faces):
    """Its own IMDB-Wiki age and sex heads, run through our import on UTKFace photos framed for
    it: right about sex and age, as the network is; the same faces fed as RGB in [0, 1] (the
    wrong preprocessing) are not, so the check can tell a working import from a broken one."""
    from training.teacher import EMBED_SIZE, FaceresTeacher

    teacher, crops, ages, males = teacher_and_faces
    assert crops.shape[1:] == (EMBED_SIZE, EMBED_SIZE, 3) and len(crops) >= 50
    out = teacher.run(crops)
    assert out["embedding"].shape == (len(crops), 1024)
    sex_ok = np.mean((out["own_male"][:, 0] > 0.5) == males)
    mae = np.abs(FaceresTeacher.own_age(out["own_age"]) - ages).mean()
    assert sex_ok >= 0.85, sex_ok
    assert mae <= 9.0, mae
    wrong = teacher._fn(__import__("tensorflow").constant(crops.astype(np.float32) / 255.0))
    wrong_mae = np.abs(FaceresTeacher.own_age(wrong[1].numpy()) - ages).mean()
    assert wrong_mae > mae + 3, (wrong_mae, mae)


def test_weights_reader_unpacks_float16_and_uint8_shards(tmp_path):
    from training.teacher import TeacherError, read_weights

    a = np.array([[0.5, -1.25], [2.0, 3.0]], np.float16)
    q = np.array([0, 128, 255], np.uint8)
    (tmp_path / "w.bin").write_bytes(a.tobytes() + q.tobytes())
    manifest = [
        {
            "paths": ["w.bin"],
            "weights": [
                {"name": "a", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "float16"}},
                {
                    "name": "q",
                    "shape": [3],
                    "dtype": "float32",
                    "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0},
                },
            ],
        }
    ]
    w = read_weights(tmp_path / "model.json", manifest)
    assert np.array_equal(w["a"], a.astype(np.float32))
    assert np.allclose(w["q"], [-1.0, 63.0, 126.5])
    manifest[0]["weights"].pop()
    with pytest.raises(TeacherError, match="bytes"):
        read_weights(tmp_path / "model.json", manifest)


def test_teacher_refuses_a_file_that_is_not_a_graph_model(tmp_path):
    from training.teacher import FaceresTeacher, TeacherError

    bad = tmp_path / "model.json"
    bad.write_text(json.dumps({"format": "layers-model"}))
    with pytest.raises(TeacherError, match="not a TF.js graph model"):
        FaceresTeacher(bad)


def _fake_dataset(tmp_path: Path, n: int = 600) -> Path:
    """A dataset folder with index.csv and embeddings where age is written along one direction."""
    from training.teacher import EMBEDDINGS_FILE

    rng = np.random.default_rng(0)
    ages = rng.uniform(5, 70, n)
    emb = (np.outer((ages - 35) / 15, rng.normal(0, 1, 1024)) + rng.normal(0, 0.3, (n, 1024))).astype(np.float32)
    emb[5] = np.nan  # a face the teacher's own pass did not find
    sources = np.array(["a", "b", "c"])[np.arange(n) % 3]
    splits = np.array(["train"] * 4 + ["val"])[np.arange(n) % 5]
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "file_name", "age", "split", "source"])
        for i in range(n):
            w.writerow([i, f"{i}.jpg", f"{ages[i]:.1f}", splits[i], sources[i]])
    np.savez(tmp_path / EMBEDDINGS_FILE, embedding=emb.astype(np.float16), done=np.ones(n, bool))
    return tmp_path


def test_head_learns_age_from_embeddings_and_leaves_a_source_out(tmp_path):
    from training.teacher import fit_head, load_targets

    data = _fake_dataset(tmp_path)
    info = fit_head(data, tmp_path / "t.npz", leave_out="c", epochs=15, log=lambda *_: None)
    assert set(info["history"][-1]["val_mae"]) == {"a", "b"}  # "c" is never seen, not even to choose
    assert info["val_worst_mae"] < 8.0
    probs = load_targets(tmp_path / "t.npz", 600)
    assert np.isnan(probs[5]).all() and np.isfinite(probs[6]).all()
    assert np.allclose(probs[6].sum(), 1.0, atol=1e-2)


def test_targets_of_another_dataset_are_refused(tmp_path):
    from training.teacher import TeacherError, fit_head, load_targets

    data = _fake_dataset(tmp_path)
    fit_head(data, tmp_path / "t.npz", epochs=1, log=lambda *_: None)
    with pytest.raises(TeacherError, match="600 rows, the dataset 599"):
        load_targets(tmp_path / "t.npz", 599)


def test_distillation_moves_the_target_towards_the_teacher():
    import tensorflow as tf

    from training.train import AGES, make_loss

    teacher = np.full((1, AGES), 1e-6, np.float32)
    teacher[0, 30] = 1.0
    teacher /= teacher.sum()
    y = np.concatenate([[[22.0, -1.0]], teacher], axis=1)
    no_teacher = np.concatenate([[[22.0, -1.0]], np.full((1, AGES), np.nan, np.float32)], axis=1)

    def peaked(age):
        p = np.full((1, AGES), 1e-4, np.float32)
        p[0, age] = 1.0
        return tf.constant(p / p.sum())

    plain = make_loss(1.5, 0.0, 1.0, 0.0)
    distil = make_loss(1.5, 0.0, 1.0, 0.0, distil=0.5)
    # With the teacher, a prediction at its age (30) costs less than without it; a row the
    # teacher has no target for is scored on its label alone.
    assert float(distil(tf.constant(y), peaked(30))[0]) < float(plain(tf.constant(y[:, :2]), peaked(30))[0])
    assert np.isclose(
        float(distil(tf.constant(no_teacher), peaked(22))[0]),
        float(plain(tf.constant(y[:, :2]), peaked(22))[0]),
        rtol=1e-4,
    )


def test_the_head_reads_raw_embeddings_once_its_standardisation_is_folded_in(tmp_path):
    from training.teacher import EMBEDDINGS_FILE, train_head

    data = _fake_dataset(tmp_path)
    head = train_head(data, epochs=2, log=lambda *_: None)
    emb = np.load(data / EMBEDDINGS_FILE)["embedding"].astype(np.float32)
    ok, x = head.inputs(emb)
    want = head.model.predict(x[ok][:50], verbose=0)
    w1, b1, w2, b2 = head.on_raw_embeddings()
    hidden = np.maximum(emb[ok][:50] @ w1 + b1, 0)
    logits = hidden @ w2 + b2
    got = np.exp(logits - logits.max(1, keepdims=True))
    got /= got.sum(1, keepdims=True)
    assert np.abs(got - want).max() < 1e-4
    # The standardisation is not the identity here, so the fold is doing the work.
    assert np.abs(head.scale - 1).max() > 0.1 and np.abs(head.mean).max() > 0.1


@pytest.fixture(scope="module")
def real_embeddings(teacher_and_faces, tmp_path_factory):
    """The real faces' embeddings as a prepared folder (every third face in validation), with the
    network's own head's distributions (ages 0..100) from `own_head_weights`."""
    from training.teacher import EMBEDDINGS_FILE, own_head_weights

    teacher, crops, ages, _ = teacher_and_faces
    out = teacher.run(crops)
    start = own_head_weights(FACERES)
    w1, b1, w2, b2 = start
    logits = np.maximum(out["embedding"] @ w1 + b1, 0) @ w2 + b2
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    folder = tmp_path_factory.mktemp("real-embeddings")
    with open(folder / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "file_name", "age", "split", "source"])
        for i, age in enumerate(ages):
            w.writerow([i, f"{i}.jpg", age, "val" if i % 3 == 0 else "train", "utkface"])
    np.savez(folder / EMBEDDINGS_FILE, embedding=out["embedding"], done=np.ones(len(ages), bool))
    return folder, out, start, probs


def _relabel(folder: Path, to: Path, train_age: float) -> Path:
    """A copy of `folder` whose training faces are all labelled `train_age`."""
    import shutil

    to.mkdir()
    shutil.copy(folder / "teacher-embeddings.npz", to)
    with open(folder / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(to / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "age": train_age if r["split"] == "train" else r["age"]})
    return to


def test_the_own_head_start_is_the_networks_own_age_head_on_real_faces(real_embeddings):
    """`own_head_weights` on the raw embeddings of real faces gives the network's own IMDB-Wiki
    age distribution (ages 1..100, almost nothing at 0); and a head started from it (standardised
    inputs, the standardisation folded into the start) reads the same before any training, so
    `fit --own-head` begins where the published head is."""
    from training.teacher import train_head

    folder, out, start, probs = real_embeddings
    assert probs.shape == (len(out["embedding"]), 101)
    assert probs[:, 0].max() < 1e-2
    published = probs[:, 1:] / probs[:, 1:].sum(1, keepdims=True)
    assert np.abs(published - out["own_age"]).max() < 1e-4
    head = train_head(folder, epochs=0, log=lambda *_: None, start=start)
    ok, x = head.inputs(out["embedding"])
    assert ok.all()
    # Not the identity: without the fold the head would read these inputs differently.
    assert np.abs(head.scale - 1).max() > 0.1
    assert np.abs(head.model.predict(x, verbose=0) - probs).max() < 1e-3
    assert head.info["epoch"] == 0


def test_a_started_head_is_kept_when_training_only_makes_it_worse(real_embeddings, tmp_path):
    """Training faces all labelled 90 pull the head away from the validation faces' ages: the
    start (epoch 0) stays the chosen head, unchanged; with true labels training is taken."""
    from training.teacher import train_head

    folder, out, start, probs = real_embeddings
    wrong = _relabel(folder, tmp_path / "wrong", 90.0)
    head = train_head(wrong, epochs=3, log=lambda *_: None, start=start)
    assert head.info["epoch"] == 0
    assert [h["epoch"] for h in head.info["history"]] == [0, 1, 2, 3]
    _, x = head.inputs(out["embedding"])
    assert np.abs(head.model.predict(x, verbose=0) - probs).max() < 1e-3
    moved = head.info["history"][3]["val_mae"]["utkface"]
    assert moved > head.info["val_worst_mae"]  # training really did move it, for the worse


def test_fit_cli_starts_from_the_own_head_and_averages_heads(real_embeddings, tmp_path):
    from training.teacher import load_targets, main, source_mae

    folder, out, _, _ = real_embeddings
    assert (
        main(
            [
                "fit",
                "--data",
                str(folder),
                "--out",
                str(tmp_path / "t.npz"),
                "--own-head",
                str(FACERES),
                "--heads",
                "2",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    info = json.loads(str(np.load(tmp_path / "t.npz")["info"]))
    assert info["start"] == "faceres-deep's own IMDB-Wiki age head"
    assert len(info["heads"]) == 2 and all(h["history"][0]["epoch"] == 0 for h in info["heads"])
    # The recorded figure is the averaged heads' own, not a mean of each head's.
    probs = load_targets(tmp_path / "t.npz", len(out["embedding"]))
    with open(folder / "index.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    va = np.array([r["split"] == "val" for r in rows])
    ages = np.array([float(r["age"]) for r in rows])
    want = source_mae(probs[va], ages[va], np.array(["utkface"] * int(va.sum())))
    assert abs(info["val_mae"]["utkface"] - want["utkface"]) < 0.05
    assert info["val_worst_mae"] == max(info["val_mae"].values())


def test_fit_averages_its_heads(tmp_path):
    from training.teacher import TeacherError, fit_head, load_targets, train_head

    data = _fake_dataset(tmp_path)
    info = fit_head(data, tmp_path / "t.npz", epochs=2, log=lambda *_: None, heads=2)
    assert len(info["heads"]) == 2 and info["start"] == "random"
    emb = np.load(data / "teacher-embeddings.npz")["embedding"].astype(np.float32)
    each = []
    for seed in (0, 1):
        head = train_head(data, epochs=2, seed=seed, log=lambda *_: None)
        ok, x = head.inputs(emb)
        each.append(head.model.predict(x[ok], verbose=0))
    got = load_targets(tmp_path / "t.npz", 600)
    assert np.abs(got[ok] - (each[0] + each[1]) / 2).max() < 2e-3
    assert np.abs(each[0] - each[1]).max() > 1e-2  # the seeds differ, so the mean is a mean
    with pytest.raises(TeacherError, match="at least one head"):
        fit_head(data, tmp_path / "t0.npz", heads=0)
    with pytest.raises(TeacherError, match="at least one epoch"):
        fit_head(data, tmp_path / "t0.npz", epochs=0)


def test_own_head_of_a_graph_without_one_is_refused_by_name(tmp_path, capsys):
    from training.teacher import main

    bad = tmp_path / "model.json"
    bad.write_text(json.dumps({"modelTopology": {"node": []}, "weightsManifest": []}))
    assert main(["fit", "--data", str(tmp_path), "--out", str(tmp_path / "t.npz"), "--own-head", str(bad)]) == 2
    assert "no own age head" in capsys.readouterr().err
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"modelTopology": {}, "weightsManifest": [{"paths": ["none.bin"], "weights": []}]}))
    assert main(["fit", "--data", str(tmp_path), "--out", str(tmp_path / "t.npz"), "--own-head", str(short)]) == 2
    assert "not a TF.js graph model" in capsys.readouterr().err
