"""dataset: reading the crops cache that `training.prepare` writes (crops.npy + index.csv), one
split at a time, with the source and band of every crop for sampling and per-source figures."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Age bands used to balance sampling; the gate lives between the second and the fourth.
SAMPLING_BANDS = ((0, 12), (13, 17), (18, 24), (25, 34), (35, 49), (50, 64), (65, 200))


@dataclass(frozen=True)
class Split:
    """One split of a crops cache: images (N,H,W,3 uint8), ages (N,) and source names (N,)."""

    x: np.ndarray
    age: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.age)

    def sources(self) -> list[str]:
        return sorted(set(self.source.tolist()))

    def take(self, n: int) -> "Split":
        return Split(self.x[:n], self.age[:n], self.source[:n])


def load_split(data: Path, split: str) -> Split:
    crops = np.load(data / "crops.npy", mmap_mode="r")
    rows, ages, sources = [], [], []
    with open(data / "index.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] == split:
                rows.append(int(r["row"]))
                ages.append(float(r["age"]))
                # Caches made before prepare took several sources hold one unnamed source.
                sources.append(r.get("source") or "default")
    return Split(np.ascontiguousarray(crops[rows]), np.array(ages, np.float32), np.array(sources))


def band_index(ages: np.ndarray) -> np.ndarray:
    whole = np.floor(np.asarray(ages, float))
    out = np.zeros(len(whole), int)
    for i, (lo, hi) in enumerate(SAMPLING_BANDS):
        out[(whole >= lo) & (whole <= hi)] = i
    return out


def cell_weights(split: Split, power: float, boost: dict[int, float]) -> dict[tuple[str, int], float]:
    """Sampling probability of each (source, age band) cell. Each source gets a share that grows
    with the square root of its size (a small population is not drowned by a large one, nor
    repeated to exhaustion), and within a source each band a share that grows as count**power
    (power < 1 lifts the rare bands, teenagers among them), times `boost` for chosen bands."""
    bands = band_index(split.age)
    counts = {}
    for s, b in zip(split.source.tolist(), bands.tolist()):
        counts[(s, b)] = counts.get((s, b), 0) + 1
    per_source = {s: sum(n for (t, _), n in counts.items() if t == s) for s in split.sources()}
    src_share = {s: np.sqrt(n) for s, n in per_source.items()}
    total = sum(src_share.values())
    out = {}
    for s in per_source:
        cells = {b: n ** power * boost.get(b, 1.0) for (t, b), n in counts.items() if t == s}
        z = sum(cells.values())
        for b, v in cells.items():
            out[(s, b)] = src_share[s] / total * v / z
    return out
