"""The shipped recipe (training.recipes.three_sources) against the shipped model's card: each step's
arguments, parsed by that step's own command line, are what the card records of the run that made
it (train.json's args, the export's file facts and decision targets, the sources, the evaluation
and the carry-over). Nothing is trained: the recipe is checked with --dry-run and its steps."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edge_app.vision.card import ModelCard
from tests.helpers import MODEL
from training.experiments.fairness import parser as fairness_parser
from training.export import parser as export_parser
from training.recipes import three_sources as recipe
from training.train import parser as train_parser

PLACES = recipe.Places(
    Path("/data/sets"),
    Path("/w/age-v1.onnx"),
    Path("/w/faceres-deep.json"),
    Path("/cache"),
    Path("/runs"),
    Path("/models"),
    Path("/eval"),
)
# train.json args that are paths: the shipped run's were on another machine, so their names count.
PATH_ARGS = ("data", "init", "out", "teacher")


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.read(MODEL.with_suffix(".json"))


def step(name: str) -> recipe.Step:
    (found,) = [s for s in recipe.steps(PLACES) if s.name == name]
    return found


def test_the_train_step_is_the_run_the_card_records(card):
    recorded = dict(card.training["args"])
    ap = train_parser()
    a = vars(ap.parse_args(step("train").argv))
    for key, value in a.items():
        if key in PATH_ARGS:
            assert Path(str(value)).name == Path(recorded[key]).name, key
        else:
            # An option added after the card was made: the run had its default behaviour.
            assert str(value) == recorded.get(key, str(ap.get_default(key))), key
    # The card's other args are the options moved to training.experiments, off in the shipped run.
    off = vars(fairness_parser().parse_args(step("train").argv))
    assert {k: recorded[k] for k in set(recorded) - set(a)} == {k: str(off[k]) for k in set(recorded) - set(a)}
    assert card.distilled_from is not None


def test_the_export_step_made_the_shipped_file_and_its_decision(card):
    a = export_parser().parse_args(step("export").argv)
    assert a.out.name == card.file and len(a.model) == card.members == 1
    assert card.input is not None and a.input_size == card.input.size
    assert a.flip_average == card.flip_average
    assert f"representative set of {a.representative} training crops" in (card.quantization or "")
    assert a.calibrate == (card.age_map is not None) and "calibration" in (card.age_map_fit or {})
    assert card.decision is not None and card.decision.rules.interval_level == a.interval
    assert dict(card.decision.target) == {
        "minors_approved_pooled": a.minors_approved,
        "minors_approved_each_source": a.minors_approved_each,
    }
    assert a.train_info == [a.model[0].parent / "train.json"]
    # The export's crops are the till's size, prepared from the same sources as the training's.
    assert card.alignment is not None and a.data.name.startswith(
        f"crops-{card.alignment.template_version}-{card.alignment.output_size}px-m{card.alignment.margin:g}-"
    )
    assert Path(card.training["args"]["data"]).name == a.data.name.replace(
        f"{card.input.size}px", f"{card.member_input_sizes[0]}px"
    )


def test_the_prepare_steps_take_the_cards_sources_in_its_order(card):
    assert tuple(card.training_data["sources"]) == recipe.SOURCES
    for name, size in (("prepare", recipe.TRAIN_SIZE), ("prepare-till", recipe.TILL_SIZE)):
        argv = step(name).argv
        images = [Path(argv[i + 1]).parent.name for i, v in enumerate(argv) if v == "--images"]
        assert tuple(images) == recipe.SOURCES and argv[argv.index("--size") + 1] == str(size)
        assert "--seed" not in argv  # prepare's default split seed, which the card records
    assert card.training_data["split_seed"] == 1234


def test_the_evaluate_and_loso_steps_are_the_cards_figures(card):
    argv = step("evaluate").argv
    labels = Path(argv[argv.index("--labels") + 1])
    assert f"{labels.parent.name}/{labels.name}:{argv[argv.index('--split') + 1]}" in card.metrics
    loso = step("loso").argv
    carry = card.carry_over or {}
    assert carry["schedule"].startswith(f"{loso[loso.index('--epochs') + 1]} epochs")
    assert carry["decision_target"] == dict(card.decision.target)
    # The left-out runs train with the shipped run's options (but their own epochs and teacher).
    extra = loso[loso.index("--") + 1 :]
    shipped = dict(zip(step("train").argv[::2], step("train").argv[1::2]))
    assert dict(zip(extra[::2], extra[1::2])).items() <= shipped.items()
    # And the card's left-out networks were trained with those options (their own train.json).
    given = vars(train_parser().parse_args(["--data", "d", "--init", "i", "--out", "o", *extra]))
    keys = [k.lstrip("-").replace("-", "_") for k in extra[::2]]
    assert len(carry["fold_training"]) == len(card.training["sources"])
    for fold in carry["fold_training"].values():
        assert {k: fold[k] for k in keys} == {k: str(given[k]) for k in keys}


def test_the_decision_step_holds_the_carry_over_margin_the_card_records(card):
    names = [s.name for s in recipe.steps(PLACES)]
    # The margin comes from loso's table, and evaluate judges the file as it then decides.
    assert names.index("loso") < names.index("decision") < names.index("evaluate")
    argv = step("decision").argv
    assert "--carry-over-margin" in argv and argv[argv.index("--model") + 1].endswith(card.file)
    fit = card.decision.fit["25"]
    margin = (card.carry_over or {})["margin_needed"]
    assert fit["margin"] == margin > 0
    assert card.decision.rules.gate(25).threshold == pytest.approx(fit["fitted_threshold"] + margin)


def test_dry_run_prints_every_step_and_from_starts_later(capsys):
    assert recipe.main(["--dry-run", "--runs", "/runs", "--cache", "/cache"]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"^# (\S+)$", out, re.M) == [s.name for s in recipe.steps(PLACES)]
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("python -m ")]
    assert [c[2] for c in commands] == [s.module for s in recipe.steps(PLACES)]
    train = next(c for c in commands if c[2] == "training.train")
    assert vars(train_parser().parse_args(train[3:]))["out"] == Path("/runs/d96t1")
    assert recipe.main(["--dry-run", "--from", "export"]) == 0
    assert re.findall(r"^# (\S+)$", capsys.readouterr().out, re.M) == ["export", "loso", "decision", "evaluate"]


def test_bad_use_names_the_problem(capsys):
    with pytest.raises(SystemExit):
        recipe.main(["--dry-run", "--from", "nowhere"])
    assert "no such step" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recipe.main([])
    assert "--teacher-model" in capsys.readouterr().err


def test_a_failing_step_stops_the_recipe():
    failing = recipe.Step("broken", "training.no_such_module", ())
    never = recipe.Step("after", "training.no_such_module_either", ())
    with pytest.raises(recipe.RecipeError, match="step broken failed.*--from broken"):
        recipe.run((failing, never))
