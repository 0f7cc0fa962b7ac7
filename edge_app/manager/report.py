"""Manager report (`agecheck report`): reads the event store written by `agecheck feed` (SQLite
or PostgreSQL) and writes report.md with two PNG charts, report.json and per_till.csv for a
period of days, for one store (`--store`) or all of them (one section per store: stores are
never merged).

It owns the figures and how they are defined:

* per till and per day (calendar days in feed.timezone, or this machine's timezone): checks and
  their decisions, alerts, answers (by kind), integrity events, the share of alerts that got an
  answer, and the median decision time (seconds from the alert on screen to the answer). Answers
  are those that stand after the cashier's corrections (`edge_app.core.answers`): an answer taken
  back with Undo is counted under *undone*, not as an answer, and an alert whose only answer
  was undone is unanswered;
* the age-band mix of the people buying age-restricted items: every check is triggered by a
  restricted scan, so each transaction counts once, with its latest check that has an age estimate;
* the integrity events one by one (a manager follows them up);
* the "needs attention" list: tills and cashiers with sales after an unanswered alert or a
  "no ID check" answer, with the times to find on CCTV;
* missing events (holes in the tills' event numbers) and what was quarantined by the feed.

The dashboard (`edge_app.manager.dashboard`) shows these same figures.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Iterable, Mapping

from edge_app.config import Config
from edge_app.errors import UsageError
from edge_app.core import events
from edge_app.core.answers import covered, standing
from edge_app.core.times import local_dt
from edge_app.core.words import (ACK_ANSWERS, ANSWER_COLUMN, ANSWER_PHRASE, DECISION_COLUMN, DECISIONS, Answer,
                                 IntegrityReason)
from edge_app.core.policy import BANDS
from edge_app.manager.db import Database, StoreError, open_store
from edge_app.manager.feed import Gap, gap_rows, gap_text, integrity_reason, read_stored
from edge_app.manager.outcomes import ALERT_OUTCOME_SERIES

MAX_DAYS = 366
BAND_NAMES = [b[0] for b in BANDS]
# The bands drawn red in the age-band charts (report PNG and dashboard): shoppers under 18.
MINOR_BANDS = frozenset(b[0] for b in BANDS if b[2] < 18)
BAND_COLOURS = {"minor": "#c0392b", "adult": "#2e6da4"}


class ReportInputError(UsageError):
    """Bad dates, a missing or foreign database, an unusable output folder."""


@dataclass(frozen=True)
class Period:
    since: date
    until: date

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range((self.until - self.since).days + 1)]


# The dates a period may name: the figures read a day either side of it, so the ends of Python's
# calendar would overflow (a traceback, or a 500 from the dashboard) instead of being refused.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)


def _parse_day(value: str, flag: str) -> date:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise ReportInputError(f"{flag}: {value!r} is not a date; use YYYY-MM-DD, e.g. 2025-03-14") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportInputError(f"{flag}: {value!r} is out of range; use a date from {FIRST_DAY} to {LAST_DAY}")
    return day


def parse_period(since: str | None, until: str | None, today: date,
                 names: tuple[str, str] = ("--since", "--until")) -> Period:
    """Both ends inclusive. Defaults: until = today, since = 6 days before until (one week).
    `names` are what the messages call the two ends (the report's flags, the dashboard's URL
    parameters)."""
    end = _parse_day(until, names[1]) if until else today
    start = _parse_day(since, names[0]) if since else end - timedelta(days=6)
    if start > end:
        raise ReportInputError(f"{names[0]} {start.isoformat()} is after {names[1]} {end.isoformat()}; swap them")
    if (end - start).days + 1 > MAX_DAYS:
        raise ReportInputError(f"{names[0]}/{names[1]}: {(end - start).days + 1} days asked for; a report covers "
                               f"at most {MAX_DAYS} days, run one per year")
    return Period(start, end)


@dataclass(frozen=True)
class TimeOfDay:
    """Local clock times from `start` (inclusive) to `end` (exclusive), in minutes after midnight;
    a range that ends before it starts runs over midnight (22:00 to 02:00), so a late shift is
    one range."""

    start: int
    end: int

    def contains(self, dt: datetime) -> bool:
        m = dt.hour * 60 + dt.minute
        if self.start <= self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end

    @staticmethod
    def _text(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    @property
    def start_text(self) -> str:
        return self._text(self.start)

    @property
    def end_text(self) -> str:
        return self._text(self.end)


def _parse_clock(value: str, name: str) -> int:
    text = value.strip()
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        h = m = -1
    # 24:00 is the end of the day (a range "from 18:00 to 24:00").
    if not (0 <= h <= 24 and 0 <= m <= 59) or (h == 24 and m) or len(text) not in (4, 5):
        raise ReportInputError(f"{name}: {value!r} is not a time of day; use HH:MM, e.g. 14:30")
    return h * 60 + m


def parse_time_of_day(start: str | None, end: str | None, names: tuple[str, str] = ("--from-time", "--to-time")
                      ) -> TimeOfDay | None:
    """None (the whole day) when neither is given; one end alone runs from midnight or to midnight."""
    if not start and not end:
        return None
    lo = _parse_clock(start, names[0]) if start else 0
    hi = _parse_clock(end, names[1]) if end else 24 * 60
    if lo == hi or (lo, hi) == (0, 24 * 60):
        if lo == hi:
            raise ReportInputError(f"{names[0]} and {names[1]} are both {TimeOfDay._text(lo)}; give a range, "
                                   "or leave both empty for the whole day")
        return None
    return TimeOfDay(lo, hi)


@dataclass(frozen=True)
class Scope:
    """Which events the figures count: a store, a till, a cashier, one kind of event and a time of
    day (all optional). The report and the dashboard filter through this one definition, so every
    figure, table and chart of a page answers the same question.

    The cashier of an answer or an integrity event is the one logged in when its alert was shown
    (the till's own events carry the POS's `operator_id`; a cashier window's answer may not). An
    alert's outcome (answered, ID checked) is looked up over every answer stored, also under a
    kind filter: "alerts" with "ID checked 40%" still reads right."""

    store: str | None = None
    till: str | None = None
    cashier: str | None = None
    kind: str | None = None
    hours: TimeOfDay | None = None

    def admits(self, ev: events.Event, local: datetime, cashier: str | None) -> bool:
        return ((self.store is None or ev.store_id == self.store) and (self.till is None or ev.till_id == self.till)
                and (self.cashier is None or cashier == self.cashier)
                and (self.kind is None or ev.KIND == self.kind)
                and (self.hours is None or self.hours.contains(local)))

    @property
    def narrowed(self) -> bool:
        """Whether anything but the store narrows the events (the page says so beside its figures)."""
        return any(v is not None for v in (self.till, self.cashier, self.kind, self.hours))


def cashier_of(ev: events.Event, alerts: Mapping[str, events.AlertEvent]) -> str | None:
    """Who was at the till for this event: an answer's own operator when the window sent one,
    else (answers and integrity events) the cashier logged in when the alert was shown."""
    if isinstance(ev, events.AckEvent) and ev.operator_id:
        return ev.operator_id
    if isinstance(ev, (events.AckEvent, events.IntegrityEvent)):
        a = alerts.get(ev.alert_event_id)
        if a is not None:
            return a.operator_id
    return ev.operator_id


def fetch_events(db: Database, event_ids: Iterable[str]) -> dict[str, events.Event]:
    """Stored events by id (the alerts an answer or an integrity event points to), read in
    batches; unreadable ones are left out (read_stored logs them)."""
    ids = sorted(set(event_ids))
    out: dict[str, events.Event] = {}
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        rows = db.query(f"SELECT event_id, payload FROM events WHERE event_id IN ({', '.join('?' * len(part))})", part)
        for eid, payload in rows:
            ev = read_stored(eid, payload)
            if ev is not None:
                out[eid] = ev
    return out


def local_day(ts: str, tz: tzinfo | None) -> date | None:
    dt = local_dt(ts, tz)
    return dt.date() if dt else None


@dataclass
class TillDay:
    till_id: str
    day: date
    store_id: str = ""
    checks: int = 0
    decisions: Counter = field(default_factory=Counter)
    alerts: int = 0
    answered_alerts: int = 0
    id_checked_alerts: int = 0  # alerts answered "ID checked" (over age, or under age / refused)
    answers: Counter = field(default_factory=Counter)
    undone: int = 0  # answers the cashier took back (Undo) or replaced
    integrity: int = 0
    missed: int = 0  # restricted scans that got no check (`missed` events: stale, queue full, ...)
    decision_times: list[float] = field(default_factory=list)

    @property
    def share_answered(self) -> float | None:
        return self.answered_alerts / self.alerts if self.alerts else None

    @property
    def share_id_checked(self) -> float | None:
        return self.id_checked_alerts / self.alerts if self.alerts else None

    @property
    def unanswered_alerts(self) -> int:
        return self.alerts - self.answered_alerts

    @property
    def no_id_check_alerts(self) -> int:
        """Alerts answered, but with no answer saying ID was checked ("no ID check")."""
        return self.answered_alerts - self.id_checked_alerts

    def share(self, n: int) -> float | None:
        return n / self.alerts if self.alerts else None

    @property
    def median_decision_s(self) -> float | None:
        return statistics.median(self.decision_times) if self.decision_times else None

    def add(self, other: "TillDay") -> None:
        self.checks += other.checks
        self.decisions.update(other.decisions)
        self.alerts += other.alerts
        self.answered_alerts += other.answered_alerts
        self.id_checked_alerts += other.id_checked_alerts
        self.answers.update(other.answers)
        self.undone += other.undone
        self.integrity += other.integrity
        self.missed += other.missed
        self.decision_times.extend(other.decision_times)

    def figures(self) -> dict:
        """The figures as plain JSON values (report.json, the dashboard, CSV)."""
        return {"checks": self.checks, **{d.value: self.decisions[d] for d in DECISIONS}, "alerts": self.alerts,
                "alerts_answered": self.answered_alerts, "alerts_id_checked": self.id_checked_alerts,
                "share_alerts_id_checked": self.share_id_checked,
                **{f"answers_{a}": self.answers[a] for a in ACK_ANSWERS}, f"answers_{Answer.UNDONE}": self.undone,
                "integrity": self.integrity, "missed": self.missed, "median_answer_s": self.median_decision_s}


@dataclass
class Summary:
    period: Period
    store_ids: list[str]
    rows: dict[tuple[str, str, date], TillDay]  # (store, till, day)
    bands: Counter
    bands_by_category: dict[str, Counter]
    shoppers_without_estimate: int
    integrity_events: list["IntegrityLine"]
    quarantined: int
    events_total: int
    gaps: list[Gap] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # event_ids whose stored payload no longer reads
    cashiers: dict[tuple[str, str], TillDay] = field(default_factory=dict)  # (store, cashier or "") over the period
    scope: Scope = Scope()

    def totals(self, till: str | None = None, store: str | None = None) -> TillDay:
        t = TillDay(till or "all tills", self.period.since, store or "")
        for (store_id, till_id, _), r in self.rows.items():
            if (till is None or till_id == till) and (store is None or store_id == store):
                t.add(r)
        return t

    @property
    def tills(self) -> list[tuple[str, str]]:
        """(store, till) pairs: till-01 of two stores are two tills."""
        return sorted({k[:2] for k in self.rows})


def open_db(path: str | Path) -> Database:
    """The feed's store, read-only (a SQLite file or a postgresql:// URL)."""
    try:
        db = open_store(path, read_only=True)
    except StoreError as exc:
        msg = str(exc)
        if "does not exist" in msg:
            raise ReportInputError(f"--db: {str(path)!r} does not exist; run `agecheck feed` first to collect "
                                   "events (or pass --db to the feed's database)") from None
        raise ReportInputError(f"--db: {msg}") from None
    try:
        db.query("SELECT event_id, kind, ts, store_id, till_id, payload FROM events LIMIT 1")
    except StoreError as exc:
        db.close()
        raise ReportInputError(f"--db: {db.target.label!r} is not a database written by `agecheck feed` ({exc})") from None
    return db


def _optional_columns(db: Database) -> bool:
    """A feed database from before sequence numbers has no publisher/seq/operator columns."""
    return "operator_id" in db.columns("events")


def summarize(db: Database, period: Period, tz: tzinfo | None, store: str | None = None, *,
              scope: Scope | None = None) -> Summary:
    """The figures of `period` for the events `scope` admits (default: every event of `store`)."""
    scope = scope or Scope(store=store)
    store = scope.store
    # A coarse filter on the UTC date (a local day can start the previous UTC day), then exact
    # local days in Python.
    lo = (period.since - timedelta(days=1)).isoformat()
    hi = (period.until + timedelta(days=2)).isoformat()
    where, params = ["ts >= ?", "ts < ?"], [lo, hi]
    for col, val in (("store_id", store), ("till_id", scope.till)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    rows = db.query(f"SELECT event_id, payload FROM events WHERE {' AND '.join(where)} ORDER BY ts", params)
    # Each stored payload is decoded once into its typed event; one that no longer validates is
    # left out of every figure (with a warning naming it) and listed under "Data quality".
    decoded: dict[str, events.Event | None] = {}
    unreadable: list[str] = []

    def read(event_id: str, payload: str) -> events.Event | None:
        if event_id not in decoded:
            decoded[event_id] = read_stored(event_id, payload)
            if decoded[event_id] is None:
                unreadable.append(event_id)
        return decoded[event_id]

    # Answers may come after midnight or after the period; an alert counts as answered either way.
    # Corrections (Undo) may too, so which answers stand is worked out over every ack stored, by
    # the same rule the till's integrity check uses (core.answers).
    stand = standing(ev for eid, p in db.query(
        "SELECT event_id, payload FROM events WHERE kind = ? AND alert_event_id IS NOT NULL", (events.AckEvent.KIND,))
        if isinstance(ev := read(eid, p), events.AckEvent))
    answers = {alert: {a.answer for a in acks} for alert, acks in stand.items()}
    standing_ids = {a.event_id for acks in stand.values() for a in acks}
    in_rows = [ev for eid, p in rows if (ev := read(eid, p)) is not None]
    # What an integrity line and a cashier need of an alert: those of the rows, and the few
    # older ones an answer or integrity event of the period points back to.
    alerts: dict[str, events.AlertEvent] = {ev.event_id: ev for ev in in_rows if isinstance(ev, events.AlertEvent)}
    wanted = {ev.alert_event_id for ev in in_rows if isinstance(ev, (events.AckEvent, events.IntegrityEvent))}
    alerts.update({k: v for k, v in fetch_events(db, wanted - alerts.keys()).items()
                   if isinstance(v, events.AlertEvent)})

    cells: dict[tuple[str, str, date], TillDay] = {}
    by_cashier: dict[tuple[str, str], TillDay] = {}
    stores: set[str] = set()
    latest_check: dict[str, tuple[str, str | None, str | None]] = {}  # shopper key -> (ts, band, category)
    integrity: list[IntegrityLine] = []
    total = 0
    for ev in in_rows:
        dt = local_dt(ev.ts, tz)
        if dt is None or not (period.since <= dt.date() <= period.until):
            continue
        cashier = cashier_of(ev, alerts)
        if not scope.admits(ev, dt, cashier):
            continue
        day = dt.date()
        total += 1
        stores.add(ev.store_id)
        cell = cells.setdefault((ev.store_id, ev.till_id, day), TillDay(ev.till_id, day, ev.store_id))
        who = by_cashier.setdefault((ev.store_id, cashier or ""), TillDay(cashier or "", day, ev.store_id))
        for c in (cell, who):
            _count(c, ev, answers, standing_ids)
        if isinstance(ev, events.CheckEvent):
            key = f"{ev.store_id}/{ev.till_id}/{ev.transaction_id}" if ev.transaction_id else ev.event_id
            prev = latest_check.get(key)
            if ev.age_band is not None or prev is None or prev[1] is None:
                latest_check[key] = (ev.ts, ev.age_band, ev.trigger.product.category)
        elif isinstance(ev, events.IntegrityEvent):
            integrity.append(IntegrityLine(ev, _local_text(ev.ts, tz), day))

    for i, line in enumerate(integrity):
        # The moment to find on CCTV: the alert on the till's screen, and the sale after it.
        ev = line.event
        a = alerts.get(ev.alert_event_id)
        if a is None:
            continue
        alert_dt = local_dt(a.ts, tz)
        sale = alert_dt + timedelta(seconds=float(ev.seconds_after_alert)) if alert_dt else None
        # The cashier is the one logged in when the alert was shown.
        integrity[i] = dataclasses.replace(line, event=dataclasses.replace(ev, operator_id=a.operator_id),
                                           alert_local=_local_text(a.ts, tz),
                                           sale_local=sale.strftime("%Y-%m-%d %H:%M:%S") if sale else None)

    bands: Counter = Counter()
    by_cat: dict[str, Counter] = defaultdict(Counter)
    no_estimate = 0
    for _, band, cat in latest_check.values():
        if band is None:
            no_estimate += 1
            continue
        bands[band] += 1
        by_cat[cat or "unknown"][band] += 1

    q = db.query("SELECT received_at FROM quarantine") if db.has_table("quarantine") else []
    quarantined = sum(1 for (r,) in q if (d := local_day(r, tz)) is not None and period.since <= d <= period.until)
    gaps = []
    if _optional_columns(db):
        for g in gap_rows(db, store):
            a, b = local_day(g.after_ts, tz), local_day(g.before_ts, tz)
            # A hole is a till's, not a cashier's or a kind's: only the till narrows it.
            if scope.till is not None and g.till_id != scope.till:
                continue
            if a is not None and b is not None and a <= period.until and b >= period.since:
                gaps.append(g)
                stores.add(g.store_id)
    return Summary(period, sorted(stores), cells, bands, dict(by_cat), no_estimate, integrity, quarantined, total,
                   gaps, unreadable, by_cashier, scope)


def _count(cell: "TillDay", ev: events.Event, answers: Mapping[str, set[str]], standing_ids: set[str]) -> None:
    """One event into a till's day or a cashier's figures."""
    if isinstance(ev, events.CheckEvent):
        cell.checks += 1
        cell.decisions[ev.decision] += 1
    elif isinstance(ev, events.AlertEvent):
        cell.alerts += 1
        got = answers.get(ev.event_id, set())
        if got:
            cell.answered_alerts += 1
        if covered(got):
            cell.id_checked_alerts += 1
    elif isinstance(ev, events.AckEvent):
        if ev.event_id in standing_ids:
            cell.answers[ev.answer] += 1
            cell.decision_times.append(float(ev.decision_time_s))
        elif ev.answer in ACK_ANSWERS:  # an answer later taken back (the Undo itself is not counted)
            cell.undone += 1
    elif isinstance(ev, events.MissedEvent):
        cell.missed += 1
    elif isinstance(ev, events.IntegrityEvent):
        cell.integrity += 1


def _local_text(ts: str, tz: tzinfo | None) -> str:
    dt = local_dt(ts, tz)
    return dt.strftime("%Y-%m-%d %H:%M:%S") if dt else ts


@dataclass(frozen=True)
class IntegrityLine:
    """One integrity event as the report lists it: the event (with the alert's cashier), its local
    time and day, and the moments to find on CCTV - the alert shown, the sale completed."""

    event: events.IntegrityEvent
    local: str
    day: date
    alert_local: str | None = None
    sale_local: str | None = None

    @property
    def no_id_check_answered(self) -> bool:
        return self.event.reason == IntegrityReason.ANSWERED_NO_ID_CHECK

    def as_json(self) -> dict:
        """report.json's entry: the event's own fields and the report's local times."""
        return {**self.event.to_dict(), "local": self.local, "day": self.day.isoformat(),
                "alert_local": self.alert_local, "sale_local": self.sale_local}


@dataclass(frozen=True)
class Attention:
    """A till and cashier with sales completed on alerts without an ID check ("needs attention")."""

    store_id: str
    till_id: str
    operator_id: str | None
    sales: int
    unanswered: int
    answered_no_id_check: int
    moments: list["Moment"]


@dataclass(frozen=True)
class Moment:
    """One such sale, to look up on CCTV."""

    alert_shown: str | None
    sale_completed: str | None
    reported: str
    transaction_id: str | None
    why: str


def attention(s: Summary) -> list[dict]:
    """Tills and cashiers with sales after an unanswered alert or a "no ID check" answer, worst
    first, each with the moments (alert shown, sale completed) to look up on CCTV."""
    groups: dict[tuple[str, str, str | None], list[IntegrityLine]] = defaultdict(list)
    for line in s.integrity_events:
        groups[(line.event.store_id, line.event.till_id, line.event.operator_id)].append(line)
    out = []
    for (store_id, till_id, operator_id), lines in groups.items():
        said_no = sum(1 for e in lines if e.no_id_check_answered)
        moments = [Moment(e.alert_local, e.sale_local, e.local, e.event.transaction_id,
                          integrity_reason(e.event.reason)) for e in lines]
        out.append(Attention(store_id, till_id, operator_id, len(lines), len(lines) - said_no, said_no, moments))
    out.sort(key=lambda g: (-g.sales, g.store_id, g.till_id, g.operator_id or ""))
    return [dataclasses.asdict(g) for g in out]


# -- rendering ------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f} s"


def _table(header: list[str], rows: Iterable[list], text_cols: int = 1) -> list[str]:
    """A Markdown table; the first text_cols columns are left-aligned, figures right-aligned."""
    align = ["---" if i < text_cols else "---:" for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _till_row(label: str, r: TillDay) -> list[str]:
    return [label, r.checks, *(r.decisions[d] for d in DECISIONS), r.alerts, sum(r.answers.values()),
            *(r.answers[a] for a in ACK_ANSWERS),
            r.undone, r.integrity, _pct(r.share_answered), _secs(r.median_decision_s)]


def _id_row(store: str, till: str, r: TillDay) -> list:
    return [store, till, r.alerts, r.id_checked_alerts, r.answered_alerts - r.id_checked_alerts,
            r.alerts - r.answered_alerts, _pct(r.share_id_checked)]


_TILL_HEADER = ["", "checks", *(DECISION_COLUMN[d] for d in DECISIONS), "alerts", "answers",
                *(ANSWER_COLUMN[a] for a in ACK_ANSWERS), ANSWER_COLUMN[Answer.UNDONE], "integrity", "alerts answered", "median decision"]


def render_markdown(s: Summary, db_path: str, tz_name: str, charts: dict[str, str],
                    tz: tzinfo | None = None) -> str:
    p = s.period
    span = p.since.isoformat() if p.since == p.until else f"{p.since.isoformat()} to {p.until.isoformat()}"
    t = s.totals()
    L = [f"# Age-check report: {span}", ""]
    L.append(f"Store{'s' if len(s.store_ids) != 1 else ''}: {', '.join(s.store_ids) or '–'} · days in {tz_name} · "
             f"source `{db_path}` · generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    L.append("")
    if s.events_total == 0:
        L += ["**No events were stored for this period.** Check that `agecheck feed` was running and that the "
              "dates are right.", ""]
    L += ["## Summary", ""]
    if t.alerts:
        # The answer first: of the alerts (ID check asked), how many had one. "Answered" alone
        # would count the cashier's "no ID check" as done.
        L.append(f"**ID was checked on {_pct(t.share(t.id_checked_alerts))} of alerts** ({t.id_checked_alerts} of "
                 f"{t.alerts}). **{_pct(t.share(t.unanswered_alerts))} were not answered** ({t.unanswered_alerts}) and "
                 f"**{_pct(t.share(t.no_id_check_alerts))} were answered “no ID check”** ({t.no_id_check_alerts}).")
    else:
        L.append("**No alerts**: no ID check was asked for in this period.")
    L.append("")
    L.append(f"- **{t.checks}** age checks, **{t.alerts}** alerts (ID check asked), median answer time "
             f"**{_secs(t.median_decision_s)}**.")
    L.append(f"- **{t.integrity}** integrity event{'s' if t.integrity != 1 else ''}: a sale completed on an alert "
             "with no ID check recorded.")
    if t.missed:
        L.append(f"- **{t.missed}** restricted scan{'s' if t.missed != 1 else ''} not checked (`missed` events: the "
                 "scan was stale, the till was busy or stopping, or the check failed); ask the till's staff.")
    L.append("- Answers: " + " · ".join(f"{t.answers[a]} {ANSWER_PHRASE[a]}" for a in ACK_ANSWERS)
             + (f" · {t.undone} taken back by the cashier (Undo)." if t.undone else "."))
    L.append("")
    multi = len(s.store_ids) > 1
    for store_id in s.store_ids:
        # One section per store: till-01 of two stores are two rows, never one.
        mine = [k for k in s.tills if k[0] == store_id]
        L += [f"## Per till{f': {store_id}' if multi else ''}", "", f"Store **{store_id}**.", ""]
        L += _table(["till"] + _TILL_HEADER[1:], [_till_row(till, s.totals(till, store_id)) for _, till in mine]
                    + [_till_row(f"**all tills{f' of {store_id}' if multi else ''}**", s.totals(store=store_id))])
        L.append("")
        L += [f"## Per till and day{f': {store_id}' if multi else ''}", ""]
        keys = sorted((k for k in s.rows if k[0] == store_id), key=lambda k: (k[2], k[1]))
        L += _table(["day", "till"] + _TILL_HEADER[1:], text_cols=2, rows=
                    [[k[2].isoformat(), *_till_row(k[1], s.rows[k])] for k in keys]
                    or [["–"] * (len(_TILL_HEADER) + 1)])
        L.append("")
    L += ["## Per cashier", "",
          "The cashier logged in when the alert was shown (sent by the POS with the scan).", ""]
    L += _table(["store", "cashier", "alerts", "answered", "ID checked", "no ID check", "not answered",
                 "median answer", ANSWER_COLUMN[Answer.UNDONE]], text_cols=2, rows=
                [[c["store_id"], c["cashier"], c["alerts"], c["alerts_answered"], _pct(c["share_alerts_id_checked"]),
                  c["answers_no_id_check"], c["alerts_unanswered"], _secs(c["median_answer_s"]), c["answers_undone"]]
                 for c in cashier_rows(s)] or [["–"] * 9])
    L.append("")
    if multi:
        L += ["## All stores", ""]
        L += _table(["store"] + _TILL_HEADER[1:], [_till_row(st, s.totals(store=st)) for st in s.store_ids]
                    + [_till_row("**all stores**", t)])
        L.append("")
    L += ["## Were IDs checked?", "",
          "Per till, what became of the alerts (the cashier was asked to check ID): the till that sells "
          "without checks stands out here.", ""]
    L += _table(["store", "till", "alerts", "ID checked", "answered no ID check", "not answered",
                 "alerts with ID check"], text_cols=2, rows=[_id_row(st, till, s.totals(till, st)) for st, till in s.tills])
    L.append("")
    if "id_checks" in charts:
        L += [f"![ID checks on alerts, per till]({charts['id_checks']})", ""]

    L += ["## Missing events", ""]
    if s.gaps:
        L.append("Events that tills sent but the feed never received (found from each till's event numbers); "
                 "the figures above do not include them.")
        L.append("")
        L += [f"- {gap_text(g, tz, with_store=multi)}" for g in s.gaps]
    else:
        L.append("None: every till's events arrived without a hole in their numbers.")
    L.append("")

    L += ["## Who buys age-restricted items: age bands", ""]
    n = sum(s.bands.values())
    L.append(f"Estimated age band of the shopper, one per transaction ({n} with an estimate; "
             f"{s.shoppers_without_estimate} without a usable face).")
    L.append("")
    cats = sorted(s.bands_by_category)
    header = ["age band", "shoppers", "share"] + (cats if len(cats) > 1 else [])
    rows = []
    for b in BAND_NAMES:
        row = [b, s.bands[b], _pct(s.bands[b] / n if n else None)]
        if len(cats) > 1:
            row += [s.bands_by_category[c][b] for c in cats]
        rows.append(row)
    L += _table(header, rows)
    L.append("")
    if "bands" in charts:
        L += [f"![Age-band mix]({charts['bands']})", ""]
    L.append("Ages are camera estimates (Challenge 25 screening), not verified ages.")
    L.append("")

    L += ["## Integrity events", ""]
    if s.integrity_events:
        L.append("A sale completed on an alert with no ID check recorded. The times are for finding the "
                 "moment on CCTV: the alert on the till's screen, then the sale.")
        L.append("")
        L += _table(["time", "store", "till", "cashier", "transaction", "alert shown", "sale completed",
                     "sold after alert", "why"], text_cols=9, rows=
                    [[e.local, e.event.store_id, e.event.till_id, e.event.operator_id or "–",
                      e.event.transaction_id or "–", e.alert_local or "–", e.sale_local or "–",
                      _secs(e.event.seconds_after_alert),
                      "cashier answered “no ID check”" if e.no_id_check_answered else "no answer"]
                     for e in s.integrity_events])
    else:
        L.append("None in this period.")
    L.append("")
    L += ["## Data quality", ""]
    L.append(f"- {s.events_total} events in the period; {s.quarantined} message(s) quarantined by the feed "
             "(malformed or unknown schema; see the `quarantine` table in the database).")
    missing = sum(g.missing for g in s.gaps)
    L.append(f"- {missing} event(s) missing in {len(s.gaps)} gap(s) (see “Missing events”).")
    if s.unreadable:
        L.append(f"- {len(s.unreadable)} stored event(s) left out of every figure: their stored payload is no longer "
                 f"a valid event (written by another build, or edited): {', '.join(s.unreadable)}.")
    L += ["", "## How the figures are defined", "",
          "- *checks*: age estimates run on a restricted scan; *alerts*: checks that were not `approve` "
          "(`check_id` or `no_face`), so the cashier was asked to check ID.",
          "- *alerts answered*: alerts of that till and day with at least one cashier answer (the answer may "
          "come later). *median decision*: seconds from the alert on screen to the cashier's answer. "
          "*undone*: answers the cashier took back with Undo (or replaced); they are not counted as "
          "answers, and an alert whose only answer was undone counts as unanswered.",
          "- *integrity*: the POS reported the sale of a transaction whose alert had no ID check recorded "
          "(no answer, or the answer “no ID check”) after the grace period.",
          "- *alerts with ID check*: alerts answered “ID checked” (over age, or under age / refused).",
          "- *missing events*: every till numbers its events; a hole in the numbers the feed received is "
          "events lost on the way (a broker queue limit reached, a till outbox full).", ""]
    return "\n".join(L)


def write_charts(s: Summary, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no screen on a manager's server; must precede pyplot
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    counts = [s.bands[b] for b in BAND_NAMES]
    bars = ax.bar(BAND_NAMES, counts, color=[BAND_COLOURS["minor" if b in MINOR_BANDS else "adult"] for b in BAND_NAMES])
    ax.bar_label(bars, fmt="%d")
    ax.set_xlabel("estimated age band")
    ax.set_ylabel("shoppers (transactions)")
    ax.set_title("Age-band mix of shoppers buying restricted items (red: under 18)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(out / "age_bands.png")
    plt.close(fig)
    charts["bands"] = "age_bands.png"

    # What became of the alerts, one bar per till: the same size for a day, a week or a year,
    # and a till that sells without checks is the one with the long red part.
    tills = s.tills
    multi = len(s.store_ids) > 1
    labels = [f"{st}/{t}" if multi else t for st, t in tills] or ["–"]
    counts = (lambda r: r.id_checked_alerts, lambda r: r.answered_alerts - r.id_checked_alerts,
              lambda r: r.alerts - r.answered_alerts)
    parts = [(name, colour, fn) for (name, colour), fn in zip(ALERT_OUTCOME_SERIES, counts)]
    fig, ax = plt.subplots(figsize=(7, max(3.6, 0.45 * len(labels) + 1.6)), dpi=100)
    left = [0] * len(labels)
    for name, colour, fn in parts:
        vals = [fn(s.totals(t, st)) for st, t in tills] or [0]
        ax.barh(labels, vals, left=left, color=colour, label=name)
        left = [a + b for a, b in zip(left, vals)]
    for i, (st, t) in enumerate(tills):
        share = s.totals(t, st).share_id_checked
        ax.text(left[i], i, f"  {_pct(share)} with ID check", va="center", fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("alerts (ID check asked)")
    ax.set_title(f"Were IDs checked? Alerts per till, {s.period.since} to {s.period.until}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, max(left + [1]) * 1.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "id_checks_per_till.png")
    plt.close(fig)
    charts["id_checks"] = "id_checks_per_till.png"
    return charts


def headline(r: TillDay) -> dict:
    """What became of the alerts, the answer first: the share where ID was checked, then those
    never answered and those answered "no ID check" (the three add up to all alerts)."""
    return {"alerts": r.alerts, "id_checked": r.id_checked_alerts, "share_id_checked": r.share(r.id_checked_alerts),
            "not_answered": r.unanswered_alerts, "share_not_answered": r.share(r.unanswered_alerts),
            "no_id_check_answered": r.no_id_check_alerts, "share_no_id_check_answered": r.share(r.no_id_check_alerts)}


def headline_text(r: TillDay) -> str:
    if not r.alerts:
        return "no alerts (no ID check was asked for)"
    return (f"ID checked on {_pct(r.share(r.id_checked_alerts))} of alerts ({r.id_checked_alerts} of {r.alerts}), "
            f"{_pct(r.share(r.unanswered_alerts))} not answered ({r.unanswered_alerts}), "
            f"{_pct(r.share(r.no_id_check_alerts))} answered “no ID check” ({r.no_id_check_alerts})")


NO_CASHIER = "not sent by the POS"
PER_CASHIER_CSV = ["store_id", "cashier", "alerts", "alerts_answered", "alerts_id_checked", "share_alerts_id_checked",
                   "answers_no_id_check", "alerts_unanswered", "median_answer_s", "answers_undone", "integrity"]


def cashier_rows(s: Summary) -> list[dict]:
    """Per store and cashier (who was logged in when the alert was shown): alerts, answered, the
    share with an ID check, "no ID check" answers, alerts left unanswered, median answer time and
    answers taken back; the cashier the POS did not name is one row of its own, last. A cashier
    with nothing to answer for (only approved checks) has no row."""
    out = []
    for (store_id, cashier), r in sorted(s.cashiers.items(), key=lambda kv: (kv[0][0], kv[0][1] == "", kv[0][1])):
        if not (r.alerts or r.answers or r.undone or r.integrity):
            continue  # only checks approved: nothing to answer for
        out.append({"store_id": store_id, "cashier": cashier or NO_CASHIER, "alerts": r.alerts,
                    "alerts_answered": r.answered_alerts, "alerts_id_checked": r.id_checked_alerts,
                    "share_alerts_id_checked": r.share_id_checked, f"answers_{Answer.NO_ID_CHECK}": r.answers[Answer.NO_ID_CHECK],
                    "alerts_unanswered": r.unanswered_alerts, "median_answer_s": r.median_decision_s,
                    "answers_undone": r.undone, "integrity": r.integrity})
    return out


def to_json(s: Summary, tz: tzinfo | None) -> dict:
    """Everything in report.md as data (report.json, `--json`)."""
    sc = s.scope
    return {
        "period": {"since": s.period.since.isoformat(), "until": s.period.until.isoformat()},
        "filters": {"store": sc.store, "till": sc.till, "cashier": sc.cashier, "kind": sc.kind,
                    "time_from": sc.hours.start_text if sc.hours else None,
                    "time_to": sc.hours.end_text if sc.hours else None},
        "stores": s.store_ids,
        "headline": headline(s.totals()),
        "totals": s.totals().figures(),
        "per_till": [{"store_id": st, "till_id": t, **s.totals(t, st).figures()} for st, t in s.tills],
        "per_cashier": cashier_rows(s),
        "per_till_day": [{"store_id": k[0], "till_id": k[1], "day": k[2].isoformat(), **r.figures()}
                         for k, r in sorted(s.rows.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))],
        "needs_attention": attention(s),
        "integrity_events": [e.as_json() for e in s.integrity_events],
        "missing_events": [{"store_id": g.store_id, "publisher": g.publisher, "till_id": g.till_id,
                            "missing": g.missing, "first_missing_seq": g.after_seq + 1,
                            "last_missing_seq": g.before_seq - 1, "after_ts": g.after_ts, "before_ts": g.before_ts,
                            "text": gap_text(g, tz)} for g in s.gaps],
        "age_bands": {"note": "camera estimates of the shopper's age, not verified ages",
                      "shoppers": {b: s.bands[b] for b in BAND_NAMES},
                      "without_estimate": s.shoppers_without_estimate},
        "quarantined": s.quarantined,
        "events": s.events_total,
    }


PER_TILL_CSV = ["store_id", "till_id", "checks", *(d.value for d in DECISIONS), "alerts", "alerts_answered",
                "alerts_id_checked", "share_alerts_id_checked",
                *[f"answers_{a}" for a in (*ACK_ANSWERS, Answer.UNDONE)], "integrity", "missed", "median_answer_s"]


def write_csv(rows: list[dict], columns: list[str], path: Path | None = None) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    if path is not None:
        path.write_text(buf.getvalue(), encoding="utf-8")
    return buf.getvalue()


def report_timezone(cfg: Config) -> tuple[tzinfo | None, str]:
    """The timezone the report and the dashboard give days and times in (feed.timezone, else this
    computer's; None for this computer's), and its name in words."""
    if cfg.feed.timezone:
        import zoneinfo

        return zoneinfo.ZoneInfo(cfg.feed.timezone), cfg.feed.timezone
    local = datetime.now().astimezone().tzinfo
    return None, f"this computer's timezone ({datetime.now().astimezone().tzname() or local})"


def collect(db_path: str, since: str | None, until: str | None, cfg: Config, store: str | None = None
            ) -> tuple[Summary, str, tzinfo | None, str]:
    """The summary of the period (and the database's label, the timezone and its name)."""
    tz, tz_name = report_timezone(cfg)
    today = datetime.now(tz).date() if tz else datetime.now().date()
    period = parse_period(since, until, today)
    con = open_db(db_path)
    try:
        summary = summarize(con, period, tz, store)
        label = con.target.label
    finally:
        con.close()
    if store and not summary.store_ids:
        summary.store_ids.append(store)
    return summary, label, tz, tz_name


def write_folder(summary: Summary, label: str, tz: tzinfo | None, tz_name: str, out_dir: str | Path) -> Path:
    """report.md, report.json, per_till.csv, per_cashier.csv and the charts in out_dir; the path of report.md."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportInputError(f"--out: {str(out)!r} is a file; give a folder for report.md and the charts")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportInputError(f"--out: cannot create {str(out)!r} ({exc.strerror})") from None
    charts = write_charts(summary, out)
    report = out / "report.md"
    report.write_text(render_markdown(summary, label, tz_name, charts, tz), encoding="utf-8")
    data = to_json(summary, tz)
    (out / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    write_csv(data["per_till"], PER_TILL_CSV, out / "per_till.csv")
    write_csv(data["per_cashier"], PER_CASHIER_CSV, out / "per_cashier.csv")
    return report


def build(db_path: str, out_dir: str | Path, since: str | None, until: str | None, cfg: Config,
          store: str | None = None) -> tuple[Path, Summary]:
    """report.md, report.json, per_till.csv, per_cashier.csv and the charts in out_dir."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():  # refused before the database is read
        raise ReportInputError(f"--out: {str(out)!r} is a file; give a folder for report.md and the charts")
    summary, label, tz, tz_name = collect(db_path, since, until, cfg, store)
    return write_folder(summary, label, tz, tz_name, out), summary


DEFAULT_OUT = "agecheck-report"
STDOUT = "-"


def main(args, cfg: Config) -> int:
    db = args.db or cfg.feed.db_path
    json_to = getattr(args, "json", None)
    store = getattr(args, "store", None)
    if json_to is None:
        report, s = build(db, args.out or DEFAULT_OUT, args.since, args.until, cfg, store)
        t = s.totals()
        print(f"agecheck report: {report} ({s.period.since} to {s.period.until}): {headline_text(t)}; "
              f"{t.checks} checks, median answer {_secs(t.median_decision_s)}, "
              f"{t.integrity} integrity events, {sum(g.missing for g in s.gaps)} events missing")
        return 0
    # --json writes only where it is told: stdout ("-", the default) or the file named; the
    # folder of report.md and charts only when --out asks for it as well.
    s, label, tz, tz_name = collect(db, args.since, args.until, cfg, store)
    text = json.dumps(to_json(s, tz), indent=2, ensure_ascii=False)
    written = [str(write_folder(s, label, tz, tz_name, args.out).parent)] if args.out else []
    if json_to == STDOUT:
        print(text)
        return 0
    target = Path(json_to)
    try:
        target.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ReportInputError(f"--json: cannot write {json_to!r} ({exc.strerror})") from None
    print(f"agecheck report: {', '.join([str(target), *written])} ({s.period.since} to {s.period.until}): "
          f"{headline_text(s.totals())}")
    return 0
