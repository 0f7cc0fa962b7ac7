"""The model card: the JSON file beside a .tflite that says what the file is, what it was trained
on, how it decides and how it scored. `training.export` writes it, `training.evaluate`,
`training.decision` and `training.loso` add their parts, and the till reads it (through
`edge_app.vision.model.AgeModel`); all of them go through `ModelCard`.

The parts code acts on are typed and checked once, in `from_dict`: the identity of the file, its
input, the mirror flag, the age map and the calibrated decision. The records people read (the
training data, the training run's train.json, the figures, the carry-over table, how a map was
fitted) are kept as the JSON they are, unchanged: `to_dict` gives back what `from_dict` was given.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_app.core.policy import DecisionRules, GateRule
from edge_app.vision.errors import VisionError


class CardError(VisionError, ValueError):
    """A model card that cannot be used; the message names the part that is wrong."""


Record = Mapping[str, Any]


def _floats(values: Any, what: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise CardError(f"{what} must be a list of numbers")
    return tuple(float(v) for v in values)


def _record(value: Any, what: str) -> Record:
    if not isinstance(value, dict):
        raise CardError(f"{what} must be a JSON object, got {type(value).__name__}")
    return copy.deepcopy(value)


@dataclass(frozen=True)
class AgeMap:
    """Monotone piecewise-linear map of the raw estimate (knots x -> y), fitted on validation by
    `training.calibrate`; the till interpolates it."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self):
        if len(self.x) != len(self.y) or any(b <= a for a, b in zip(self.x, self.x[1:])):
            raise CardError("age_map needs increasing x knots and as many y values")

    @classmethod
    def from_dict(cls, d: Any) -> AgeMap:
        if not isinstance(d, dict) or set(d) != {"x", "y"}:
            raise CardError("age_map must be an object with exactly the keys x and y")
        return cls(_floats(d["x"], "age_map.x"), _floats(d["y"], "age_map.y"))

    def to_dict(self) -> dict:
        return {"x": list(self.x), "y": list(self.y)}


@dataclass(frozen=True)
class CardDecision:
    """The calibrated decision (`training.decision`): the rules the till applies, with the target
    and the validation figures they were chosen on (a record)."""

    method: str
    rules: DecisionRules
    target: Record
    fit: Record

    @classmethod
    def from_dict(cls, d: Any) -> CardDecision:
        try:
            gates = tuple(_gate(g) for g in d["gates"])
            level, temp = float(d["interval"]["level"]), float(d["interval"]["temperature"])
            if not (0 < level < 1 and math.isfinite(temp) and temp > 0):
                raise CardError(f"interval level {level} / temperature {temp} out of range")
            return cls(
                str(d["method"]),
                DecisionRules(gates, level, temp),
                _record(d["target"], "target"),
                _record(d["fit"], "fit"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(f"decision is malformed ({exc})") from None

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "gates": [
                {
                    "challenge_age": g.challenge_age,
                    "raw": list(g.raw),
                    "calibrated": list(g.calibrated),
                    "threshold": g.threshold,
                }
                for g in self.rules.gates
            ],
            "target": copy.deepcopy(dict(self.target)),
            "interval": {"level": self.rules.interval_level, "temperature": self.rules.interval_temperature},
            "fit": copy.deepcopy(dict(self.fit)),
        }

    def chosen(self, challenge_age: int) -> Record:
        """The validation figures at the threshold chosen for `challenge_age`."""
        try:
            return self.fit[str(challenge_age)]["chosen"]
        except (KeyError, TypeError):
            raise CardError(f"decision.fit has no chosen threshold for challenge age {challenge_age}") from None


def _gate(g: Mapping[str, Any]) -> GateRule:
    raw, cal = _floats(g["raw"], "gate raw"), _floats(g["calibrated"], "gate calibrated")
    thr = float(g["threshold"])
    ok = (
        len(raw) == len(cal) >= 2
        and all(b > a for a, b in zip(raw, raw[1:]))
        and all(b >= a for a, b in zip(cal, cal[1:]))
        and all(0 <= v <= 1 for v in raw + cal)
        and 0 <= thr <= 1
    )
    if not ok:
        raise CardError(f"gate for challenge age {g.get('challenge_age')} is not a monotone map within 0..1")
    return GateRule(int(g["challenge_age"]), raw, cal, thr)


@dataclass(frozen=True)
class CardInput:
    """What the file takes: `size` px square crops, in this layout, channel order and type."""

    size: int
    layout: str
    channels: str
    dtype: str
    normalisation: str

    @classmethod
    def from_dict(cls, d: Any) -> CardInput:
        card = _plain(cls, d, "input")
        if card.size <= 0:
            raise CardError(f"input.size must be positive, got {card.size}")
        return card


@dataclass(frozen=True)
class CardOutput:
    classes: int
    meaning: str

    @classmethod
    def from_dict(cls, d: Any) -> CardOutput:
        return _plain(cls, d, "output")


@dataclass(frozen=True)
class Alignment:
    """The face alignment the network was trained on (`edge_app.vision.faces`' template)."""

    template_version: str
    template: tuple[tuple[float, float], ...]
    output_size: int
    margin: float
    pipeline: str

    @classmethod
    def from_dict(cls, d: Any) -> Alignment:
        if not isinstance(d, dict) or not isinstance(d.get("template"), list):
            raise CardError("alignment must be an object with a template list")
        points = tuple(_floats(p, "alignment.template point") for p in d["template"])
        if any(len(p) != 2 for p in points):
            raise CardError("alignment.template points must be [x, y] pairs")
        return _plain(cls, {**d, "template": points}, "alignment")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "template": [list(p) for p in self.template]}


_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "str": str, "float": (int, float), "bool": bool}


def _plain(cls, d: Any, what: str):
    """A dataclass of scalar fields from a JSON object with exactly those keys, types checked."""
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(d, dict) or set(d) != set(names):
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise CardError(f"{what} must be an object with the keys {', '.join(names)}; got {got}")
    for f in dataclasses.fields(cls):
        want = _TYPES.get(str(f.type))
        v = d[f.name]
        if want is not None and (not isinstance(v, want) or (isinstance(v, bool) and f.type != "bool")):
            raise CardError(f"{what}.{f.name} must be {f.type}, got {v!r}")
    return cls(**{n: (float(d[n]) if f.type == "float" else d[n]) for n, f in zip(names, dataclasses.fields(cls))})


@dataclass(frozen=True)
class ModelCard:
    """A model card. Every part is optional (a file without a card still runs, under its file
    name and the margin rule), and the JSON keys are the field names, in this order."""

    model_id: str | None = None
    file: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    created: str | None = None
    architecture: str | None = None
    members: int | None = None
    member_input_sizes: tuple[int, ...] | None = None
    parameters: int | None = None
    initialised_from: str | None = None
    distilled_from: Record | None = None
    quantization: str | None = None
    input: CardInput | None = None
    output: CardOutput | None = None
    flip_average: bool = False
    alignment: Alignment | None = None
    training_data: Record | None = None
    # The run's train.json (or {"members": [...]} for several networks): its `args` are the
    # recipe's train arguments (training.recipes checks them against its own).
    training: Record | None = None
    left_out_source: str | None = None
    metrics: Record = field(default_factory=dict)
    decision: CardDecision | None = None
    age_map: AgeMap | None = None
    age_map_fit: Record | None = None
    carry_over: Record | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ModelCard:
        if not isinstance(d, dict):
            raise CardError(f"a model card is a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise CardError(f"unknown key(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in d and d[f.name] is not None:
                values[f.name] = _read(f.name, str(f.type), d[f.name])
        return cls(**values)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if hasattr(v, "to_dict"):
                v = v.to_dict()
            elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                v = dataclasses.asdict(v)
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = copy.deepcopy(dict(v))
            out[f.name] = v
        return out

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """The card at `path`; CardError names the file and what is wrong."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise CardError(f"model card {path} is not valid JSON ({exc})") from None
        except CardError as exc:
            raise CardError(f"model card {path}: {exc}") from None

    @classmethod
    def read_beside(cls, model_path: Path) -> ModelCard:
        """The card beside a model file; an empty card when there is none."""
        cp = card_path(model_path)
        return cls.read(cp) if cp.is_file() else cls()

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def _read(name: str, kind: str, v: Any) -> Any:
    """One top-level field from its JSON value, by the field's declared type."""
    readers = {
        "CardInput | None": CardInput.from_dict,
        "CardOutput | None": CardOutput.from_dict,
        "Alignment | None": Alignment.from_dict,
        "CardDecision | None": CardDecision.from_dict,
        "AgeMap | None": AgeMap.from_dict,
        "Record | None": lambda x: _record(x, name),
        "Record": lambda x: _record(x, name),
    }
    if kind in readers:
        return readers[kind](v)
    if kind == "tuple[int, ...] | None":
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise CardError(f"{name} must be a list of whole numbers")
        return tuple(v)
    scalar = kind.removesuffix(" | None")
    want = _TYPES[scalar]
    if not isinstance(v, want) or (isinstance(v, bool) and scalar != "bool"):
        raise CardError(f"{name} must be {scalar}, got {v!r}")
    return v
