"""teacher_frames: a prepared dataset's photos re-aligned at the teacher's own framing (224 px,
margin 0.42), cached as a dataset folder with the same rows, for fine-tuning the teacher where it
reads best.

The frozen teacher reads its own framing: its head sends 26.8% of validation adults to ID at 3
minors there, while the fine-tune on the till's tighter 112 px crops scaled to 160 px started from
29.7% after its probe epoch (docs/model.md, "Tried after shipping"). So `teacher_tune` should fine-tune on these crops, and its targets then line up with
the student's folder row for row.

    python -m training.experiments.teacher_frames --data CACHE_DATASET_DIR \\
        --images utkface=DIR --images aaf-train=DIR --images appa-real=DIR --out FRAMES_DIR

FRAMES_DIR gets crops.npy (every row of --data, zeros where the teacher's pass finds no face)
and index.csv (--data's rows that have a face, row numbers unchanged). Resumable: it records which
rows are done every 1,000 rows. It stays outside the repository: face crops are never committed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from training.data import LabelsError, inside_repository
from training.teacher import EMBED_MARGIN, EMBED_SIZE, TeacherError, images_arg, read_rows, teacher_framed

DONE_FILE = "frames-done.npz"


def _progress(out: Path, data: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops, rows done, rows with a face) of `out`, resumed where a run from the same `data`
    stopped, or new. Crops without their record, or a record of another folder, start afresh or
    are refused: a row marked done must hold its crop."""
    path, done_path = out / "crops.npy", out / DONE_FILE
    shape = (n, EMBED_SIZE, EMBED_SIZE, 3)
    if path.exists() and done_path.exists():
        crops = np.load(path, mmap_mode="r+")
        z = np.load(done_path)
        if str(z["framed_from"]) != str(data.resolve()) or crops.shape != shape or len(z["done"]) != n:
            raise TeacherError(
                f"{out} holds crops framed from {z['framed_from']} ({crops.shape[0]} rows), not {data} "
                f"({n} rows): give another --out"
            )
        return crops, z["done"].copy(), z["has"].copy()
    crops = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    return crops, np.zeros(n, bool), np.zeros(n, bool)


def frame_dataset(data: Path, images: dict[str, Path], out: Path, log=print) -> Path:
    """Write `out` (crops.npy, index.csv) for the rows of `data`'s index.csv; returns `out`."""
    rows = read_rows(data, images)
    if out.resolve() == data.resolve():
        raise TeacherError(f"--out {out} is the --data folder: give a folder of its own")
    if inside_repository(out):
        raise TeacherError(f"--out {out} is inside the repository; face crops must stay outside it")
    # Crops are stored by position, and the copied index.csv keeps the row numbers: they must agree.
    if [int(r["row"]) for r in rows] != list(range(len(rows))):
        raise TeacherError(
            f"{data}/index.csv does not list rows 0..{len(rows) - 1} in order: give a folder from training.prepare"
        )
    out.mkdir(parents=True, exist_ok=True)
    crops, done, has = _progress(out, data, len(rows))
    done_path = out / DONE_FILE

    def save():
        crops.flush()
        # Written whole and renamed, so a run killed mid-write resumes from the last record.
        tmp = out / "frames-done.tmp.npz"
        np.savez(tmp, done=done, has=has, framed_from=str(data.resolve()))
        tmp.replace(done_path)

    t0 = time.time()

    for i, crop in teacher_framed(rows, images, ~done):
        if crop is not None:
            crops[i] = crop
            has[i] = True
        done[i] = True
        if (i + 1) % 1000 == 0:
            save()
            log(f"  framed {i + 1}/{len(rows)} ({time.time() - t0:.0f} s)")
    save()
    with open(out / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for i, r in enumerate(rows) if has[i])
    info = {
        "framed_from": str(data),
        "size": EMBED_SIZE,
        "margin": EMBED_MARGIN,
        "rows": len(rows),
        "faces": int(has.sum()),
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"teacher-framed crops: {out} ({info['faces']} of {len(rows)} rows have a face)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.experiments.teacher_frames", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--data", type=Path, required=True, help="dataset folder written by training.prepare")
    ap.add_argument("--images", action="append", default=[], help="SOURCE=FOLDER of that source's photos")
    ap.add_argument(
        "--out", type=Path, required=True, help="folder for the teacher-framed crops (outside the repository)"
    )
    a = ap.parse_args(argv)
    try:
        frame_dataset(a.data, images_arg(a.images), a.out)
    except (TeacherError, LabelsError) as exc:
        print(f"training.experiments.teacher_frames: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
