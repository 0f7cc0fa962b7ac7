"""Manager dashboard (`agecheck dashboard`): a small Flask app, served by waitress, over the event
store the feed writes (SQLite or PostgreSQL), opened read-only.

It owns the web page and its exports; the figures themselves come from `report` (one definition
for the report and the page). For a chosen period and store: the "needs attention" list first,
missing-event gaps, figures per store and till, charts (outcomes of alerts over time, bucketed by
day, week or month so they stay readable for a day, a week or a year; alerts per till; the
age-band mix, labelled as camera estimates), and the event list with filters. What the list shows
downloads as CSV or JSON; the summary as JSON.

Chart.js is served from the package (static/), never from the internet. Bound to 127.0.0.1 by
default; any other address needs `dashboard.password_hash` (HTTP basic auth, a werkzeug scrypt
hash), and the start-up line says who can open it.
"""

from __future__ import annotations

import dataclasses
import getpass
import ipaddress
import json
import sys
from dataclasses import dataclass
from datetime import date, timedelta, tzinfo
from typing import Any

from edge_app.config import Config
from edge_app.errors import UsageError
from edge_app.core import events
from edge_app.manager.db import Database
from edge_app.core.events import local_dt
from edge_app.core.words import ANSWER_PHRASE, Answer
from edge_app.manager.feed import integrity_reason, outcome_text, read_stored
from edge_app.manager.report import (BAND_NAMES, PER_TILL_CSV, Period, ReportInputError, Summary, _timezone,
                                     open_db, parse_period, summarize, to_json, write_csv)

EVENT_LIMIT = 1000  # rows in the page's event list (exports take the same filters, up to EXPORT_LIMIT)
EXPORT_LIMIT = 200_000


@dataclass(frozen=True)
class EventRow:
    """One line of the page's event list and of its CSV/JSON exports ("" where a kind has no value)."""

    time: str
    store_id: str
    till_id: str
    kind: str
    decision: str
    answer: str
    outcome: str
    reason: str
    operator_id: str
    transaction_id: str
    age_band: str
    seq: int | str
    event_id: str

    @classmethod
    def of(cls, ev: events.Event, local: str, outcome: str, reason: str) -> "EventRow":
        shown = isinstance(ev, (events.CheckEvent, events.AlertEvent))
        return cls(time=local, store_id=ev.store_id, till_id=ev.till_id, kind=ev.KIND,
                   decision=(ev.decision or "") if shown else "",
                   answer=ev.answer if isinstance(ev, events.AckEvent) else "",
                   outcome=outcome, reason=reason, operator_id=ev.operator_id or "",
                   transaction_id=ev.transaction_id or "", age_band=(ev.age_band or "") if shown else "",
                   seq=ev.seq if ev.seq is not None else "", event_id=ev.event_id)


EVENT_COLUMNS = [f.name for f in dataclasses.fields(EventRow)]
KINDS = events.EVENT_KINDS
# The stacked bars of alert outcomes: ID checked, answered "no ID check", not answered.
ALERT_OUTCOME_SERIES = (("ID checked", "#2e8b57"), (f"answered: {ANSWER_PHRASE[Answer.NO_ID_CHECK]}", "#c0392b"),
                        ("not answered", "#e67e22"))


# Flask, waitress and psycopg are the [manager] extra (setup.py): a till's runtime leaves them out.
MANAGER_EXTRA = "pip install 'agecheck[manager]'"
WEB_LIBRARIES = ("flask", "waitress")


class DashboardError(UsageError):
    """A set-up the dashboard refuses to start with (the message says what to change)."""


def require_web_libraries() -> None:
    """Raises DashboardError naming the extra to install when Flask or waitress is missing (an
    agecheck installed for a till: the wheel's plain install or the .deb)."""
    import importlib

    missing = []
    for name in WEB_LIBRARIES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DashboardError(f"the dashboard needs {' and '.join(missing)}, which a till's install leaves out; "
                             f"on the manager's computer install agecheck with its manager extra: {MANAGER_EXTRA}")


@dataclass(frozen=True)
class Filters:
    period: Period
    store: str | None
    till: str | None
    kind: str | None

    def query(self) -> dict[str, str]:
        q = {"since": self.period.since.isoformat(), "until": self.period.until.isoformat()}
        q.update({k: v for k, v in (("store", self.store), ("till", self.till), ("kind", self.kind)) if v})
        return q


def bucket_size(period: Period) -> str:
    """Day bars for up to a month, weeks up to half a year, months beyond."""
    n = len(period.days)
    return "day" if n <= 31 else ("week" if n <= 190 else "month")


def bucket_of(day: date, size: str) -> date:
    if size == "week":
        return day - timedelta(days=day.weekday())
    if size == "month":
        return day.replace(day=1)
    return day


def series(s: Summary) -> dict[str, Any]:
    """What the charts draw, as plain data."""
    size = bucket_size(s.period)
    buckets = sorted({bucket_of(d, size) for d in s.period.days})
    idx = {b: i for i, b in enumerate(buckets)}
    checked, no_check, unanswered = [0] * len(buckets), [0] * len(buckets), [0] * len(buckets)
    for (_, _, day), r in s.rows.items():
        i = idx[bucket_of(day, size)]
        checked[i] += r.id_checked_alerts
        no_check[i] += r.answered_alerts - r.id_checked_alerts
        unanswered[i] += r.alerts - r.answered_alerts
    fmt = {"day": "%a %d %b", "week": "w/c %d %b", "month": "%b %Y"}[size]
    multi = len(s.store_ids) > 1
    tills = s.tills
    per_till = [s.totals(t, st) for st, t in tills]

    def stacks(checked: list[int], no_check: list[int], unanswered: list[int]) -> list[dict]:
        # The alerts' outcomes, in the order the bars stack; the page draws what it is given.
        return [{"name": name, "colour": colour, "values": values} for (name, colour), values
                in zip(ALERT_OUTCOME_SERIES, (checked, no_check, unanswered))]

    return {
        "bucket": size,
        "over_time": {"labels": [b.strftime(fmt) for b in buckets],
                      "series": stacks(checked, no_check, unanswered)},
        "per_till": {"labels": [f"{st}/{t}" if multi else t for st, t in tills],
                     "series": stacks([r.id_checked_alerts for r in per_till],
                                      [r.answered_alerts - r.id_checked_alerts for r in per_till],
                                      [r.alerts - r.answered_alerts for r in per_till])},
        "bands": {"labels": BAND_NAMES, "shoppers": [s.bands[b] for b in BAND_NAMES]},
    }


def event_rows(db: Database, f: Filters, tz: tzinfo | None, limit: int) -> list[dict]:
    """The event list, newest first, as shown on the page and exported."""
    lo = (f.period.since - timedelta(days=1)).isoformat()
    hi = (f.period.until + timedelta(days=2)).isoformat()
    where, params = ["ts >= ?", "ts < ?"], [lo, hi]
    for col, val in (("store_id", f.store), ("till_id", f.till), ("kind", f.kind)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    rows = db.query(f"SELECT ts, event_id, payload FROM events WHERE {' AND '.join(where)}"
                    " ORDER BY ts DESC, event_id LIMIT ?", (*params, limit + 200))
    out = []
    for ts, event_id, payload in rows:
        dt = local_dt(ts, tz)
        if dt is None or not (f.period.since <= dt.date() <= f.period.until):
            continue
        ev = read_stored(event_id, payload)
        if ev is None:  # logged by read_stored; the report lists it under "Data quality"
            continue
        reason = ""
        if isinstance(ev, events.IntegrityEvent):
            reason = integrity_reason(ev.reason)
        elif isinstance(ev, (events.CheckEvent, events.AlertEvent, events.MissedEvent)):
            reason = ev.reason or ""
        replaced = None
        if isinstance(ev, events.AckEvent) and ev.replaces_event_id:
            # A correction (Undo) says which answer it took back, as the feed's live table does.
            got = db.query("SELECT payload FROM events WHERE event_id = ?", (ev.replaces_event_id,))
            replaced = read_stored(ev.replaces_event_id, got[0][0]) if got else None
        out.append(dataclasses.asdict(EventRow.of(ev, dt.strftime("%Y-%m-%d %H:%M:%S"), outcome_text(ev, replaced),
                                                  reason)))
        if len(out) >= limit:
            break
    return out


def create_app(db_url: str, cfg: Config, password_hash: str | None = None):
    from flask import Flask, Response, abort, render_template, request
    from werkzeug.security import check_password_hash

    tz, tz_name = _timezone(cfg)
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    db = open_db(db_url)  # read-only; raises ReportInputError naming the problem
    label = db.target.label

    def today() -> date:
        from datetime import datetime

        return datetime.now(tz).date() if tz else datetime.now().date()

    def filters() -> Filters:
        a = request.args
        try:
            period = parse_period(a.get("since") or None, a.get("until") or None, today())
        except ReportInputError as exc:
            abort(Response(f"{exc}\n", status=400, mimetype="text/plain"))
        kind = a.get("kind") or None
        if kind is not None and kind not in KINDS:
            abort(Response(f"kind: {kind!r} is not one of {', '.join(KINDS)}\n", status=400, mimetype="text/plain"))
        return Filters(period, a.get("store") or None, a.get("till") or None, kind)

    if password_hash:
        @app.before_request
        def _auth():
            auth = request.authorization
            if not (auth and auth.username == cfg.dashboard.username and auth.password
                    and check_password_hash(password_hash, auth.password)):
                return Response("A password is needed to open the agecheck dashboard.\n", 401,
                                {"WWW-Authenticate": 'Basic realm="agecheck dashboard"'})
            return None

    @app.after_request
    def _headers(resp):
        # Everything the page needs comes from this server: say so to the browser as well.
        resp.headers.setdefault("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    def stores() -> list[str]:
        return [r[0] for r in db.query("SELECT DISTINCT store_id FROM events ORDER BY store_id")]

    def tills(store: str | None) -> list[str]:
        if store:
            return [r[0] for r in db.query("SELECT DISTINCT till_id FROM events WHERE store_id = ? ORDER BY till_id",
                                           (store,))]
        return [r[0] for r in db.query("SELECT DISTINCT till_id FROM events ORDER BY till_id")]

    @app.get("/")
    def index():
        f = filters()
        s = summarize(db, f.period, tz, f.store)
        data = to_json(s, tz)
        evs = event_rows(db, f, tz, EVENT_LIMIT)
        return render_template("dashboard.html", f=f, s=s, data=data, series=series(s), events=evs,
                               event_limit=EVENT_LIMIT, stores=stores(), tills=tills(f.store), kinds=KINDS,
                               tz_name=tz_name, source=label, query=f.query())

    @app.get("/summary.json")
    def summary_json():
        f = filters()
        s = summarize(db, f.period, tz, f.store)
        return Response(json.dumps({**to_json(s, tz), "charts": series(s)}, indent=2, ensure_ascii=False),
                        mimetype="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{_name("summary", f)}.json"'})

    @app.get("/per_till.csv")
    def per_till_csv():
        f = filters()
        s = summarize(db, f.period, tz, f.store)
        return Response(write_csv(to_json(s, tz)["per_till"], PER_TILL_CSV), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{_name("per-till", f)}.csv"'})

    @app.get("/events.csv")
    def events_csv():
        f = filters()
        return Response(write_csv(event_rows(db, f, tz, EXPORT_LIMIT), EVENT_COLUMNS), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{_name("events", f)}.csv"'})

    @app.get("/events.json")
    def events_json():
        f = filters()
        body = {"filters": f.query(), "timezone": tz_name, "events": event_rows(db, f, tz, EXPORT_LIMIT)}
        return Response(json.dumps(body, indent=2, ensure_ascii=False), mimetype="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{_name("events", f)}.json"'})

    app.extensions["agecheck_db"] = db
    return app


def _name(what: str, f: Filters) -> str:
    parts = ["agecheck", what, f.store or "all-stores", f.period.since.isoformat(), f.period.until.isoformat()]
    if f.till:
        parts.insert(3, f.till)
    if f.kind:
        parts.insert(3, f.kind)
    return "-".join(parts)


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
        raise DashboardError(f"--host {host} lets other computers open the dashboard; set "
                             "dashboard.password_hash in config.yaml first (make one with `agecheck dashboard "
                             "--hash-password`), or leave the host at 127.0.0.1")
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
    who = ("only this computer can open it" if is_loopback(host)
           else f"other computers can open it with user {cfg.dashboard.username!r} and the configured password")
    shown_host = f"[{host}]" if ":" in host else host
    print(f"agecheck dashboard: http://{shown_host}:{server.effective_port}/ read-only on "
          f"{app.extensions['agecheck_db'].target.label}; {who} (Ctrl-C to stop)", flush=True)
    import signal

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
