"""The nested parts of an event: the `item` of an alert (`Product`), the `trigger` of a check or a
missed event (`TriggerInfo`), the `policy` (`PolicyInfo`) and `latency_ms` (`Latency`) of a check.
Each is a frozen dataclass in memory and a JSON object on the wire, read leniently and written back
losslessly; the events that carry them are in `edge_app.core.events`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self

from edge_app.core.words import PolicyRule

# -- what an event says about the item, the scan, the rule and the time taken ----------------------
# The `item` of an alert, the `trigger` of a check or missed event, the `policy` and `latency_ms` of
# a check are JSON objects on the wire (their keys are the field names below) and typed parts of
# the events in memory: a key is spelled here once. Reading is lenient, since the screen and the
# reports show what they can rather than fail on a part: a value of the wrong type reads as absent
# (None). What a part cannot take as it came (that value, a newer producer's key) stays in its
# `extra` and is written back over the fields, so an event read and written again is the same bytes.


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | int | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _sku(v: Any) -> str | None:
    # A POS may send a barcode as a JSON number: it is still the item's SKU.
    return str(v) if _int(v) is not None else _text(v)


def _rule(v: Any) -> PolicyRule | None:
    return PolicyRule(v) if isinstance(v, str) and v in PolicyRule._value2member_map_ else None


def _key(read: Callable[[Any], Any]) -> Any:
    """A key of a part's JSON object, read by `read` (None: unusable)."""
    return field(default=None, metadata={"read": read})


def _as_it_came(value: Any, raw: Any) -> bool:
    """Whether writing `value` (what a part read from `raw`) gives back `raw`'s JSON."""
    if value is None or value != raw:
        return False
    return type(raw) is (str if isinstance(value, str) else type(value))


class Part:
    """What the nested parts share: lenient reading and lossless writing of their JSON object."""

    extra: Mapping[str, Any]

    @classmethod
    def _keys(cls) -> dict[str, Callable[[Any], Any]]:
        return {f.name: f.metadata["read"] for f in fields(cls) if "read" in f.metadata}  # type: ignore[arg-type]

    @classmethod
    def _read(cls, box: Any) -> dict[str, Any]:
        """The keyword arguments of the part in `box`, `extra` included."""
        if not isinstance(box, Mapping):
            return {}
        keys = cls._keys()
        taken: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, raw in box.items():
            value = keys[k](raw) if k in keys else None
            if value is not None:
                taken[k] = value
            if not _as_it_came(value, raw):
                extra[k] = raw
        return {**taken, "extra": extra}

    @classmethod
    def from_dict(cls, box: Any) -> Self:
        return cls(**cls._read(box))

    def to_dict(self) -> dict[str, Any]:
        """The part's JSON object: what is known, nothing written as null, then what came as it came."""
        known = {
            f.name: getattr(self, f.name)
            for f in fields(self)  # type: ignore[arg-type]
            if "read" in f.metadata and getattr(self, f.name) is not None
        }
        return {**known, **self.extra}


# Not compared: two parts are equal when what this build reads of them is.
def _extra() -> Any:
    return field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Product(Part):
    """The restricted item a check is about, as the POS described it (name and min_age only when
    it sent them)."""

    sku: str | None = _key(_sku)
    category: str | None = _key(_text)
    min_age: int | None = _key(_int)
    name: str | None = _key(_text)
    extra: Mapping[str, Any] = _extra()

    @property
    def known(self) -> bool:
        """Whether the event said anything about the item."""
        return any(v is not None for v in (self.sku, self.category, self.min_age, self.name))


@dataclass(frozen=True)
class TriggerInfo(Part):
    """The scan a check (or a missed event) is about, its `trigger`: the item, where the scan came
    from (`source`: pos, http, stdin), when the till received it and, when the POS said, when the
    POS sent it. On the wire the scan's keys and the product's stand side by side."""

    product: Product = Product()
    source: str | None = _key(_text)
    received_ts: str | None = _key(_text)
    sent_ts: str | None = _key(_text)
    extra: Mapping[str, Any] = _extra()

    @classmethod
    def from_dict(cls, box: Any) -> TriggerInfo:
        if not isinstance(box, Mapping):
            return cls()
        # The scan's own keys are read here; every other one (a key neither knows included) is the
        # product's, so each is kept once.
        mine = cls._keys()
        return cls(
            product=Product.from_dict({k: v for k, v in box.items() if k not in mine}),
            **cls._read({k: v for k, v in box.items() if k in mine}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.product.to_dict()}


@dataclass(frozen=True)
class PolicyInfo(Part):
    """The rule a check was decided by: the ages in force and which rule."""

    legal_age: int | float | None = _key(_num)
    challenge_age: int | float | None = _key(_num)
    rule: PolicyRule | None = _key(_rule)
    margin_years: int | float | None = _key(_num)
    min_frames: int | None = _key(_int)
    extra: Mapping[str, Any] = _extra()

    @property
    def calibrated(self) -> bool:
        return self.rule == PolicyRule.CALIBRATED


@dataclass(frozen=True)
class Latency(Part):
    """How long each stage of a check took, in ms (its `latency_ms`): waiting for the worker, for
    camera frames, the face path, the model, the policy, and the whole check from the scan reaching
    the till to the decision."""

    queue: float | None = _key(_num)
    wait: float | None = _key(_num)
    faces: float | None = _key(_num)
    model: float | None = _key(_num)
    policy: float | None = _key(_num)
    total: float | None = _key(_num)
    extra: Mapping[str, Any] = _extra()
