"""training.compare on small predictions files written as training.evaluate writes them."""

from __future__ import annotations

import csv

import pytest

from training.compare import CompareError, at_minors, main, pair, read

COLUMNS = ["file_name", "real_age", "pred", "detected", "decision", "p_over", "source", "gender", "race", "gate"]


def _write(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for name, age, p, sex in rows:
            face = p is not None
            w.writerow(
                [
                    name,
                    age,
                    30 if face else "",
                    int(face),
                    "approve" if face and p > 0.9 else ("check_id" if face else "no_face"),
                    "" if p is None else p,
                    "src",
                    sex,
                    "",
                    "",
                ]
            )
    return path


def test_adults_sent_to_id_when_k_minors_pass_and_ties_do_not_pass(tmp_path):
    rows = [
        ("m1", 15, 0.95, "1"),
        ("m2", 16, 0.80, "0"),
        ("m3", 14, 0.80, "1"),
        ("m4", 17, 0.10, "0"),
        ("a1", 30, 0.99, "1"),
        ("a2", 40, 0.85, "0"),
        ("a3", 26, 0.50, "1"),
        ("a4", 33, None, "0"),
    ]
    p = read(_write(tmp_path / "a.csv", rows))
    r0 = at_minors(p, 0)
    assert (r0.minors_approved, r0.minors) == (0, 4) and r0.adults_to_id == pytest.approx(3 / 4)
    r1 = at_minors(p, 1)  # threshold 0.80: m1 passes, a1 and a2 pass, a3 and the faceless a4 do not
    assert r1.minors_approved == 1 and r1.adults_to_id == pytest.approx(2 / 4)
    assert (r1.women, r1.men) == (pytest.approx(1 / 2), pytest.approx(1 / 2))
    r2 = at_minors(p, 2)  # m2 and m3 tie at 0.80: a threshold cannot split them, so only m1 passes
    assert r2.minors_approved == 1


def test_the_pair_is_the_mean_of_both_and_needs_the_same_photos(tmp_path):
    a = read(_write(tmp_path / "a.csv", [("m1", 15, 0.2, "1"), ("a1", 30, 0.6, "0"), ("a2", 30, None, "0")]))
    b = read(_write(tmp_path / "b.csv", [("m1", 15, 0.4, "1"), ("a1", 30, 1.0, "0"), ("a2", 30, 0.9, "0")]))
    m = pair(a, b)
    assert list(m.p_over) == [pytest.approx(0.8), -1.0, pytest.approx(0.3)]  # sorted keys: a1, a2, m1
    c = read(_write(tmp_path / "c.csv", [("m1", 15, 0.2, "1")]))
    with pytest.raises(CompareError, match="same photos"):
        pair(a, c)


def test_the_command_names_a_file_it_cannot_use(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    assert main([str(bad)]) == 2
    assert "bad.csv: not a predictions CSV" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: cannot read it" in capsys.readouterr().out
