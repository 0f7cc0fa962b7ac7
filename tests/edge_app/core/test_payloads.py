"""The inbound payload parser: limits on size, depth and number length, one typed error for
everything else, and a fuzz test (hypothesis) of every parser that reads bytes from outside:
whatever the bytes, each either returns its result or raises its own typed error."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_app.core import events
from edge_app.core.payloads import Limits, PayloadError, nesting_depth, parse, parse_object
from edge_app.core.pos import Item, PosMessageError, Sale
from edge_app.manager.store import check_message
from edge_app.till.triggers import parse_scan

L = Limits(max_bytes=65536)


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"[" * 2048 + b"]" * 2048, "nested more than 32 levels"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested more than 32 levels"),
        (b"9" * 5001, "a number of 5001 characters"),
        (b'{"x": -' + b"1" * 41 + b"}", "a number of 42 characters"),
        (b'{"x": 1.' + b"5" * 60 + b"}", "a number of 62 characters"),
        (b"NaN", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"age": 1e999}', "out of range"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'"\\"' * 20000, "not valid JSON"),  # many escaped quotes: linear, not quadratic
        (b"x" * 70000, "more than the 65536 allowed"),
    ],
)
def test_refused_with_the_reason(payload, words):
    with pytest.raises(PayloadError, match=words.replace("(", r"\(").replace(".", r"\.")):
        parse(payload, L)


def test_ordinary_payloads_parse():
    assert parse(b'{"a": [1, {"b": 2.5}], "s": "[[[[{{{{"}', L) == {"a": [1, {"b": 2.5}], "s": "[[[[{{{{"}
    assert parse("[" * 32 + "]" * 32, L) == parse(b"[" * 32 + b"]" * 32, L)  # exactly the limit is fine
    assert parse(b'{"sku": 5000112637922}', L) == {"sku": 5000112637922}
    with pytest.raises(PayloadError, match="must be a JSON object, got list"):
        parse_object(b"[]", L)


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth('{"a": "[[[[", "b": ["\\"]"]}') == 2
    assert nesting_depth("[[[]]]") == 3


# -- fuzz ----------------------------------------------------------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Raw bytes, JSON-looking text built from the pieces that break naive parsers, and real JSON.
_nasty = st.lists(
    st.sampled_from(
        [
            "[",
            "]",
            "{",
            "}",
            '"',
            "\\",
            ":",
            ",",
            "1",
            "9" * 50,
            "-",
            ".",
            "e",
            "NaN",
            "Infinity",
            "null",
            '"sku"',
            '"transaction_id"',
            "\x00",
            "\udcff",
            "\u2028",
        ]
    ),
    max_size=200,
).map("".join)
_payloads = st.one_of(
    st.binary(max_size=2048),
    _nasty.map(lambda s: s.encode("utf-8", "surrogatepass")),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(0, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.dictionaries(
        st.sampled_from(["sku", "category", "transaction_id", "min_age", "ts"]), _json_values, max_size=5
    ).map(lambda d: json.dumps(d).encode()),
)
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(_payloads)
def test_fuzz_parse_raises_only_payload_error(payload):
    try:
        value = parse(payload, Limits(4096))
    except PayloadError as exc:
        assert str(exc)
        return
    # What comes out is JSON again (no NaN, no infinities): it can be stored and re-published.
    json.dumps(value, allow_nan=False)


@_FUZZ
@given(_payloads)
def test_fuzz_pos_parsers_raise_only_their_errors(payload):
    for parse_fn in (lambda p: parse_scan(p, 4096), lambda p: parse_scan(p, 4096, Item("x", "alcohol", 18))):
        try:
            parse_fn(payload)
        except PosMessageError as exc:
            assert str(exc).startswith("pos/scan: ")
    try:
        Sale.from_payload(payload, 4096)
    except PosMessageError as exc:
        assert str(exc).startswith("pos/sale: ")


@_FUZZ
@given(_payloads, st.sampled_from(["agecheck/v1/store-001/till-01/events/check", "agecheck/v1/x", "#"]))
def test_fuzz_feed_check_message_never_raises(payload, topic):
    ev, reason = check_message(topic, payload, 4096)
    assert (ev is None) != (reason is None)
    if ev is not None:
        events.validate(ev)
        events.encode(ev)
