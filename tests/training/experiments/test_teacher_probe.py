"""The teacher probe on a made-up dataset folder whose embeddings carry age along one direction."""

from __future__ import annotations

import csv
import re

import numpy as np

from training.experiments.teacher_probe import main
from training.teacher import EMBEDDINGS_FILE


def _dataset(tmp_path, n=900):
    rng = np.random.default_rng(1)
    ages = rng.uniform(10, 60, n)
    emb = np.outer((ages - 30) / 10, rng.normal(0, 1, 1024)) + rng.normal(0, 0.5, (n, 1024))
    splits = np.array(["train", "train", "val"])[np.arange(n) % 3]
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "file_name", "age", "split", "source", "gender"])
        for i in range(n):
            w.writerow([i, f"{i}.jpg", f"{ages[i]:.1f}", splits[i], "ab"[i % 2], i % 4 // 2])
    np.savez(tmp_path / EMBEDDINGS_FILE, embedding=emb.astype(np.float16), done=np.ones(n, bool))
    return tmp_path


def test_the_probe_ranks_minors_below_adults_when_the_embedding_carries_age(tmp_path, capsys):
    data = _dataset(tmp_path)
    assert main(["--data", str(data), "--seeds", "0", "--epochs", "4", "--minors", "0", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("age head, seed 0", "age heads, mean of 1 seeds", "binary head", "age head, adult women weighted 2x"):
        assert f"== {name}" in out
    # Age is written in the embedding: with two minors let through, few adults are sent to ID.
    shares = [float(x) for x in re.findall(r"2 of \d+ minors approved: 25\+ sent to ID ([\d.]+)%", out)]
    assert shares and max(shares) < 30


def test_the_probe_says_the_embeddings_are_missing(tmp_path, capsys):
    assert main(["--data", str(tmp_path)]) == 2
    assert "teacher-embeddings.npz is missing" in capsys.readouterr().out
