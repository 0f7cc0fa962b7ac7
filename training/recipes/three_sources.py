"""three_sources: the recipe of the shipped model (`age_resnet10_int8-2a2e422d`), step by step:
prepare the 96 px crops, port the CC0 network, embed and fit the teacher, train, prepare the
till's 112 px crops, export with the decision fit, the leave-one-source-out carry-over, the
decision fitted again with the carry-over margin, and the evaluation on the test split. Run from the repository root; each step is a `python -m
training...` command, resumable as that command is (docs/model.md, "Training pipeline").

    python -m training.recipes.three_sources --dry-run              # print the commands
    python -m training.recipes.three_sources --teacher-model "$(scripts/fetch-weights)"
    python -m training.recipes.three_sources --teacher-model ... --from export

About two hours on this project's 2-core CPU (train 47 min, loso 20 min to an hour;
docs/model.md times each step).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from training.prepare import dataset_dir, default_cache

# The sources, in prepare's order (the card's training_data.sources and the cache folder's name).
SOURCES = ("utkface", "aaf-train", "appa-real")
TRAIN_SIZE = 96  # the network's crops; the file takes the till's 112 px (export --input-size)
TILL_SIZE = 112
CROP_MARGIN = 0.0  # prepare's --margin (the crop around the aligned face), part of the cache folder's name
# `training.train` options of the shipped run (the card's training.args), shared with loso's runs.
TRAIN_OPTIONS = (
    "--lr",
    "3e-4",
    "--gate",
    "2.0",
    "--over-young",
    "3.0",
    "--balance",
    "0.7",
    "--boost-young",
    "1.3",
    "--seed",
    "3",
)
EPOCHS = 12
DISTIL = 1.0  # the whole target is the teacher's distribution (0.5, half the label's, until ed2a0481)
# The calibrated decision's targets: at most 1.5% of validation 13-17-year-olds approved over the
# three sources, 4% in any one (the card's decision.target).
MINORS_APPROVED = 0.015
MINORS_APPROVED_EACH = 0.04
LOSO_EPOCHS = 2  # shorter than the shipped run (the card's carry_over.schedule)


class RecipeError(RuntimeError):
    """A step of the recipe failed; the message names it."""


@dataclass(frozen=True)
class Step:
    name: str
    module: str  # run as `python -m module`
    argv: tuple[str, ...]

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", self.module, *self.argv]

    def text(self) -> str:
        return shlex.join(["python", "-m", self.module, *self.argv])


@dataclass(frozen=True)
class Places:
    """Where the recipe reads its inputs and writes its outputs."""

    datasets: Path  # one folder per source with images/ and labels.csv
    onnx: Path  # the CC0 age network (training.port)
    teacher_model: Path  # faceres-deep.json (scripts/fetch-weights)
    cache: Path  # crops and embeddings (training.prepare's --cache)
    runs: Path  # training runs
    models: Path  # where the shipped files go
    evaluations: Path  # predictions and reports


def _images(p: Places, s: str) -> Path:
    return p.datasets / s / "images"


@dataclass(frozen=True)
class _Made:
    """What the steps make and hand on to one another, and the options several of them share."""

    d96: Path  # the network's crops
    d112: Path  # the till's crops
    init: Path
    teacher: Path
    run: Path
    model: Path
    sources: tuple[str, ...]  # --images/--labels per source
    named: tuple[str, ...]  # --images SOURCE=FOLDER per source
    cache: tuple[str, ...]
    targets: tuple[str, ...]  # the decision's targets


def _made(p: Places) -> _Made:
    return _Made(
        d96=dataset_dir(p.cache, TRAIN_SIZE, CROP_MARGIN, SOURCES),
        d112=dataset_dir(p.cache, TILL_SIZE, CROP_MARGIN, SOURCES),
        init=p.runs / "init96-3src.keras",
        teacher=p.runs / "teacher-all.npz",
        run=p.runs / "d96t1",
        model=p.models / "age_resnet10_int8.tflite",
        sources=tuple(
            sum(
                (["--images", str(_images(p, s)), "--labels", str(p.datasets / s / "labels.csv")] for s in SOURCES),
                [],
            )
        ),
        named=tuple(sum((["--images", f"{s}={_images(p, s)}"] for s in SOURCES), [])),
        cache=("--cache", str(p.cache)),
        targets=("--minors-approved", str(MINORS_APPROVED), "--minors-approved-each", str(MINORS_APPROVED_EACH)),
    )


def steps(p: Places) -> tuple[Step, ...]:
    """The recipe's commands in order."""
    m = _made(p)
    return (*_training_steps(p, m), *_file_steps(p, m))


def _training_steps(p: Places, m: _Made) -> tuple[Step, ...]:
    """From the photos to the trained network: crops, the ported start, the teacher, training."""
    d96, init, teacher, run = m.d96, m.init, m.teacher, m.run
    sources, named, cache = m.sources, m.named, m.cache
    s = str
    return (
        Step("prepare", "training.prepare", (*sources, *cache, "--size", s(TRAIN_SIZE))),
        Step(
            "port",
            "training.port",
            (
                "--onnx",
                s(p.onnx),
                "--images",
                s(_images(p, SOURCES[0])),
                "--labels",
                s(p.datasets / SOURCES[0] / "labels.csv"),
                "--calibrate-data",
                s(d96),
                "--out",
                s(init),
            ),
        ),
        Step("teacher-embed", "training.teacher", ("embed", "--model", s(p.teacher_model), "--data", s(d96), *named)),
        Step("teacher-fit", "training.teacher", ("fit", "--data", s(d96), "--out", s(teacher))),
        Step(
            "train",
            "training.train",
            (
                "--data",
                s(d96),
                "--init",
                s(init),
                "--out",
                s(run),
                "--epochs",
                s(EPOCHS),
                *TRAIN_OPTIONS,
                "--teacher",
                s(teacher),
                "--distil",
                s(DISTIL),
            ),
        ),
        Step("prepare-till", "training.prepare", (*sources, *cache, "--size", s(TILL_SIZE))),
    )


def _decision_step(p: Places, m: _Made) -> Step:
    """The decision fitted again on validation, with the margin loso recorded in the card; the
    float build's card gets the same decision, as export gives it."""
    return Step(
        "decision",
        "training.decision",
        (
            "--model",
            str(m.model),
            "--data",
            str(m.d112),
            *m.targets,
            "--carry-over-margin",
            "--same-in",
            str(p.models / "age_resnet10_float32.json"),
        ),
    )


def _file_steps(p: Places, m: _Made) -> tuple[Step, ...]:
    """From the trained network to the shipped file: export with the decision, the
    leave-one-source-out table recorded in its card, the decision fitted again with the margin
    that table asks for, and the evaluation of the file as it then decides."""
    d96, d112, init, run, model = m.d96, m.d112, m.init, m.run, m.model
    named, targets = m.named, m.targets
    s = str
    return (
        Step(
            "export",
            "training.export",
            (
                "--data",
                s(d112),
                "--input-size",
                s(TILL_SIZE),
                "--model",
                s(run / "best.keras"),
                "--train-info",
                s(run / "train.json"),
                "--flip-average",
                "--out",
                s(model),
                "--float-out",
                s(p.models / "age_resnet10_float32.tflite"),
                "--calibrate",
                *targets,
            ),
        ),
        Step(
            "loso",
            "training.loso",
            (
                "--data",
                s(d96),
                "--till-data",
                s(d112),
                "--init",
                s(init),
                *named,
                "--out",
                s(p.runs / "loso-d96t1"),  # named for the run: loso skips the steps it finds done
                "--epochs",
                s(LOSO_EPOCHS),
                *targets,
                "--record-in",
                s(model.with_suffix(".json")),
                "--",
                *TRAIN_OPTIONS,
                "--distil",
                s(DISTIL),
            ),
        ),
        _decision_step(p, m),
        Step(
            "evaluate",
            "training.evaluate",
            (
                *named,
                "--labels",
                s(d112 / "split.csv"),
                "--split",
                "test",
                "--model",
                s(model),
                "--predictions",
                s(p.evaluations / "test-int8.csv"),
                "--update-card",
            ),
        ),
    )


def run(todo: tuple[Step, ...]) -> None:
    """Each step in turn; RecipeError at the first that fails (the rest are not run)."""
    for i, step in enumerate(todo, 1):
        print(f"== {i}/{len(todo)} {step.name}: {step.text()}", flush=True)
        rc = subprocess.run(step.command()).returncode
        if rc != 0:
            raise RecipeError(f"step {step.name} failed (exit status {rc}); fix it and go on with --from {step.name}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.recipes.three_sources", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--datasets",
        type=Path,
        default=Path("../shared/datasets"),
        help="folder with one folder per source (images/, labels.csv)",
    )
    ap.add_argument("--onnx", type=Path, default=Path("../shared/weights/cydral-age-resnet10/age-v1.onnx"))
    ap.add_argument(
        "--teacher-model",
        type=Path,
        default=None,
        help="faceres-deep.json, the path `scripts/fetch-weights` prints (needed unless --dry-run)",
    )
    ap.add_argument(
        "--cache", type=Path, default=None, help="crops cache (default $AGECHECK_CACHE or ~/.cache/agecheck)"
    )
    ap.add_argument("--runs", type=Path, default=Path.home() / "runs")
    ap.add_argument("--models", type=Path, default=Path("models"), help="where the model files and card are written")
    ap.add_argument("--evaluations", type=Path, default=Path.home() / "eval")
    ap.add_argument("--from", dest="start", default=None, help="start at this step (its name as --dry-run shows)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    if a.teacher_model is None and not a.dry_run:
        ap.error("--teacher-model: give faceres-deep.json (the path scripts/fetch-weights prints)")
    places = Places(
        a.datasets,
        a.onnx,
        a.teacher_model or Path("FACERES_DEEP_JSON"),
        a.cache or default_cache(),
        a.runs,
        a.models,
        a.evaluations,
    )
    todo = steps(places)
    names = [s.name for s in todo]
    if a.start is not None:
        if a.start not in names:
            ap.error(f"--from {a.start}: no such step (one of {', '.join(names)})")
        todo = todo[names.index(a.start) :]
    if a.dry_run:
        for step in todo:
            print(f"# {step.name}\n{step.text()}")
        return 0
    try:
        run(todo)
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
