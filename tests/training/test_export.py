"""export and inference agree: the int8 TFLite file, run through edge_app.vision.model (the till's
runtime), gives the ages of the float model on real aligned faces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_app.config import FacesConfig
from edge_app.vision.faces import FacePipeline, load_image
from edge_app.vision.model import AgeModel
from tests.helpers import MODEL, REPO, SHARED, utk_sample

FLOAT_MODEL = REPO / "models" / "age_resnet10_float32.tflite"
ONNX = SHARED / "weights" / "cydral-age-resnet10" / "age-v1.onnx"


@pytest.fixture(scope="module")
def real_crops():
    sample = utk_sample(260, seed=21)
    crops, ages = [], []
    with FacePipeline(FacesConfig()) as pipe:
        for path, age in sample:
            res = pipe.process(load_image(path)[0])
            if res.aligned is not None:
                crops.append(res.aligned.crop)
                ages.append(age)
    return np.stack(crops), np.array(ages)


def test_shipped_int8_matches_shipped_float(real_crops):
    if not (MODEL.exists() and FLOAT_MODEL.exists()):
        pytest.skip("shipped models missing in models/")
    crops, ages = real_crops
    q = AgeModel(MODEL)
    f = AgeModel(FLOAT_MODEL, flip_average=q.flip_average)
    assert q._in["dtype"] == np.uint8 and f._in["dtype"] == np.float32
    aq = np.array([q.predict(c).age for c in crops])
    af = np.array([f.predict(c).age for c in crops])
    diff = np.abs(aq - af)
    mae_q, mae_f = np.abs(aq - ages).mean(), np.abs(af - ages).mean()
    print(
        f"\nint8 vs float on {len(crops)} real faces: mean |d| {diff.mean():.3f}, max {diff.max():.2f}; "
        f"MAE int8 {mae_q:.3f}, float {mae_f:.3f}"
    )
    assert diff.mean() < 0.6
    assert abs(mae_q - mae_f) < 0.3


def test_export_convert_int8_agrees_with_keras(real_crops):
    """The export path itself: port the CC0 net, convert with a representative set of real
    crops, and compare the Keras float model with the int8 file through the till runtime."""
    if not ONNX.exists():
        pytest.skip(f"pretrained weights not found at {ONNX}")
    from training.export import convert
    from training.port import port_onnx_weights

    crops, _ = real_crops
    rep, check = crops[:120], crops[120:]
    model = port_onnx_weights(ONNX, rep.astype(np.float32), num_classes=101, input_size=crops.shape[1])
    data = convert(model, rep)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.tflite"
        p.write_bytes(data)
        q = AgeModel(p, flip_average=False)
        aq = np.array([q.predict(c).age for c in check])
    probs = model.predict(check.astype(np.float32), verbose=0)
    af = probs @ np.arange(101)
    diff = np.abs(aq - af)
    print(f"\nexported int8 vs Keras float on {len(check)} faces: mean |d| {diff.mean():.3f}, max {diff.max():.2f}")
    assert diff.mean() < 1.0


@pytest.fixture(scope="module")
def two_members(real_crops):
    """The ported CC0 net and a second member that estimates older (its last bias tilted), so
    that the pair's two halves differ and which one saw the mirror shows."""
    if not ONNX.exists():
        pytest.skip(f"pretrained weights not found at {ONNX}")
    import keras

    from training.port import port_onnx_weights

    crops, _ = real_crops
    a = port_onnx_weights(ONNX, crops[:120].astype(np.float32), num_classes=101, input_size=crops.shape[1])
    b = keras.models.clone_model(a)
    b.set_weights(a.get_weights())
    dense = b.layers[-1] if b.layers[-1].weights else b.layers[-2]
    w = dense.get_weights()
    w[-1] = w[-1] + np.linspace(-1.0, 1.0, w[-1].shape[0], dtype=np.float32)
    dense.set_weights(w)
    return a, b


def test_pair_averages_the_first_on_the_crop_and_the_second_on_its_mirror(real_crops, two_members):
    from training.export import pair

    crops, _ = real_crops
    a, b = two_members
    x = crops[120:160].astype(np.float32)
    got = pair([a, b]).predict(x, verbose=0)
    want = (a.predict(x, verbose=0) + b.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The tilt makes the second member older, so the test would notice a pair that ignored it.
    ages = np.arange(101)
    assert (b.predict(x, verbose=0) @ ages).mean() > (a.predict(x, verbose=0) @ ages).mean() + 2


def test_an_ensemble_of_four_alternates_the_crop_and_its_mirror(real_crops, two_members):
    """Up to four networks in one file: members 1 and 3 see the crop, 2 and 4 its mirror."""
    import keras

    from training.export import pair

    crops, _ = real_crops
    a, b = two_members

    def copy(m):
        c = keras.models.clone_model(m)
        c.set_weights(m.get_weights())
        return c

    x = crops[120:150].astype(np.float32)
    got = pair([copy(a), copy(b), copy(b), copy(a)]).predict(x, verbose=0)
    m = x[:, :, ::-1]
    want = (a.predict(x, verbose=0) + b.predict(m, verbose=0) + b.predict(x, verbose=0) + a.predict(m, verbose=0)) / 4
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_cards_architecture_counts_the_networks_and_says_which_see_the_mirror():
    from training.export import architecture

    assert architecture("R", [112], 112) == "R, age = expectation"
    assert "two R" in architecture("R", [112, 112], 112) and "the second its mirror" in architecture("R", [96, 96], 96)
    three, four = architecture("R", [96] * 3, 96), architecture("R", [96] * 4, 112)
    assert three.startswith("three R") and "the 1st and 3rd see the crop, the others its mirror" in three
    assert "resized" not in three
    assert four.startswith("four R") and "than the file's 112 px sees the crop resized" in four


def test_export_cli_writes_one_file_for_a_pair(real_crops, two_members, tmp_path, capsys):
    """`export --model A --model B`: one int8 file the till runs with one call per face, which
    agrees with the Keras pair, and a card that says what it holds."""
    from training.export import main, pair

    crops, ages = real_crops
    a, b = two_members
    data = tmp_path / "data"
    write_dataset(data, crops, ages)
    a.save(tmp_path / "a.keras")
    b.save(tmp_path / "b.keras")
    # One member learnt the teacher's embedding, the other its distributions: the card names both.
    learnt = {"a": {"teacher": "None", "hint": "1.0"}, "b": {"teacher": "teacher.npz", "hint": "0.0"}}
    for name, secs in (("a", 10.0), ("b", 20.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"train_seconds": secs, "args": learnt[name]}))
    out = tmp_path / "models" / "pair_int8.tflite"
    assert (
        main(
            [
                "--model",
                str(tmp_path / "a.keras"),
                "--model",
                str(tmp_path / "b.keras"),
                "--data",
                str(data),
                "--out",
                str(out),
                "--representative",
                "100",
                "--train-info",
                str(tmp_path / "a.json"),
                "--train-info",
                str(tmp_path / "b.json"),
                "--minors-approved",
                "0.05",
            ]
        )
        == 0
    )
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["members"] == 2 and card["flip_average"] is False
    # The calibrated decision, fitted on the validation crops, is one the till can load.
    assert "challenge 25: threshold" in capsys.readouterr().out
    rules = AgeModel(out).rules
    gate = rules.gate(25)
    assert gate is not None and 0 <= gate.threshold <= 1 and rules.interval_temperature > 0
    assert card["decision"]["fit"]["25"]["chosen"]["threshold"] == gate.threshold
    assert "mirror" in card["architecture"]
    assert card["training"]["train_seconds"] == 30.0 and len(card["training"]["members"]) == 2
    assert card["parameters"] == a.count_params() + b.count_params()
    used = card["distilled_from"]["used_as"]
    assert "(train --distil)" in used and "(train --hint)" in used and "VGGFace2" in card["distilled_from"]["network"]

    q = AgeModel(out)
    check = crops[150:]
    aq = np.array([q.predict(c).age for c in check])
    af = pair([a, b]).predict(check.astype(np.float32), verbose=0) @ np.arange(101)
    diff = np.abs(aq - af)
    print(f"\npair int8 vs Keras pair on {len(check)} faces: mean |d| {diff.mean():.3f}, max {diff.max():.2f}")
    assert diff.mean() < 1.0


def write_dataset(data, crops, ages, n_train: int = 150) -> None:
    """A minimal prepare-style dataset folder (crops.npy, index.csv, dataset.json)."""
    data.mkdir()
    np.save(data / "crops.npy", crops)
    splits = ["train"] * n_train + ["val"] * (len(crops) - n_train)
    (data / "index.csv").write_text(
        "row,age,split\n" + "".join(f"{i},{age},{s}\n" for i, (age, s) in enumerate(zip(ages, splits)))
    )
    (data / "dataset.json").write_text(
        json.dumps(
            {
                "labelled": len(crops),
                "unique": len(crops),
                "detected": len(crops),
                "per_split": {"train": n_train, "val": len(crops) - n_train},
                "seed": 0,
                "fractions": [0.8, 0.2, 0.0],
                "output_size": crops.shape[1],
                "margin": 0.0,
            }
        )
    )


def saved_for_export(tmp_path, crops, ages, members: dict) -> list[str]:
    """A dataset of the real crops and the members saved under their names: export's common
    arguments for them (no --out)."""
    data = tmp_path / "data"
    write_dataset(data, crops, ages)
    args = []
    for name, model in members.items():
        model.save(tmp_path / f"{name}.keras")
        args += ["--model", str(tmp_path / f"{name}.keras")]
    return args + ["--data", str(data), "--representative", "100"]


def test_pair_of_two_crop_sizes_resizes_for_the_smaller(real_crops, two_members, tmp_path, capsys):
    """A pair trained at two crop sizes: the file takes the larger, the smaller network sees the
    crop resized inside the graph, and export refuses crops of the wrong size for the file."""
    import tensorflow as tf

    from training.export import main, pair
    from training.train import rebuild

    crops, ages = real_crops
    big, tilted = two_members
    small_size = crops.shape[1] - 16
    small = rebuild(tilted, small_size)
    x = crops[150:190].astype(np.float32)
    got = pair([big, small]).predict(x, verbose=0)
    resized = tf.image.resize(x[:, :, ::-1], (small_size, small_size), method="bilinear").numpy()
    want = (big.predict(x, verbose=0) + small.predict(resized, verbose=0)) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)

    out = tmp_path / "mixed_int8.tflite"
    assert main(saved_for_export(tmp_path, crops, ages, {"big": big, "small": small}) + ["--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["input"]["size"] == crops.shape[1] and card["member_input_sizes"] == [crops.shape[1], small_size]
    q = AgeModel(out)
    assert q.input_size == crops.shape[1]
    aq = np.array([q.predict(c).age for c in crops[150:]])
    af = pair([big, small]).predict(crops[150:].astype(np.float32), verbose=0) @ np.arange(101)
    assert np.abs(aq - af).mean() < 1.0

    # Crops cut for the smaller network cannot calibrate or fit the file that takes the larger.
    small_data = tmp_path / "small_data"
    write_dataset(small_data, resized.astype(np.uint8), ages[150:190], n_train=30)
    with pytest.raises(SystemExit):
        main(
            [
                "--model",
                str(tmp_path / "big.keras"),
                "--model",
                str(tmp_path / "small.keras"),
                "--data",
                str(small_data),
                "--out",
                str(tmp_path / "bad.tflite"),
            ]
        )
    err = capsys.readouterr().err
    assert f"holds {small_size} px crops, but the file takes {crops.shape[1]} px" in err
    assert f"prepare --size {crops.shape[1]}" in err and not (tmp_path / "bad.tflite").exists()


def test_export_cli_names_a_missing_model(tmp_path, capsys):
    from training.export import main

    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "nope.keras"), "--data", str(tmp_path), "--out", str(tmp_path / "m.tflite")])
    assert "nope.keras: no such file" in capsys.readouterr().err


def test_export_cli_refuses_more_than_four_networks(tmp_path, capsys):
    from training.export import main

    (tmp_path / "a.keras").write_text("{}")
    with pytest.raises(SystemExit):
        main(
            ["--model", str(tmp_path / "a.keras")] * 5 + ["--data", str(tmp_path), "--out", str(tmp_path / "m.tflite")]
        )
    assert "--model: one to four networks, got 5" in capsys.readouterr().err


def test_export_cli_names_a_missing_or_unmatched_train_info(tmp_path, capsys):
    """A pair's card built from one run's train.json would describe it as a single network."""
    from training.export import main

    for name in ("a.keras", "b.keras", "a.json"):
        (tmp_path / name).write_text("{}")
    base = ["--data", str(tmp_path), "--out", str(tmp_path / "m.tflite")]
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "a.keras"), "--train-info", str(tmp_path / "gone.json")] + base)
    assert "gone.json: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "--model",
                str(tmp_path / "a.keras"),
                "--model",
                str(tmp_path / "b.keras"),
                "--train-info",
                str(tmp_path / "a.json"),
            ]
            + base
        )
    assert "give one per --model (2), got 1" in capsys.readouterr().err


def test_export_cli_names_a_folder_that_prepare_did_not_write(tmp_path, capsys):
    from training.export import main

    (tmp_path / "a.keras").write_text("{}")
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "a.keras"), "--data", str(tmp_path), "--out", str(tmp_path / "m.tflite")])
    assert "no dataset.json there; give a folder written by training.prepare" in capsys.readouterr().err


def test_input_size_lets_smaller_networks_take_the_tills_crops(real_crops, two_members, tmp_path, capsys):
    """`--input-size`: a pair trained at a smaller size in a file that takes the till's crops; both
    networks see the crop resized inside the file, so the installed faces.output_size stays."""
    import tensorflow as tf

    from training.export import main, pair
    from training.train import rebuild

    crops, ages = real_crops
    size = crops.shape[1]
    small_size = size - 16
    a, b = (rebuild(m, small_size) for m in two_members)
    x = crops[150:190].astype(np.float32)
    got = pair([a, b], size).predict(x, verbose=0)
    shrink = lambda im: tf.image.resize(im, (small_size, small_size), method="bilinear").numpy()  # noqa: E731
    want = (a.predict(shrink(x), verbose=0) + b.predict(shrink(x[:, :, ::-1]), verbose=0)) / 2
    np.testing.assert_allclose(got, want, atol=1e-5)

    out = tmp_path / "small_pair_int8.tflite"
    args = saved_for_export(tmp_path, crops, ages, {"a": a, "b": b})
    # Without --input-size the file would take the networks' own size, which the data cannot feed.
    with pytest.raises(SystemExit):
        main(args + ["--out", str(tmp_path / "bad.tflite")])
    assert f"the file takes {small_size} px" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--out", str(tmp_path / "bad.tflite"), "--input-size", "8"])
    assert "--input-size: 8 px is outside 32..512" in capsys.readouterr().err
    assert not (tmp_path / "bad.tflite").exists()

    assert main(args + ["--out", str(out), "--input-size", str(size)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["input"]["size"] == size and card["member_input_sizes"] == [small_size, small_size]
    assert f"than the file's {size} px sees the crop resized" in card["architecture"]
    q = AgeModel(out)
    assert q.input_size == size
    aq = np.array([q.predict(c).age for c in crops[150:]])
    af = pair([a, b], size).predict(crops[150:].astype(np.float32), verbose=0) @ np.arange(101)
    assert np.abs(aq - af).mean() < 1.0
