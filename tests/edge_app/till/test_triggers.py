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
from edge_app.core import events
from edge_app.core.pos import Item, PosMessageError, Scan
from edge_app.devtools.sim import free_port
from edge_app.till.http_trigger import HttpTrigger
from edge_app.till.pos_clock import ClockSkew, PosClock
from edge_app.till.triggers import StdinTrigger, Submission, TransactionMemory, parse_scan, restriction
from tests.edge_app.feed_util import check_event
from tests.helpers import wait_until

CFG = TriggersConfig(
    restricted_categories=(RestrictedItem("alcohol", 18), RestrictedItem("knives", 18)),
    restricted_skus=("5000000000001",),
    max_payload_bytes=512,
)


def test_valid_scan_accepts_numeric_codes_and_ignores_extra_fields():
    s = parse_scan(
        b'{"sku": 5010677850100, "category": "Alcohol", "transaction_id": 77, '
        b'"min_age": 21, "name": "Lager", "price": 4.5}',
        512,
    )
    assert s == Scan(Item("5010677850100", "Alcohol", 21, "Lager"), "77")


def test_scan_carries_an_optional_name_and_operator():
    s = parse_scan(
        b'{"sku": "1", "category": "alcohol", "transaction_id": "T1", "name": " Red wine 75cl ", "operator_id": 1042}',
        512,
    )
    assert s.item.name == "Red wine 75cl" and s.operator_id == "1042"
    s = parse_scan(b'{"sku": "1", "category": "alcohol", "transaction_id": "T1", "name": null}', 512)
    assert s.item.name is None and s.operator_id is None


@pytest.mark.parametrize(
    "payload, words",
    [
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
        (
            json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T1", "name": "Gin\x1b[31m"}).encode(),
            "'name' contains control characters",
        ),
        (
            json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T1", "name": "y" * 129}).encode(),
            "'name' is longer than 128",
        ),
        (
            json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T1", "name": ["Gin"]}).encode(),
            "'name' must be text, got list",
        ),
        (
            json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T1", "operator_id": "a\nb"}).encode(),
            "'operator_id' contains control characters",
        ),
        (
            json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T1", "pad": "x" * 600}).encode(),
            "more than the 512 allowed",
        ),
    ],
)
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
        fut.set_result(SimpleNamespace(check=events.from_dict(check_event(decision="approve", age=40.0)), alert=None))
        return Submission("started", "check started", fut)

    return submit


def _post(port, path, body: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
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
    # "{bad" is the last line: once it is logged every line has been read.
    wait_until(lambda: len(calls) >= 2 and "not valid JSON" in caplog.text, 5, "both scans and the bad line")
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
    wait_until(lambda: calls, 5, "the scan after the poison lines")
    assert [c[0].transaction_id for c in calls] == ["after-poison"]
    for words in ("not UTF-8", "nested more than 32 levels", "a number of 300 characters", "more than the 512"):
        assert words in caplog.text, words


# -- the HTTP trigger against hostile clients (raw sockets) --------------------------------------

HOSTILE = TriggersConfig(
    max_payload_bytes=512, http_max_connections=3, http_idle_timeout_seconds=0.5, http_read_timeout_seconds=1.5
)


def _request(
    body: bytes = b'{"transaction_id": "R1"}',
    length: str | None = "auto",
    ctype: str | None = "application/json",
    host: str = "127.0.0.1",
    extra: str = "",
) -> bytes:
    head = f"POST /scan HTTP/1.1\r\nHost: {host}\r\n"
    if ctype is not None:
        head += f"Content-Type: {ctype}\r\n"
    if length is not None:
        head += f"Content-Length: {len(body) if length == 'auto' else length}\r\n"
    return (head + extra + "\r\n").encode() + body


def _talk(port: int, data: bytes, timeout: float = 10.0) -> tuple[int | None, bytes, float]:
    """Send `data`, read until the server closes; (status or None, body, seconds until closed)."""
    import socket

    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if data:
            s.sendall(data)
        chunks = []
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            chunks.append(got)
    raw = b"".join(chunks)
    took = time.monotonic() - t0
    if not raw:
        return None, b"", took
    status = int(raw.split(b" ", 2)[1])
    return status, raw.split(b"\r\n\r\n", 1)[-1], took


@pytest.fixture
def hostile_http():
    calls: list = []
    trig = HttpTrigger(free_port(), _done_submit(calls), HOSTILE, wait_s=5).start()
    yield trig, calls
    trig.stop()


@pytest.mark.parametrize(
    "data, status, words",
    [
        (_request(length="-1"), 400, b"whole number"),
        (_request(length=None), 411, b"Content-Length is required"),
        (_request(length="abc"), 400, b"whole number"),
        (_request(length="200000000"), 413, b"more than the 512 allowed"),
        (_request(ctype="text/plain"), 415, b"application/json"),
        (_request(ctype=None), 415, b"application/json"),
        (_request(ctype="application/x-www-form-urlencoded"), 415, b"application/json"),
        (_request(host="evil.example:8765"), 403, b"not this machine"),
        (_request(length=None, extra="Transfer-Encoding: chunked\r\n"), 411, b"Transfer-Encoding"),
    ],
)
def test_http_trigger_refuses_bad_requests_without_starting_a_check(hostile_http, data, status, words):
    trig, calls = hostile_http
    got, body, _ = _talk(trig.port, data)
    assert got == status and words in body, (got, body)
    assert calls == []
    # The trigger still works for a good request afterwards.
    assert _talk(trig.port, _request())[0] == 200 and len(calls) == 1


@pytest.mark.parametrize(
    "data, words",
    [
        (_request(length="9" * 5000), b"(5000 characters)"),  # used to get no answer and a traceback
        (_request().replace(b"Content-Length: 24", b"Content-Length: \xb2"), b"whole number"),  # latin-1 '²'
        (_request(extra="Content-Length: 5\r\n"), b"different values"),
    ],
)
def test_a_broken_content_length_gets_a_400_not_a_traceback(hostile_http, caplog, data, words):
    trig, calls = hostile_http
    got, body, _ = _talk(trig.port, data)
    assert got == 400 and words in body, (got, body[:200])
    assert calls == [] and not [r for r in caplog.records if r.exc_info]
    assert _talk(trig.port, _request())[0] == 200 and len(calls) == 1


def test_a_body_cut_off_half_way_starts_no_check(hostile_http):
    import socket

    trig, calls = hostile_http
    body = b'{"transaction_id": "CUT-1", "sku": "5000000000001"}'
    with socket.create_connection(("127.0.0.1", trig.port), timeout=10) as s:
        s.sendall(_request(body)[: -len(body) // 2])
        s.shutdown(socket.SHUT_WR)  # the client goes away mid-body
        assert s.recv(100) == b""  # closed without an answer
    assert calls == []


def test_silent_and_dripping_connections_are_closed(hostile_http):
    import socket

    trig, calls = hostile_http
    status, _, took = _talk(trig.port, b"")  # connects, never says anything
    assert status is None and took < 5, took
    # One byte at a time, each well inside the idle timeout: the whole-request deadline ends it.
    req = _request()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", trig.port), timeout=10) as s:
        closed = False
        for b in req:
            try:
                s.sendall(bytes([b]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.2)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "a dripping client kept its connection for the whole request"
    assert 1.0 < time.monotonic() - t0 < 6
    assert calls == []


def test_connection_limit_answers_503_and_recovers():
    import dataclasses
    import socket

    calls: list = []
    # Timeouts far longer than the test, so the held connections keep their slots until closed.
    cfg = dataclasses.replace(HOSTILE, http_idle_timeout_seconds=60, http_read_timeout_seconds=60)
    trig = HttpTrigger(free_port(), _done_submit(calls), cfg, wait_s=5).start()
    held = [socket.create_connection(("127.0.0.1", trig.port), timeout=30) for _ in range(3)]
    try:
        for s in held:
            s.sendall(b"POST /scan HTTP/1.1\r\n")  # a request begun, never finished
        status, body, took = _talk(trig.port, _request())
        assert status == 503 and b"http_max_connections" in body and took < 5, (status, body)
        assert trig.refused_connections >= 1 and calls == []
        for s in held:
            s.close()
        # Slots come back as the held connections end.
        wait_until(lambda: _talk(trig.port, _request())[0] == 200, 10, "a slot free again")
        assert len(calls) == 1
    finally:
        for s in held:
            s.close()
        trig.stop()


def test_shared_token_is_required_when_configured():
    calls: list = []
    trig = HttpTrigger(free_port(), _done_submit(calls), HOSTILE, wait_s=5, token="s3cret-t0ken").start()
    try:
        assert _talk(trig.port, _request())[0] == 401
        assert _talk(trig.port, _request(extra="Authorization: Bearer wrong\r\n"))[0] == 401
        assert calls == []
        assert _talk(trig.port, _request(extra="Authorization: Bearer s3cret-t0ken\r\n"))[0] == 200
        assert len(calls) == 1
    finally:
        trig.stop()


# -- the POS clock ---------------------------------------------------------------------------------
T0 = 1_760_000_000.0  # a till time (epoch seconds) the scans below are received at, or after


def test_pos_clock_in_step_leaves_ages_as_the_clocks_say():
    clock = PosClock(bound_s=5, confirm_scans=3)
    assert clock.ahead_s is None and clock.describe() is None
    for i in range(5):
        reading, change = clock.observe(T0 + 10 * i - 0.2, T0 + 10 * i)
        assert change is None and abs(reading.age_s - 0.2) < 1e-6
    # A scan the broker held back 40 s is 40 s old: the stale rule's to catch.
    reading, change = clock.observe(T0 + 60, T0 + 100)
    assert change is None and reading.age_s == 40 and reading.confirming
    assert not clock.skewed and clock.describe() is None


def test_a_pos_clock_ahead_is_named_at_once_and_late_scans_are_still_late():
    clock = PosClock(bound_s=5, confirm_scans=3)
    reading, change = clock.observe(T0 + 120, T0)  # "sent" 2 minutes from now: no delay does that
    assert reading.age_s == 0 and change == ClockSkew(ahead_s=120, named=True)
    assert "120 s ahead of the till's" in clock.describe() and "pos_clock_max_skew_seconds=5" in clock.describe()
    # Before: a negative age never passed max_scan_age_seconds, so the stale rule was off.
    reading, change = clock.observe(T0 + 10 + 120 - 30, T0 + 10)  # held back 30 s on a clock 120 s ahead
    assert change is None and reading.age_s == 30
    # Named once: further scans on the same clock change nothing.
    assert all(clock.observe(T0 + 20 + i + 120, T0 + 20 + i)[1] is None for i in range(5))


def test_a_pos_clock_behind_needs_scans_in_a_row_late_by_the_same_amount():
    clock = PosClock(bound_s=5, confirm_scans=3)
    # The first two scans 60 s late: aged 60 s (held back, as far as the till can tell).
    for i in range(2):
        reading, change = clock.observe(T0 + 3 * i - 60, T0 + 3 * i)
        assert change is None and reading.age_s == 60 and reading.confirming
    # The third, 6 s after the first and late by the same amount: skew, named.
    reading, change = clock.observe(T0 + 6 - 60.4, T0 + 6)
    assert change == ClockSkew(ahead_s=-60, named=True) and not reading.confirming
    assert reading.age_s == pytest.approx(0.4) and "60 s behind the till's" in clock.describe()
    # A scan held back 30 s on that clock is 30 s old, and does not move the offset.
    reading, change = clock.observe(T0 + 20 - 60 - 30, T0 + 20)
    assert change is None and reading.age_s == 30 and clock.ahead_s == -60
    # The POS clock set right: skew gone at once (an early lag is clock, never delay).
    reading, change = clock.observe(T0 + 30, T0 + 30)
    assert change == ClockSkew(ahead_s=0, named=False) and reading.age_s == 0 and clock.describe() is None


def test_a_burst_the_broker_held_back_is_not_taken_for_a_clock_behind():
    clock = PosClock(bound_s=5, confirm_scans=3)
    # Ten scans made over 9 s while the till was away, handed over within 50 ms a minute later:
    # late by 60..51 s, received together. Each stays late (stale), the clock is not moved.
    for i in range(10):
        reading, change = clock.observe(T0 - 60 + i, T0 + 0.005 * i)
        assert change is None and reading.age_s > 50
    # Even when their lags agree (made within 1 s), they were received at once: not skew.
    for i in range(5):
        reading, change = clock.observe(T0 + 100 - 60 + 0.2 * i, T0 + 100 + 0.001 * i)
        assert change is None and reading.age_s > 55
    assert clock.ahead_s == 0 and not clock.skewed
    # One scan on time between late ones breaks the run: "in a row".
    clock.observe(T0 + 200 - 60, T0 + 200)
    clock.observe(T0 + 203 - 60, T0 + 203)
    clock.observe(T0 + 204, T0 + 204)
    reading, change = clock.observe(T0 + 207 - 60, T0 + 207)
    assert change is None and reading.age_s == 60


def test_a_skew_that_moves_by_more_than_the_bound_is_named_again():
    clock = PosClock(bound_s=5, confirm_scans=3)
    assert clock.observe(T0 + 120, T0)[1] == ClockSkew(ahead_s=120, named=True)
    assert clock.observe(T0 + 10 + 123, T0 + 10)[1] is None  # 3 s more: the same skew, not named again
    assert clock.observe(T0 + 20 + 300, T0 + 20)[1] == ClockSkew(ahead_s=300, named=True)
