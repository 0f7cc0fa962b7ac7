"""hint: the teacher's embeddings as a second target (feature distillation). The embeddings file
is read and standardised, its absence named; the loss adds the hint's error only where a face has
an embedding; a real tiny run on real faces, embedded by the real teacher, trains through the hint
and still saves the plain age network that export and the till read."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.training.test_teacher import FACERES
from tests.training.test_train import ONNX, tiny_dataset


def _embeddings(folder, emb, done=None, rows=None):
    """An embeddings file beside an index of `rows` crops (as many as embedded unless given)."""
    from training.teacher import EMBEDDINGS_FILE

    rows = len(emb) if rows is None else rows
    (folder / "index.csv").write_text("row,age,split\n" + "".join(f"{i},30,train\n" for i in range(rows)))
    done = np.ones(len(emb), bool) if done is None else done
    np.savez(folder / EMBEDDINGS_FILE, embedding=emb.astype(np.float16), done=done)


def test_hints_are_standardised_over_the_rows_and_missing_faces_stay_empty(tmp_path):
    from training.hint import load_hints

    rng = np.random.default_rng(0)
    emb = rng.normal(3.0, 2.0, (50, 8))
    emb[7] = np.nan  # a face the teacher's framing could not find
    _embeddings(tmp_path, emb)
    rows = np.arange(0, 40)
    h = load_hints(tmp_path, rows)
    assert h.shape == (40, 8)
    assert np.isnan(h[7]).all()
    ok = np.isfinite(h).all(1)
    assert np.allclose(h[ok].mean(0), 0, atol=1e-2) and np.allclose(h[ok].std(0), 1, atol=1e-2)


def test_a_missing_or_unfinished_embeddings_file_is_named(tmp_path):
    from training.hint import load_hints
    from training.teacher import EMBEDDINGS_FILE, TeacherError

    with pytest.raises(TeacherError, match=f"{EMBEDDINGS_FILE}: no teacher embeddings; run `training.teacher embed`"):
        load_hints(tmp_path, np.arange(3))
    _embeddings(tmp_path, np.zeros((5, 4)), done=np.array([1, 1, 0, 1, 0], bool))
    with pytest.raises(TeacherError, match="2 rows not embedded yet"):
        load_hints(tmp_path, np.arange(3))
    # Left over from an earlier preparation of the folder: refused, not read row by row.
    _embeddings(tmp_path, np.zeros((5, 4)), rows=9)
    with pytest.raises(TeacherError, match="holds 5 rows, the dataset 9"):
        load_hints(tmp_path, np.arange(3))


def test_a_run_folder_is_resumed_only_as_it_was_trained(tmp_path, capsys):
    """Its backup holds the wrapper (or not): switching --hint on or off is refused by name, and
    a weight below 0 is no weight."""
    from training.train import main, parser

    (tmp_path / "backup").mkdir()
    (tmp_path / "started.json").write_text('{"hint": false}')
    args = ["--data", str(tmp_path / "nowhere"), "--init", str(tmp_path / "x.keras"), "--out", str(tmp_path)]
    assert main([*args, "--hint", "1.0"]) == 2
    assert f"{tmp_path} holds a run trained without --hint: resume it with the same options" in capsys.readouterr().err
    # A backup made before started.json existed was made without the hint.
    (tmp_path / "started.json").unlink()
    assert main([*args, "--hint", "1.0"]) == 2
    assert "trained without --hint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser().parse_args([*args, "--hint", "-1"])
    assert "-1 is below 0" in capsys.readouterr().err


def test_the_hint_costs_its_weighted_error_only_where_there_is_an_embedding():
    import tensorflow as tf

    from training.hint import with_hint_loss

    def base(y_true, y_pred):
        return tf.reduce_sum(y_pred, axis=1) + y_true[:, 0]  # shows which columns it was given

    loss = with_hint_loss(base, n_base=2, n_probs=3, weight=0.5)
    y_true = np.array([[1.0, 0.0, 1.0, 1.0], [2.0, 1.0, np.nan, np.nan]], np.float32)
    y_pred = np.array([[0.1, 0.2, 0.7, 3.0, 1.0], [0.3, 0.3, 0.4, 9.0, 9.0]], np.float32)
    got = loss(tf.constant(y_true), tf.constant(y_pred)).numpy()
    # Row 0: base 1 + 1, hint error mean((3-1)^2, (1-1)^2) = 2, weighted 1. Row 1: no embedding.
    assert got == pytest.approx([3.0, 3.0])


def test_the_hint_trains_the_shared_layers_not_only_its_own():
    """The point of the hint: its error alone moves the network's convolutions (a read-out that
    only fitted itself to frozen features would teach the network nothing)."""
    import tensorflow as tf

    from training.arch import build_age_resnet
    from training.hint import hint_trainer, with_hint_loss

    net = build_age_resnet(64)
    wrapper = hint_trainer(net, 16)
    assert wrapper.output_shape == (None, 101 + 16)
    loss = with_hint_loss(lambda y, p: tf.zeros(tf.shape(p)[:1]), n_base=2, n_probs=101, weight=1.0)
    x = tf.constant(np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)), tf.float32)
    y = tf.constant(np.concatenate([np.zeros((4, 2)), np.ones((4, 16))], axis=1), tf.float32)
    stem = net.get_layer("stem_conv").trainable_weights
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(loss(y, wrapper(x, training=True)))
    grad = tape.gradient(value, stem)[0]
    assert float(value) > 0 and float(tf.reduce_max(tf.abs(grad))) > 0


def test_a_run_with_the_hint_trains_the_backbone_and_saves_the_plain_network(tmp_path):
    if not ONNX.exists() or not FACERES.is_file():
        pytest.skip(f"pretrained weights not found ({ONNX}, {FACERES}): run scripts/fetch-weights")
    import keras

    from training.teacher import FaceresTeacher, embed_dataset
    from training.train import main as train_main

    data, images, init = tiny_dataset(tmp_path, 60, seed=8)
    embed_dataset(FaceresTeacher(FACERES), data, {"utkface": images}, log=lambda *_: None)

    def run(name, *extra):
        out = tmp_path / name
        args = ["--data", str(data), "--init", str(init), "--out", str(out), "--batch", "16", "--seed", "2"]
        assert train_main([*args, "--epochs", "1", *extra]) == 0
        with open(out / "history.csv") as fh:
            return out, [float(r["loss"]) for r in csv.DictReader(fh)]

    _, plain_loss = run("plain")
    hinted, hinted_loss = run("hinted", "--hint", "2.0")
    net = keras.models.load_model(hinted / "best.keras", compile=False)
    # What export and the till read: the age network alone, its hint layer left behind.
    assert net.output_shape == (None, 101)
    assert "hint" not in [layer.name for layer in net.layers]
    # The hint's error is in the loss the run minimised.
    assert hinted_loss[0] > plain_loss[0] + 0.5
    # Resumes: the wrapper's state is backed up, so a second call with more epochs goes on.
    assert train_main(["--data", str(data), "--init", str(init), "--out", str(hinted), "--batch", "16",
                       "--seed", "2", "--epochs", "2", "--hint", "2.0"]) == 0  # fmt: skip
    with open(hinted / "history.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1]
