"""The manager's figures, and how they are defined: what `agecheck report` writes and
`agecheck dashboard` shows, read from the event store written by `agecheck feed` (SQLite or
PostgreSQL) for a period and a scope (`edge_app.manager.scope`). Rendering them is the render_*
modules' job, reading the store `edge_app.manager.store_reader`'s.

* per till and per day (calendar days in feed.timezone, or this machine's timezone): checks and
  their decisions, alerts, answers (by kind), integrity events, the share of alerts that got an
  answer and the share where ID was checked, and the median decision time (seconds from the
  alert on screen to the answer). Answers are those that stand after the cashier's corrections
  (`edge_app.core.answers`): an answer taken back with Undo is counted under *undone*, not as an
  answer, and an alert whose only answer was undone is unanswered;
* per cashier (who was logged in when the alert was shown) the same;
* the age-band mix of the people buying age-restricted items: every check is triggered by a
  restricted scan, so each transaction counts once, with its latest check that has an age estimate;
* the integrity events one by one (a manager follows them up), and the "needs attention" list:
  tills and cashiers with sales after an unanswered alert or a "no ID check" answer, with the
  times to find on CCTV;
* missing events (holes in the tills' event numbers) and what was quarantined by the feed.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta, tzinfo

from edge_app.core import events
from edge_app.core.answers import covered
from edge_app.core.bands import BANDS
from edge_app.core.times import local_dt
from edge_app.core.words import ACK_ANSWERS, DECISIONS, Answer, IntegrityReason
from edge_app.manager.db import Database
from edge_app.manager.live_table import integrity_reason
from edge_app.manager.scope import Period, Scope
from edge_app.manager.store import Gap, gap_rows
from edge_app.manager.store_reader import Reader, alerts_of, optional_columns, period_events, standing_answers

BAND_NAMES = [b[0] for b in BANDS]
# The bands drawn red in the age-band charts (report and dashboard): shoppers under 18.
MINOR_BANDS = frozenset(b[0] for b in BANDS if b[2] < 18)
BAND_COLOURS = {"minor": "#c0392b", "adult": "#2e6da4"}


def pct(x: float | None) -> str:
    """A share as the report and the page write it."""
    return "–" if x is None else f"{100 * x:.0f}%"


def secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f} s"


def cashier_of(ev: events.Event, alerts: Mapping[str, events.Event]) -> str | None:
    """Who was at the till for this event: an answer's own operator when the window sent one,
    else (answers and integrity events) the cashier logged in when the alert was shown."""
    if isinstance(ev, events.AckEvent) and ev.operator_id:
        return ev.operator_id
    if isinstance(ev, (events.AckEvent, events.IntegrityEvent)):
        a = alerts.get(ev.alert_event_id)
        if isinstance(a, events.AlertEvent):
            return a.operator_id
    return ev.operator_id


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

    @property
    def outcomes(self) -> tuple[int, int, int]:
        """The alerts by what became of them, in outcomes.ALERT_OUTCOME_SERIES's order: ID checked,
        answered "no ID check", not answered (together, every alert)."""
        return self.id_checked_alerts, self.no_id_check_alerts, self.unanswered_alerts

    def share(self, n: int) -> float | None:
        return n / self.alerts if self.alerts else None

    @property
    def median_decision_s(self) -> float | None:
        return statistics.median(self.decision_times) if self.decision_times else None

    def add(self, other: TillDay) -> None:
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
        return {
            "checks": self.checks,
            **{d.value: self.decisions[d] for d in DECISIONS},
            "alerts": self.alerts,
            "alerts_answered": self.answered_alerts,
            "alerts_id_checked": self.id_checked_alerts,
            "share_alerts_id_checked": self.share_id_checked,
            **{f"answers_{a}": self.answers[a] for a in ACK_ANSWERS},
            f"answers_{Answer.UNDONE}": self.undone,
            "integrity": self.integrity,
            "missed": self.missed,
            "median_answer_s": self.median_decision_s,
        }


@dataclass
class Summary:
    period: Period
    store_ids: list[str]
    rows: dict[tuple[str, str, date], TillDay]  # (store, till, day)
    bands: Counter
    bands_by_category: dict[str, Counter]
    shoppers_without_estimate: int
    integrity_events: list[IntegrityLine]
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

    @property
    def till_labels(self) -> list[str]:
        """The tills' names in `tills` order, with their store when the figures cover more than one."""
        multi = len(self.store_ids) > 1
        return [f"{st}/{t}" if multi else t for st, t in self.tills]


@dataclass
class _Tally:
    """The figures being counted, event by event."""

    cells: dict[tuple[str, str, date], TillDay] = field(default_factory=dict)
    by_cashier: dict[tuple[str, str], TillDay] = field(default_factory=dict)
    stores: set[str] = field(default_factory=set)
    latest_check: dict[str, tuple[str, str | None, str | None]] = field(
        default_factory=dict
    )  # shopper -> (ts, band, category)
    integrity: list[IntegrityLine] = field(default_factory=list)
    total: int = 0

    def add(
        self,
        ev: events.Event,
        day: date,
        cashier: str | None,
        answers: Mapping[str, set[str]],
        standing_ids: set[str],
        local: str,
    ) -> None:
        self.total += 1
        self.stores.add(ev.store_id)
        cell = self.cells.setdefault((ev.store_id, ev.till_id, day), TillDay(ev.till_id, day, ev.store_id))
        who = self.by_cashier.setdefault((ev.store_id, cashier or ""), TillDay(cashier or "", day, ev.store_id))
        for c in (cell, who):
            _count(c, ev, answers, standing_ids)
        if isinstance(ev, events.CheckEvent):
            key = f"{ev.store_id}/{ev.till_id}/{ev.transaction_id}" if ev.transaction_id else ev.event_id
            prev = self.latest_check.get(key)
            if ev.age_band is not None or prev is None or prev[1] is None:
                self.latest_check[key] = (ev.ts, ev.age_band, ev.trigger.product.category)
        elif isinstance(ev, events.IntegrityEvent):
            self.integrity.append(IntegrityLine(ev, local, day))

    def bands(self) -> tuple[Counter, dict[str, Counter], int]:
        bands: Counter = Counter()
        by_cat: dict[str, Counter] = defaultdict(Counter)
        no_estimate = 0
        for _, band, cat in self.latest_check.values():
            if band is None:
                no_estimate += 1
                continue
            bands[band] += 1
            by_cat[cat or "unknown"][band] += 1
        return bands, dict(by_cat), no_estimate


def _with_cctv_times(line: IntegrityLine, alerts: Mapping[str, events.AlertEvent], tz: tzinfo | None) -> IntegrityLine:
    """The moment to find on CCTV: the alert on the till's screen, and the sale after it; the
    cashier is the one logged in when the alert was shown."""
    ev = line.event
    a = alerts.get(ev.alert_event_id)
    if a is None:
        return line
    alert_dt = local_dt(a.ts, tz)
    sale = alert_dt + timedelta(seconds=float(ev.seconds_after_alert)) if alert_dt else None
    return dataclasses.replace(
        line,
        event=dataclasses.replace(ev, operator_id=a.operator_id),
        alert_local=_local_text(a.ts, tz),
        sale_local=sale.strftime("%Y-%m-%d %H:%M:%S") if sale else None,
    )


def _gaps(db: Database, period: Period, tz: tzinfo | None, scope: Scope) -> list[Gap]:
    if not optional_columns(db):
        return []
    out = []
    for g in gap_rows(db, scope.store):
        a, b = local_day(g.after_ts, tz), local_day(g.before_ts, tz)
        # A hole is a till's, not a cashier's or a kind's: only the till narrows it.
        if scope.till is not None and g.till_id != scope.till:
            continue
        if a is not None and b is not None and a <= period.until and b >= period.since:
            out.append(g)
    return out


def summarize(
    db: Database, period: Period, tz: tzinfo | None, store: str | None = None, *, scope: Scope | None = None
) -> Summary:
    """The figures of `period` for the events `scope` admits (default: every event of `store`)."""
    scope = scope or Scope(store=store)
    read = Reader()
    answers, standing_ids = standing_answers(db, read)
    in_rows = period_events(db, period, scope, read)
    alerts = alerts_of(db, in_rows)
    tally = _Tally()
    for ev in in_rows:
        dt = local_dt(ev.ts, tz)
        if dt is None or not (period.since <= dt.date() <= period.until):
            continue
        cashier = cashier_of(ev, alerts)
        if scope.admits(ev, dt, cashier):
            tally.add(ev, dt.date(), cashier, answers, standing_ids, _local_text(ev.ts, tz))
    integrity = [_with_cctv_times(line, alerts, tz) for line in tally.integrity]
    bands, by_cat, no_estimate = tally.bands()
    q = db.query("SELECT received_at FROM quarantine") if db.has_table("quarantine") else []
    quarantined = sum(1 for (r,) in q if (d := local_day(r, tz)) is not None and period.since <= d <= period.until)
    gaps = _gaps(db, period, tz, scope)
    stores = tally.stores | {g.store_id for g in gaps}
    return Summary(
        period,
        sorted(stores),
        tally.cells,
        bands,
        by_cat,
        no_estimate,
        integrity,
        quarantined,
        tally.total,
        gaps,
        read.unreadable,
        tally.by_cashier,
        scope,
    )


def _count(cell: TillDay, ev: events.Event, answers: Mapping[str, set[str]], standing_ids: set[str]) -> None:
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
        return {
            **self.event.to_dict(),
            "local": self.local,
            "day": self.day.isoformat(),
            "alert_local": self.alert_local,
            "sale_local": self.sale_local,
        }


@dataclass(frozen=True)
class Attention:
    """A till and cashier with sales completed on alerts without an ID check ("needs attention")."""

    store_id: str
    till_id: str
    operator_id: str | None
    sales: int
    unanswered: int
    answered_no_id_check: int
    moments: list[Moment]


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
        moments = [
            Moment(e.alert_local, e.sale_local, e.local, e.event.transaction_id, integrity_reason(e.event.reason))
            for e in lines
        ]
        out.append(Attention(store_id, till_id, operator_id, len(lines), len(lines) - said_no, said_no, moments))
    out.sort(key=lambda g: (-g.sales, g.store_id, g.till_id, g.operator_id or ""))
    return [dataclasses.asdict(g) for g in out]


def headline(r: TillDay) -> dict:
    """What became of the alerts, the answer first: the share where ID was checked, then those
    never answered and those answered "no ID check" (the three add up to all alerts)."""
    return {
        "alerts": r.alerts,
        "id_checked": r.id_checked_alerts,
        "share_id_checked": r.share(r.id_checked_alerts),
        "not_answered": r.unanswered_alerts,
        "share_not_answered": r.share(r.unanswered_alerts),
        "no_id_check_answered": r.no_id_check_alerts,
        "share_no_id_check_answered": r.share(r.no_id_check_alerts),
    }


def headline_text(r: TillDay) -> str:
    if not r.alerts:
        return "no alerts (no ID check was asked for)"
    return (
        f"ID checked on {pct(r.share(r.id_checked_alerts))} of alerts ({r.id_checked_alerts} of {r.alerts}), "
        f"{pct(r.share(r.unanswered_alerts))} not answered ({r.unanswered_alerts}), "
        f"{pct(r.share(r.no_id_check_alerts))} answered “no ID check” ({r.no_id_check_alerts})"
    )


NO_CASHIER = "not sent by the POS"


def cashier_rows(s: Summary) -> list[dict]:
    """Per store and cashier (who was logged in when the alert was shown): alerts, answered, the
    share with an ID check, "no ID check" answers, alerts left unanswered, median answer time and
    answers taken back; the cashier the POS did not name is one row of its own, last. A cashier
    with nothing to answer for (only approved checks) has no row."""
    out = []
    for (store_id, cashier), r in sorted(s.cashiers.items(), key=lambda kv: (kv[0][0], kv[0][1] == "", kv[0][1])):
        if not (r.alerts or r.answers or r.undone or r.integrity):
            continue  # only checks approved: nothing to answer for
        out.append(
            {
                "store_id": store_id,
                "cashier": cashier or NO_CASHIER,
                "alerts": r.alerts,
                "alerts_answered": r.answered_alerts,
                "alerts_id_checked": r.id_checked_alerts,
                "share_alerts_id_checked": r.share_id_checked,
                f"answers_{Answer.NO_ID_CHECK}": r.answers[Answer.NO_ID_CHECK],
                "alerts_unanswered": r.unanswered_alerts,
                "median_answer_s": r.median_decision_s,
                "answers_undone": r.undone,
                "integrity": r.integrity,
            }
        )
    return out
