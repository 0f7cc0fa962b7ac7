"""The local HTTP trigger: `POST /scan` on 127.0.0.1 starts a check (a demo and test input, off by
default). Owns the request checks a hostile local client meets (Host, token, Content-Type and
Length, read deadline, connection cap) and the JSON answer with the check's events. What a scan
is and whether it is restricted is edge_app.till.triggers'."""

from __future__ import annotations

import hmac
import json
import logging
import socket
import sys
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_app.config import Config, ConfigError, TriggersConfig
from edge_app.config.files import read_secret
from edge_app.core.pos import Item, PosMessageError, Scan
from edge_app.till.triggers import Submission, SubmitFn, default_item, parse_scan

log = logging.getLogger(__name__)

# What socketserver hands a server per connection (typeshed's name is private); a TCP server's is
# its socket.
_Request = socket.socket | tuple[bytes, socket.socket]
_Peer = tuple[str, int]


@dataclass(frozen=True)
class HttpSettings:
    """What every request is served with, from the triggers config and the service."""

    submit: SubmitFn
    wait_s: float  # how long a request waits for its check before answering 202
    defaults: Item  # the fields a POSTed scan leaves out
    max_bytes: int
    read_timeout_s: float  # the whole request must arrive within this
    idle_timeout_s: float  # a connection silent this long is closed
    expected: bytes | None  # the Authorization header, when a token is configured


def _outcome_json(sub: Submission, wait_s: float) -> tuple[int, dict[str, Any]]:
    if sub.result is None:
        return 200, {"status": sub.status, "detail": sub.detail}
    try:
        outcome = sub.result.result(timeout=wait_s)
    except FutureTimeout:
        return 202, {"status": sub.status, "detail": "check still running"}
    except Exception as exc:  # the check itself failed; say so instead of hanging up
        return 500, {"status": "error", "detail": str(exc)}
    return 200, {
        "status": sub.status,
        "detail": sub.detail,
        "check": outcome.check.to_dict(),
        "alert": outcome.alert.to_dict() if outcome.alert else None,
    }


# Host headers the trigger answers: a web page that rebinds its own name to 127.0.0.1 (DNS
# rebinding) sends its own name here, and is refused.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


class _LimitedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections served at once: one more is answered 503 and
    closed at once, so idle or slow clients can never take all of the service's file handles."""

    daemon_threads = True

    def __init__(self, address: _Peer, settings: HttpSettings, max_connections: int) -> None:
        self.settings = settings
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_connections = max_connections
        self.refused = 0
        super().__init__(address, _Handler)

    def process_request(self, request: _Request, client_address: _Peer) -> None:
        assert isinstance(request, socket.socket)  # a TCP server's connection
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            body = json.dumps(
                {
                    "error": f"more than {self.max_connections} connections at once "
                    "(triggers.http_max_connections); try again"
                }
            ).encode()
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: _Request, client_address: _Peer) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: _Request, client_address: _Peer) -> None:
        # socketserver prints a traceback to stderr by default; a client that goes away (or is
        # cut off by a timeout) is normal here and worth one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.info("http trigger: connection from %s ended early (%s)", client_address[0], exc)
        else:
            log.error("http trigger: a request from %s failed", client_address[0], exc_info=exc)


class _Handler(BaseHTTPRequestHandler):
    """One request to the trigger; what it checks against is the server's `settings`."""

    server: _LimitedServer
    server_version = "agecheck"

    def setup(self) -> None:
        self.settings = self.server.settings
        # Socket timeout: a connection that sends nothing for this long is closed.
        # typeshed declares `timeout` a ClassVar; StreamRequestHandler.setup reads it from the instance.
        self.timeout = self.settings.idle_timeout_s  # type: ignore[misc]
        super().setup()
        # The whole request (line, headers, body) must arrive within read_timeout: a
        # per-read timeout alone lets a client drip one byte every few seconds forever.
        self._reading = True
        self._deadline = threading.Timer(self.settings.read_timeout_s, self._too_slow)
        self._deadline.daemon = True
        self._deadline.start()

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _too_slow(self) -> None:
        if self._reading:
            log.warning(
                "http trigger: request from %s not complete within %g s "
                "(triggers.http_read_timeout_seconds); connection closed",
                self.client_address[0],
                self.settings.read_timeout_s,
            )
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _reply(self, code: int, body: dict[str, Any]) -> None:
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
            left = self.settings.max_bytes
            while left > 0:
                chunk = self.rfile.read1(min(left, 4096))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._reply(
            200 if self.path == "/" else 404,
            {"usage": f"POST /scan, Content-Type: application/json, body {{{', '.join(Scan.FIELDS)}}}, all optional"},
        )

    def do_POST(self) -> None:  # noqa: N802
        problem = self._header_problem()
        if problem is not None:
            self._refuse(*problem)
            return
        length = int(self.headers["Content-Length"].strip())
        try:
            body = self.rfile.read(length)
        except OSError:  # the idle timeout, or the read deadline shut the socket
            body = b""
        if len(body) != length:
            log.warning(
                "http trigger: request from %s ended after %d of %d body bytes; no check started",
                self.client_address[0],
                len(body),
                length,
            )
            self.close_connection = True
            return
        self._reading = False
        self._deadline.cancel()
        s = self.settings
        try:
            scan = parse_scan(body, s.max_bytes, s.defaults)
        except PosMessageError as exc:
            self._refuse(400, str(exc))
            return
        self._reply(*_outcome_json(s.submit(scan, "http"), s.wait_s))

    def _header_problem(self) -> tuple[int, str] | None:
        """Why the request line and headers are refused (status, message), or None."""
        s = self.settings
        if self.path != "/scan":
            return 404, f"unknown path {self.path}; use POST /scan"
        host = (self.headers.get("Host") or "").strip().lower()
        if host.rsplit(":", 1)[0] not in _LOOPBACK_HOSTS:
            return 403, f"Host {host[:80]!r} is not this machine (127.0.0.1 or localhost)"
        if s.expected is not None:
            got = (self.headers.get("Authorization") or "").strip().encode("utf-8", "replace")
            if not hmac.compare_digest(got, s.expected):
                return 401, "missing or wrong token (Authorization: Bearer <token>, triggers.http_token_file)"
        if not _is_json(self.headers.get("Content-Type")):
            return 415, "Content-Type must be application/json"
        if self.headers.get("Transfer-Encoding"):
            return 411, "send the body with a Content-Length, not Transfer-Encoding"
        given = self.headers.get_all("Content-Length") or []
        if not given:
            return 411, "Content-Length is required"
        text = given[0].strip()
        # ASCII digits only: str.isdigit() also takes '²' (which int() refuses), and int()
        # of thousands of digits raises past this handler (Python's 4300-digit limit).
        if not (text.isascii() and text.isdigit()) or len(text) > 20:
            return 400, (
                f"Content-Length must be a whole number of bytes, got {text[:40]!r}"
                f"{f' ({len(text)} characters)' if len(text) > 40 else ''}"
            )
        if len({v.strip() for v in given}) > 1:
            return 400, f"Content-Length is given {len(given)} times with different values"
        if int(text) > s.max_bytes:
            return 413, f"body is {int(text)} bytes, more than the {s.max_bytes} allowed"
        return None

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("http trigger: " + fmt, *args)


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
        settings = HttpSettings(
            submit=submit,
            wait_s=wait_s,
            defaults=default_item(cfg),
            max_bytes=cfg.max_payload_bytes,
            read_timeout_s=cfg.http_read_timeout_seconds,
            idle_timeout_s=cfg.http_idle_timeout_seconds,
            expected=f"Bearer {token}".encode() if token else None,
        )
        # Loopback only, whatever the config says.
        self._server = _LimitedServer(("127.0.0.1", port), settings, cfg.http_max_connections)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def refused_connections(self) -> int:
        return self._server.refused

    def start(self) -> HttpTrigger:
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


def start_http_trigger(cfg: Config, submit: SubmitFn) -> HttpTrigger:
    """The trigger the config asks for (triggers.http_port), started; ConfigError names the
    setting when its token file is empty or unreadable or the port cannot be listened on."""
    t = cfg.triggers
    if t.http_port is None:
        raise ConfigError("triggers.http_port: not set, so there is no HTTP trigger to start")
    token = read_secret(t.http_token_file, t.http_token_credential, "triggers.http_token")
    if token == "":
        raise ConfigError("triggers.http_token: the token file is empty")
    try:
        return HttpTrigger(t.http_port, submit, t, wait_s=cfg.check.time_budget_ms / 1000 + 10, token=token).start()
    except OSError as exc:
        raise ConfigError(f"triggers.http_port: cannot listen on 127.0.0.1:{t.http_port} ({exc.strerror})") from None
