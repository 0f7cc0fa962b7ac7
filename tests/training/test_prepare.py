"""prepare: de-duplication, the split's leakage rule, resumability and what is cached where."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edge_app.config import FacesConfig
from tests.helpers import need_utkface
from training.prepare import assign_splits, dedupe, prepare


def test_assign_splits_is_stable_and_by_key():
    keys = [f"k{i}" for i in range(1000)]
    a = assign_splits(keys, seed=5, val=0.1, test=0.15)
    b = assign_splits(list(reversed(keys)) + keys[:10], seed=5, val=0.1, test=0.15)
    assert a == b  # order and repeats do not matter, only the set of keys and the seed
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 750, "val": 100, "test": 150}
    assert assign_splits(keys, seed=6, val=0.1, test=0.15) != a


def test_dedupe_keeps_one_per_group_and_drops_conflicts():
    rows = [
        {"file_name": "a.jpg", "age": 30.0, "md5": "x"},
        {"file_name": "b.jpg", "age": 32.0, "md5": "x"},
        {"file_name": "c.jpg", "age": 10.0, "md5": "y"},
        {"file_name": "d.jpg", "age": 60.0, "md5": "y"},
        {"file_name": "e.jpg", "age": 44.0, "md5": "z"},
    ]
    kept, dropped = dedupe(rows)
    assert sorted(r["file_name"] for r in kept) == ["a.jpg", "e.jpg"]
    assert [r for r in kept if r["file_name"] == "a.jpg"][0]["age"] == 31.0
    reasons = {r["file_name"]: r["reason"] for r in dropped}
    assert "duplicate of a.jpg" in reasons["b.jpg"]
    assert "conflicting ages" in reasons["c.jpg"] and "conflicting ages" in reasons["d.jpg"]


def test_prepare_on_real_photos_no_leakage(tmp_path):
    root = need_utkface()
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    dups = [r for r in rows if int(r["dup_group_size"]) > 1]
    groups: dict[str, list[dict]] = {}
    for r in dups:
        groups.setdefault(r["md5"], []).append(r)
    pick = [r for g in list(groups.values())[:25] for r in g]
    rng = np.random.default_rng(3)
    singles = [rows[i] for i in rng.choice(len(rows), 40, replace=False) if int(rows[i]["dup_group_size"]) == 1]
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age"])
        for r in pick + singles:
            w.writerow([r["file_name"], r["real_age"]])
    cache = tmp_path / "cache"
    out = prepare(root / "images", labels, cache, seed=11, val=0.2, test=0.3, faces_cfg=FacesConfig())

    with open(out / "split.csv", newline="") as fh:
        split_rows = list(csv.DictReader(fh))
    by_md5: dict[str, set[str]] = {}
    for r in split_rows:
        by_md5.setdefault(r["md5"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_md5.values())
    assert len(split_rows) == len(by_md5)  # one photo per duplicate group
    names = {r["file_name"] for r in split_rows}
    for g in list(groups.values())[:25]:
        assert len(names & {r["file_name"] for r in g}) <= 1
    crops = np.load(out / "crops.npy")
    with open(out / "index.csv", newline="") as fh:
        index = list(csv.DictReader(fh))
    n = FacesConfig().output_size
    assert crops.shape[1:] == (n, n, 3) and len(index) == len(crops)
    assert (out / "rejected.csv").read_text().count("\n") >= 1 + sum(len(g) - 1 for g in list(groups.values())[:25])

    # Resumable: a second run re-uses the aligned chunks and gives the same crops.
    parts = sorted((out / "parts").glob("*.npz"))
    mtimes = [p.stat().st_mtime_ns for p in parts]
    prepare(root / "images", labels, cache, seed=11, val=0.2, test=0.3, faces_cfg=FacesConfig())
    assert [p.stat().st_mtime_ns for p in parts] == mtimes
    assert np.array_equal(np.load(out / "crops.npy"), crops)


def test_prepare_refuses_cache_inside_repo(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    labels = tmp_path / "l.csv"
    labels.write_text("file_name,real_age\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.prepare",
            "--images",
            str(tmp_path),
            "--labels",
            str(labels),
            "--cache",
            str(REPO / "cache"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 2 and "inside the repository" in r.stderr


def _labelled_sample(root, n_groups: int, n_single: int, seed: int) -> list[dict]:
    """Rows of a real labels CSV: every copy of n_groups byte-identical groups, plus singles."""
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["md5"], []).append(r)
    dup = [g for g in groups.values() if len(g) > 1][:n_groups]
    rng = np.random.default_rng(seed)
    singles = [rows[i] for i in rng.choice(len(rows), 4 * n_single, replace=False) if len(groups[rows[i]["md5"]]) == 1]
    return [r for g in dup for r in g] + singles[:n_single]


def test_two_sources_split_by_group_within_each_source(tmp_path):
    from tests.helpers import need_aaf
    from training.prepare import Source, prepare_sources

    utk, aaf = need_utkface(), need_aaf()
    sources = []
    for name, root, seed in (("utkface", utk, 1), ("aaf-train", aaf, 2)):
        labels = tmp_path / f"{name}.csv"
        picked = _labelled_sample(root, 12, 40, seed)
        with open(labels, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["file_name", "real_age", "gender"], extrasaction="ignore")
            w.writeheader()
            w.writerows(picked)
        sources.append(Source(name, root / "images", labels))
    out = prepare_sources(sources, tmp_path / "cache", seed=5, val=0.2, test=0.3, faces_cfg=FacesConfig())
    assert out.name.endswith("-utkface+aaf-train")

    with open(out / "split.csv", newline="") as fh:
        split_rows = list(csv.DictReader(fh))
    assert {"source", "gender"} <= set(split_rows[0])
    by_md5: dict[str, set[str]] = {}
    for r in split_rows:
        by_md5.setdefault(r["md5"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_md5.values())  # no duplicate group straddles two splits
    assert len(split_rows) == len(by_md5)
    for src in ("utkface", "aaf-train"):
        got = {r["split"] for r in split_rows if r["source"] == src}
        assert got == {"train", "val", "test"}, (src, got)  # every source in every split
        assert {r["gender"] for r in split_rows if r["source"] == src} <= {"0", "1"}
    # Each source is split on its own: the UTKFace rows split as they would alone.
    alone = prepare(
        utk / "images", sources[0].labels, tmp_path / "cache1", seed=5, val=0.2, test=0.3, faces_cfg=FacesConfig()
    )
    with open(alone / "split.csv", newline="") as fh:
        alone_split = {r["file_name"]: r["split"] for r in csv.DictReader(fh)}
    assert alone_split == {r["file_name"]: r["split"] for r in split_rows if r["source"] == "utkface"}

    from training.data import load_split

    for split in ("train", "val", "test"):
        s = load_split(out, split)
        assert set(s.sources()) == {"utkface", "aaf-train"} and len(s.x) == len(s.age) == len(s.source)
    info = __import__("json").loads((out / "dataset.json").read_text())
    assert set(info["sources"]) == {"utkface", "aaf-train"}


def test_cli_ends_by_naming_the_dataset_folder(tmp_path, capsys):
    """The folder's name depends on sources, size and cache; the last line gives it for --data."""
    from training.prepare import main

    root = need_utkface()
    labels = tmp_path / "mine.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file_name", "real_age"], extrasaction="ignore")
        w.writeheader()
        w.writerows(_labelled_sample(root, 0, 12, 4))
    assert main(["--images", str(root / "images"), "--labels", str(labels), "--cache", str(tmp_path / "c")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("dataset folder (--data")
    folder = Path(last.rsplit(": ", 1)[1])
    assert folder.parent == tmp_path / "c" and (folder / "dataset.json").exists() and (folder / "split.csv").exists()


def test_sources_file_and_unpaired_arguments(tmp_path):
    import subprocess
    import sys

    from tests.helpers import REPO

    (tmp_path / "imgs").mkdir()
    (tmp_path / "l.csv").write_text("file_name,real_age\n")

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "training.prepare", *a, "--cache", str(tmp_path / "c")],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )

    r = run("--images", str(tmp_path / "imgs"), "--images", str(tmp_path / "imgs"), "--labels", str(tmp_path / "l.csv"))
    assert r.returncode == 2 and "in pairs" in r.stderr
    (tmp_path / "sources.csv").write_text("name,images,labels\nmine,imgs,nope.csv\n")
    r = run("--sources", str(tmp_path / "sources.csv"))
    assert r.returncode == 2 and "source mine" in r.stderr and "nope.csv" in r.stderr
    (tmp_path / "bad.csv").write_text("name,folder\n")
    r = run("--sources", str(tmp_path / "bad.csv"))
    assert r.returncode == 2 and "name,images,labels" in r.stderr
    assert "Traceback" not in r.stderr


def test_own_split_column_is_kept_and_its_train_part_gives_the_test_split():
    from training.prepare import split_rows

    rows = [{"md5": f"t{i:03d}", "own_split": "train"} for i in range(200)]
    rows += [{"md5": f"v{i:03d}", "own_split": "val"} for i in range(50)]
    got = split_rows(rows, seed=3, val=0.1, test=0.15)
    assert {got[f"v{i:03d}"] for i in range(50)} == {"val"}  # the source's own validation part
    train_part = [got[f"t{i:03d}"] for i in range(200)]
    assert train_part.count("test") == 30 and train_part.count("train") == 170 and "val" not in train_part
    # Without the column: the seeded split, as before.
    plain = [{"md5": r["md5"], "own_split": ""} for r in rows]
    assert split_rows(plain, 3, 0.1, 0.15) == assign_splits([r["md5"] for r in plain], 3, 0.1, 0.15)


def test_own_split_column_with_an_unknown_part_is_refused():
    import pytest

    from training.data import LabelsError
    from training.prepare import split_rows

    with pytest.raises(LabelsError, match="'holdout'"):
        split_rows([{"md5": "a", "own_split": "train"}, {"md5": "b", "own_split": "holdout"}], 1, 0.1, 0.1)


def test_appa_real_third_source_split_by_its_split_column(tmp_path):
    """APPA-REAL's own `val` part stays validation and a slice of its `train` part becomes the
    test split; no photo (duplicate group) straddles two splits, across all three sources."""
    from tests.helpers import need_aaf, need_appa
    from training.prepare import Source, prepare_sources

    utk, aaf, appa = need_utkface(), need_aaf(), need_appa()
    sources = []
    for name, root, seed in (("utkface", utk, 1), ("aaf-train", aaf, 2)):
        labels = tmp_path / f"{name}.csv"
        with open(labels, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["file_name", "real_age"], extrasaction="ignore")
            w.writeheader()
            w.writerows(_labelled_sample(root, 12, 40, seed)[:15])
        sources.append(Source(name, root / "images", labels))
    with open(appa / "labels.csv", newline="") as fh:
        appa_rows = list(csv.DictReader(fh))
    picked = [r for r in appa_rows if r["split"] == "train"][:30] + [r for r in appa_rows if r["split"] == "val"][:10]
    labels = tmp_path / "appa.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(appa_rows[0]))
        w.writeheader()
        w.writerows(picked)
    sources.append(Source("appa-real", appa / "images", labels))
    out = prepare_sources(sources, tmp_path / "cache", seed=5, val=0.1, test=0.15, faces_cfg=FacesConfig())
    with open(out / "split.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_md5: dict[str, set[str]] = {}
    for r in rows:
        by_md5.setdefault(r["md5"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_md5.values()) and len(rows) == len(by_md5)
    own = {r["file_name"]: r["split"] for r in picked}
    got = {r["file_name"]: r["split"] for r in rows if r["source"] == "appa-real"}
    assert len(got) == 40
    assert all(got[f] == "val" for f, s in own.items() if s == "val")
    from_train = [got[f] for f, s in own.items() if s == "train"]
    assert from_train.count("test") == round(0.15 * 30) and "val" not in from_train
