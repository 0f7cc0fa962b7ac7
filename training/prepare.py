"""prepare: turn a folder of labelled photos into aligned face crops (made by the till's own
edge_app.faces), de-duplicated and split train/val/test by duplicate group, cached OUTSIDE the
repo.

    python -m training.prepare --images DIR --labels CSV [--cache DIR] [--seed 1234]

The labels CSV needs `file_name,real_age` (UTKFace and APPA-REAL layouts both work). The cache
directory comes from --cache or $AGECHECK_CACHE (default ~/.cache/agecheck). Re-running skips
work already done (crops are written in chunks).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edge_app.config import FacesConfig
from edge_app.faces import TEMPLATE_VERSION, FacePipeline, ImageError, load_image

CHUNK = 1000
SPLITS = ("train", "val", "test")


def default_cache() -> Path:
    return Path(os.environ.get("AGECHECK_CACHE", Path.home() / ".cache" / "agecheck"))


def dataset_dir(cache: Path, output_size: int, margin: float) -> Path:
    return cache / f"crops-{TEMPLATE_VERSION}-{output_size}px-m{margin:g}"


def read_labels(path: Path) -> list[tuple[str, float]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"file_name", "real_age"} - set(reader.fieldnames or [])
        if missing:
            sys.exit(f"error: {path} lacks column(s) {', '.join(sorted(missing))}; need file_name,real_age")
        for i, row in enumerate(reader, start=2):
            try:
                age = float(row["real_age"])
            except (TypeError, ValueError):
                print(f"warning: {path}:{i}: age {row['real_age']!r} is not a number; row skipped", file=sys.stderr)
                continue
            rows.append((row["file_name"], age))
    return rows


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dedupe(rows: list[dict], max_age_conflict: float = 5.0) -> tuple[list[dict], list[dict]]:
    """One row per identical file content. Copies that disagree on age by more than
    max_age_conflict years are dropped (the label is unreliable); otherwise the median age is
    kept."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["md5"], []).append(r)
    kept, dropped = [], []
    for g in groups.values():
        ages = [r["age"] for r in g]
        if max(ages) - min(ages) > max_age_conflict:
            dropped.extend({**r, "reason": f"duplicate group with conflicting ages {sorted(ages)}"} for r in g)
            continue
        first = sorted(g, key=lambda r: r["file_name"])[0]
        kept.append({**first, "age": float(np.median(ages)), "dup_group_size": len(g)})
        dropped.extend({**r, "reason": "duplicate of " + first["file_name"]} for r in g if r is not first)
    return kept, dropped


def assign_splits(keys: list[str], seed: int, val: float, test: float) -> dict[str, str]:
    """Split by duplicate-group key (content hash) so no copy straddles two splits. Stable for a
    given seed and set of keys."""
    uniq = sorted(set(keys))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_test = int(round(test * len(uniq)))
    n_val = int(round(val * len(uniq)))
    out = {}
    for rank, idx in enumerate(order):
        out[uniq[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def _save_chunk(path: Path, crops: list[np.ndarray], meta: list[dict]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, crops=np.stack(crops) if crops else np.zeros((0,), np.uint8), meta=json.dumps(meta))
    tmp.replace(path)


def prepare(images: Path, labels: Path, cache: Path, seed: int, val: float, test: float, faces_cfg: FacesConfig) -> Path:
    out = dataset_dir(cache, faces_cfg.output_size, faces_cfg.margin)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    rows = read_labels(labels)
    print(f"{len(rows)} labelled photos in {labels}")

    # Content hashes first: de-duplication and the split depend only on the files, not on faces.
    hashes_path = out / "hashes.json"
    hashes = json.loads(hashes_path.read_text()) if hashes_path.exists() else {}
    missing = []
    for name, _ in rows:
        if name not in hashes:
            p = images / name
            hashes[name] = file_md5(p) if p.is_file() else None
    hashes_path.write_text(json.dumps(hashes))
    table = []
    for name, age in rows:
        if hashes[name] is None:
            missing.append({"file_name": name, "age": age, "md5": "", "reason": "file missing"})
        else:
            table.append({"file_name": name, "age": age, "md5": hashes[name]})
    kept, dropped = dedupe(table)
    dropped += missing
    split_of = assign_splits([r["md5"] for r in kept], seed, val, test)
    print(f"{len(kept)} unique photos after de-duplication; {len(dropped)} dropped (see rejected.csv)")

    pipe = FacePipeline(faces_cfg)
    t0 = time.time()
    for c in range(0, len(kept), CHUNK):
        path = parts / f"part_{c // CHUNK:05d}.npz"
        if path.exists():
            continue
        crops, meta = [], []
        for r in kept[c : c + CHUNK]:
            try:
                rgb, _ = load_image(images / r["file_name"], faces_cfg.max_image_pixels)
            except ImageError as exc:
                meta.append({**r, "detected": 0, "reason": str(exc)})
                continue
            res = pipe.process(rgb)
            if res.aligned is None:
                meta.append({**r, "detected": 0, "reason": "no face detected"})
                continue
            crops.append(res.aligned.crop)
            meta.append({**r, "detected": 1, "reason": "; ".join(res.aligned.rejected), **asdict(res.aligned.quality)})
        _save_chunk(path, crops, meta)
        done = min(c + CHUNK, len(kept))
        print(f"  aligned {done}/{len(kept)} ({time.time() - t0:.0f} s)", flush=True)
    pipe.close()

    all_crops, all_meta = [], []
    for path in sorted(parts.glob("part_*.npz")):
        z = np.load(path)
        meta = json.loads(str(z["meta"]))
        det = [m for m in meta if m["detected"]]
        if det:
            all_crops.append(z["crops"])
        all_meta.extend(meta)
    crops = np.concatenate(all_crops)
    detected = [m for m in all_meta if m["detected"]]
    assert len(detected) == len(crops)
    for m in detected:
        m["split"] = split_of[m["md5"]]
    np.save(out / "crops.npy", crops)
    with open(out / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "file_name", "age", "md5", "split", "gate"])
        for i, m in enumerate(detected):
            w.writerow([i, m["file_name"], m["age"], m["md5"], m["split"], m["reason"]])
    with open(out / "rejected.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "age", "reason"])
        for m in dropped + [m for m in all_meta if not m["detected"]]:
            w.writerow([m["file_name"], m["age"], m["reason"]])
    # The split file is what evaluate and the tests read: one line per labelled photo kept.
    with open(out / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "md5", "split"])
        for r in kept:
            w.writerow([r["file_name"], r["age"], r["md5"], split_of[r["md5"]]])
    info = {
        "images": str(images),
        "labels": str(labels),
        "seed": seed,
        "fractions": {"val": val, "test": test},
        "template_version": TEMPLATE_VERSION,
        "output_size": faces_cfg.output_size,
        "margin": faces_cfg.margin,
        "labelled": len(rows),
        "unique": len(kept),
        "detected": len(detected),
        "detection_rate": round(len(detected) / max(1, len(kept)), 4),
        "per_split": {s: sum(1 for m in detected if m["split"] == s) for s in SPLITS},
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="folder of photos")
    ap.add_argument("--labels", type=Path, required=True, help="CSV with file_name,real_age")
    ap.add_argument("--cache", type=Path, default=None, help="cache folder outside the repo (default $AGECHECK_CACHE or ~/.cache/agecheck)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--val", type=float, default=0.10)
    ap.add_argument("--test", type=float, default=0.15)
    ap.add_argument("--size", type=int, default=FacesConfig.output_size, help="crop side in pixels")
    a = ap.parse_args(argv)
    for p, what in ((a.images, "--images"), (a.labels, "--labels")):
        if not p.exists():
            ap.error(f"{what}: {p} does not exist")
    cache = a.cache or default_cache()
    repo = Path(__file__).resolve().parent.parent
    if cache.resolve().is_relative_to(repo):
        ap.error(f"--cache: {cache} is inside the repository; face crops must stay outside it")
    cfg = FacesConfig(output_size=a.size)
    prepare(a.images, a.labels, cache, a.seed, a.val, a.test, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
