"""data: reading labelled photos (a labels CSV: `file_name,real_age` and optional columns) and the
crops cache that `training.prepare` writes (crops.npy + index.csv), one split at a time, with the
source and band of every crop for sampling and per-source figures."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_app.core.bands import BANDS

# Optional label columns kept with each photo: for breakdowns in evaluate and for prepare's split.
GROUP_COLUMNS = ("source", "gender", "race")


class LabelsError(ValueError):
    """A labels CSV or sources file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class LabelledPhoto:
    """One row of a labels CSV: the photo's file name (relative to its images folder), its age,
    and the optional columns present (GROUP_COLUMNS and `split`), "" where a row leaves one empty."""

    file_name: str
    real_age: float
    columns: dict = field(default_factory=dict)


def read_labels(path: Path, split: str | None = None) -> list[LabelledPhoto]:
    """The rows of a labels CSV (UTKFace, All-Age-Faces, APPA-REAL and prepare's split.csv all
    fit); rows whose age is not a number in 0..130 are skipped with a warning naming the line.
    With `split`, only the rows of that split (the CSV must then have a `split` column)."""
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"file_name", "real_age"} <= cols:
            raise LabelsError(f"{path} must have the columns file_name,real_age")
        if split and "split" not in cols:
            raise LabelsError(
                f"--split given but {path} has no 'split' column (use the split.csv from training.prepare)"
            )
        keep = [c for c in (*GROUP_COLUMNS, "split") if c in cols]
        rows = []
        for i, r in enumerate(reader, start=2):
            if split and r["split"] != split:
                continue
            try:
                age = float(r["real_age"])
            except (TypeError, ValueError):
                age = float("nan")
            if not (np.isfinite(age) and 0 <= age <= 130):
                print(f"warning: {path}:{i}: age {r['real_age']!r} is not an age; row skipped", file=sys.stderr)
                continue
            rows.append(LabelledPhoto(r["file_name"], age, {c: (r[c] or "").strip() for c in keep}))
        return rows


# The `gender` coding of UTKFace's and All-Age-Faces' labels.csv (and so of prepare's split.csv).
FEMALE, MALE = "1", "0"

# Sampling is balanced over the report's age bands (edge_app.core.policy.BANDS); the gate lives
# between the second and the fourth.


@dataclass(frozen=True)
class Split:
    """One split of a crops cache: images (N,H,W,3 uint8), ages (N,), source names (N,) and sex
    (N,) as the labels give it ("1" female, "0" male, "" not given)."""

    x: np.ndarray
    age: np.ndarray
    source: np.ndarray
    sex: np.ndarray | None = None
    row: np.ndarray | None = None  # each crop's row in the cache (what per-row files such as teacher targets index)

    def __post_init__(self):
        if self.sex is None:
            object.__setattr__(self, "sex", np.full(len(self.age), "", dtype=object))
        if self.row is None:
            object.__setattr__(self, "row", np.arange(len(self.age)))

    def __len__(self) -> int:
        return len(self.age)

    def sources(self) -> list[str]:
        return sorted(set(self.source.tolist()))

    def take(self, n: int) -> Split:
        return Split(self.x[:n], self.age[:n], self.source[:n], self.sex[:n], self.row[:n])

    def where(self, mask: np.ndarray) -> Split:
        return Split(self.x[mask], self.age[mask], self.source[mask], self.sex[mask], self.row[mask])

    def female(self) -> np.ndarray:
        """1.0 for a woman, 0.0 for a man, -1.0 where the labels do not say (what the loss's
        sex-bias term reads)."""
        return np.select([self.sex == FEMALE, self.sex == MALE], [1.0, 0.0], -1.0).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Index:
    """A prepared folder's index.csv, column by column: one entry per crop row it lists (every row
    of a `training.prepare` folder, in order, so there an entry's position is its crop row; only
    the rows with a face in a teacher-framed one). `records` keeps each line whole, for a command
    that copies it."""

    row: np.ndarray
    age: np.ndarray
    source: np.ndarray
    split: np.ndarray
    sex: np.ndarray  # "1" female, "0" male, "" not given
    records: tuple[dict[str, str], ...]

    def __len__(self) -> int:
        return len(self.row)


def read_index(data: Path) -> Index:
    path = data / "index.csv"
    try:
        with open(path, newline="") as fh:
            records = tuple(csv.DictReader(fh))
        return Index(
            np.array([int(r["row"]) for r in records], int),
            np.array([float(r["age"]) for r in records], np.float32),
            # Caches made before prepare took several sources hold one unnamed source.
            np.array([r.get("source") or "default" for r in records], dtype=str),
            np.array([r["split"] for r in records], dtype=str),
            np.array([(r.get("gender") or "").strip() for r in records], dtype=object),
            records,
        )
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read it ({exc.strerror}): give a folder from training.prepare") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise LabelsError(f"{path}: not an index of training.prepare ({type(exc).__name__}: {exc})") from None


def load_split(data: Path, split: str) -> Split:
    crops = np.load(data / "crops.npy", mmap_mode="r")
    index = read_index(data)
    pick = index.split == split
    rows = index.row[pick]
    return Split(
        np.ascontiguousarray(crops[rows]),
        index.age[pick],
        index.source[pick],
        index.sex[pick],
        rows,
    )


def inside_repository(path: Path) -> bool:
    """Whether `path` lies in this checkout: face crops and caches must stay outside it."""
    return path.resolve().is_relative_to(Path(__file__).resolve().parent.parent)


def per_source_mae(pred: np.ndarray, age: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """Mean absolute error of estimated ages per source (a NaN estimate, no face, is left out)."""
    face = ~np.isnan(pred)
    return {
        s: float(np.abs(pred[face & (source == s)] - age[face & (source == s)]).mean()) for s in sorted(set(source))
    }


def band_number(name: str) -> int:
    """The index `band_index` gives the band called `name` ("13-17")."""
    return [b[0] for b in BANDS].index(name)


def band_index(ages: np.ndarray) -> np.ndarray:
    """Each age's band, as an index into BANDS (whole years)."""
    whole = np.floor(np.asarray(ages, float))
    out = np.zeros(len(whole), int)
    for i, (_, lo, hi) in enumerate(BANDS):
        out[(whole >= lo) & (whole <= hi)] = i
    return out


def cell_weights(
    split: Split, power: float, boost: dict[int, float], by_sex: bool = False
) -> dict[tuple[str, str, int], float]:
    """Sampling probability of each (source, sex, age band) cell. Each source gets a share that
    grows with the square root of its size (a small population is not drowned by a large one, nor
    repeated to exhaustion), and within a source each band a share that grows as count**power
    (power < 1 lifts the rare bands, teenagers among them), times `boost` for chosen bands.
    With `by_sex`, women and men of a source get equal shares, each with its own bands (faces
    whose sex is not given form a third group); otherwise the sex key is "" throughout."""
    bands = band_index(split.age)
    sexes = split.sex.tolist() if by_sex else [""] * len(split)
    counts: dict[tuple[str, str, int], int] = {}
    for key in zip(split.source.tolist(), sexes, bands.tolist()):
        counts[key] = counts.get(key, 0) + 1
    per_source = {s: sum(n for (t, _, _), n in counts.items() if t == s) for s in split.sources()}
    src_share = {s: np.sqrt(n) for s, n in per_source.items()}
    total = sum(src_share.values())
    out = {}
    for s in per_source:
        groups = sorted({g for (t, g, _) in counts if t == s})
        for g in groups:
            cells = {b: n**power * boost.get(b, 1.0) for (t, h, b), n in counts.items() if t == s and h == g}
            z = sum(cells.values())
            for b, v in cells.items():
                out[(s, g, b)] = src_share[s] / total / len(groups) * v / z
    return out


def source_weights(sources: np.ndarray, power: float = 1.0) -> np.ndarray:
    """A weight per photo, n_s ** -power for a source of n_s photos, scaled to a mean of 1. With
    power 1 each source's photos together weigh the same (the decision's fit); with 0.5 (the
    teacher's heads) a larger source still counts more, by the square root of its size."""
    sources = np.asarray(sources)
    w = np.ones(len(sources), float)
    for s in set(sources.tolist()):
        m = sources == s
        w[m] = float(m.sum()) ** -power
    return w * len(sources) / w.sum()
