"""The till's retained `state` document (topic `.../state`, docs/design.md "Events over MQTT"):
what a running till says about itself - camera, outbox, broker link, counts, its last check and
the last message it quarantined. The till service builds a `TillState`, the MQTT link publishes
its `encode()`, and whoever reads the topic (the bench, monitoring, the tests) takes it back with
`TillState.decode` / `from_dict`.

Each JSON key is the name of a field here and nowhere else. Reading is lenient, since a store runs
tills of several versions side by side: a key an older till did not write, or a value of the wrong
type, reads as the field's default (None for "not said", zero, false or empty for counts, flags
and lists); keys a newer till added are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Self

from edge_app.core import payloads
from edge_app.core.events import CheckEvent, encode

# A state document is a few hundred bytes; this bounds what a reader parses from the broker.
MAX_STATE_BYTES = 64 * 1024
# The till's two retained topics below its root: whether it is up (a Last Will says when it is
# not), and this state document.
STATE_LEAF = "state"
AVAILABILITY_LEAF = "availability"
ONLINE, OFFLINE = b"online", b"offline"
# How often a running till publishes its state when nothing changes (its heartbeat): a reader that
# hears nothing from a till for a few of these knows the till, or its link, is gone.
HEARTBEAT_S = 30.0

_NUM = (int, float)
_STR = (str,)


def _json(json_type: Any, default: Any = None, *, factory: Any = MISSING, read: Any = None) -> Any:
    """A key of the document with the JSON type(s) a reader accepts for it (else the default), and
    how a reader turns an accepted value into the field's (`read`; as it is when None)."""
    meta = {"json": json_type, "read": read}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _fits(value: Any, json_type: Any) -> bool:
    # JSON true is not a count: bool is an int in Python, so it is refused where a number is asked.
    return isinstance(value, json_type) and (bool in json_type or not isinstance(value, bool))


def _read(cls: type, doc: Any) -> dict[str, Any]:
    """Keyword arguments for `cls` from a JSON object: each field whose key is present with an
    accepted type; the others are left to their defaults."""
    if not isinstance(doc, Mapping):
        return {}
    kw = {}
    for f in fields(cls):
        if f.name in doc and _fits(doc[f.name], f.metadata["json"]):
            read = f.metadata["read"]
            kw[f.name] = read(doc[f.name]) if read is not None else doc[f.name]
    return kw


def _wire(value: Any) -> Any:
    """A field's value as JSON has it: nested parts as objects, tuples as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _to_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _wire(getattr(obj, f.name)) for f in fields(obj)}


def _texts(items: list[Any]) -> tuple[str, ...]:
    return tuple(w for w in items if isinstance(w, str))


def _counts(box: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in box.items() if _fits(v, (int,))}


@dataclass(frozen=True)
class Recording:
    """Whether the till stores its events now: while the outbox cannot write (a full disk) it is
    `degraded` and `outbox_error` says why; events are then held in memory. The service tells its
    listeners (the cashier window's NOT RECORDING mark) on each change; the state carries the same
    two keys."""

    degraded: bool = False
    outbox_error: str | None = None


class _Document:
    """What the state's JSON objects share: read leniently (a missing or wrong-typed key reads as
    its default), written with every key."""

    @classmethod
    def from_dict(cls, doc: Any) -> Self:
        return cls(**_read(cls, doc))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as published: every key, in the wire's types."""
        return _to_dict(self)


@dataclass(frozen=True)
class LastCheck(_Document):
    """The till's latest check, in brief: these fields of its `check` event, under the event's own
    names (`of` copies them by name, so the event's fields are not spelled again here)."""

    event_id: str | None = _json(_STR)
    ts: str | None = _json(_STR)
    transaction_id: str | None = _json(_STR)
    decision: str | None = _json(_STR)
    age: float | None = _json(_NUM)
    age_band: str | None = _json(_STR)

    @classmethod
    def of(cls, check: CheckEvent) -> LastCheck:
        return cls(**{f.name: getattr(check, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Quarantined(_Document):
    """The last inbound message the till could not use: when, on which topic, and why."""

    ts: str | None = _json(_STR)
    topic: str | None = _json(_STR)
    reason: str | None = _json(_STR)


@dataclass(frozen=True)
class TillState(_Document):
    """The retained state of one till. Every key is always written (null where there is nothing
    to say), so a reader can tell "none" from "an older till that does not report it"."""

    ts: str | None = _json(_STR)
    status: str | None = _json(_STR)
    # Seconds between two states at most (HEARTBEAT_S); null from tills before it was sent.
    heartbeat_s: float | None = _json(_NUM)
    version: str | None = _json(_STR)
    model_id: str | None = _json(_STR)
    camera: str | None = _json(_STR)  # starting | up | down
    camera_detail: str | None = _json(_STR)
    outbox_depth: int = _json((int,), 0)
    outbox_max: int = _json((int,), 0)
    outbox_full: bool = _json((bool,), False)
    outbox_dropped: int = _json((int,), 0)
    # Recording: false `degraded` means every event so far is in the outbox (or delivered).
    degraded: bool = _json((bool,), False)
    outbox_write_errors: int = _json((int,), 0)
    outbox_held: int = _json((int,), 0)
    outbox_held_max: int = _json((int,), 0)
    outbox_held_dropped: int = _json((int,), 0)
    outbox_error: str | None = _json(_STR)
    mqtt_subscribed: bool = _json((bool,), False)
    # Why the broker cannot be used (a refused login, a TLS check), null while connected.
    mqtt_error: str | None = _json(_STR)
    # Non-empty when the broker link can be read or forged (no TLS, no credentials).
    security_warnings: tuple[str, ...] = _json((list,), (), read=_texts)
    last_seq: int = _json((int,), 0)
    checks: int = _json((int,), 0)
    messages_quarantined: int = _json((int,), 0)
    # Restricted scans that got no check, by reason (edge_app.core.events.MISSED_REASONS).
    scans_missed: Mapping[str, int] = _json((dict,), factory=dict, read=_counts)
    # The POS clock minus the till's, in seconds, as estimated from the scans' `ts` (negative:
    # behind); null before a scan with a `ts`. `pos_clock_skew` says it in words when it is beyond
    # triggers.pos_clock_max_skew_seconds, null otherwise (edge_app.till.triggers.PosClock).
    pos_clock_ahead_s: float | None = _json(_NUM)
    pos_clock_skew: str | None = _json(_STR)
    last_quarantined: Quarantined | None = _json((dict,), read=Quarantined.from_dict)
    last_check: LastCheck | None = _json((dict,), read=LastCheck.from_dict)
    started: str | None = _json(_STR)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TillState:
        """The state in a decoded JSON object; raises `payloads.PayloadError` when it is not an object."""
        if not isinstance(doc, Mapping):
            raise payloads.PayloadError("a till state is a JSON object")
        return super().from_dict(doc)

    @classmethod
    def decode(cls, payload: bytes | str) -> TillState:
        """The state in a `state` message; raises `payloads.PayloadError` naming what is wrong
        when it is not a JSON object at all."""
        return cls.from_dict(payloads.parse_object(payload, payloads.Limits(MAX_STATE_BYTES)))

    def encode(self) -> bytes:
        return encode(self.to_dict())
