"""The bounds on every value an event's wire dict may carry, and the checks of a kind's words, an
ack's answer and the POS's free text: what `edge_app.core.events.validate` runs after the envelope
and each kind's required fields. `SchemaError` names the field and the bound."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_app.core.bands import BANDS
from edge_app.core.pos import MAX_TEXT, MAX_TS_CHARS
from edge_app.core.times import parse_ts
from edge_app.core.words import ACK_ANSWERS, Answer, Decision, GateReason, IntegrityReason


class SchemaError(ValueError):
    """An event (a wire dict, or the typed event built from one) that is not a valid one."""


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
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TS_AHEAD = timedelta(days=1)


# a nested `trigger` or `item` included).
_ID_FIELDS = frozenset(
    {
        "event_id",
        "store_id",
        "till_id",
        "transaction_id",
        "publisher",
        "operator_id",
        "check_event_id",
        "alert_event_id",
        "replaces_event_id",
        "model_id",
        "age_band",
        "sku",
        "category",
        "source",
        "camera",
        "via",
        "rule",
    }
)
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
    ("check", "decision"): tuple(Decision),
    ("alert", "decision"): tuple(Decision),
    ("integrity", "decision"): tuple(Decision),
    ("integrity", "reason"): tuple(IntegrityReason),
    ("integrity", "answer"): tuple(Answer),
}


def _walk(value: Any, where: str) -> Iterator[tuple[str, Any]]:
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


def check_scalar(where: str, name: str, value: Any) -> None:
    if isinstance(value, str):
        if "\0" in value:
            raise SchemaError(f"field {where!r} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError(f"field {where!r} is not valid Unicode text (a lone surrogate)") from None
        if name in _SCAN_TIME_FIELDS:
            if len(value) > MAX_TS_CHARS or not value.isprintable():
                raise SchemaError(
                    f"field {where!r} is not a time: {len(value)} characters, at most {MAX_TS_CHARS} printable ones"
                )
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


def _in_range(event: dict[str, Any], name: str, lo: float, hi: float, what: str) -> None:
    v = event.get(name)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not lo <= v <= hi:
        raise SchemaError(f"field {name!r} is {v:g}, outside {lo:g} to {hi:g} ({what})")


def check_bounds(event: dict[str, Any], kind: str) -> None:
    """Every value within what a till can send (see MAX_ID_CHARS and below); SchemaError names the
    field and the bound."""
    for where, value in _walk(event, "event"):
        name = where.rsplit(".", 1)[-1].split("[", 1)[0]
        check_scalar(where.removeprefix("event."), name, value)
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
    if ts > datetime.now(UTC) + MAX_TS_AHEAD:
        raise SchemaError(f"field 'ts' is {event['ts']}, more than a day ahead of this computer's clock")
    # The scan's own times inside `trigger` are read leniently (TriggerInfo: unreadable = absent),
    # and only bounded as short text above: the POS's clock is not the till's, and may be off by
    # any amount (a check records it as the POS sent it).


def _validate_gate_rejections(counts: Any) -> None:
    if not isinstance(counts, dict):
        raise SchemaError("check event: gate_rejections must be an object")
    for k, n in counts.items():
        if k not in GateReason._value2member_map_:
            raise SchemaError(
                f"check event: gate_rejections keys must be among {', '.join(GateReason)}, got {k[:40]!r}"
            )
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_INT:
            raise SchemaError(f"check event: gate_rejections[{k!r}] must be a count")


def _is_uuid(v: Any) -> bool:
    try:
        uuid.UUID(v)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def check_ack(event: dict[str, Any]) -> None:
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


def check_pos_text(event: dict[str, Any], kind: str) -> None:
    """The POS's free text (product name, operator) reaches a cashier's screen and a manager's
    report: bounded and printable wherever it travels."""
    box = event.get("item" if kind == "alert" else "trigger")
    if isinstance(box, dict) and box.get("name") is not None:
        _check_text(box["name"], f"{kind} event: item name")
    if event.get("operator_id") is not None:
        _check_text(event["operator_id"], f"{kind} event: operator_id")
