"""The POS interface (edge_app.core.pos): every field's bad value is refused with a message naming
the message, the field and the problem; what the writer writes the parser reads back unchanged;
unknown fields are ignored; the writer refuses to write what the till would refuse."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from edge_app.core.pos import MAX_TEXT, Item, PosMessageError, Sale, Scan

LAGER = Item("5010677850100", "alcohol", 18, "Lager 4x440ml")
# 2025-01-01T10:00:00.250Z: a time the writer's milliseconds hold exactly.
SENT_AT = datetime(2025, 1, 1, 10, 0, 0, 250000, UTC).timestamp()


def scan_json(**fields) -> bytes:
    """A scan payload written by hand (as a foreign POS would), with fields changed or removed
    (None removes one)."""
    body = {"sku": "1", "category": "alcohol", "transaction_id": "T1"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "payload, field, problem",
    [
        (scan_json(sku=None), "sku", "missing field 'sku'"),
        (scan_json(sku=["1"]), "sku", "field 'sku' must be text, got list"),
        (scan_json(sku=1.5), "sku", "field 'sku' must be text, got float"),
        (scan_json(sku="   "), "sku", "field 'sku' is empty"),
        (scan_json(sku="x" * (MAX_TEXT + 1)), "sku", "field 'sku' is longer than 128 characters"),
        (scan_json(sku="1\x00"), "sku", "field 'sku' contains control characters"),
        (scan_json(category=None), "category", "missing field 'category'"),
        (scan_json(category=True), "category", "field 'category' must be text, got bool"),
        (scan_json(category=""), "category", "field 'category' is empty"),
        (scan_json(transaction_id=None), "transaction_id", "missing field 'transaction_id'"),
        (scan_json(transaction_id={"n": 1}), "transaction_id", "field 'transaction_id' must be text, got dict"),
        (scan_json(transaction_id="  "), "transaction_id", "field 'transaction_id' is empty"),
        (scan_json(transaction_id="T\n1"), "transaction_id", "field 'transaction_id' contains control characters"),
        (scan_json(min_age="18"), "min_age", "field 'min_age' must be a whole number of years or null, got str"),
        (scan_json(min_age=18.5), "min_age", "field 'min_age' must be a whole number of years or null, got float"),
        (scan_json(min_age=True), "min_age", "field 'min_age' must be a whole number of years or null, got bool"),
        (scan_json(min_age=0), "min_age", "field 'min_age' must be between 1 and 99, got 0"),
        (scan_json(min_age=100), "min_age", "field 'min_age' must be between 1 and 99, got 100"),
        (scan_json(name=["Gin"]), "name", "field 'name' must be text, got list"),
        (scan_json(name=""), "name", "field 'name' is empty"),
        (scan_json(name="y" * (MAX_TEXT + 1)), "name", "field 'name' is longer than 128 characters"),
        (scan_json(name="Gin\x1b[31m"), "name", "field 'name' contains control characters"),
        (scan_json(operator_id=7.0), "operator_id", "field 'operator_id' must be text, got float"),
        (scan_json(operator_id="a\nb"), "operator_id", "field 'operator_id' contains control characters"),
    ],
)
def test_every_bad_scan_field_is_named_with_its_problem(payload, field, problem):
    with pytest.raises(PosMessageError) as ei:
        Scan.from_payload(payload, 4096)
    assert str(ei.value) == f"pos/scan: {problem}"
    assert (ei.value.topic, ei.value.field, ei.value.problem) == ("pos/scan", field, problem)


@pytest.mark.parametrize(
    "payload, field, problem",
    [
        (b"{}", "transaction_id", "missing field 'transaction_id'"),
        (b'{"transaction_id": null}', "transaction_id", "missing field 'transaction_id'"),
        (b'{"transaction_id": false}', "transaction_id", "field 'transaction_id' must be text, got bool"),
        (b'{"transaction_id": [1]}', "transaction_id", "field 'transaction_id' must be text, got list"),
        (b'{"transaction_id": " "}', "transaction_id", "field 'transaction_id' is empty"),
        (
            b'{"transaction_id": "' + b"x" * 129 + b'"}',
            "transaction_id",
            "field 'transaction_id' is longer than 128 characters",
        ),
        (b'{"transaction_id": "T\\u0007"}', "transaction_id", "field 'transaction_id' contains control characters"),
        (b'{"transaction_id": "T", "ts": 1735725600}', "ts", "field 'ts' must be text (ISO 8601), got int"),
    ],
)
def test_every_bad_sale_field_is_named_with_its_problem(payload, field, problem):
    with pytest.raises(PosMessageError) as ei:
        Sale.from_payload(payload)
    assert str(ei.value) == f"pos/sale: {problem}"
    assert (ei.value.field, ei.value.problem) == (field, problem)


@pytest.mark.parametrize("message", [Scan, Sale])
@pytest.mark.parametrize(
    "payload, problem",
    [
        (b"x" * 600, "payload is 600 bytes, more than the 512 allowed (triggers.max_payload_bytes)"),
        (b"\xff{}", "payload is not UTF-8 text (bad byte at offset 0)"),
        (b"{", "not valid JSON"),
        (b'"T1"', "payload must be a JSON object, got str"),
        (b"[" * 40 + b"]" * 40, "JSON nested more than 32 levels deep"),
    ],
)
def test_a_payload_that_is_no_object_is_refused_as_a_whole(message, payload, problem):
    with pytest.raises(PosMessageError) as ei:
        message.from_payload(payload, 512)
    assert str(ei.value).startswith(f"{message.TOPIC}: {problem}") and ei.value.field is None


@pytest.mark.parametrize(
    "scan",
    [
        Scan(LAGER, "T-1", operator_id="C-7", sent_at=SENT_AT),
        Scan(Item("1", "alcohol"), "T-2"),  # only the required fields
        Scan(Item("9", "knives", 16), "T-3", sent_at=SENT_AT + 0.001),
    ],
)
def test_what_the_writer_writes_the_parser_reads_back(scan):
    assert Scan.from_payload(scan.encode(), 4096) == scan
    assert Scan.from_payload(scan.to_json(), 4096) == scan


def test_the_scan_writer_writes_the_documented_fields_and_leaves_out_what_is_unknown():
    assert Scan(LAGER, "T-1", operator_id="C-7", sent_at=SENT_AT).to_dict() == {
        "sku": "5010677850100",
        "category": "alcohol",
        "min_age": 18,
        "name": "Lager 4x440ml",
        "transaction_id": "T-1",
        "operator_id": "C-7",
        "ts": "2025-01-01T10:00:00.250Z",
    }
    assert Scan(Item("1", "alcohol"), "T-2").to_dict() == {"sku": "1", "category": "alcohol", "transaction_id": "T-2"}
    # The declared field list (the HTTP trigger's usage text) is what a full scan carries.
    assert set(Scan(LAGER, "T-1", operator_id="C-7", sent_at=SENT_AT).to_dict()) == set(Scan.FIELDS)


def test_sale_round_trip():
    for sale in (Sale("T-1"), Sale("T-2", pos_ts="2025-01-01T10:00:00Z")):
        assert Sale.from_payload(sale.encode()) == sale
    assert json.loads(Sale("T-2", pos_ts="2025-01-01T10:00:00Z").to_json()) == {
        "transaction_id": "T-2",
        "ts": "2025-01-01T10:00:00Z",
    }
    assert Sale("T-1").to_dict() == {"transaction_id": "T-1"}


def test_unknown_fields_are_ignored():
    s = Scan.from_payload(scan_json(price=4.5, tender={"card": True}, lines=[1, 2]), 4096)
    assert s == Scan(Item("1", "alcohol"), "T1")
    assert Sale.from_payload(b'{"transaction_id": "T1", "total": 12.5, "items": [{"sku": 1}]}') == Sale("T1")


def test_codes_sent_as_numbers_are_text_and_text_is_trimmed():
    s = Scan.from_payload(
        b'{"sku": 5010677850100, "category": " Alcohol ", "transaction_id": 77, '
        b'"name": " Red wine 75cl ", "operator_id": 12}',
        4096,
    )
    assert s == Scan(Item("5010677850100", "Alcohol", None, "Red wine 75cl"), "77", operator_id="12")
    assert Sale.from_payload(b'{"transaction_id": 1234}') == Sale("1234")


@pytest.mark.parametrize(
    "ts, sent_at",
    [
        ("2025-01-01T10:00:00.250Z", SENT_AT),
        ("2025-01-01T12:00:00.250+02:00", SENT_AT),  # an offset is read as such
        ("2025-01-01T10:00:00", None),  # no zone: may be local time, so not used
        ("yesterday", None),
        ("2025-01-01T10:00:00Z" + " " * 60, None),  # too long to be a time
        (1735725600, None),  # a number is not an ISO time: ignored, the scan is still checked
    ],
)
def test_the_scan_time_is_read_when_it_is_a_zoned_time_and_ignored_otherwise(ts, sent_at):
    assert Scan.from_payload(scan_json(ts=ts), 4096).sent_at == sent_at


def test_defaults_fill_a_local_trigger_and_make_up_a_transaction():
    default = Item("local-test", "alcohol", 18, "Demo")
    s = Scan.from_payload(b"  ", 512, default)
    assert s.item == default and s.transaction_id.startswith("local-")
    assert Scan.from_payload(b'{"sku": "7", "name": null}', 512, default).item == Item("7", "alcohol", 18, None)
    with pytest.raises(PosMessageError, match="missing field 'sku'"):
        Scan.from_payload(b"{}", 512)  # from the POS there are no defaults


@pytest.mark.parametrize(
    "bad, problem",
    [
        (Scan(Item("", "alcohol"), "T-1"), "field 'sku' is empty"),
        (Scan(Item("1", "alcohol", 0), "T-1"), "field 'min_age' must be between 1 and 99, got 0"),
        (Scan(Item("1", "alcohol", name="a\tb"), "T-1"), "field 'name' contains control characters"),
        (Sale("T" * 200), "field 'transaction_id' is longer than 128 characters"),
    ],
)
def test_the_writer_refuses_what_the_till_would_refuse(bad, problem):
    with pytest.raises(PosMessageError) as ei:
        bad.encode()
    assert ei.value.problem == problem
