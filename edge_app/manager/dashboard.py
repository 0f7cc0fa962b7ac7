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

import dataclasses
import getpass
import ipaddress
import json
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo

from edge_app.config import Config
from edge_app.core import events
from edge_app.core.times import local_dt
from edge_app.core.words import (
    DECISION_REASON,
    MISSED_REASON_TEXT,
    REASON_CAMERA_DOWN,
    REASON_ESTIMATED,
    REASON_SURE_OVER,
    Decision,
    MissedReason,
)
from edge_app.errors import UsageError
from edge_app.manager.chart_data import bucket_of, bucket_size, series  # noqa: F401  (bucket_*: the tests' too)
from edge_app.manager.db import Database
from edge_app.manager.feed import integrity_reason, outcome_text, read_stored
from edge_app.manager.figures import NO_CASHIER, Summary, cashier_of, fetch_events, headline_text, open_db, summarize
from edge_app.manager.health import HOURS_SHOWN, till_health
from edge_app.manager.render_data import PER_CASHIER_CSV, PER_TILL_CSV, to_json, write_csv
from edge_app.manager.scope import Period, ReportInputError, Scope, parse_period, parse_time_of_day, report_timezone
from edge_app.manager.tills import Hearing, hearing

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
    def of(cls, ev: events.Event, local: str, outcome: str, reason: str) -> EventRow:
        shown = isinstance(ev, (events.CheckEvent, events.AlertEvent))
        return cls(time=local, store_id=ev.store_id, till_id=ev.till_id, kind=ev.KIND,
                   decision=(ev.decision or "") if shown else "",
                   answer=ev.answer if isinstance(ev, events.AckEvent) else "",
                   outcome=outcome, reason=reason, operator_id=ev.operator_id or "",
                   transaction_id=ev.transaction_id or "", age_band=(ev.age_band or "") if shown else "",
                   seq=ev.seq if ev.seq is not None else "", event_id=ev.event_id)


EVENT_COLUMNS = [f.name for f in dataclasses.fields(EventRow)]
KINDS = events.EVENT_KINDS


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


# The URL's filter parameters, in the order the page and the download names use them.
FILTER_PARAMS = ("since", "until", "store", "till", "cashier", "kind", "time_from", "time_to")


@dataclass(frozen=True)
class Filters:
    """What the page shows: a period and a scope (scope.Scope: store, till, cashier, kind, time of
    day). Every figure, table, chart and download of the page goes through it, and it lives in the
    URL, so a filtered page can be bookmarked or sent on."""

    period: Period
    scope: Scope

    @property
    def store(self) -> str | None:
        return self.scope.store

    @property
    def till(self) -> str | None:
        return self.scope.till

    @property
    def cashier(self) -> str | None:
        return self.scope.cashier

    @property
    def kind(self) -> str | None:
        return self.scope.kind

    def query(self) -> dict[str, str]:
        h = self.scope.hours
        values = {"since": self.period.since.isoformat(), "until": self.period.until.isoformat(),
                  "store": self.store, "till": self.till, "cashier": self.cashier, "kind": self.kind,
                  "time_from": h.start_text if h else None, "time_to": h.end_text if h else None}
        return {k: v for k, v in values.items() if v}


def title_of(f: Filters, stores: list[str]) -> str:
    """"store-042" when one store is shown (chosen, or the only one in the database), else "all
    stores"; then the till and the cashier when chosen."""
    store = f.store or (stores[0] if len(stores) == 1 else None)
    parts = [store or "all stores"]
    if f.till:
        parts.append(f.till)
    if f.cashier:
        parts.append(f"cashier {f.cashier}")
    return ", ".join(parts)


def reason_in_words(ev: events.Event, linked: dict[str, events.Event]) -> str:
    """Why the till decided (or why a scan got no check, or a sale became an integrity event), as a
    person says it: "looked under 25: 15% sure over 25". An alert is explained by its check."""
    if isinstance(ev, events.IntegrityEvent):
        return integrity_reason(ev.reason)
    if isinstance(ev, events.MissedEvent):
        return MISSED_REASON_TEXT[MissedReason(ev.reason)] if ev.reason in MISSED_REASON_TEXT else ev.reason
    if isinstance(ev, events.AlertEvent):
        check = linked.get(ev.check_event_id)
        if isinstance(check, events.CheckEvent):
            return reason_in_words(check, linked)
        return _decision_words(ev.decision, None, None, ev.age, ev.camera) or ev.reason or ""
    if isinstance(ev, events.CheckEvent):
        return (_decision_words(ev.decision, ev.policy.challenge_age, ev.p_over, ev.age, ev.camera)
                or ev.reason or "")
    return ""


def _decision_words(decision: str, challenge: float | None, p_over: float | None, age: float | None,
                    camera: str | None) -> str | None:
    if decision == Decision.NO_FACE and camera not in (None, "up"):
        return REASON_CAMERA_DOWN
    if decision not in DECISION_REASON:
        return None
    if decision == Decision.NO_FACE:
        return DECISION_REASON[Decision.NO_FACE]
    if challenge is None:
        return None  # no age to say "under" or "over" of: the till's own reason is shown
    c = f"{challenge:g}"
    said = DECISION_REASON[Decision(decision)].format(challenge=c)
    if p_over is not None:
        return f"{said}: {REASON_SURE_OVER.format(pct=f'{100 * p_over:.0f}', challenge=c)}"
    if age is not None:
        return f"{said}: {REASON_ESTIMATED.format(age=f'{age:.0f}')}"
    return said


def event_rows(db: Database, f: Filters, tz: tzinfo | None, limit: int) -> list[dict]:
    """The event list, newest first, as shown on the page and exported: the events the filters
    admit (an answer's cashier is the one its alert was shown to), read in batches until `limit`."""
    sc = f.scope
    lo = (f.period.since - timedelta(days=1)).isoformat()
    hi = (f.period.until + timedelta(days=2)).isoformat()
    where, params = ["ts >= ?", "ts < ?"], [lo, hi]
    for col, val in (("store_id", sc.store), ("till_id", sc.till), ("kind", sc.kind)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    batch = max(limit + 200, 2000)
    linked: dict[str, events.Event] = {}  # alerts, checks and replaced answers the rows point to
    out: list[dict] = []
    offset = 0
    while len(out) < limit:
        rows = db.query(f"SELECT ts, event_id, payload FROM events WHERE {' AND '.join(where)}"
                        " ORDER BY ts DESC, event_id LIMIT ? OFFSET ?", (*params, batch, offset))
        offset += len(rows)
        evs = [ev for _, eid, payload in rows if (ev := read_stored(eid, payload)) is not None]
        # (an unreadable payload is logged by read_stored; the report lists it under "Data quality")
        need = set()
        for ev in evs:
            if isinstance(ev, (events.AckEvent, events.IntegrityEvent)):
                need.add(ev.alert_event_id)
            if isinstance(ev, events.AckEvent) and ev.replaces_event_id:
                need.add(ev.replaces_event_id)
            if isinstance(ev, events.AlertEvent):
                need.add(ev.check_event_id)
        linked.update(fetch_events(db, need - linked.keys()))
        for ev in evs:
            dt = local_dt(ev.ts, tz)
            if dt is None or not (f.period.since <= dt.date() <= f.period.until):
                continue
            cashier = cashier_of(ev, linked)  # type: ignore[arg-type]  (an alert id names an alert)
            if not sc.admits(ev, dt, cashier):
                continue
            # A correction (Undo) says which answer it took back, as the feed's live table does.
            replaced = linked.get(ev.replaces_event_id) if isinstance(ev, events.AckEvent) and ev.replaces_event_id \
                else None
            row = EventRow.of(ev, dt.strftime("%Y-%m-%d %H:%M:%S"), outcome_text(ev, replaced),
                              reason_in_words(ev, linked))
            out.append(dataclasses.asdict(dataclasses.replace(row, operator_id=cashier or "")))
            if len(out) >= limit:
                break
        if len(rows) < batch:
            break
    return out


def create_app(db_url: str, cfg: Config, password_hash: str | None = None):
    from flask import Flask, Response, abort, render_template, request
    from werkzeug.security import check_password_hash

    tz, tz_name = report_timezone(cfg)
    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    db = open_db(db_url)  # read-only; raises ReportInputError naming the problem
    label = db.target.label

    def today() -> date:
        return datetime.now(tz).date() if tz else datetime.now().date()

    def bad(message: str):
        # A filter value the page cannot use: said in words, never a traceback.
        abort(Response(f"{message}\n", status=400, mimetype="text/plain"))

    def filters() -> Filters:
        a = request.args
        try:
            period = parse_period(a.get("since") or None, a.get("until") or None, today(), ("since", "until"))
            hours = parse_time_of_day(a.get("time_from") or None, a.get("time_to") or None, ("time_from", "time_to"))
        except ReportInputError as exc:
            bad(str(exc))
        kind = a.get("kind") or None
        if kind is not None and kind not in KINDS:
            bad(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        store, till, cashier = (a.get(k) or None for k in ("store", "till", "cashier"))
        # A store, till or cashier the database has never seen is a typing mistake or a link from
        # another database: say which ones it knows rather than show an empty page.
        for name, value, known in (("store", store, stores), ("till", till, lambda: tills(store)),
                                   ("cashier", cashier, lambda: cashiers(store))):
            if value is not None and value not in (k := known()):
                where = f" in {store}" if store and name != "store" else ""
                bad(f"{name}: {value!r} has no events{where}; known: {', '.join(k) or 'none yet'}")
        return Filters(period, Scope(store, till, cashier, kind, hours))

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

    def cashiers(store: str | None) -> list[str]:
        # The cashiers the POS named with a scan (an answer's cashier is its alert's).
        if "operator_id" not in db.columns("events"):
            return []  # a feed database from before cashiers were stored
        where = "operator_id IS NOT NULL" + (" AND store_id = ?" if store else "")
        return [r[0] for r in db.query(f"SELECT DISTINCT operator_id FROM events WHERE {where} ORDER BY operator_id",
                                       (store,) if store else ())]

    def version() -> str:
        """Changes whenever an event (or a quarantined message) is stored, and when a till goes
        silent or is heard again (which no stored event says): what the page polls."""
        n, last = db.query("SELECT COUNT(*), MAX(received_at) FROM events")[0]
        q = db.query("SELECT COUNT(*) FROM quarantine")[0][0] if db.has_table("quarantine") else 0
        quiet = ",".join(f"{t.store_id}/{t.till_id}" for t in hearing(db, datetime.now(UTC)).silent)
        return f"{n}-{q}-{last or ''}-{quiet}"

    def silence(f: Filters) -> Hearing | None:
        return silent_now(db, f, today())

    def summary(f: Filters) -> Summary:
        return summarize(db, f.period, tz, scope=f.scope)

    def download(body: str, mimetype: str, what: str, f: Filters, ext: str) -> Response:
        return Response(body, mimetype=mimetype,
                        headers={"Content-Disposition": f'attachment; filename="{_name(what, f)}.{ext}"'})

    @app.get("/")
    def index():
        f = filters()
        ver = version()  # before the figures: a later poll sees anything stored while they were worked out
        s = summary(f)
        data = to_json(s, tz)
        evs = event_rows(db, f, tz, EVENT_LIMIT)
        all_stores = stores()
        return render_template("dashboard.html", f=f, s=s, data=data, series=series(s), events=evs,
                               health=till_health(db, f.period, tz, f.scope), hours_shown=HOURS_SHOWN,
                               hearing=silence(f), when=lambda ts: _when(ts, tz),
                               event_limit=EVENT_LIMIT, stores=all_stores, tills=tills(f.store),
                               cashiers=cashiers(f.store), kinds=KINDS, tz_name=tz_name, source=label,
                               query=f.query(), title=title_of(f, all_stores), headline=headline_text(s.totals()),
                               no_cashier=NO_CASHIER, version=ver, refresh_ms=int(cfg.dashboard.refresh_seconds * 1000))

    @app.get("/live.json")
    def live_json():
        # Small on purpose: the page asks this every few seconds and fetches itself again only
        # when the version moved.
        return Response(json.dumps({"version": version()}), mimetype="application/json",
                        headers={"Cache-Control": "no-store"})

    @app.get("/summary.json")
    def summary_json():
        f = filters()
        s = summary(f)
        heard = silence(f)
        body = json.dumps({**to_json(s, tz), "charts": series(s),
                           "till_health": [h.as_json() for h in till_health(db, f.period, tz, f.scope)],
                           "silent_tills": [dataclasses.asdict(t) for t in heard.silent] if heard else []},
                          indent=2, ensure_ascii=False)
        return download(body, "application/json", "summary", f, "json")

    @app.get("/per_till.csv")
    def per_till_csv():
        f = filters()
        return download(write_csv(to_json(summary(f), tz)["per_till"], PER_TILL_CSV), "text/csv", "per-till", f, "csv")

    @app.get("/per_cashier.csv")
    def per_cashier_csv():
        f = filters()
        return download(write_csv(to_json(summary(f), tz)["per_cashier"], PER_CASHIER_CSV), "text/csv",
                        "per-cashier", f, "csv")

    @app.get("/events.csv")
    def events_csv():
        f = filters()
        return download(write_csv(event_rows(db, f, tz, EXPORT_LIMIT), EVENT_COLUMNS), "text/csv", "events", f, "csv")

    @app.get("/events.json")
    def events_json():
        f = filters()
        body = {"filters": f.query(), "timezone": tz_name, "events": event_rows(db, f, tz, EXPORT_LIMIT)}
        return download(json.dumps(body, indent=2, ensure_ascii=False), "application/json", "events", f, "json")

    app.extensions["agecheck_db"] = db
    return app


def silent_now(db: Database, f: Filters, today: date) -> Hearing | None:
    """Which of the filtered tills are silent now; None when the period ends before today
    (silence is about now, not about a past period)."""
    if f.period.until < today:
        return None
    return hearing(db, datetime.now(UTC), f.store, f.till)


def _when(ts: str | None, tz: tzinfo | None) -> str:
    dt = local_dt(ts, tz)
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else "never"


def _name(what: str, f: Filters) -> str:
    """agecheck-events-store-042-till-01-C-7-alert-1400-1600-2025-03-10-2025-03-16: what the file holds."""
    h = f.scope.hours
    parts = ["agecheck", what, f.store or "all-stores", f.till, f.cashier, f.kind,
             f"{h.start_text}-{h.end_text}".replace(":", "") if h else None,
             f.period.since.isoformat(), f.period.until.isoformat()]
    # A cashier id is the POS's text: keep the file name to safe characters.
    return "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts if p)


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
