"""Triggers: what starts an age check. Owns the decision whether a scanned item is age restricted,
the per-transaction memory that lets repeat scans reuse the open result, and the two local demo
triggers (a line on stdin, and an HTTP endpoint bound to 127.0.0.1 only). Both are off by default.

The `pos/scan` and `pos/sale` messages themselves (fields, parser, writer) are declared in
`edge_app.core.pos`; what a completed sale means is `edge_app.till.integrity`'s.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Literal, TextIO

from edge_app.config import TriggersConfig
from edge_app.core import events, pos
from edge_app.core.events import now_iso

log = logging.getLogger(__name__)

# The POS's messages are declared in edge_app.core.pos; these names are the till's view of them.
Item = pos.Item
Scan = pos.Scan
PosMessageError = pos.PosMessageError


@dataclass(frozen=True)
class Trigger:
    """A restricted scan accepted for a check."""

    scan: Scan
    source: Literal["pos", "http", "stdin"]
    min_age: int  # legal age that applies to this item
    received: float  # time.monotonic() on arrival: the check looks back from here
    received_ts: str  # the same moment as UTC ISO 8601, for the event

    @property
    def product(self) -> events.Product:
        """The item as the events describe it: its `min_age` is the age this check applies."""
        return applied_product(self.scan.item, self.min_age)


@dataclass(frozen=True)
class Submission:
    """What happened to a scan handed to the service."""

    status: Literal["started", "reused", "not_restricted", "busy", "missed"]
    detail: str
    # Resolves to the CheckOutcome of the (new or reused) check; None when no check applies.
    result: Future | None = None


def parse_scan(payload: bytes | str, max_bytes: int, defaults: Item | None = None) -> Scan:
    """A `pos/scan` payload -> Scan (`edge_app.core.pos.Scan.from_payload`; PosMessageError names
    the problem). With `defaults` (local demo triggers) missing fields are filled in and a
    transaction id is made up; from the POS every field is required. Unknown fields are ignored."""
    return Scan.from_payload(payload, max_bytes, defaults)


def applied_product(item: Item, min_age: int) -> events.Product:
    """What a check or missed event says about a scanned item: the POS's description with the
    legal age the till applied (which may be higher than the POS's own `min_age`)."""
    return events.Product(sku=item.sku, category=item.category, min_age=min_age, name=item.name or None)


def restriction(item: Item, cfg: TriggersConfig, default_age: int) -> int | None:
    """The legal age that applies when the item is age restricted, else None. Restricted when its
    category or SKU is listed in the config, or when the POS sends a min_age; the highest age
    named by any of them wins."""
    ages: list[int] = []
    if item.min_age:
        ages.append(item.min_age)
    cat = item.category.casefold()
    ages += [rc.min_age for rc in cfg.restricted_categories if rc.category.casefold() == cat]
    if item.sku in cfg.restricted_skus:
        ages.append(default_age)
    return max(ages) if ages else None


def default_item(cfg: TriggersConfig) -> Item:
    """What a bare local trigger (empty line, empty POST) scans: the first restricted category."""
    if cfg.restricted_categories:
        rc = cfg.restricted_categories[0]
        return Item("local-test", rc.category, rc.min_age)
    return Item("local-test", "alcohol", 18)


class TransactionMemory:
    """Open checks per transaction: a repeat scan within `reuse_seconds` of a check (even one
    still running) gets that check's result instead of a new one. Thread-safe."""

    def __init__(self, reuse_seconds: float, max_open: int = 1000):
        self.reuse_seconds = reuse_seconds
        self.max_open = max_open
        self._open: dict[str, tuple[float, Future]] = {}
        self._lock = threading.Lock()

    def open_or_reuse(self, transaction_id: str, now: float) -> tuple[Future, bool]:
        """(future, reused). A new future must be resolved by the caller."""
        with self._lock:
            self._prune(now)
            hit = self._open.get(transaction_id)
            if hit is not None:
                return hit[1], True
            fut: Future = Future()
            self._open[transaction_id] = (now, fut)
            if len(self._open) > self.max_open:
                # A POS that never closes transactions must not grow this without bound.
                oldest = min(self._open, key=lambda k: self._open[k][0])
                del self._open[oldest]
            return fut, False

    def close(self, transaction_id: str) -> None:
        """The sale is done: a later scan with the same id starts a fresh check."""
        with self._lock:
            self._open.pop(transaction_id, None)

    def _prune(self, now: float) -> None:
        for k in [k for k, (t, f) in self._open.items() if f.done() and now - t > self.reuse_seconds]:
            del self._open[k]

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


SubmitFn = Callable[[Scan, str], Submission]


def _outcome_json(sub: Submission, wait_s: float) -> tuple[int, dict]:
    if sub.result is None:
        return 200, {"status": sub.status, "detail": sub.detail}
    try:
        outcome = sub.result.result(timeout=wait_s)
    except FutureTimeout:
        return 202, {"status": sub.status, "detail": "check still running"}
    except Exception as exc:  # the check itself failed; say so instead of hanging up
        return 500, {"status": "error", "detail": str(exc)}
    return 200, {"status": sub.status, "detail": sub.detail, "check": outcome.check.to_dict(),
                 "alert": outcome.alert.to_dict() if outcome.alert else None}


# Host headers the trigger answers: a web page that rebinds its own name to 127.0.0.1 (DNS
# rebinding) sends its own name here, and is refused.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


class _LimitedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections served at once: one more is answered 503 and
    closed at once, so idle or slow clients can never take all of the service's file handles."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            body = json.dumps({"error": f"more than {self.max_connections} connections at once "
                                        "(triggers.http_max_connections); try again"}).encode()
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() +
                                b"\r\n\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback to stderr by default; a client that goes away (or is
        # cut off by a timeout) is normal here and worth one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.info("http trigger: connection from %s ended early (%s)", client_address[0], exc)
        else:
            log.error("http trigger: a request from %s failed", client_address[0], exc_info=exc)


class HttpTrigger:
    """Local demo trigger on 127.0.0.1 only: `POST /scan` with a pos/scan JSON body (every field
    optional) starts a check and answers with the check event when it is done.

    Hostile clients in mind (any local process, and web pages in the till's browser): a check
    starts only on a complete, valid request: `Content-Type: application/json` (a cross-site
    form or `text/plain` POST cannot send it without a CORS preflight, which is not answered), a
    loopback `Host`, a `Content-Length` (no chunked bodies) of at most max_payload_bytes, the
    whole body within the read timeout, and the shared token when one is configured. A silent
    connection is closed after the idle timeout, a slow one after the read timeout, and at most
    http_max_connections are served at once. One request per connection (HTTP/1.0)."""

    def __init__(self, port: int, submit: SubmitFn, cfg: TriggersConfig, wait_s: float, token: str | None = None):
        defaults = default_item(cfg)
        max_bytes = cfg.max_payload_bytes
        read_timeout = cfg.http_read_timeout_seconds
        expected = f"Bearer {token}".encode() if token else None

        class Handler(BaseHTTPRequestHandler):
            server_version = "agecheck"
            # Socket timeout: a connection that sends nothing for this long is closed.
            timeout = cfg.http_idle_timeout_seconds

            def setup(self) -> None:
                super().setup()
                # The whole request (line, headers, body) must arrive within read_timeout: a
                # per-read timeout alone lets a client drip one byte every few seconds forever.
                self._reading = True
                self._deadline = threading.Timer(read_timeout, self._too_slow)
                self._deadline.daemon = True
                self._deadline.start()

            def finish(self) -> None:
                self._deadline.cancel()
                super().finish()

            def _too_slow(self) -> None:
                if self._reading:
                    log.warning("http trigger: request from %s not complete within %g s "
                                "(triggers.http_read_timeout_seconds); connection closed", self.client_address[0],
                                read_timeout)
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            def _reply(self, code: int, body: dict) -> None:
                self._reading = False
                data = json.dumps(body).encode("utf-8")
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self, code: int, error: str) -> None:
                log.warning("http trigger: request refused (%d): %s", code, error)
                self.close_connection = True
                self._reply(code, {"error": error})
                self._linger()

            def _linger(self) -> None:
                """After a refusal: half-close, then read away (and drop) what the client still
                sends, at most max_bytes and within the read deadline. Closing with unread bytes
                makes the kernel reset the connection, and the client may lose our answer."""
                self._reading = True  # the deadline applies again
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_WR)
                    left = max_bytes
                    while left > 0:
                        chunk = self.rfile.read1(min(left, 4096))
                        if not chunk:
                            break
                        left -= len(chunk)
                except OSError:
                    pass

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._reply(200 if self.path == "/" else 404,
                            {"usage": "POST /scan, Content-Type: application/json, body "
                                      f"{{{', '.join(Scan.FIELDS)}}}, all optional"})

            def do_POST(self) -> None:  # noqa: N802
                if self.path != "/scan":
                    self._refuse(404, f"unknown path {self.path}; use POST /scan")
                    return
                host = (self.headers.get("Host") or "").strip().lower()
                if host.rsplit(":", 1)[0] not in _LOOPBACK_HOSTS:
                    self._refuse(403, f"Host {host[:80]!r} is not this machine (127.0.0.1 or localhost)")
                    return
                if expected is not None:
                    got = (self.headers.get("Authorization") or "").strip().encode("utf-8", "replace")
                    if not hmac.compare_digest(got, expected):
                        self._refuse(401, "missing or wrong token (Authorization: Bearer <token>, "
                                          "triggers.http_token_file)")
                        return
                if not _is_json(self.headers.get("Content-Type")):
                    self._refuse(415, "Content-Type must be application/json")
                    return
                if self.headers.get("Transfer-Encoding"):
                    self._refuse(411, "send the body with a Content-Length, not Transfer-Encoding")
                    return
                given = self.headers.get_all("Content-Length") or []
                if not given:
                    self._refuse(411, "Content-Length is required")
                    return
                text = given[0].strip()
                # ASCII digits only: str.isdigit() also takes '²' (which int() refuses), and int()
                # of thousands of digits raises past this handler (Python's 4300-digit limit).
                if not (text.isascii() and text.isdigit()) or len(text) > 20:
                    self._refuse(400, f"Content-Length must be a whole number of bytes, got {text[:40]!r}"
                                      f"{f' ({len(text)} characters)' if len(text) > 40 else ''}")
                    return
                if len({v.strip() for v in given}) > 1:
                    self._refuse(400, f"Content-Length is given {len(given)} times with different values")
                    return
                length = int(text)
                if length > max_bytes:
                    self._refuse(413, f"body is {length} bytes, more than the {max_bytes} allowed")
                    return
                try:
                    body = self.rfile.read(length)
                except OSError:  # the idle timeout, or the read deadline shut the socket
                    body = b""
                if len(body) != length:
                    log.warning("http trigger: request from %s ended after %d of %d body bytes; no check started",
                                self.client_address[0], len(body), length)
                    self.close_connection = True
                    return
                self._reading = False
                self._deadline.cancel()
                try:
                    scan = parse_scan(body, max_bytes, defaults)
                except PosMessageError as exc:
                    self._refuse(400, str(exc))
                    return
                self._reply(*_outcome_json(submit(scan, "http"), wait_s))

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http trigger: " + fmt, *args)

        # Loopback only, whatever the config says.
        self._server = _LimitedServer(("127.0.0.1", port), Handler, cfg.http_max_connections)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def refused_connections(self) -> int:
        return self._server.refused

    def start(self) -> "HttpTrigger":
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-trigger", daemon=True)
        self._thread.start()
        log.info("local HTTP trigger on http://127.0.0.1:%d/scan", self.port)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()


class StdinTrigger:
    """Local demo trigger: each line on the stream starts a check. An empty line scans the
    default restricted item; a line of JSON is read like a pos/scan payload."""

    def __init__(self, stream: TextIO, submit: SubmitFn, cfg: TriggersConfig):
        self._stream = stream
        self._submit = submit
        self._defaults = default_item(cfg)
        self._max_bytes = cfg.max_payload_bytes
        self._thread: threading.Thread | None = None

    def start(self) -> "StdinTrigger":
        self._thread = threading.Thread(target=self._run, name="stdin-trigger", daemon=True)
        self._thread.start()
        log.info("stdin trigger: press Enter (or type a JSON scan) to start a check")
        return self

    def _lines(self):
        """Each line as bytes, cut at max_payload_bytes + 1 so one endless line cannot fill the
        memory; bytes (the binary buffer under a text stream) so a line that is not UTF-8 is one
        bad line instead of an exception inside the stream's iterator."""
        binary = getattr(self._stream, "buffer", None)
        if binary is not None:
            read = binary.readline
        else:
            def read(n: int) -> bytes:
                return self._stream.readline(n).encode("utf-8", "surrogatepass")
        limit = self._max_bytes + 1
        while True:
            line = read(limit)
            if not line:
                return
            if len(line) >= limit and not line.endswith(b"\n"):
                rest = line
                while rest and not rest.endswith(b"\n"):  # drop the rest of this line unread
                    rest = read(limit)
            yield line

    def _run(self) -> None:
        # A daemon thread: a blocked readline() must not hold up shutdown, so there is no stop().
        for line in self._lines():
            try:
                scan = parse_scan(line.strip(), self._max_bytes, self._defaults)
            except PosMessageError as exc:
                log.warning("%s; stdin line ignored", exc)
                continue
            try:
                sub = self._submit(scan, "stdin")
            except Exception:  # one failed submit must not end the trigger
                log.exception("stdin scan %s could not be submitted", scan.transaction_id)
                continue
            log.info("stdin scan %s: %s", scan.transaction_id, sub.detail)
        log.info("stdin closed: the stdin trigger stops (the service goes on)")


@dataclass(frozen=True)
class ClockReading:
    """What one POS scan's `ts` says, read against the till's clock by `PosClock.observe`."""

    age_s: float  # how long the scan took to reach the till, on the till's clock (offset taken off)
    lag_s: float  # receive time minus the POS's `ts`, as the two clocks have it
    confirming: bool  # late by more than the bound, not (yet) taken for skew: maybe held back


@dataclass(frozen=True)
class ClockSkew:
    """A change in what the till says about the POS clock, for the log (once per change)."""

    ahead_s: float  # POS clock minus the till's, seconds (negative: behind)
    named: bool  # beyond the bound now


@dataclass
class _Run:
    """Late scans in a row that agree: when the first arrived, their least and greatest lag."""

    first: float
    lo: float
    hi: float
    count: int = 0


class PosClock:
    """The POS's clock as the till sees it, from the `ts` of the POS's scans (every scan, restricted
    or not), so that a skewed POS clock neither switches the stale rule off nor makes every scan
    stale. `offset_s` is the usual receive-minus-`ts` lag: the POS clock's offset plus the shortest
    delivery delay seen. A scan's age is its lag minus that offset.

    The offset moves down at once: a scan cannot arrive before it was sent, so a lag below the
    offset (a POS clock ahead, or less behind than thought) is clock, not delay, and timing it that
    way only makes later scans older (never hides a late one). It moves up (a POS clock behind, or
    less ahead) only when `confirm_scans` scans in a row are late by more than `bound_s` and agree
    with each other within `bound_s`, received over more than `bound_s` of the till's time: one
    late scan, or a burst the broker held back and hands over at once, is delay, which the stale
    rule must catch. Until then such scans are aged on the old offset (0 at start).

    One-way times cannot tell a constant delivery delay from a clock offset: a link that delays
    every scan by the same 60 s for minutes is taken for a POS clock 60 s behind. Thread-safe."""

    def __init__(self, bound_s: float, confirm_scans: int) -> None:
        self.bound_s = bound_s
        self.confirm_scans = confirm_scans
        self._lock = threading.Lock()
        self._offset = 0.0
        self._seen = False
        self._named = False
        self._named_offset = 0.0
        # The run of late scans, in a row, that may confirm a POS clock behind.
        self._run: _Run | None = None

    @property
    def ahead_s(self) -> float | None:
        """The POS clock minus the till's, as estimated (negative: behind); None before any scan."""
        with self._lock:
            return -self._offset if self._seen else None

    @property
    def skewed(self) -> bool:
        with self._lock:
            return self._named

    def observe(self, sent_at: float, received_at: float) -> tuple[ClockReading, ClockSkew | None]:
        """Read one scan's POS time (`sent_at`) against the till's (`received_at`, epoch seconds):
        its age on the till's clock, and a ClockSkew when what is said about the POS clock changes
        (named, named with another offset, or within the bound again), else None."""
        lag = received_at - sent_at
        with self._lock:
            self._seen = True
            confirming = False
            if lag < self._offset:
                self._offset = lag
                self._run = None
            elif lag - self._offset > self.bound_s:
                run = self._run
                if run is None or max(run.hi, lag) - min(run.lo, lag) > self.bound_s:
                    run = _Run(first=received_at, lo=lag, hi=lag)  # one that disagrees starts afresh
                run.lo, run.hi, run.count = min(run.lo, lag), max(run.hi, lag), run.count + 1
                if run.count >= self.confirm_scans and received_at - run.first > self.bound_s:
                    self._offset = run.lo
                    self._run = None
                else:
                    confirming = True
                    self._run = run
            else:
                self._run = None  # on time under the current offset: the run is not "in a row"
            reading = ClockReading(age_s=lag - self._offset, lag_s=lag, confirming=confirming)
            return reading, self._change()

    def _change(self) -> ClockSkew | None:
        named = abs(self._offset) > self.bound_s
        moved = named and abs(self._offset - self._named_offset) > self.bound_s
        if named == self._named and not moved:
            return None
        self._named, self._named_offset = named, (self._offset if named else 0.0)
        return ClockSkew(ahead_s=-self._offset, named=named)

    def describe(self, skew: ClockSkew | None = None) -> str | None:
        """The skew in words (state's `pos_clock_skew` and the log line), None within the bound."""
        if skew is None:
            with self._lock:
                if not self._named:
                    return None
                skew = ClockSkew(ahead_s=-self._offset, named=True)
        if not skew.named:
            return None
        way = "ahead of" if skew.ahead_s > 0 else "behind"
        return (f"the POS clock is {abs(skew.ahead_s):.0f} s {way} the till's (more than "
                f"triggers.pos_clock_max_skew_seconds={self.bound_s:g}); scans are timed on the till's clock")


def now_pair() -> tuple[float, str]:
    """(monotonic, UTC ISO) for the same moment."""
    return time.monotonic(), now_iso()
