"""Triggers: POS scan messages (every malformed kind named clearly), which items are restricted,
repeat scans in one transaction, and the local HTTP/stdin demo triggers."""

from __future__ import annotations

import http.client
import io
import json
import time
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from edge_app.config import RestrictedItem, TriggersConfig
from edge_app.devtools.sim import free_port
from edge_app.till.triggers import (HttpTrigger, Item, PosMessageError, Scan, StdinTrigger, Submission,
                               TransactionMemory, parse_scan, restriction)

CFG = TriggersConfig(restricted_categories=(RestrictedItem("alcohol", 18), RestrictedItem("knives", 18)),
                     restricted_skus=("5000000000001",), max_payload_bytes=512)


def test_valid_scan_accepts_numeric_codes_and_ignores_extra_fields():
    s = parse_scan(b'{"sku": 5010677850100, "category": "Alcohol", "transaction_id": 77, '
                   b'"min_age": 21, "name": "Lager", "price": 4.5}', 512)
    assert s == Scan(Item("5010677850100", "Alcohol", 21), "77")


@pytest.mark.parametrize("payload, words", [
    (b"{not json", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b'["sku"]', "must be a JSON object, got list"),
    (b'{"category": "alcohol", "transaction_id": "T1"}', "missing field 'sku'"),
    (b'{"sku": "1", "category": "alcohol"}', "missing field 'transaction_id'"),
    (b'{"sku": "1", "transaction_id": "T1"}', "missing field 'category'"),
    (b'{"sku": ["1"], "category": "alcohol", "transaction_id": "T1"}', "'sku' must be text, got list"),
    (b'{"sku": "1", "category": true, "transaction_id": "T1"}', "'category' must be text, got bool"),
    (b'{"sku": "1", "category": "alcohol", "transaction_id": "  "}', "'transaction_id' is empty"),
    (b'{"sku": "1", "category": "alcohol", "transaction_id": "T1", "min_age": "18"}', "'min_age' must be a whole"),
    (b'{"sku": "1", "category": "alcohol", "transaction_id": "T1", "min_age": 0}', "between 1 and 99"),
    (b'{"sku": "1", "category": "alcohol", "transaction_id": "T1", "min_age": 18.5}', "'min_age' must be a whole"),
    (b'{"sku": "1\\u0000", "category": "alcohol", "transaction_id": "T1"}', "control characters"),
    (json.dumps({"sku": "x" * 200, "category": "alcohol", "transaction_id": "T1"}).encode(), "longer than 128"),
    (json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T1", "pad": "x" * 600}).encode(),
     "more than the 512 allowed"),
])
def test_malformed_scans_are_refused_with_a_clear_reason(payload, words):
    with pytest.raises(PosMessageError) as ei:
        parse_scan(payload, 512)
    assert words in str(ei.value)
    assert str(ei.value).startswith("pos/scan: ")


def test_restriction_by_category_sku_or_pos_min_age():
    assert restriction(Item("1", "ALCOHOL"), CFG, 18) == 18  # category match ignores case
    assert restriction(Item("2", "bread"), CFG, 18) is None
    assert restriction(Item("5000000000001", "bread"), CFG, 18) == 18  # listed SKU
    assert restriction(Item("3", "bread", 16), CFG, 18) == 16  # the POS says so
    assert restriction(Item("4", "alcohol", 21), CFG, 18) == 21  # highest age wins


def test_local_trigger_defaults_fill_missing_fields():
    s = parse_scan(b"", 512, Item("local-test", "alcohol", 18))
    assert s.item == Item("local-test", "alcohol", 18) and s.transaction_id.startswith("local-")


def test_repeat_scans_reuse_the_open_check_until_it_expires_or_the_sale_closes_it():
    mem = TransactionMemory(reuse_seconds=10)
    f1, reused = mem.open_or_reuse("T1", now=100.0)
    assert not reused
    f2, reused = mem.open_or_reuse("T1", now=101.0)  # still running
    assert reused and f2 is f1
    f1.set_result("outcome")
    f3, reused = mem.open_or_reuse("T1", now=109.0)
    assert reused and f3 is f1
    f4, reused = mem.open_or_reuse("T1", now=111.0)  # past reuse_seconds: a new check
    assert not reused and f4 is not f1
    mem.close("T1")
    _, reused = mem.open_or_reuse("T1", now=111.5)
    assert not reused


def test_transaction_memory_is_bounded():
    mem = TransactionMemory(reuse_seconds=3600, max_open=5)
    for i in range(20):
        mem.open_or_reuse(f"T{i}", now=float(i))
    assert len(mem) == 5


def _done_submit(calls):
    def submit(scan, source):
        calls.append((scan, source))
        fut: Future = Future()
        fut.set_result(SimpleNamespace(check={"event_id": "c1", "decision": "approve"}, alert=None))
        return Submission("started", "check started", fut)
    return submit


def _post(port, path, body: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers=headers or {})
    r = conn.getresponse()
    return r.status, json.loads(r.read() or b"{}")


def test_http_trigger_on_loopback_answers_with_the_check():
    calls = []
    http_trigger = HttpTrigger(free_port(), _done_submit(calls), CFG, wait_s=5).start()
    try:
        assert http_trigger._server.server_address[0] == "127.0.0.1"
        code, body = _post(http_trigger.port, "/scan", b'{"sku": "9", "transaction_id": "H1"}')
        assert code == 200 and body["check"]["decision"] == "approve"
        scan, source = calls[-1]
        assert source == "http" and scan.transaction_id == "H1" and scan.item.category == "alcohol"
        code, body = _post(http_trigger.port, "/scan", b"{oops")
        assert code == 400 and "not valid JSON" in body["error"]
        code, body = _post(http_trigger.port, "/scan", b"x" * 600)
        assert code == 413 and "more than the 512 allowed" in body["error"]
        code, _ = _post(http_trigger.port, "/nope", b"{}")
        assert code == 404
        assert len(calls) == 1  # the bad requests never reached the service
    finally:
        http_trigger.stop()


def test_stdin_trigger_reads_lines_and_skips_bad_ones(caplog):
    calls = []
    stream = io.StringIO('\n{"sku": "7", "category": "alcohol", "transaction_id": "S2"}\n{bad\n')
    StdinTrigger(stream, _done_submit(calls), CFG).start()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    assert [c[0].transaction_id for c in calls][1] == "S2" and len(calls) == 2
    assert "not valid JSON" in caplog.text


def test_stdin_trigger_survives_poison_lines(caplog):
    """A real pipe (as under a shell): bytes that are not UTF-8, 4 KB of nesting, a 5,001-digit
    number and an endless line each end up as one warning, and the next line still scans."""
    import os

    r, w = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(r, "rb"), encoding="utf-8")
    calls = []
    StdinTrigger(stream, _done_submit(calls), CFG).start()
    with os.fdopen(w, "wb") as pipe:
        pipe.write(b"\xff\xfe not text\n")
        pipe.write(b"[" * 250 + b"]" * 250 + b"\n")
        pipe.write(b'{"transaction_id": ' + b"9" * 300 + b"}\n")
        pipe.write(b'{"sku": "' + b"x" * 100_000 + b'"}\n')  # far over max_payload_bytes
        pipe.write(b'{"sku": "7", "category": "alcohol", "transaction_id": "after-poison"}\n')
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [c[0].transaction_id for c in calls] == ["after-poison"]
    for words in ("not UTF-8", "nested more than 32 levels", "a number of 300 characters", "more than the 512"):
        assert words in caplog.text, words
