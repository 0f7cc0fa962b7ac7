"""Manager dashboard (`agecheck dashboard`): a small Flask app, served by waitress, over the event
store the feed writes (SQLite or PostgreSQL), opened read-only.

It owns the web page and its exports; the figures themselves come from `figures` (one definition
for the report and the page). For a chosen period and store: the "needs attention" list first,
the tills gone silent (`tills`; while the period reaches today), missing-event gaps (a till's state
shows a hole at the end before its next event does), figures per store and till, till health
(`health`: each till's camera against its own usual), charts (outcomes of alerts over time, bucketed by
day, week or month so they stay readable for a day, a week or a year; alerts per till; the
age-band mix, labelled as camera estimates), and the event list with filters. What the list shows
downloads as CSV or JSON; the summary as JSON.

Chart.js is served from the package (static/), never from the internet. Bound to 127.0.0.1 by
default; any other address needs `dashboard.password_hash` (HTTP basic auth, a werkzeug scrypt
hash), and the start-up line says who can open it.
"""

from __future__ import annotations

import getpass
import importlib
import ipaddress
import json
import signal
import sys

from edge_app.config import Config
from edge_app.errors import UsageError
from edge_app.manager.scope import ReportInputError
from edge_app.manager.site import BadFilter, Download, Filters, Site
from edge_app.manager.store_reader import open_db

# Flask, waitress and psycopg are the [manager] extra (setup.py): a till's runtime leaves them out.
MANAGER_EXTRA = "pip install 'agecheck[manager]'"
WEB_LIBRARIES = ("flask", "waitress")


class DashboardError(UsageError):
    """A set-up the dashboard refuses to start with (the message says what to change)."""


def require_web_libraries() -> None:
    """Raises DashboardError naming the extra to install when Flask or waitress is missing (an
    agecheck installed for a till: the wheel's plain install or the .deb)."""
    missing = []
    for name in WEB_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DashboardError(
            f"the dashboard needs {' and '.join(missing)}, which a till's install leaves out; "
            f"on the manager's computer install agecheck with its manager extra: {MANAGER_EXTRA}"
        )


def create_app(db_url: str, cfg: Config, password_hash: str | None = None):
    """The Flask app over the store at `db_url` (opened read-only; ReportInputError naming the
    problem). Each route reads its filters and hands them to the flask-free `Site`."""
    # Deferred: Flask is the manager extra's; require_web_libraries says so when it is missing.
    from flask import Flask, Response, abort, render_template, request

    site = Site(open_db(db_url), cfg)
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    if password_hash:
        app.before_request(_password_check(cfg.dashboard.username, password_hash))
    app.after_request(_headers)

    def filters() -> Filters:
        try:
            return site.filters(request.args)
        except BadFilter as exc:  # a filter value the page cannot use: said in words, never a traceback
            abort(Response(f"{exc}\n", status=400, mimetype="text/plain"))

    def send(d: Download) -> Response:
        return Response(
            d.body, mimetype=d.mimetype, headers={"Content-Disposition": f'attachment; filename="{d.filename}"'}
        )

    app.add_url_rule("/", "index", lambda: render_template("dashboard.html", **site.page(filters())))
    # Small on purpose: the page asks this every few seconds and fetches itself again only when
    # the version moved.
    app.add_url_rule(
        "/live.json",
        "live_json",
        lambda: Response(
            json.dumps({"version": site.version()}), mimetype="application/json", headers={"Cache-Control": "no-store"}
        ),
    )
    for path, export in (
        ("/summary.json", site.summary_json),
        ("/per_till.csv", site.per_till_csv),
        ("/per_cashier.csv", site.per_cashier_csv),
        ("/events.csv", site.events_csv),
        ("/events.json", site.events_json),
    ):
        app.add_url_rule(path, export.__name__, lambda export=export: send(export(filters())))
    app.extensions["agecheck_db"] = site.db
    return app


def _password_check(username: str, password_hash: str):
    """The before-request hook that asks for HTTP basic auth (a werkzeug scrypt hash)."""
    from flask import Response, request  # deferred with create_app's
    from werkzeug.security import check_password_hash

    def check():
        auth = request.authorization
        if not (
            auth and auth.username == username and auth.password and check_password_hash(password_hash, auth.password)
        ):
            return Response(
                "A password is needed to open the agecheck dashboard.\n",
                401,
                {"WWW-Authenticate": 'Basic realm="agecheck dashboard"'},
            )
        return None

    return check


def _headers(resp):
    # Everything the page needs comes from this server: say so to the browser as well.
    resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    return resp


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def hash_password(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password)  # scrypt with a random salt


def main(args, cfg: Config) -> int:
    require_web_libraries()
    if getattr(args, "hash_password", False):
        pw = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("Dashboard password: ")
        if len(pw) < 8:
            raise DashboardError("the password must have at least 8 characters")
        print(hash_password(pw))
        return 0
    host = args.host or cfg.dashboard.host
    port = args.port if args.port is not None else cfg.dashboard.port
    pw_hash = cfg.dashboard.password_hash
    if not is_loopback(host) and not pw_hash:
        raise DashboardError(
            f"--host {host} lets other computers open the dashboard; set "
            "dashboard.password_hash in config.yaml first (make one with `agecheck dashboard "
            "--hash-password`), or leave the host at 127.0.0.1"
        )
    db = args.db or cfg.feed.db_path
    try:
        app = create_app(db, cfg, pw_hash)
    except ReportInputError as exc:
        raise DashboardError(str(exc)) from None
    from waitress import create_server

    try:
        server = create_server(app, host=host, port=port, threads=4)
    except OSError as exc:
        raise DashboardError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    who = (
        "only this computer can open it"
        if is_loopback(host)
        else f"other computers can open it with user {cfg.dashboard.username!r} and the configured password"
    )
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"agecheck dashboard: http://{shown_host}:{server.effective_port}/ read-only on "
        f"{app.extensions['agecheck_db'].target.label}; {who} (Ctrl-C to stop)",
        flush=True,
    )

    def _stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["agecheck_db"].close()
    return 0
