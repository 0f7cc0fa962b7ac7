"""teacher_probe: how far the frozen teacher's embedding itself separates 13-17-year-olds from
adults, judged on VALIDATION rows only (docs/model.md, "Tried after shipping"). It bounds what
distilling this teacher can give the till's network, and says whether a head aimed at the gate or
a sex-weighted head would do better than the shipped age head.

    python -m training.experiments.teacher_probe --data DATASET_DIR [--seeds 0 1 2] [--epochs 12]

DATASET_DIR is a `training.prepare` folder with `teacher embed` done. Heads (each on the train
rows, every source weighted alike as `teacher fit` does):
  age      the shipped head's shape (1024-256-101, soft age targets); P(25+) from its distribution
  binary   the same trunk with one sigmoid: 13-20 against 25+ (18-24 left out), under-21s weighted 3x
  women2x  the age head with adult women's rows weighted twice (women are read younger)
and the mean of the age heads over the seeds. Printed: MAE per source, and adults (25+) sent to ID
when k validation minors pass, women and men apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.compare import CHALLENGE_AGE, Predictions, minors_lines
from training.data import read_index, source_weights
from training.teacher import AGES, EMBEDDINGS_FILE, soft_targets


def load(data: Path) -> dict[str, np.ndarray]:
    index = read_index(data)
    emb = np.load(data / EMBEDDINGS_FILE)["embedding"].astype(np.float32)
    ok = np.isfinite(emb).all(1)
    mu, sd = emb[ok].mean(0), emb[ok].std(0) + 1e-6
    return {
        "x": np.where(ok[:, None], (np.nan_to_num(emb) - mu) / sd, 0).astype(np.float32),
        "ok": ok,
        "age": index.age,
        "source": index.source,
        "split": index.split,
        "sex": index.sex,
    }


def weights_on(d: dict[str, np.ndarray], train: np.ndarray) -> np.ndarray:
    """The head's sample weights: zero off `train`, sources by the inverse square root of their size on it."""
    w = np.zeros(len(train), np.float32)
    w[train] = source_weights(d["source"][train], power=0.5)
    return w


def fit(d: dict[str, np.ndarray], train: np.ndarray, w: np.ndarray, seed: int, epochs: int, binary: bool) -> np.ndarray:
    """P(25+) for every row from a head fitted on `train`."""
    import keras  # deferred on purpose: TensorFlow loads only when a probe runs

    keras.utils.set_random_seed(seed)
    out = keras.layers.Dense(1, activation="sigmoid") if binary else keras.layers.Dense(AGES, activation="softmax")
    head = keras.Sequential(
        [
            keras.Input((d["x"].shape[1],)),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.2),
            out,
        ]
    )
    head.compile(
        keras.optimizers.AdamW(1e-3, weight_decay=1e-3),
        loss="binary_crossentropy" if binary else "categorical_crossentropy",
    )
    y = (d["age"][train] >= CHALLENGE_AGE).astype(np.float32) if binary else soft_targets(d["age"][train])
    head.fit(d["x"][train], y, sample_weight=w[train], batch_size=128, epochs=epochs, verbose=0)
    p = head.predict(d["x"], batch_size=2048, verbose=0)
    return p[:, 0] if binary else p[:, CHALLENGE_AGE:].sum(1)


def report(name: str, d: dict[str, np.ndarray], p_over: np.ndarray, ks: list[int]) -> list[str]:
    """Adults sent to ID with k validation minors let through (rows the teacher saw a face in)."""
    val = d["ok"] & (d["split"] == "val")
    rows = np.flatnonzero(val)
    p = Predictions(
        name,
        tuple(str(i) for i in rows),
        d["age"][val].astype(float),
        p_over[val],
        np.full(len(rows), np.nan),
        d["source"][val],
        d["sex"][val],
    )
    return [f"== {name}", *minors_lines(p, ks)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.experiments.teacher_probe", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--data", type=Path, required=True, help="training.prepare folder with teacher embeddings")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--minors", type=int, nargs="+", default=[0, 2, 3, 6], help="validation minors let through")
    a = ap.parse_args(argv)
    if not (a.data / EMBEDDINGS_FILE).exists():
        print(f"error: {a.data / EMBEDDINGS_FILE} is missing; run `python -m training.teacher embed` first")
        return 2
    d = load(a.data)
    train = d["ok"] & (d["split"] == "train")
    w = weights_on(d, train)
    ages = []
    for seed in a.seeds:
        ages.append(fit(d, train, w, seed, a.epochs, binary=False))
        print("\n".join(report(f"age head, seed {seed}", d, ages[-1], a.minors)), flush=True)
    print("\n".join(report(f"age heads, mean of {len(ages)} seeds", d, np.mean(ages, 0), a.minors)), flush=True)
    gate_rows = train & ((d["age"] < 21) | (d["age"] >= CHALLENGE_AGE))
    wb = np.where(d["age"] < 21, 3.0, 1.0).astype(np.float32) * weights_on(d, gate_rows)
    print(
        "\n".join(report("binary head 13-20 vs 25+", d, fit(d, gate_rows, wb, a.seeds[0], a.epochs, True), a.minors)),
        flush=True,
    )
    ww = w.copy()
    ww[(d["sex"] == "1") & (d["age"] >= CHALLENGE_AGE)] *= 2
    print(
        "\n".join(
            report("age head, adult women weighted 2x", d, fit(d, train, ww, a.seeds[0], a.epochs, False), a.minors)
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
