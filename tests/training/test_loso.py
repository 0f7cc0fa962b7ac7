"""loso: the leave-one-source-out report from the till's decisions on each left-out source."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from training.loso import LeftOut, LosoError, figures, main, read_decided, table, threshold_for, with_margin


def _predictions(path, rows, p_over=None):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "pred", "detected", "decision", "p_over", "source", "gate"])
        for i, (age, pred, det, decision) in enumerate(rows):
            p = "" if decision == "no_face" else (p_over[i] if p_over else "0.5")
            w.writerow([f"{i}.jpg", age, pred, det, decision, p, "x", ""])


def test_figures_count_the_tills_decisions_on_the_left_out_source(tmp_path):
    p = tmp_path / "test.csv"
    # 4 minors (one approved), 3 adults (one sent to ID, one without a face: also sent to ID).
    _predictions(
        p,
        [
            (15, 24, 1, "approve"),
            (16, 17, 1, "check_id"),
            (14, 15, 1, "check_id"),
            (17, 19, 1, "check_id"),
            (30, 33, 1, "approve"),
            (40, 30, 1, "check_id"),
            (50, 20, 0, "no_face"),
            (20, 22, 1, "approve"),
        ],
    )
    f = figures("x", read_decided(p), read_decided(p), 0.81, 0.012)
    assert (f.minors, f.adults, f.photos) == (4, 3, 8)
    assert f.minors_approved == pytest.approx(0.25)
    assert f.adults_to_id == pytest.approx(2 / 3)
    assert f.mae == pytest.approx((9 + 1 + 1 + 2 + 3 + 10 + 2) / 7)  # faces found only


def test_the_margin_is_read_on_the_left_out_validation_and_checked_on_its_test_split(tmp_path):
    # Validation: 20 minors, at most 5% may pass, so 1; the fitted 0.80 passed 3 (0.95, 0.90, 0.85).
    val = tmp_path / "val.csv"
    minors = [0.95, 0.90, 0.85] + [0.5] * 17
    rows = [(15, 20, 1, "approve" if q >= 0.80 else "check_id") for q in minors] + [(40, 40, 0, "no_face")]
    _predictions(val, rows, [str(q) for q in minors] + [""])
    # Test: 10 minors, 2 approved at 0.80 (0.92 and 0.82); 2 adults, approved at 0.95 and 0.85.
    test = tmp_path / "test.csv"
    scores = [0.92, 0.82] + [0.3] * 8 + [0.95, 0.85]
    rows = [(16, 20, 1, "approve" if q >= 0.80 else "check_id") for q in scores[:10]]
    rows += [(30, 30, 1, "approve"), (45, 40, 1, "approve")]
    _predictions(test, rows, [str(q) for q in scores])
    f = figures("x", read_decided(test), read_decided(val), 0.80, 0.01)
    assert f.minors_approved == pytest.approx(0.2) and f.val_minors_approved == pytest.approx(0.15)
    assert (f.minors, f.val_minors) == (10, 20)
    assert f.threshold_needed == pytest.approx(0.900001)  # just above validation's second minor
    assert f.margin_needed == pytest.approx(0.100001)
    # On the test split, that margin keeps out 0.82 but not 0.92, and sends the adult at 0.85 to ID.
    assert f.minors_approved_with_margin == pytest.approx(0.1)
    assert f.adults_to_id_with_margin == pytest.approx(0.5)
    # With another source's larger margin (the shipped rule takes the largest), both are kept out.
    g = with_margin(f, read_decided(test), 0.13)
    assert g.minors_approved_with_margin == 0.0 and g.adults_to_id_with_margin == pytest.approx(0.5)
    assert g.margin_needed == f.margin_needed  # its own need is still what it was


def test_no_margin_when_the_left_out_minors_stay_within_the_target():
    p_over = np.array([0.95, 0.3, 0.2, -1.0] + [0.1] * 16)
    minors = np.ones(20, bool)
    assert threshold_for(p_over, minors, 0.05) == pytest.approx(0.300001)
    assert threshold_for(np.array([-1.0, -1.0]), np.ones(2, bool), 0.05) == 0.0  # no face: never approved
    f = LeftOut("a", 1, 1, 0.0, 1, 0.0, 1.0, 0.9, 0.0, 1, 0.0, 0.3, 0.0, 0.0, 0.0)
    assert f.margin_needed == 0.0


def test_faces_decided_without_a_calibrated_figure_stop_the_table(tmp_path):
    p = tmp_path / "test.csv"
    _predictions(p, [(15, 24, 1, "approve"), (30, 33, 1, "approve")], ["", ""])
    with pytest.raises(LosoError, match="test.csv: faces without p_over"):
        read_decided(p)


def test_recording_in_a_card_needs_every_source(tmp_path, capsys):
    argv = ["--data", str(tmp_path), "--till-data", str(tmp_path), "--init", "x.keras", "--images", "a=."]
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path), "--source", "a", "--record-in", str(tmp_path / "card.json")])
    assert "--record-in records all left-out sources: leave out --source" in capsys.readouterr().err


def test_table_names_the_worst_left_out_source():
    rows = [
        LeftOut("a", 100, 20, 0.05, 60, 0.2, 5.0, 0.8, 0.01, 30, 0.0, 0.8, 0.0, 0.05, 0.25),
        LeftOut("b", 100, 20, 0.10, 60, 0.3, 6.0, 0.85, 0.015, 40, 0.1, 0.9, 0.05, 0.05, 0.4),
    ]
    out = table(rows)
    assert (
        "| a | 100 | 5.0% of 20 | 20.0% of 60 | 5.00 | 0.800 | 1.0% | 0.0% of 30 | 0.800 (+0.000) | 5.0%, 25.0% |"
        in out
    )
    assert "worst left-out source: b, 10.0% of its 13-17 approved" in out
    assert "the largest margin needed on a left-out validation split: +0.050" in out


def test_loso_on_a_tiny_fixture_resumes_from_finished_steps(tmp_path, capsys):
    """The command's loop over sources, with every step's output already there (as after a
    stopped run): it runs nothing again and writes the report from what it finds."""
    import json

    data = tmp_path / "d96"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"sources": {"a": {}, "b": {}}}))
    for src, approved in (("a", "approve"), ("b", "check_id")):
        d = tmp_path / "out" / src
        (d / "run").mkdir(parents=True)
        (d / "teacher.npz").write_bytes(b"x")
        args = {"epochs": "2", "distil": "1.0", "out": str(d / "run")}
        (d / "run" / "train.json").write_text(json.dumps({"args": args}))
        (d / "model_int8.tflite").write_bytes(b"x")
        (d / "model_int8.json").write_text(
            json.dumps(
                {
                    "decision": {
                        "method": "isotonic",
                        "target": {},
                        "interval": {"level": 0.8, "temperature": 1.0},
                        "gates": [{"challenge_age": 25, "raw": [0.0, 1.0], "calibrated": [0.0, 1.0], "threshold": 0.9}],
                        "fit": {"25": {"chosen": {"threshold": 0.9, "minors_approved": 0.01}}},
                    }
                }
            )
        )
        p_minor = "0.95" if approved == "approve" else "0.2"
        for split in ("val", "test"):
            _predictions(d / f"{split}.csv", [(15, 20, 1, approved), (30, 30, 1, "approve")], [p_minor, "0.95"])
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"model_id": "m"}))
    assert (
        main(
            [
                "--data",
                str(data),
                "--till-data",
                str(data),
                "--init",
                "x.keras",
                "--images",
                "a=.",
                "--out",
                str(tmp_path / "out"),
                "--record-in",
                str(card),
                "--epochs",
                "5",  # not what the folds had: the card says what they had
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| a | 2 | 100.0% of 1 |" in out and "| b | 2 | 0.0% of 1 |" in out and "$ " not in out
    assert (tmp_path / "out" / "loso.md").read_text().startswith("| left out |")
    carry = json.loads(card.read_text())["carry_over"]
    assert [r["source"] for r in carry["left_out"]] == ["a", "b"] and carry["worst"]["source"] == "a"
    # a's one validation minor passed at 0.95 against the fitted 0.9: keeping it out needed 0.950001,
    # and that margin keeps a's test minor out too.
    assert carry["margin_needed"] == pytest.approx(0.050001) and carry["left_out_target"] == 0.05
    assert [r["minors_approved_with_margin"] for r in carry["left_out"]] == [0.0, 0.0]
    assert "validation" in carry["margin_from"]
    assert carry["fold_training"]["a"] == {"epochs": "2", "distil": "1.0"} and carry["schedule"].startswith("2 epochs")
    assert json.loads(card.read_text())["model_id"] == "m"  # the rest of the card is kept
