"""What the dashboard's pages hold, without Flask (`Site`): the filters read from the URL (a bad
value said in words), the page's figures, tills gone silent, till health, the event list and the
exports, each for one `Filters`. `edge_app.manager.dashboard` wires these to HTTP routes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

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
from edge_app.manager.chart_data import series
from edge_app.manager.db import Database
from edge_app.manager.figures import NO_CASHIER, Summary, cashier_of, headline_text, summarize
from edge_app.manager.health import HOURS_SHOWN, till_health
from edge_app.manager.live_table import integrity_reason, outcome_text
from edge_app.manager.render_data import PER_CASHIER_CSV, PER_TILL_CSV, to_json, write_csv
from edge_app.manager.scope import Period, ReportInputError, Scope, parse_period, parse_time_of_day, report_timezone
from edge_app.manager.store import read_stored
from edge_app.manager.store_reader import fetch_events
from edge_app.manager.tills import Hearing, hearing

EVENT_LIMIT = 1000  # rows in the page's event list (exports take the same filters, up to EXPORT_LIMIT)
EXPORT_LIMIT = 200_000


class BadFilter(ValueError):
    """A filter value in the URL the page cannot use; the message says which and why."""


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
        shown = ev if isinstance(ev, (events.CheckEvent, events.AlertEvent)) else None
        return cls(
            time=local,
            store_id=ev.store_id,
            till_id=ev.till_id,
            kind=ev.KIND,
            decision=(shown.decision or "") if shown is not None else "",
            answer=ev.answer if isinstance(ev, events.AckEvent) else "",
            outcome=outcome,
            reason=reason,
            operator_id=ev.operator_id or "",
            transaction_id=ev.transaction_id or "",
            age_band=(shown.age_band or "") if shown is not None else "",
            seq=ev.seq if ev.seq is not None else "",
            event_id=ev.event_id,
        )


EVENT_COLUMNS = [f.name for f in dataclasses.fields(EventRow)]
KINDS = events.EVENT_KINDS


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
        values = {
            "since": self.period.since.isoformat(),
            "until": self.period.until.isoformat(),
            "store": self.store,
            "till": self.till,
            "cashier": self.cashier,
            "kind": self.kind,
            "time_from": h.start_text if h else None,
            "time_to": h.end_text if h else None,
        }
        return {k: v for k, v in values.items() if v}


def title_of(f: Filters, stores: list[str]) -> str:
    """ "store-042" when one store is shown (chosen, or the only one in the database), else "all
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
        return _decision_words(ev.decision, ev.policy.challenge_age, ev.p_over, ev.age, ev.camera) or ev.reason or ""
    return ""


def _decision_words(
    decision: str, challenge: float | None, p_over: float | None, age: float | None, camera: str | None
) -> str | None:
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
        rows = db.query(
            f"SELECT ts, event_id, payload FROM events WHERE {' AND '.join(where)}"
            " ORDER BY ts DESC, event_id LIMIT ? OFFSET ?",
            (*params, batch, offset),
        )
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
            cashier = cashier_of(ev, linked)
            if not sc.admits(ev, dt, cashier):
                continue
            # A correction (Undo) says which answer it took back, as the feed's live table does.
            replaced = (
                linked.get(ev.replaces_event_id) if isinstance(ev, events.AckEvent) and ev.replaces_event_id else None
            )
            row = EventRow.of(
                ev, dt.strftime("%Y-%m-%d %H:%M:%S"), outcome_text(ev, replaced), reason_in_words(ev, linked)
            )
            out.append(dataclasses.asdict(dataclasses.replace(row, operator_id=cashier or "")))
            if len(out) >= limit:
                break
        if len(rows) < batch:
            break
    return out


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
    parts = [
        "agecheck",
        what,
        f.store or "all-stores",
        f.till,
        f.cashier,
        f.kind,
        f"{h.start_text}-{h.end_text}".replace(":", "") if h else None,
        f.period.since.isoformat(),
        f.period.until.isoformat(),
    ]
    # A cashier id is the POS's text: keep the file name to safe characters.
    return "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts if p)


@dataclass(frozen=True)
class Download:
    """An export: its body, its media type and the file name it is saved under."""

    body: str
    mimetype: str
    filename: str


class Site:
    """The dashboard over one read-only event store, for the config's time zone."""

    def __init__(self, db: Database, cfg: Config) -> None:
        self.db = db
        self.cfg = cfg
        self.tz, self.tz_name = report_timezone(cfg)

    def today(self) -> date:
        return datetime.now(self.tz).date() if self.tz else datetime.now().date()

    def filters(self, a: Mapping[str, str]) -> Filters:
        """The page's filters from its URL's parameters; BadFilter naming a value it cannot use."""
        try:
            period = parse_period(a.get("since") or None, a.get("until") or None, self.today(), ("since", "until"))
            hours = parse_time_of_day(a.get("time_from") or None, a.get("time_to") or None, ("time_from", "time_to"))
        except ReportInputError as exc:
            raise BadFilter(str(exc)) from None
        kind = a.get("kind") or None
        if kind is not None and kind not in KINDS:
            raise BadFilter(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
        store, till, cashier = (a.get(k) or None for k in ("store", "till", "cashier"))
        # A store, till or cashier the database has never seen is a typing mistake or a link from
        # another database: say which ones it knows rather than show an empty page.
        for name, value, known in (
            ("store", store, self.stores),
            ("till", till, lambda: self.tills(store)),
            ("cashier", cashier, lambda: self.cashiers(store)),
        ):
            if value is not None and value not in (k := known()):
                where = f" in {store}" if store and name != "store" else ""
                raise BadFilter(f"{name}: {value!r} has no events{where}; known: {', '.join(k) or 'none yet'}")
        return Filters(period, Scope(store, till, cashier, kind, hours))

    def stores(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT DISTINCT store_id FROM events ORDER BY store_id")]

    def tills(self, store: str | None) -> list[str]:
        if store:
            return [
                r[0]
                for r in self.db.query(
                    "SELECT DISTINCT till_id FROM events WHERE store_id = ? ORDER BY till_id", (store,)
                )
            ]
        return [r[0] for r in self.db.query("SELECT DISTINCT till_id FROM events ORDER BY till_id")]

    def cashiers(self, store: str | None) -> list[str]:
        # The cashiers the POS named with a scan (an answer's cashier is its alert's).
        if "operator_id" not in self.db.columns("events"):
            return []  # a feed database from before cashiers were stored
        where = "operator_id IS NOT NULL" + (" AND store_id = ?" if store else "")
        return [
            r[0]
            for r in self.db.query(
                f"SELECT DISTINCT operator_id FROM events WHERE {where} ORDER BY operator_id", (store,) if store else ()
            )
        ]

    def version(self) -> str:
        """Changes whenever an event (or a quarantined message) is stored, and when a till goes
        silent or is heard again (which no stored event says): what the page polls."""
        n, last = self.db.query("SELECT COUNT(*), MAX(received_at) FROM events")[0]
        q = self.db.query("SELECT COUNT(*) FROM quarantine")[0][0] if self.db.has_table("quarantine") else 0
        quiet = ",".join(f"{t.store_id}/{t.till_id}" for t in hearing(self.db, datetime.now(UTC)).silent)
        return f"{n}-{q}-{last or ''}-{quiet}"

    def summary(self, f: Filters) -> Summary:
        return summarize(self.db, f.period, self.tz, scope=f.scope)

    def page(self, f: Filters) -> dict[str, Any]:
        """What the page's template is filled with."""
        ver = self.version()  # before the figures: a later poll sees anything stored while they were worked out
        s = self.summary(f)
        all_stores = self.stores()
        return dict(
            f=f,
            s=s,
            data=to_json(s, self.tz),
            series=series(s),
            events=event_rows(self.db, f, self.tz, EVENT_LIMIT),
            health=till_health(self.db, f.period, self.tz, f.scope),
            hours_shown=HOURS_SHOWN,
            hearing=silent_now(self.db, f, self.today()),
            when=lambda ts: _when(ts, self.tz),
            event_limit=EVENT_LIMIT,
            stores=all_stores,
            tills=self.tills(f.store),
            cashiers=self.cashiers(f.store),
            kinds=KINDS,
            tz_name=self.tz_name,
            source=self.db.target.label,
            query=f.query(),
            title=title_of(f, all_stores),
            headline=headline_text(s.totals()),
            no_cashier=NO_CASHIER,
            version=ver,
            refresh_ms=int(self.cfg.dashboard.refresh_seconds * 1000),
        )

    def summary_json(self, f: Filters) -> Download:
        s = self.summary(f)
        heard = silent_now(self.db, f, self.today())
        body = json.dumps(
            {
                **to_json(s, self.tz),
                "charts": series(s),
                "till_health": [h.as_json() for h in till_health(self.db, f.period, self.tz, f.scope)],
                "silent_tills": [dataclasses.asdict(t) for t in heard.silent] if heard else [],
            },
            indent=2,
            ensure_ascii=False,
        )
        return Download(body, "application/json", f"{_name('summary', f)}.json")

    def per_till_csv(self, f: Filters) -> Download:
        body = write_csv(to_json(self.summary(f), self.tz)["per_till"], PER_TILL_CSV)
        return Download(body, "text/csv", f"{_name('per-till', f)}.csv")

    def per_cashier_csv(self, f: Filters) -> Download:
        body = write_csv(to_json(self.summary(f), self.tz)["per_cashier"], PER_CASHIER_CSV)
        return Download(body, "text/csv", f"{_name('per-cashier', f)}.csv")

    def events_csv(self, f: Filters) -> Download:
        body = write_csv(event_rows(self.db, f, self.tz, EXPORT_LIMIT), EVENT_COLUMNS)
        return Download(body, "text/csv", f"{_name('events', f)}.csv")

    def events_json(self, f: Filters) -> Download:
        body = {"filters": f.query(), "timezone": self.tz_name, "events": event_rows(self.db, f, self.tz, EXPORT_LIMIT)}
        return Download(
            json.dumps(body, indent=2, ensure_ascii=False), "application/json", f"{_name('events', f)}.json"
        )
