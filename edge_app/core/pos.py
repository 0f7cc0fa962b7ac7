"""The POS interface (docs/design.md, "The POS interface"): the two JSON messages a point-of-sale
system publishes to the till, `pos/scan` (an item scanned in a transaction) and `pos/sale` (the
transaction is paid). Every field name of that interface is spelled here and nowhere else.

Each message is a frozen dataclass with one parser, `from_payload`, for bytes that came from
outside the process (the broker, the local HTTP and stdin triggers), and one writer, `to_dict` /
`to_json` / `encode`, that the simulated POS, the bench and the tests build their payloads with.
The writer checks what it writes with the parser's own rules, so it cannot produce a message the
till would refuse. Parsing raises one error, `PosMessageError`, whose text names the message, the
field and the problem (it is what the service logs when it quarantines a message).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from edge_app.core import payloads
from edge_app.core.times import epoch_iso, parse_ts

# Free text from the POS (codes, product name, operator login) is at most this long: it reaches a
# cashier's screen and a manager's report.
MAX_TEXT = 128
# The ages a POS may name for an item.
MIN_AGE_RANGE = (1, 99)
# A `ts` longer than this is not a time; it is ignored without being parsed.
MAX_TS_CHARS = 64
# What the payload size limit is called in the configuration, for the message that names it.
_SIZE_SETTING = "triggers.max_payload_bytes"


class PosMessageError(ValueError):
    """A POS message that cannot be used. str() is "<topic>: <problem>"; `field` names the field
    at fault (None when the payload as a whole is: size, encoding, not JSON, not an object)."""

    def __init__(self, topic: str, problem: str, field: str | None = None) -> None:
        super().__init__(f"{topic}: {problem}")
        self.topic = topic
        self.problem = problem
        self.field = field


def _object(
    topic: str, payload: bytes | bytearray | memoryview | str, max_bytes: int, empty_is_object: bool = False
) -> dict[str, Any]:
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    if len(raw) > max_bytes:
        raise PosMessageError(
            topic, f"payload is {len(raw)} bytes, more than the {max_bytes} allowed ({_SIZE_SETTING})"
        )
    if empty_is_object and not raw.strip():
        raw = b"{}"
    try:
        return payloads.parse_object(raw, payloads.Limits(max_bytes))
    except payloads.PayloadError as exc:
        raise PosMessageError(topic, str(exc)) from None


def _text(data: dict[str, Any], key: str, topic: str, default: str | None = None) -> str:
    """A required text field. Barcodes and transaction numbers often arrive as JSON numbers: they
    are accepted and kept as text."""
    if data.get(key) is None:
        if default is not None:
            return default
        raise PosMessageError(topic, f"missing field {key!r}", key)
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise PosMessageError(topic, f"field {key!r} must be text, got {type(v).__name__}", key)
    v = str(v).strip()
    if not v:
        raise PosMessageError(topic, f"field {key!r} is empty", key)
    if len(v) > MAX_TEXT:
        raise PosMessageError(topic, f"field {key!r} is longer than {MAX_TEXT} characters", key)
    if not v.isprintable():
        raise PosMessageError(topic, f"field {key!r} contains control characters", key)
    return v


def _optional_text(data: dict[str, Any], key: str, topic: str) -> str | None:
    """An optional free-text field: absent or null is None; otherwise the rules of `_text`."""
    return None if data.get(key) is None else _text(data, key, topic)


def _min_age(value: object, topic: str) -> int | None:
    if value is None:
        return None
    lo, hi = MIN_AGE_RANGE
    if isinstance(value, bool) or not isinstance(value, int):
        raise PosMessageError(
            topic, f"field 'min_age' must be a whole number of years or null, got {type(value).__name__}", "min_age"
        )
    if not lo <= value <= hi:
        raise PosMessageError(topic, f"field 'min_age' must be between {lo} and {hi}, got {value}", "min_age")
    return value


def _sent_at(ts: Any) -> float | None:
    """The POS's `ts` (ISO 8601 with a zone) as epoch seconds. A missing or unreadable one is
    None, not an error: the scan is still checked (a check is worth more than a precise age),
    only the stale-scan rule cannot apply to it. A zoneless time is None too: it may be local."""
    if not isinstance(ts, str) or len(ts) > MAX_TS_CHARS:
        return None
    dt = parse_ts(ts, assume_utc=False)
    return dt.timestamp() if dt else None


def _without_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Item:
    """The product a scan is for, as the POS describes it."""

    sku: str
    category: str
    min_age: int | None = None  # the POS's own age limit for the item, when it sends one
    name: str | None = None  # the product name the cashier knows it by, when the POS sends one

    def to_dict(self) -> dict[str, Any]:
        """The item's fields of a `pos/scan` object (None ones left out)."""
        return _without_none({"sku": self.sku, "category": self.category, "min_age": self.min_age, "name": self.name})


class _Message:
    """What the two POS messages share: their JSON text and bytes, from `to_dict()`."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def encode(self) -> bytes:
        return self.to_json().encode("utf-8")


@dataclass(frozen=True)
class Scan(_Message):
    """`pos/scan`: `{"sku", "category", "transaction_id", "min_age"?, "name"?, "operator_id"?,
    "ts"?}`; the item's fields sit at the top level of the object, beside the transaction's."""

    TOPIC: ClassVar[str] = "pos/scan"
    # Every field a scan may carry, for a usage text.
    FIELDS: ClassVar[tuple[str, ...]] = ("sku", "category", "transaction_id", "min_age", "name", "operator_id", "ts")
    item: Item
    transaction_id: str
    # The cashier logged in at the POS, when the POS sends it: the manager's "needs attention"
    # list names cashiers as well as tills.
    operator_id: str | None = None
    # When the POS says it scanned (its optional `ts`), as epoch seconds; None when not sent.
    sent_at: float | None = None

    @classmethod
    def from_payload(
        cls, payload: bytes | bytearray | memoryview | str, max_bytes: int, defaults: Item | None = None
    ) -> Scan:
        """The scan in a payload, or PosMessageError naming the problem. Unknown fields are
        ignored. With `defaults` (the local demo triggers) an empty payload or a missing field
        takes the default item's value and a transaction id is made up; from the POS every
        required field must be there."""
        return cls._read(_object(cls.TOPIC, payload, max_bytes, empty_is_object=defaults is not None), defaults)

    @classmethod
    def _read(cls, data: dict[str, Any], defaults: Item | None = None) -> Scan:
        t, d = cls.TOPIC, defaults
        sku = _text(data, "sku", t, d.sku if d else None)
        category = _text(data, "category", t, d.category if d else None)
        txn = _text(data, "transaction_id", t, f"local-{uuid.uuid4().hex[:12]}" if d else None)
        min_age = _min_age(data.get("min_age", d.min_age if d else None), t)
        # An explicit null name means "no name", even over a default.
        name = _optional_text(data, "name", t) if "name" in data else (d.name if d else None)
        operator = _optional_text(data, "operator_id", t)
        return cls(Item(sku, category, min_age, name), txn, operator_id=operator, sent_at=_sent_at(data.get("ts")))

    @property
    def sent_ts(self) -> str | None:
        """`sent_at` as the ISO text the writer sends (UTC, to the millisecond)."""
        return epoch_iso(self.sent_at) if self.sent_at is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this scan; PosMessageError when the till would refuse it."""
        out = {
            **self.item.to_dict(),
            **_without_none(
                {"transaction_id": self.transaction_id, "operator_id": self.operator_id, "ts": self.sent_ts}
            ),
        }
        self._read(out)
        return out


@dataclass(frozen=True)
class Sale(_Message):
    """`pos/sale`: `{"transaction_id", "ts"?}` - the transaction is paid."""

    TOPIC: ClassVar[str] = "pos/sale"
    transaction_id: str
    # The POS's own timestamp, kept as it came for the record only: the till's clock decides the
    # timing, so it is checked to be text and nothing more.
    pos_ts: str | None = None

    @classmethod
    def from_payload(cls, payload: bytes | bytearray | memoryview | str, max_bytes: int = 4096) -> Sale:
        """The sale in a payload, or PosMessageError naming the problem. Unknown fields (a total,
        the tender) are ignored."""
        return cls._read(_object(cls.TOPIC, payload, max_bytes))

    @classmethod
    def _read(cls, data: dict[str, Any]) -> Sale:
        txn = _text(data, "transaction_id", cls.TOPIC)
        ts = data.get("ts")
        if ts is not None and not isinstance(ts, str):
            raise PosMessageError(cls.TOPIC, f"field 'ts' must be text (ISO 8601), got {type(ts).__name__}", "ts")
        return cls(transaction_id=txn, pos_ts=ts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this sale; PosMessageError when the till would refuse it."""
        out = _without_none({"transaction_id": self.transaction_id, "ts": self.pos_ts})
        self._read(out)
        return out
