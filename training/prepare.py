"""prepare: turn one or more folders of labelled photos (the *sources*) into aligned face crops
(made by the till's own edge_app.vision.faces), de-duplicated and split train/val/test by duplicate
group within each source, cached OUTSIDE the repo.

    python -m training.prepare --images DIR --labels CSV [--images DIR --labels CSV ...]
        [--sources FILE] [--cache DIR] [--seed 1234] [--size 112]

Each labels CSV needs `file_name,real_age` (UTKFace, All-Age-Faces and APPA-REAL layouts all
work); optional `gender` (1 female, 0 male) and `race` columns are carried through so that
`training.evaluate` can break its figures down by them. A source is named after its folder
(`.../utkface/images` -> `utkface`) unless `--name` or the sources file names it. The cache
directory comes from --cache or $AGECHECK_CACHE (default ~/.cache/agecheck). Re-running skips
work already done (crops are written in chunks, per source).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_app.config import FacesConfig
from edge_app.vision.faces import TEMPLATE_VERSION, FacePipeline, ImageError, load_image
from training.data import LabelsError, inside_repository, read_labels

CHUNK = 1000
SPLITS = ("train", "val", "test")
# A source's own `split` column may hold these (a missing value in a file that has the column is
# refused: a photo of unknown part could be a test photo).
OWN_SPLITS = ("train", "val", "test")
# Optional label columns kept with each photo (for breakdowns in evaluate); "" when absent.
EXTRA_COLUMNS = ("gender", "race")


@dataclass(frozen=True)
class Source:
    """One folder of photos with its labels CSV, under a short name recorded with each photo."""

    name: str
    images: Path
    labels: Path


def default_cache() -> Path:
    return Path(os.environ.get("AGECHECK_CACHE", Path.home() / ".cache" / "agecheck"))


def dataset_dir(cache: Path, output_size: int, margin: float, sources: tuple[str, ...] = ()) -> Path:
    """One source keeps the name it has always had; several are named in the folder, so a
    UTKFace-only cache and a two-source cache live side by side."""
    base = f"crops-{TEMPLATE_VERSION}-{output_size}px-m{margin:g}"
    return cache / (base if len(sources) <= 1 else base + "-" + "+".join(sources))


def source_name(images: Path) -> str:
    """`.../utkface/images` -> `utkface`; `.../my-photos` -> `my-photos`."""
    p = images.resolve()
    return p.parent.name if p.name.lower() in {"images", "imgs", "photos", "img"} else p.name


def read_sources_file(path: Path) -> list[Source]:
    """A CSV with `name,images,labels`; relative paths are relative to the file."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"name", "images", "labels"} - set(reader.fieldnames or [])
        if missing:
            raise LabelsError(
                f"{path}: sources file lacks column(s) {', '.join(sorted(missing))}; need name,images,labels"
            )
        return [
            Source(r["name"].strip(), path.parent / r["images"].strip(), path.parent / r["labels"].strip())
            for r in reader
            if r["name"].strip()
        ]


def check_sources(sources: list[Source]) -> None:
    if not sources:
        raise LabelsError("no sources: give --images DIR --labels CSV (once per source) or --sources FILE")
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabelsError(f"two sources are named {', '.join(dup)}; give each its own --name")
    for s in sources:
        for p, what in ((s.images, "images folder"), (s.labels, "labels CSV")):
            if not p.exists():
                raise LabelsError(f"source {s.name}: {what} {p} does not exist")


def label_rows(path: Path) -> list[dict]:
    """prepare's working rows: file_name, age, the optional columns it carries through, and the
    source's own split assignment (`own_split`, "" when its labels have no `split` column)."""
    return [
        {
            "file_name": r.file_name,
            "age": r.real_age,
            **{c: r.columns.get(c, "") for c in EXTRA_COLUMNS},
            "own_split": r.columns.get("split", "").lower(),
        }
        for r in read_labels(path)
    ]


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


def split_rows(rows: list[dict], seed: int, val: float, test: float) -> dict[str, str]:
    """Split of each row's duplicate group (md5). A source whose labels carry their own `split`
    column (APPA-REAL: train / val) keeps it: its `val` part is the validation split, and `test`
    of its `train` part (cut by duplicate group, as other sources are) is the test split; a
    source's own `test` part stays test. Without the column: the seeded split by `val` / `test`."""
    own = {r["md5"]: r.get("own_split", "") for r in rows}
    if not any(own.values()):
        return assign_splits(list(own), seed, val, test)
    bad = sorted({v for v in own.values() if v not in OWN_SPLITS})
    if bad:
        raise LabelsError(f"split column holds {', '.join(repr(b) for b in bad)}; expected train, val or test")
    out = {k: v for k, v in own.items() if v in ("val", "test")}
    out.update(assign_splits([k for k, v in own.items() if v == "train"], seed, 0.0, test))
    return out


def _save_chunk(path: Path, crops: list[np.ndarray], meta: list[dict]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, crops=np.stack(crops) if crops else np.zeros((0,), np.uint8), meta=json.dumps(meta))
    tmp.replace(path)


def _hashes(source: Source, rows: list[dict], out: Path) -> dict[str, str | None]:
    """Content hashes, cached per source: de-duplication and the split depend only on the files."""
    path = out / f"hashes-{source.name}.json"
    legacy = out / "hashes.json"  # caches written before sources had names
    hashes = json.loads((path if path.exists() else legacy).read_text()) if (path.exists() or legacy.exists()) else {}
    for r in rows:
        if r["file_name"] not in hashes:
            p = source.images / r["file_name"]
            hashes[r["file_name"]] = file_md5(p) if p.is_file() else None
    path.write_text(json.dumps(hashes))
    return hashes


def _parts_dir(out: Path, source: Source, n_sources: int) -> Path:
    """Where a source's aligned chunks live: parts/<source>/, except in a single-source cache
    made before sources had names, whose chunks live in parts/ itself."""
    legacy = out / "parts"
    return legacy if n_sources == 1 and (legacy / "part_00000.npz").exists() else legacy / source.name


def _align(source: Source, kept: list[dict], parts: Path, faces_cfg: FacesConfig) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    todo = [c for c in range(0, len(kept), CHUNK) if not (parts / f"part_{c // CHUNK:05d}.npz").exists()]
    if not todo:
        return
    pipe = FacePipeline(faces_cfg)
    t0 = time.time()
    try:
        for c in todo:
            crops, meta = [], []
            for r in kept[c : c + CHUNK]:
                try:
                    rgb, _ = load_image(source.images / r["file_name"], faces_cfg.max_image_pixels)
                except ImageError as exc:
                    meta.append({**r, "detected": 0, "reason": str(exc)})
                    continue
                res = pipe.process(rgb)
                if res.aligned is None:
                    meta.append({**r, "detected": 0, "reason": "no face detected"})
                    continue
                crops.append(res.aligned.crop)
                meta.append(
                    {**r, "detected": 1, "reason": "; ".join(res.aligned.rejected), **asdict(res.aligned.quality)}
                )
            _save_chunk(parts / f"part_{c // CHUNK:05d}.npz", crops, meta)
            done = min(c + CHUNK, len(kept))
            print(f"  {source.name}: aligned {done}/{len(kept)} ({time.time() - t0:.0f} s)", flush=True)
    finally:
        pipe.close()


def _select(
    src: Source,
    out: Path,
    seen_md5: dict[str, str],
    n_sources: int,
    faces_cfg: FacesConfig,
    seed: int,
    val: float,
    test: float,
) -> tuple[list[dict], list[dict], int]:
    """One source's labelled photos de-duplicated (within it and against the sources before it,
    whose md5s `seen_md5` holds and gains this one's), split and aligned: (kept, dropped, labelled)."""
    rows = label_rows(src.labels)
    print(f"{src.name}: {len(rows)} labelled photos in {src.labels}")
    hashes = _hashes(src, rows, out)
    table, dropped = [], []
    for r in rows:
        md5 = hashes[r["file_name"]]
        if md5 is None:
            dropped.append({**r, "source": src.name, "md5": "", "reason": "file missing"})
        else:
            table.append({**r, "source": src.name, "md5": md5})
    kept, dups = dedupe(table)
    dropped += dups
    # A photo already in an earlier source stays there only: no copy may straddle splits.
    cross = [r for r in kept if r["md5"] in seen_md5]
    dropped += [{**r, "reason": f"same photo as in source {seen_md5[r['md5']]}"} for r in cross]
    kept = [r for r in kept if r["md5"] not in seen_md5]
    seen_md5.update({r["md5"]: src.name for r in kept})
    split_of = split_rows(kept, seed, val, test)
    for r in kept:
        r["split"] = split_of[r["md5"]]
    print(f"{src.name}: {len(kept)} unique photos after de-duplication; {len(dropped)} dropped (see rejected.csv)")
    _align(src, kept, _parts_dir(out, src, n_sources), faces_cfg)
    return kept, dropped, len(rows)


def _gather(sources: list[Source], out: Path) -> tuple[np.ndarray, list[dict]]:
    """Every source's aligned crops, in one array, and every photo's metadata (detected or not)."""
    all_crops, all_meta = [], []
    for src in sources:
        for path in sorted(_parts_dir(out, src, len(sources)).glob("part_*.npz")):
            z = np.load(path)
            meta = json.loads(str(z["meta"]))
            if any(m["detected"] for m in meta):
                all_crops.append(z["crops"])
            all_meta.extend({"source": src.name, **m} for m in meta)
    crops = np.concatenate(all_crops)
    detected = sum(1 for m in all_meta if m["detected"])
    if detected != len(crops):
        raise RuntimeError(
            f"cache {out} is inconsistent ({detected} faces, {len(crops)} crops); delete it and run again"
        )
    return crops, all_meta


def _write_tables(out: Path, detected: list[dict], rejected: list[dict], kept_all: list[dict]) -> None:
    """index.csv (one row per crop), rejected.csv and split.csv."""
    extra = list(EXTRA_COLUMNS)
    with open(out / "index.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "file_name", "age", "md5", "split", "gate", "source", *extra])
        for i, m in enumerate(detected):
            w.writerow(
                [
                    i,
                    m["file_name"],
                    m["age"],
                    m["md5"],
                    m["split"],
                    m["reason"],
                    m["source"],
                    *(m.get(c, "") for c in extra),
                ]
            )
    with open(out / "rejected.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "age", "reason", "source"])
        for m in rejected:
            w.writerow([m["file_name"], m["age"], m["reason"], m["source"]])
    # The split file is a labels CSV that evaluate reads: one line per labelled photo kept.
    with open(out / "split.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "md5", "split", "source", *extra])
        for r in kept_all:
            w.writerow([r["file_name"], r["age"], r["md5"], r["split"], r["source"], *(r.get(c, "") for c in extra)])


def _dataset_info(
    sources: list[Source],
    labelled: dict[str, int],
    kept_all: list[dict],
    detected: list[dict],
    seed: int,
    val: float,
    test: float,
    faces_cfg: FacesConfig,
) -> dict:
    """What dataset.json says of the folder: per source and in all."""
    per_source = {}
    for src in sources:
        det = [m for m in detected if m["source"] == src.name]
        uniq = sum(1 for r in kept_all if r["source"] == src.name)
        per_source[src.name] = {
            "images": str(src.images),
            "labels": str(src.labels),
            "labelled": labelled[src.name],
            "unique": uniq,
            "detected": len(det),
            "detection_rate": round(len(det) / max(1, uniq), 4),
            "per_split": {s: sum(1 for m in det if m["split"] == s) for s in SPLITS},
        }
    info = {
        "sources": per_source,
        "seed": seed,
        "fractions": {"val": val, "test": test},
        "template_version": TEMPLATE_VERSION,
        "output_size": faces_cfg.output_size,
        "margin": faces_cfg.margin,
        "labelled": sum(labelled.values()),
        "unique": len(kept_all),
        "detected": len(detected),
        "detection_rate": round(len(detected) / max(1, len(kept_all)), 4),
        "per_split": {s: sum(1 for m in detected if m["split"] == s) for s in SPLITS},
    }
    if len(sources) == 1:  # the single-source fields earlier caches had
        info.update(images=str(sources[0].images), labels=str(sources[0].labels))
    return info


def prepare_sources(
    sources: list[Source], cache: Path, seed: int, val: float, test: float, faces_cfg: FacesConfig
) -> Path:
    """Align, de-duplicate and split every source; returns the dataset folder. Each source is
    split on its own (same seed), so every split holds every source in the same proportions and
    a source's split does not change when another source is added."""
    check_sources(sources)
    out = dataset_dir(cache, faces_cfg.output_size, faces_cfg.margin, tuple(s.name for s in sources))
    out.mkdir(parents=True, exist_ok=True)
    seen_md5: dict[str, str] = {}
    kept_all: list[dict] = []
    dropped_all: list[dict] = []
    labelled: dict[str, int] = {}
    for src in sources:
        kept, dropped, labelled[src.name] = _select(src, out, seen_md5, len(sources), faces_cfg, seed, val, test)
        kept_all += kept
        dropped_all += dropped
    crops, all_meta = _gather(sources, out)
    detected = [m for m in all_meta if m["detected"]]
    split_of = {(r["source"], r["md5"]): r["split"] for r in kept_all}
    for m in detected:
        m["split"] = split_of[(m["source"], m["md5"])]
    np.save(out / "crops.npy", crops)
    _write_tables(out, detected, dropped_all + [m for m in all_meta if not m["detected"]], kept_all)
    info = _dataset_info(sources, labelled, kept_all, detected, seed, val, test, faces_cfg)
    (out / "dataset.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))
    return out


def prepare(
    images: Path, labels: Path, cache: Path, seed: int, val: float, test: float, faces_cfg: FacesConfig
) -> Path:
    """One source: the folder and labels CSV this command always took."""
    return prepare_sources([Source(source_name(images), images, labels)], cache, seed, val, test, faces_cfg)


def sources_from_args(
    images: list[Path], labels: list[Path], names: list[str], sources_file: Path | None
) -> list[Source]:
    if len(images) != len(labels):
        raise LabelsError(
            f"--images given {len(images)} time(s) and --labels {len(labels)}: give them in pairs, one pair per source"
        )
    if names and len(names) != len(images):
        raise LabelsError(f"--name given {len(names)} time(s) for {len(images)} source(s): name every source or none")
    out = [Source(names[i] if names else source_name(im), im, lb) for i, (im, lb) in enumerate(zip(images, labels))]
    if sources_file is not None:
        if not sources_file.is_file():
            raise LabelsError(f"--sources: {sources_file} does not exist")
        out += read_sources_file(sources_file)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, action="append", default=[], help="folder of photos (once per source)")
    ap.add_argument(
        "--labels", type=Path, action="append", default=[], help="CSV with file_name,real_age (once per source)"
    )
    ap.add_argument("--name", action="append", default=[], help="name of each source (default: its folder's name)")
    ap.add_argument("--sources", type=Path, default=None, help="CSV with name,images,labels, one row per source")
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder outside the repo (default $AGECHECK_CACHE or ~/.cache/agecheck)",
    )
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--val", type=float, default=0.10)
    ap.add_argument("--test", type=float, default=0.15)
    ap.add_argument("--size", type=int, default=FacesConfig.output_size, help="crop side in pixels")
    a = ap.parse_args(argv)
    cache = a.cache or default_cache()
    if inside_repository(cache):
        ap.error(f"--cache: {cache} is inside the repository; face crops must stay outside it")
    try:
        sources = sources_from_args(a.images, a.labels, a.name, a.sources)
        check_sources(sources)
        out = prepare_sources(sources, cache, a.seed, a.val, a.test, FacesConfig(output_size=a.size))
    except LabelsError as exc:
        ap.error(str(exc))
    # Its name depends on the sources, crop size and cache, so say it: every later step takes it.
    print(f"dataset folder (--data for train, export and decision; its split.csv is evaluate's --labels): {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
