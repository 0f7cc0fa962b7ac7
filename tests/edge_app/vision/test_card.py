"""The model card as a type: the shipped cards load, are checked once, and write back the same
JSON; a malformed part is named."""

from __future__ import annotations

import json

import pytest

from edge_app.vision.card import AgeMap, CardError, ModelCard
from tests.helpers import MODEL, REPO

CARDS = [MODEL.with_suffix(".json"), REPO / "models" / "age_resnet10_float32.json"]


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.name)
def test_the_shipped_cards_load_and_round_trip(path, tmp_path):
    raw = json.loads(path.read_text())
    card = ModelCard.from_dict(raw)
    assert card.to_dict() == raw
    assert list(card.to_dict()) == list(raw)  # the keys keep their order in the file
    card.write(tmp_path / "card.json")
    assert json.loads((tmp_path / "card.json").read_text()) == raw
    assert ModelCard.read(tmp_path / "card.json") == card


def test_the_shipped_cards_typed_parts():
    card = ModelCard.read(MODEL.with_suffix(".json"))
    assert card.model_id == "age_resnet10_int8-2a2e422d" and card.file == MODEL.name
    assert card.input is not None and card.input.size == 112 and card.flip_average is True
    assert card.alignment is not None and len(card.alignment.template) == 4
    assert card.decision is not None and card.decision.rules.gate(25) is not None
    assert card.decision.chosen(25)["threshold"] == card.decision.rules.gate(25).threshold
    assert isinstance(card.age_map, AgeMap) and card.member_input_sizes == (96,)


def test_an_empty_card_is_a_file_without_one():
    card = ModelCard.from_dict({})
    assert card.model_id is None and card.decision is None and card.to_dict() == {"flip_average": False, "metrics": {}}


def test_replace_makes_a_new_card_and_leaves_the_old():
    card = ModelCard.from_dict({"model_id": "m"})
    new = card.replace(carry_over={"worst": None})
    assert card.carry_over is None and new.to_dict()["carry_over"] == {"worst": None}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"age_map": {"x": [0, 50, 40], "y": [0, 1, 2]}}, "age_map needs increasing x"),
        ({"age_map": {"x": [0, 1]}}, "age_map must be an object with exactly the keys x and y"),
        ({"flip_average": "yes"}, "flip_average must be bool"),
        ({"size_bytes": 1.5}, "size_bytes must be int"),
        ({"members": True}, "members must be int"),
        ({"input": {"size": 112}}, "input must be an object with the keys size, layout"),
        ({"member_input_sizes": [96, "x"]}, "member_input_sizes must be a list of whole numbers"),
        ({"metrics": []}, "metrics must be a JSON object"),
        ({"modle_id": "typo"}, "unknown key\\(s\\) modle_id"),
    ],
)
def test_a_bad_part_is_named(change, message):
    raw = json.loads(MODEL.with_suffix(".json").read_text())
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict({**raw, **change})


def test_a_bad_decision_is_named(tmp_path):
    raw = json.loads(MODEL.with_suffix(".json").read_text())
    raw["decision"]["gates"][0]["raw"] = list(reversed(raw["decision"]["gates"][0]["raw"]))
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(CardError, match=r"m\.json: decision is malformed \(gate for challenge age 21 is not"):
        ModelCard.read(tmp_path / "m.json")
    raw = json.loads(MODEL.with_suffix(".json").read_text())
    raw["decision"]["interval"]["level"] = 1.5
    with pytest.raises(CardError, match="interval level 1.5"):
        ModelCard.from_dict(raw)
    with pytest.raises(CardError, match="not valid JSON"):
        (tmp_path / "m.json").write_text("{broken")
        ModelCard.read(tmp_path / "m.json")
