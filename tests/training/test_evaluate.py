"""evaluate: the interface other tools rely on (arguments, predictions CSV, printed figures,
report), run as a real command on real UTKFace photos with the shipped model."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import MODEL, REPO, utk_sample


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training.evaluate", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """A folder of 24 real faces plus one photo with no face in it, and the labels CSV."""
    d = tmp_path_factory.mktemp("eval")
    images = d / "images"
    images.mkdir()
    rows = []
    for path, age in utk_sample(24, seed=11):
        shutil.copy(path, images / path.name)
        rows.append((path.name, age))
    # Smooth noise: nothing a face detector could take for a face.
    noise = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((300, 300), Image.BILINEAR).save(images / "no_face.jpg")
    rows.append(("no_face.jpg", 40.0))
    labels = d / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "note"])
        w.writerows((n, f"{a:g}", "x") for n, a in rows)
    return images, labels, dict(rows)


def test_evaluate_interface_and_figures(tmp_path, photo_set):
    images, labels, ages = photo_set
    out = tmp_path / "pred.csv"
    r = evaluate("--images", str(images), "--labels", str(labels), "--model", str(MODEL), "--predictions", str(out))
    assert r.returncode == 0, r.stderr
    with open(out, newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["file_name", "real_age", "pred", "detected", "decision", "p_over", "gate"]
        rows = {row[0]: row for row in reader}
    assert set(rows) == set(ages)
    # The photo without a face is still estimated, from the whole photo, and marked 0.
    assert rows["no_face.jpg"][3] == "0" and 0 <= float(rows["no_face.jpg"][2]) <= 100
    assert rows["no_face.jpg"][4] == "no_face"
    faces = [row for name, row in rows.items() if name != "no_face.jpg"]
    assert all(row[3] == "1" for row in faces)
    err = np.array([abs(float(row[2]) - float(row[1])) for row in faces])
    assert err.mean() < 10  # the shipped model on real faces, not noise

    printed = r.stdout
    all_err = np.array([abs(float(row[2]) - float(row[1])) for row in rows.values()])
    assert "n                         25" in printed
    assert f"MAE                       {all_err.mean():.3f} years" in printed
    for label in (
        "CS@5",
        "MAE by band",
        "0-12",
        "13-17",
        "18-24",
        "25-34",
        "35-49",
        "50-64",
        "65+",
        "13-17 estimated 25+",
        "25+ estimated under 25",
    ):
        assert label in printed, label
    assert f"detection rate            {100 * 24 / 25:.2f}%" in printed
    report = tmp_path / "pred_report"
    assert "13-17 approved" in printed and "25+ sent to ID" in printed
    assert "by source" not in printed and "by gender" not in printed  # no such columns in these labels
    for f in ("report.md", "age_histogram.png", "pred_vs_real.png", "error_by_band.png", "gate_curve.png"):
        assert (report / f).stat().st_size > 0, f
    assert Image.open(report / "pred_vs_real.png").size[0] > 300


def test_split_and_card_update(tmp_path, photo_set):
    images, labels, ages = photo_set
    split = tmp_path / "split.csv"
    names = sorted(ages)
    with open(split, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "split"])
        for i, n in enumerate(names):
            w.writerow([n, ages[n], "test" if i % 3 == 0 else "train"])
    model = tmp_path / "m.tflite"
    shutil.copy(MODEL, model)
    shutil.copy(MODEL.with_suffix(".json"), model.with_suffix(".json"))
    r = evaluate(
        "--images",
        str(images),
        "--labels",
        str(split),
        "--split",
        "test",
        "--model",
        str(model),
        "--predictions",
        str(tmp_path / "p.csv"),
        "--update-card",
        "--no-age-map",
    )
    assert r.returncode == 0, r.stderr
    n = sum(1 for i in range(len(names)) if i % 3 == 0)
    assert f"n                         {n}" in r.stdout and "raw estimate" in r.stdout
    card = json.loads(model.with_suffix(".json").read_text())
    recorded = card["metrics"][f"{tmp_path.name}/split.csv:test:raw"]
    assert recorded["n"] == n


def test_bad_input_is_named(tmp_path, photo_set):
    images, labels, _ = photo_set
    r = evaluate(
        "--images", str(images), "--labels", str(tmp_path / "missing.csv"), "--predictions", str(tmp_path / "p.csv")
    )
    assert r.returncode == 2 and "--labels" in r.stderr and "does not exist" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("name,age\na.jpg,3\n")
    r = evaluate("--images", str(images), "--labels", str(bad), "--predictions", str(tmp_path / "p.csv"))
    assert r.returncode != 0 and "file_name,real_age" in r.stderr
    r = evaluate(
        "--images", str(images), "--labels", str(labels), "--split", "test", "--predictions", str(tmp_path / "p.csv")
    )
    assert r.returncode != 0 and "split" in r.stderr
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    r = evaluate(
        "--images", str(images), "--labels", str(labels), "--model", str(junk), "--predictions", str(tmp_path / "p.csv")
    )
    assert r.returncode == 2 and "junk.tflite" in r.stderr and "not a usable TFLite model" in r.stderr
    assert "Traceback" not in r.stderr


def test_decision_column_agrees_with_agecheck_estimate(tmp_path, photo_set):
    images, labels, _ = photo_set
    out = tmp_path / "pred.csv"
    r = evaluate("--images", str(images), "--labels", str(labels), "--model", str(MODEL), "--predictions", str(out))
    assert r.returncode == 0, r.stderr
    with open(out, newline="") as fh:
        rows = {row["file_name"]: row for row in csv.DictReader(fh)}
    names = sorted(rows)
    est = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_app.cli",
            "estimate",
            "--json",
            "--model",
            str(MODEL),
            *[str(images / n) for n in names],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    by_file = {rec["file"].rsplit("/", 1)[-1]: rec for rec in json.loads(est.stdout)}
    assert set(by_file) == set(rows)
    for name, row in rows.items():
        assert row["decision"] == by_file[name]["decision"], name
        if row["decision"] != "no_face":
            assert abs(float(row["p_over"]) - by_file[name]["p_over"]) < 1e-3, name
            # The decision follows the card's threshold on p_over.
            thr = next(
                g["threshold"]
                for g in json.loads(MODEL.with_suffix(".json").read_text())["decision"]["gates"]
                if g["challenge_age"] == 25
            )
            assert (row["decision"] == "approve") == (float(row["p_over"]) >= thr), name
    assert {r["decision"] for r in rows.values()} >= {"no_face"}


def test_breakdown_by_source_sex_and_ethnicity(tmp_path, photo_set):
    images, labels, ages = photo_set
    rich = tmp_path / "rich.csv"
    names = sorted(ages)
    with open(rich, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "source", "gender", "race"])
        for i, n in enumerate(names):
            w.writerow([n, ages[n], "a" if i % 2 else "b", i % 2, "" if i == 0 else i % 3])
    out = tmp_path / "pred.csv"
    r = evaluate(
        "--images",
        f"a={images}",
        "--images",
        f"b={images}",
        "--labels",
        str(rich),
        "--model",
        str(MODEL),
        "--predictions",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    for label in (
        "by source:",
        "by gender:",
        "by race:",
        "women",
        "men",
        "White",
        "Black",
        "Asian",
        "by gender within source:",
        "a / women",
        "b / men",
    ):
        assert label in r.stdout, label
    with open(out, newline="") as fh:
        header = next(csv.reader(fh))
    assert header[-4:] == ["source", "gender", "race", "gate"]
    report = (tmp_path / "pred_report" / "report.md").read_text()
    assert "## By group" in report and "Gate curve" in report and "| threshold |" in report
    # A source with no folder for it is named, not a traceback.
    r = evaluate("--images", f"a={images}", "--labels", str(rich), "--model", str(MODEL), "--predictions", str(out))
    assert r.returncode == 2 and "source 'b'" in r.stderr and "Traceback" not in r.stderr


def test_sent_to_id_at_the_same_ages_separates_age_mix_from_the_model():
    """Women and men sent to ID at the same rate within every age band, but the women younger:
    the plain share differs, the share at the same ages does not."""
    from training.evaluate_figures import Prediction, breakdown, standardised_sent_to_id

    def people(sex, ages_and_sent):
        return [
            Prediction(f"{sex}{i}", age, age, 1, "check_id" if sent else "approve", None, {"gender": sex})
            for i, (age, sent) in enumerate(ages_and_sent)
        ]

    # 25-29: half sent to ID; 40-49: none. Women are mostly 25-29, men mostly 40-49.
    women = people("1", [(26, True), (27, False)] * 8 + [(45, False)] * 4)
    men = people("0", [(26, True), (27, False)] * 2 + [(45, False)] * 16)
    everyone = women + men
    raw_w = sum(p.decision != "approve" for p in women) / len(women)
    raw_m = sum(p.decision != "approve" for p in men) / len(men)
    assert raw_w == pytest.approx(0.4) and raw_m == pytest.approx(0.1)
    assert standardised_sent_to_id(women, everyone) == standardised_sent_to_id(men, everyone) == pytest.approx(0.25)
    by_sex = breakdown(everyone)["gender"]
    assert by_sex["women"]["adults_25_plus_sent_to_id_age_standardised"] == pytest.approx(0.25)
    # A group with no adult in a band everyone has cannot be standardised.
    assert standardised_sent_to_id(people("1", [(26, True)]), everyone) is None


def test_quality_gate_refusals_are_counted_per_source():
    """A minor the model approves but the gate refuses is caught at the till (it asks for ID):
    the figures count the refusals per source and the approvals left after the gate."""
    from training.evaluate_figures import Prediction, breakdown, metrics

    preds = [
        Prediction("a1", 15, 26, 1, "approve", 0.9, {"source": "a"}, "blurred"),
        Prediction("a2", 16, 27, 1, "approve", 0.9, {"source": "a"}, ""),
        Prediction("a3", 40, 40, 1, "approve", 0.9, {"source": "a"}, ""),
        Prediction("b1", 14, 12, 1, "check_id", 0.1, {"source": "b"}, "too dark; blurred"),
        Prediction("b2", 30, 31, 1, "approve", 0.9, {"source": "b"}, ""),
        Prediction("b3", 30, 31, 0, "no_face", None, {"source": "b"}, ""),
    ]
    m = metrics(preds, intervals=False)
    assert m["minors_13_17_approved"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["minors_13_17_refused_by_gate"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["minors_13_17_approved_after_gate"] == pytest.approx(1 / 3, abs=1e-3)
    assert m["refused_by_gate"] == pytest.approx(2 / 5, abs=1e-3)  # of the photos with a face
    by_source = breakdown(preds)["source"]
    assert by_source["a"]["refused_by_gate"] == pytest.approx(1 / 3, abs=1e-3)
    assert by_source["b"]["refused_by_gate"] == pytest.approx(1 / 2, abs=1e-3)
