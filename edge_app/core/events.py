"""Event schema: the JSON documents published over MQTT (docs/design.md, "Events over MQTT"), their
topics, and a validator the feed and the tests share. Never an image, crop or embedding."""

from __future__ import annotations

import json
import uuid
from dataclasses import InitVar, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, Callable, ClassVar, Mapping

from edge_app.core import payloads
from edge_app.core.pos import MAX_TEXT, MAX_TS_CHARS
from edge_app.core.times import now_iso, parse_ts
from edge_app.core.bands import BANDS
from edge_app.core.words import (ACK_ANSWERS, AckVia, Answer, Decision, GateReason, IntegrityReason, MissedReason,
                                 PolicyRule)

SCHEMA_VERSION = 1
TOPIC_ROOT = "agecheck/v1"
# Why a restricted scan got no check (a `missed` event's `reason`; edge_app.core.words.MissedReason).
MISSED_REASONS: tuple[MissedReason, ...] = tuple(MissedReason)
# What `decode_event` takes when the caller has no configured limit of its own (an outbox reading
# back what it stored, the dev tools watching their own till): the most any feed may be set to take.
MAX_EVENT_BYTES = 16 * 1024 * 1024

# Bounds on every value an event carries. An event outside them is nobody's till's: it is refused
# at the one decoder (the feed quarantines and acknowledges it) rather than stored, shown, or left
# to fail the INSERT (PostgreSQL refuses a NUL in text and an integer above 2^63-1; a store that
# keeps failing on one message stops taking any).
# Ids and words (store, till, transaction, publisher, operator, event ids, SKU, model, band).
MAX_ID_CHARS = 128
# Any other text (a check's reason, a missed scan's detail, a newer producer's field).
MAX_FREE_TEXT_CHARS = 1000
# Estimated ages, in years.
AGE_RANGE = (0.0, 130.0)
# Every integer fits a signed 64-bit column; `seq` counts from 1.
MAX_INT = 2**63 - 1
# Seconds (an answer's decision time, a sale's delay after an alert): at most a year.
MAX_SECONDS = 366 * 24 * 3600.0
# An event's `ts` is the till's clock: none is from before this product existed, and one more
# than a day ahead of the reader's clock is a broken or forged clock, not a check.
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_TS_AHEAD = timedelta(days=1)


def topic(store_id: str, till_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{store_id}/{till_id}/{leaf}"


def event_leaf(kind: "str | Event | type[Event] | None" = None) -> str:
    """The leaf below a till's topic that events of a kind (a kind word, an event or its class)
    are published on, "events/check"; with no kind, the pattern for all of them, "events/#"."""
    if kind is None:
        return "events/#"
    word = kind if isinstance(kind, str) else kind.KIND
    if word not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {word!r}")
    return f"events/{word}"


def event_topic(store_id: str, till_id: str, kind: "str | Event | type[Event] | None" = None) -> str:
    """The full topic of `event_leaf(kind)` for one till."""
    return topic(store_id, till_id, event_leaf(kind))


def event_subscription(store_id: str = "+", till_id: str = "+") -> str:
    """The subscription to every kind of event of the tills it names ("+" for all): one topic
    level per kind, so nothing published deeper is delivered."""
    return topic(store_id, till_id, "events/+")


def parse_event_topic(name: str) -> tuple[str, str, str] | None:
    """(store_id, till_id, kind word) of an event topic, or None when `name` is not one."""
    parts = name.split("/")
    root = TOPIC_ROOT.split("/")
    if len(parts) != len(root) + 4 or parts[: len(root)] != root or parts[len(root) + 2] != "events":
        return None
    return parts[len(root)], parts[len(root) + 1], parts[len(root) + 3]


def encode(event: dict | Event) -> bytes:
    if isinstance(event, Event):
        return event.encode()
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(payload: bytes) -> dict:
    return json.loads(payload.decode("utf-8"))


# The JSON types validate() checks.
_NUM = (int, float)
_ENVELOPE = {"event_id": str, "schema": int, "kind": str, "ts": str, "store_id": str, "till_id": str}
# (Each kind's own required fields are declared once, on its dataclass below: `_REQUIRED`.)
_NUM_OR_NONE = (*_NUM, type(None))
_STR_OR_NONE = (str, type(None))
# Optional envelope fields. `publisher` names the program that stored the event in its outbox
# (the till service: its till_id; a standalone cashier window: "<till_id>:display") and `seq` counts
# that outbox's events from 1, without holes, across restarts: a consumer that sees 7 then 10
# knows two events of that publisher never reached it. `operator_id` is the cashier logged in at
# the POS, when the POS sends it.
_OPTIONAL: dict[str, Any] = {"seq": int, "publisher": str, "operator_id": (str, type(None))}
_FORBIDDEN = ("image", "crop", "face", "embedding", "jpeg", "png", "pixels")


class SchemaError(ValueError):
    pass


def _wire(json_type: Any) -> Any:
    """A field every event of the kind carries, with the JSON type(s) validate() checks."""
    return field(metadata={"wire": json_type})


def validate(event: Any) -> dict:
    """Raise SchemaError naming the first problem; return the event when it is valid."""
    if not isinstance(event, dict):
        raise SchemaError("event is not a JSON object")
    for k, t in _ENVELOPE.items():
        if k not in event:
            raise SchemaError(f"missing field {k!r}")
        if not isinstance(event[k], t) or isinstance(event[k], bool):
            raise SchemaError(f"field {k!r} has the wrong type")
    if event["schema"] != SCHEMA_VERSION:
        raise SchemaError(f"unknown schema version {event['schema']!r} (this build reads {SCHEMA_VERSION})")
    try:
        uuid.UUID(event["event_id"])
    except ValueError:
        raise SchemaError("event_id is not a UUID") from None
    if "transaction_id" not in event:
        raise SchemaError("missing field 'transaction_id'")
    kind = event["kind"]
    if kind not in _REQUIRED:
        raise SchemaError(f"unknown event kind {kind!r}")
    for k, t in _REQUIRED[kind].items():
        if k not in event:
            raise SchemaError(f"{kind} event: missing field {k!r}")
        if not isinstance(event[k], t) or isinstance(event[k], bool):
            raise SchemaError(f"{kind} event: field {k!r} has the wrong type")
    for k, t in _OPTIONAL.items():
        if k in event and (not isinstance(event[k], t) or isinstance(event[k], bool)):
            raise SchemaError(f"field {k!r} has the wrong type")
    if "seq" in event and event["seq"] < 1:
        raise SchemaError(f"field 'seq' must be 1 or more, got {event['seq']}")
    if ("seq" in event) != ("publisher" in event):
        raise SchemaError("fields 'seq' and 'publisher' come together; one is missing")
    for k in event:
        if any(bad in k.lower() for bad in _FORBIDDEN) and k not in ("faces_seen",):
            raise SchemaError(f"field {k!r} looks like image data; events never carry images")
    if kind == "ack":
        _validate_ack(event)
    if kind == "missed" and event["reason"] not in MISSED_REASONS:
        raise SchemaError(f"missed event: reason must be one of {', '.join(MISSED_REASONS)}")
    if kind in ("check", "alert", "missed"):
        _validate_pos_text(event, kind)
    _validate_bounds(event, kind)
    return event


# The fields whose value is an id or a word: printable, at most MAX_ID_CHARS (anywhere in the event,
# a nested `trigger` or `item` included).
_ID_FIELDS = frozenset({"event_id", "store_id", "till_id", "transaction_id", "publisher", "operator_id",
                        "check_event_id", "alert_event_id", "replaces_event_id", "model_id", "age_band",
                        "sku", "category", "source", "camera", "via", "rule"})
# A scan's two times in `trigger`: the till's receive time and the POS's own `ts` (a check and a
# missed event carry both). Read leniently (TriggerInfo), but text no longer than a time.
_SCAN_TIME_FIELDS = frozenset({"received_ts", "sent_ts"})
_AGE_FIELDS = ("age", "age_low", "age_high")
_SECONDS_FIELDS = ("decision_time_s", "seconds_after_alert", "grace_seconds")
_COUNT_FIELDS = ("frames_used", "faces_seen", "frames_seen", "alert_count")
# A check's quality figures (the quality gate's measures of the shopper's face, edge_app.vision.faces):
# a sharpness (variance of the Laplacian), a mean grey level and the eyes' distance in pixels.
QUALITY_RANGES = {"sharpness": (0.0, 1e9), "brightness": (0.0, 255.0), "eyes_px": (0.0, 1e5)}
_BAND_NAMES = frozenset(name for name, _, _ in BANDS)
# Words a kind's field must be one of, when present and not null (ack answers and missed reasons
# are checked above, with their own messages).
_WORDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("check", "decision"): tuple(Decision), ("alert", "decision"): tuple(Decision),
    ("integrity", "decision"): tuple(Decision), ("integrity", "reason"): tuple(IntegrityReason),
    ("integrity", "answer"): tuple(Answer),
}


def _walk(value: Any, where: str):
    """(where, value) of every scalar inside a JSON value, keys of objects included as text."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{where}.{k} (its name)", k
            yield from _walk(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{where}[{i}]")
    else:
        yield where, value


def _check_scalar(where: str, name: str, value: Any) -> None:
    if isinstance(value, str):
        if "\0" in value:
            raise SchemaError(f"field {where!r} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError(f"field {where!r} is not valid Unicode text (a lone surrogate)") from None
        if name in _SCAN_TIME_FIELDS:
            if len(value) > MAX_TS_CHARS or not value.isprintable():
                raise SchemaError(f"field {where!r} is not a time: {len(value)} characters, at most {MAX_TS_CHARS} "
                                  "printable ones")
        elif name in _ID_FIELDS:
            if len(value) > MAX_ID_CHARS:
                raise SchemaError(f"field {where!r} is {len(value)} characters, more than {MAX_ID_CHARS}")
            if not value.isprintable():
                raise SchemaError(f"field {where!r} contains control characters")
        else:
            if len(value) > MAX_FREE_TEXT_CHARS:
                raise SchemaError(f"field {where!r} is {len(value)} characters, more than {MAX_FREE_TEXT_CHARS}")
            if not value.replace("\n", " ").replace("\t", " ").isprintable():
                raise SchemaError(f"field {where!r} contains control characters")
    elif isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT - 1 <= value <= MAX_INT:
        raise SchemaError(f"field {where!r} is {value}, outside a 64-bit integer")


def _in_range(event: dict, name: str, lo: float, hi: float, what: str) -> None:
    v = event.get(name)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
        raise SchemaError(f"field {name!r} is {v:g}, outside {lo:g} to {hi:g} ({what})")


def _validate_bounds(event: dict, kind: str) -> None:
    """Every value within what a till can send (see MAX_ID_CHARS and below); SchemaError names the
    field and the bound."""
    for where, value in _walk(event, "event"):
        name = where.rsplit(".", 1)[-1].split("[", 1)[0]
        _check_scalar(where.removeprefix("event."), name, value)
    for name in _AGE_FIELDS:
        _in_range(event, name, *AGE_RANGE, "years")
    for name in _SECONDS_FIELDS:
        _in_range(event, name, 0, MAX_SECONDS, "seconds")
    for name in _COUNT_FIELDS:
        _in_range(event, name, 0, MAX_INT, "a count")
    _in_range(event, "p_over", 0, 1, "a probability")
    for name, (lo, hi) in QUALITY_RANGES.items():
        _in_range(event, name, lo, hi, "a quality figure")
    _in_range(event, "spread", 0, AGE_RANGE[1], "years")
    if "seq" in event and event["seq"] > MAX_INT:
        raise SchemaError(f"field 'seq' is {event['seq']}, more than {MAX_INT} (63 bits)")
    for (k, name), words in _WORDS.items():
        if kind == k and event.get(name) is not None and event[name] not in words:
            raise SchemaError(f"{kind} event: {name} must be one of {', '.join(words)}, got {str(event[name])[:40]!r}")
    if kind == "check" and event.get("gate_rejections") is not None:
        _validate_gate_rejections(event["gate_rejections"])
    band = event.get("age_band")
    if band is not None and band not in _BAND_NAMES:
        raise SchemaError(f"field 'age_band' must be one of {', '.join(sorted(_BAND_NAMES))}")
    ts = parse_ts(event["ts"])
    if ts is None:
        raise SchemaError(f"field 'ts' is not an ISO 8601 time: {event['ts'][:40]!r}")
    if ts < EARLIEST_TS:
        raise SchemaError(f"field 'ts' is {event['ts']}, before {EARLIEST_TS:%Y-%m-%d}")
    if ts > datetime.now(timezone.utc) + MAX_TS_AHEAD:
        raise SchemaError(f"field 'ts' is {event['ts']}, more than a day ahead of this computer's clock")
    # The scan's own times inside `trigger` are read leniently (TriggerInfo: unreadable = absent),
    # and only bounded as short text above: the POS's clock is not the till's, and may be off by
    # any amount (a check records it as the POS sent it).


def _validate_gate_rejections(counts: Any) -> None:
    if not isinstance(counts, dict):
        raise SchemaError("check event: gate_rejections must be an object")
    for k, n in counts.items():
        if k not in GateReason._value2member_map_:
            raise SchemaError(f"check event: gate_rejections keys must be among {', '.join(GateReason)}, "
                              f"got {k[:40]!r}")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_INT:
            raise SchemaError(f"check event: gate_rejections[{k!r}] must be a count")


def _is_uuid(v: Any) -> bool:
    try:
        uuid.UUID(v)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _validate_ack(event: dict) -> None:
    answer = event["answer"]
    if answer not in (*ACK_ANSWERS, Answer.UNDONE):
        raise SchemaError(f"ack event: answer must be one of {', '.join((*ACK_ANSWERS, Answer.UNDONE))}")
    replaces = event.get("replaces_event_id")
    if replaces is not None:
        if not isinstance(replaces, str) or not _is_uuid(replaces):
            raise SchemaError("ack event: replaces_event_id must be the event_id (a UUID) of the ack it corrects")
        if replaces == event["event_id"]:
            raise SchemaError("ack event: replaces_event_id names the event itself")
    elif answer == Answer.UNDONE:
        raise SchemaError(f"ack event: answer {str(Answer.UNDONE)!r} needs replaces_event_id (the ack it withdraws)")


def _check_text(value: Any, where: str) -> None:
    # Free text from the POS (product name, operator login) travels as long as the POS may send it.
    if not isinstance(value, str):
        raise SchemaError(f"{where} must be text")
    if not value.strip() or len(value) > MAX_TEXT:
        raise SchemaError(f"{where} must be 1 to {MAX_TEXT} characters")
    if not value.isprintable():
        raise SchemaError(f"{where} contains control characters")


def _validate_pos_text(event: dict, kind: str) -> None:
    """The POS's free text (product name, operator) reaches a cashier's screen and a manager's
    report: bounded and printable wherever it travels."""
    box = event.get("item" if kind == "alert" else "trigger")
    if isinstance(box, dict) and box.get("name") is not None:
        _check_text(box["name"], f"{kind} event: item name")
    if event.get("operator_id") is not None:
        _check_text(event["operator_id"], f"{kind} event: operator_id")


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


class _Part:
    """What the nested parts share: lenient reading and lossless writing of their JSON object."""

    extra: Mapping[str, Any]

    @classmethod
    def _keys(cls) -> dict[str, Callable[[Any], Any]]:
        return {f.name: f.metadata["read"] for f in fields(cls) if "read" in f.metadata}  # type: ignore[arg-type]

    @classmethod
    def _read(cls, box: Any) -> dict:
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
    def from_dict(cls, box: Any):
        return cls(**cls._read(box))

    def to_dict(self) -> dict:
        """The part's JSON object: what is known, nothing written as null, then what came as it came."""
        known = {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                 if "read" in f.metadata and getattr(self, f.name) is not None}
        return {**known, **self.extra}


# Not compared: two parts are equal when what this build reads of them is.
def _extra() -> Any:
    return field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Product(_Part):
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
class TriggerInfo(_Part):
    """The scan a check (or a missed event) is about, its `trigger`: the item, where the scan came
    from (`source`: pos, http, stdin), when the till received it and, when the POS said, when the
    POS sent it. On the wire the scan's keys and the product's stand side by side."""

    product: Product = Product()
    source: str | None = _key(_text)
    received_ts: str | None = _key(_text)
    sent_ts: str | None = _key(_text)
    extra: Mapping[str, Any] = _extra()

    @classmethod
    def from_dict(cls, box: Any) -> "TriggerInfo":
        if not isinstance(box, Mapping):
            return cls()
        # The scan's own keys are read here; every other one (a key neither knows included) is the
        # product's, so each is kept once.
        mine = cls._keys()
        return cls(product=Product.from_dict({k: v for k, v in box.items() if k not in mine}),
                   **cls._read({k: v for k, v in box.items() if k in mine}))

    def to_dict(self) -> dict:
        return {**super().to_dict(), **self.product.to_dict()}


@dataclass(frozen=True)
class PolicyInfo(_Part):
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
class Latency(_Part):
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


# -- typed events --------------------------------------------------------------------------------
# One frozen dataclass per kind: producers build these and each is validated once, when it is
# built (`validate` on its wire dict: SchemaError names the problem); `to_dict`/`encode` write it
# and `from_dict` reads one back. The wire stays what it was: the same keys and JSON, so stored
# feeds, outboxes and older tills still read.
_OMIT_NONE = {"omit_if_none": True}


def _optional() -> Any:
    """A field written only when it has a value (the POS's operator, the outbox's numbering, the
    ack a correction replaces): None means absent from the JSON, not null."""
    return field(default=None, metadata=_OMIT_NONE)


def _part(cls: type[_Part]) -> Any:
    """A required field that is a nested part (a JSON object on the wire)."""
    return field(metadata={"wire": dict, "part": cls})


def _word(words: type[StrEnum], json_type: Any = None, default: Any = None) -> Any:
    """A field holding one of `words` (validate checks it, or leaves an open word alone); with
    `json_type`, one every event of the kind carries."""
    meta = {"word": words, **({"wire": json_type} if json_type is not None else {})}
    return field(metadata=meta) if json_type is not None else field(default=default, metadata=meta)


def _wire_value(value: Any) -> Any:
    """A field's value as JSON: parts as their objects, tuples as arrays, words as their strings."""
    if isinstance(value, _Part):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


@dataclass(frozen=True, kw_only=True)
class Event:
    """The envelope every kind shares. Reading and writing an event loses and adds nothing: `extra`
    keeps the fields a newer producer sent that this build has no name for, `absent` the named
    optional fields an older one left out (written as they came, not as null). `checked` is
    from_dict's: the wire dict it read was validated already."""

    KIND: ClassVar[str] = ""
    store_id: str
    till_id: str
    transaction_id: str | None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ts: str = field(default_factory=now_iso)
    operator_id: str | None = _optional()
    publisher: str | None = _optional()
    seq: int | None = _optional()
    extra: Mapping[str, Any] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    checked: InitVar[bool] = False

    def __post_init__(self, checked: bool) -> None:
        for f in fields(self):
            part = f.metadata.get("part")
            if part is not None and not isinstance(getattr(self, f.name), part):
                raise SchemaError(f"{self.KIND} event: field {f.name!r} must be a {part.__name__}")
        if not checked:
            validate(self._json())
        # A word given as its string (a test, a caller's literal) is held as its member.
        for f in fields(self):
            words, value = f.metadata.get("word"), getattr(self, f.name)
            if words is not None and isinstance(value, str) and value in words._value2member_map_:
                object.__setattr__(self, f.name, words(value))

    def _json(self) -> dict:
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "kind": self.KIND, **self.extra}
        for f in fields(self):
            value = getattr(self, f.name)
            # A field the producer left out stays out while it has no value; one given a value
            # later (dataclasses.replace) is written.
            if (f.name in ("extra", "absent") or (f.name in self.absent and value is None)
                    or (value is None and f.metadata.get("omit_if_none"))):
                continue
            out[f.name] = _wire_value(value)
        return out

    def to_dict(self) -> dict:
        """The wire dict (the event was validated when it was built)."""
        return self._json()

    def encode(self) -> bytes:
        return encode(self._json())

    def numbered(self, seq: int, publisher: str) -> "Event":
        """The event as an outbox stores it: with its publisher's next number. The rest was
        validated when the event was built; only the number and the publisher are new."""
        if not 1 <= seq <= MAX_INT:
            raise SchemaError(f"field 'seq' must be 1 to {MAX_INT}, got {seq}")
        _check_scalar("publisher", "publisher", publisher)
        return replace(self, seq=seq, publisher=publisher, absent=self.absent - {"seq", "publisher"}, checked=True)


@dataclass(frozen=True, kw_only=True)
class CheckEvent(Event):
    """One age check: what the camera saw and the till's decision (never an image)."""

    KIND: ClassVar[str] = "check"
    trigger: TriggerInfo = _part(TriggerInfo)
    frames_used: int = _wire(int)
    faces_seen: int = _wire(int)
    decision: Decision = _word(Decision, str)
    age: float | None = _wire(_NUM_OR_NONE)
    age_low: float | None = _wire(_NUM_OR_NONE)
    age_high: float | None = _wire(_NUM_OR_NONE)
    age_band: str | None = _wire(_STR_OR_NONE)
    policy: PolicyInfo = _part(PolicyInfo)
    model_id: str = _wire(str)
    latency_ms: Latency = _part(Latency)
    frames_seen: int | None = None
    spread: float | None = None
    p_over: float | None = None
    reason: str | None = None
    camera: str | None = None
    # How many faces the quality gate refused, by why.
    gate_rejections: Mapping[GateReason, int] | None = None
    # What the quality gate measured of the shopper's face, the median over the frames of the
    # check that had one (accepted or refused): how sharp, how bright, how big (the eyes' distance
    # in pixels). Absent when no frame had a face, and from tills before these were sent. The
    # manager's till health compares them with the till's own usual (a moved, dirty or newly lit
    # camera shows here before it shows as NO FACE).
    sharpness: float | None = _optional()
    brightness: float | None = _optional()
    eyes_px: float | None = _optional()


@dataclass(frozen=True, kw_only=True)
class AlertEvent(Event):
    """A check that asks the cashier for ID: what the cashier window shows and answers."""

    KIND: ClassVar[str] = "alert"
    check_event_id: str = _wire(str)
    decision: Decision = _word(Decision, str)
    age_band: str | None = _wire(_STR_OR_NONE)
    item: Product = _part(Product)
    age: float | None = None
    reason: str | None = None
    camera: str | None = None


@dataclass(frozen=True, kw_only=True)
class AckEvent(Event):
    """The cashier's answer to an alert; with `replaces_event_id`, a correction of an earlier one."""

    KIND: ClassVar[str] = "ack"
    alert_event_id: str = _wire(str)
    answer: Answer = _word(Answer, str)
    decision_time_s: float = _wire(_NUM)
    check_event_id: str | None = None
    # How the answer was given: one of AckVia, or another display's own word.
    via: AckVia | str | None = _word(AckVia)
    replaces_event_id: str | None = _optional()


@dataclass(frozen=True, kw_only=True)
class IntegrityEvent(Event):
    """A sale completed on an alert with no ID check recorded."""

    KIND: ClassVar[str] = "integrity"
    alert_event_id: str = _wire(str)
    seconds_after_alert: float = _wire(_NUM)
    check_event_id: str | None = None
    decision: Decision | None = _word(Decision)
    reason: IntegrityReason | None = _word(IntegrityReason)
    answer: Answer | None = _word(Answer)
    alert_count: int | None = None
    alert_event_ids: tuple[str, ...] | None = None
    grace_seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class MissedEvent(Event):
    """A restricted scan that got no check, and why."""

    KIND: ClassVar[str] = "missed"
    trigger: TriggerInfo = _part(TriggerInfo)
    reason: MissedReason = _word(MissedReason, str)
    detail: str = _wire(str)


EVENT_TYPES: dict[str, type[Event]] = {c.KIND: c for c in (CheckEvent, AlertEvent, AckEvent, IntegrityEvent,
                                                            MissedEvent)}
EVENT_KINDS: tuple[str, ...] = tuple(EVENT_TYPES)
# Required fields per kind, beyond the envelope, with the JSON types they must have.
_REQUIRED: dict[str, dict[str, Any]] = {
    kind: {f.name: f.metadata["wire"] for f in fields(cls) if "wire" in f.metadata}
    for kind, cls in EVENT_TYPES.items()}


def describe(obj: Any) -> str:
    """How a log line names what was handed on as an event: "check event <id>", or its type when
    it is not a typed event (a sale, a bug's dict)."""
    if isinstance(obj, Event):
        return f"{obj.KIND} event {obj.event_id}"
    return f"a {type(obj).__name__}"


def _typed(f: Any, value: Any) -> Any:
    """A validated wire value as the field holds it: a part, a word, a tuple for an array."""
    part, words = f.metadata.get("part"), f.metadata.get("word")
    if part is not None:
        return part.from_dict(value)
    if words is not None and isinstance(value, str) and value in words._value2member_map_:
        return words(value)
    if f.name == "gate_rejections" and isinstance(value, dict):
        return {GateReason(k): n for k, n in value.items()}
    return tuple(value) if isinstance(value, list) else value


def from_dict(event: Any) -> Event:
    """The typed event of a wire dict; SchemaError names the problem when it is not a valid one."""
    validate(event)
    cls = EVENT_TYPES[event["kind"]]
    named = {f.name: f for f in fields(cls) if f.name not in ("extra", "absent")}
    kw = {k: _typed(named[k], v) for k, v in event.items() if k in named}
    extra = {k: v for k, v in event.items() if k not in named and k not in ("schema", "kind")}
    return cls(**kw, extra=extra, absent=frozenset(named.keys() - kw.keys()), checked=True)


def decode_event(payload: bytes | bytearray | memoryview | str,
                 limits: payloads.Limits = payloads.Limits(MAX_EVENT_BYTES)) -> Event:
    """The typed event in a payload, read by the hardened parser (edge_app.core.payloads: size,
    depth and number limits) and validated: the one way bytes become an event. Raises
    payloads.PayloadError when the bytes are not a usable JSON object, SchemaError when the object
    is not a valid event; either's text is the reason to log."""
    return from_dict(payloads.parse_object(payload, limits))
