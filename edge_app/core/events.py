"""Event schema: the kinds of JSON document published over MQTT (docs/design.md, "Events over
MQTT") as typed events, and the one way a wire dict or payload becomes an event
(`validate`, `from_dict`, `decode_event`). Their nested parts are `edge_app.core.event_parts`, the
bounds on every value `edge_app.core.event_bounds`. Never an image, crop or embedding."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, ClassVar

from edge_app.core import payloads
from edge_app.core.event_bounds import MAX_INT, SchemaError, check_ack, check_bounds, check_pos_text, check_scalar
from edge_app.core.event_parts import Latency, Part, PolicyInfo, Product, TriggerInfo
from edge_app.core.times import now_iso
from edge_app.core.words import AckVia, Answer, Decision, GateReason, IntegrityReason, MissedReason

SCHEMA_VERSION = 1
# Why a restricted scan got no check (a `missed` event's `reason`; edge_app.core.words.MissedReason).
MISSED_REASONS: tuple[MissedReason, ...] = tuple(MissedReason)
# What `decode_event` takes when the caller has no configured limit of its own (an outbox reading
# back what it stored, the dev tools watching their own till): the most any feed may be set to take.
MAX_EVENT_BYTES = 16 * 1024 * 1024


def encode(event: dict[str, Any] | Event) -> bytes:
    if isinstance(event, Event):
        return event.encode()
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode("utf-8")


def decode(payload: bytes) -> Any:
    """The JSON in an encoded event, unchecked (an event's own reader is `decode_event`)."""
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


def _wire(json_type: Any) -> Any:
    """A field every event of the kind carries, with the JSON type(s) validate() checks."""
    return field(metadata={"wire": json_type})


def validate(event: Any) -> dict[str, Any]:
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
        check_ack(event)
    if kind == "missed" and event["reason"] not in MISSED_REASONS:
        raise SchemaError(f"missed event: reason must be one of {', '.join(MISSED_REASONS)}")
    if kind in ("check", "alert", "missed"):
        check_pos_text(event, kind)
    check_bounds(event, kind)
    return event


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


def _part(cls: type[Part]) -> Any:
    """A required field that is a nested part (a JSON object on the wire)."""
    return field(metadata={"wire": dict, "part": cls})


def _word(words: type[StrEnum], json_type: Any = None, default: Any = None) -> Any:
    """A field holding one of `words` (validate checks it, or leaves an open word alone); with
    `json_type`, one every event of the kind carries."""
    meta = {"word": words, **({"wire": json_type} if json_type is not None else {})}
    return field(metadata=meta) if json_type is not None else field(default=default, metadata=meta)


def _wire_value(value: Any) -> Any:
    """A field's value as JSON: parts as their objects, tuples as arrays, words as their strings."""
    if isinstance(value, Part):
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

    def _json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, "kind": self.KIND, **self.extra}
        for f in fields(self):
            value = getattr(self, f.name)
            # A field the producer left out stays out while it has no value; one given a value
            # later (dataclasses.replace) is written.
            if (
                f.name in ("extra", "absent")
                or (f.name in self.absent and value is None)
                or (value is None and f.metadata.get("omit_if_none"))
            ):
                continue
            out[f.name] = _wire_value(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The wire dict (the event was validated when it was built)."""
        return self._json()

    def encode(self) -> bytes:
        return encode(self._json())

    def numbered(self, seq: int, publisher: str) -> Event:
        """The event as an outbox stores it: with its publisher's next number. The rest was
        validated when the event was built; only the number and the publisher are new."""
        if not 1 <= seq <= MAX_INT:
            raise SchemaError(f"field 'seq' must be 1 to {MAX_INT}, got {seq}")
        check_scalar("publisher", "publisher", publisher)
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


EVENT_TYPES: dict[str, type[Event]] = {
    c.KIND: c for c in (CheckEvent, AlertEvent, AckEvent, IntegrityEvent, MissedEvent)
}
EVENT_KINDS: tuple[str, ...] = tuple(EVENT_TYPES)
# Required fields per kind, beyond the envelope, with the JSON types they must have.
_REQUIRED: dict[str, dict[str, Any]] = {
    kind: {f.name: f.metadata["wire"] for f in fields(cls) if "wire" in f.metadata} for kind, cls in EVENT_TYPES.items()
}


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


def decode_event(
    payload: bytes | bytearray | memoryview | str, limits: payloads.Limits = payloads.Limits(MAX_EVENT_BYTES)
) -> Event:
    """The typed event in a payload, read by the hardened parser (edge_app.core.payloads: size,
    depth and number limits) and validated: the one way bytes become an event. Raises
    payloads.PayloadError when the bytes are not a usable JSON object, SchemaError when the object
    is not a valid event; either's text is the reason to log."""
    return from_dict(payloads.parse_object(payload, limits))
