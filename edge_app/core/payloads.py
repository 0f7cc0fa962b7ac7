"""Inbound payloads: the one JSON parser every consumer uses for bytes that came from outside the
process (MQTT messages on the feed, the service and the cashier window; stdin and HTTP triggers).

Python's `json.loads` is fine for trusted text but not for a message anyone on the broker can
publish: a few kilobytes of `[[[[...` exhaust the recursion limit (RecursionError, not a
JSONDecodeError, so a handler that catches "bad JSON" dies anyway), a 5,001-digit number trips
the int-to-str digit limit (a ValueError with no position), `1e999` becomes infinity and `NaN`
is accepted though it is not JSON. `parse` checks size, nesting depth and number length before
and while decoding, refuses non-finite numbers, and raises one typed error, `PayloadError`, whose
text is the reason a consumer logs and quarantines. It never raises anything else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Deeper than any message of ours (an event is 3 levels), shallow enough for any recursion limit.
MAX_DEPTH = 32
# Characters in one JSON number: a barcode is 14 digits, a float repr 24 characters.
MAX_NUMBER_CHARS = 40


class PayloadError(ValueError):
    """An inbound payload that cannot be used; str() is the reason, worded for a log line."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_depth: int = MAX_DEPTH
    max_number_chars: int = MAX_NUMBER_CHARS


# A JSON string literal (escapes included) or one bracket. Strings are matched whole so that a
# bracket inside a string never counts as nesting; the closing quote is optional so that an
# unterminated string ends the scan instead of being retried from every later quote (which
# would be quadratic in the payload size).
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """The deepest nesting of arrays/objects in `text`, counted without recursion. Stops early
    once `stop_above` is exceeded. Malformed text may over-count; it fails decoding anyway."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif tok in ("]", "}"):
            depth = max(0, depth - 1)
    return deepest


def parse(payload: bytes | bytearray | memoryview | str, limits: Limits) -> Any:
    """Decode one JSON document from an untrusted payload, or raise PayloadError saying why."""
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else bytes(payload)
    if len(raw) > limits.max_bytes:
        raise PayloadError(f"payload is {len(raw)} bytes, more than the {limits.max_bytes} allowed")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"payload is not UTF-8 text (bad byte at offset {exc.start})") from None
    depth = nesting_depth(text, limits.max_depth)
    if depth > limits.max_depth:
        raise PayloadError(f"JSON nested more than {limits.max_depth} levels deep")

    def number(s: str, convert: Callable[[str], Any]) -> Any:
        if len(s) > limits.max_number_chars:
            raise PayloadError(f"a number of {len(s)} characters (at most {limits.max_number_chars})")
        value = convert(s)
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError(f"number {s[:20]} is out of range")
        return value

    def constant(name: str) -> Any:
        raise PayloadError(f"{name} is not a JSON number")

    try:
        return json.loads(
            text, parse_int=lambda s: number(s, int), parse_float=lambda s: number(s, float), parse_constant=constant
        )
    except PayloadError:
        raise
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:  # the depth check should make this impossible; belt and braces
        raise PayloadError("JSON nested too deeply to read") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise PayloadError(f"not valid JSON ({exc})") from None


def parse_object(payload: bytes | bytearray | memoryview | str, limits: Limits) -> dict[str, Any]:
    """Like parse, for the (usual) case where only a JSON object is acceptable."""
    data = parse(payload, limits)
    if not isinstance(data, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(data).__name__}")
    return data
