"""soup: average the weights of several fine-tuning runs that started from the same ported
network ("model soup"), re-measure the batch norms on training crops, and compare the soup with
its ingredients on the VALIDATION split. Same size and speed as one model. Tried on the
UTKFace-only models and not shipped (docs/model.md keeps what it scored).

    python -m training.experiments.soup --models RUN1/best.keras RUN2/best.keras --data CACHE_DATASET_DIR \\
        --out RUN/soup.keras

Writes the soup and, beside it, a .json in train.json's layout (for `export --train-info`) that
lists the ingredients and adds up their training times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from training.data import load_split
from training.train import chain_seconds, val_figures


class SoupError(ValueError):
    """Models that cannot be averaged; the message says why."""


def average_weights(models) -> list[np.ndarray]:
    """Element-wise mean of the models' weights (same architecture required)."""
    shapes = [[w.shape for w in m.get_weights()] for m in models]
    if any(s != shapes[0] for s in shapes[1:]):
        raise SoupError("the models do not share one architecture; cannot average them")
    per_model = [m.get_weights() for m in models]
    return [
        np.mean([w[i].astype(np.float64) for w in per_model], axis=0).astype(per_model[0][i].dtype)
        for i in range(len(per_model[0]))
    ]


def recalibrate_batch_norms(model, images: np.ndarray, batch: int = 128) -> None:
    """Set each batch norm's moving mean and variance to the statistics of its input on
    `images`, layer after layer (a layer's input depends on the norms before it). Averaged
    weights make the averaged running statistics stale; gamma and beta are kept."""
    import keras

    x = images.astype(np.float32)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.input, layer.input)
        acc, count = None, 0
        for i in range(0, len(x), batch):
            f = keras.ops.convert_to_numpy(probe(x[i : i + batch], training=False)).astype(np.float64)
            f = f.reshape(-1, f.shape[-1])
            s = np.stack([f.sum(axis=0), (f * f).sum(axis=0)])
            acc = s if acc is None else acc + s
            count += f.shape[0]
        mean = acc[0] / count
        var = np.maximum(acc[1] / count - mean * mean, 0.0)
        gamma, beta, _, _ = layer.get_weights()
        layer.set_weights([gamma, beta, mean.astype(np.float32), var.astype(np.float32)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.experiments.soup", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", type=Path, nargs="+", required=True, help="two or more .keras models fine-tuned from the same start"
    )
    ap.add_argument("--data", type=Path, required=True, help="dataset folder from training.prepare")
    ap.add_argument("--out", type=Path, required=True, help=".keras file to write (outside the repo)")
    ap.add_argument("--bn-crops", type=int, default=2000, help="training crops used to re-measure the batch norms")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if len(a.models) < 2:
        ap.error("--models: give at least two models")
    for p in a.models:
        if not p.exists():
            ap.error(f"--models: {p} does not exist")

    import keras

    t0 = time.time()
    models = [keras.models.load_model(p, compile=False) for p in a.models]
    val = load_split(a.data, "val")
    rows = []
    for p, m in zip(a.models, models):
        rows.append((str(p), val_figures(m, val)))
    soup = keras.models.clone_model(models[0])
    try:
        soup.set_weights(average_weights(models))
    except SoupError as exc:
        ap.error(str(exc))
    xt = load_split(a.data, "train").x
    rng = np.random.default_rng(a.seed)
    recalibrate_batch_norms(soup, xt[rng.choice(len(xt), min(a.bn_crops, len(xt)), replace=False)])
    rows.append(("soup", val_figures(soup, val)))
    print(f"validation split ({len(val)} crops):")
    for name, f in rows:
        print(
            f"  {name}: MAE {f['mae']:.3f} (flip-avg {f['mae_flip']:.3f}), 13-17 at 25+ "
            f"{100 * f['minors_at_25_plus']:.2f}%, 25+ under 25 {100 * f['adults_under_25']:.2f}%"
        )

    a.out.parent.mkdir(parents=True, exist_ok=True)
    soup.save(a.out)
    infos = []
    for p in a.models:
        tj = p.parent / "train.json"
        infos.append(json.loads(tj.read_text()) if tj.exists() else {"model": str(p)})
    info = {
        "soup_of": [{"model": str(p), **i} for p, i in zip(a.models, infos)],
        "soup_seconds": round(time.time() - t0, 1),
        "train_images": infos[0].get("train_images"),
        "val_images": len(val),
        "device": infos[0].get("device"),
        # The recipe's cost: every ingredient's training plus the averaging.
        "train_seconds": round(sum(chain_seconds(i) for i in infos) + time.time() - t0, 1),
        "validation": {name: f for name, f in rows},
    }
    a.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {a.out} and {a.out.with_suffix('.json')} ({info['train_seconds']:.0f} s of training in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
