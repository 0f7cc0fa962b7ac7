"""Manager report (`agecheck report`): reads the feed database written by `agecheck feed` and
writes report.md with two PNG charts for a period of days.

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
* what was quarantined by the feed in the period.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Iterable

from edge_app.config import Config
from edge_app.core.answers import standing
from edge_app.core.events import ACK_ANSWERS
from edge_app.core.policy import BANDS

MAX_DAYS = 366
BAND_NAMES = [b[0] for b in BANDS]
_ANSWERS = ("id_checked_over_age", "id_checked_under_age_refused", "no_id_check")


class ReportInputError(Exception):
    """Bad dates, a missing or foreign database, an unusable output folder."""


@dataclass(frozen=True)
class Period:
    since: date
    until: date

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range((self.until - self.since).days + 1)]


def _parse_day(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ReportInputError(f"{flag}: {value!r} is not a date; use YYYY-MM-DD, e.g. 2025-03-14") from None


def parse_period(since: str | None, until: str | None, today: date) -> Period:
    """Both ends inclusive. Defaults: until = today, since = 6 days before until (one week)."""
    end = _parse_day(until, "--until") if until else today
    start = _parse_day(since, "--since") if since else end - timedelta(days=6)
    if start > end:
        raise ReportInputError(f"--since {start.isoformat()} is after --until {end.isoformat()}; swap them")
    if (end - start).days + 1 > MAX_DAYS:
        raise ReportInputError(f"--since/--until: {(end - start).days + 1} days asked for; a report covers "
                               f"at most {MAX_DAYS} days, run one per year")
    return Period(start, end)


def local_dt(ts: str, tz: tzinfo | None) -> datetime | None:
    """An event time in the report's timezone (None = this machine's); a time without an
    offset is UTC, as every producer writes it."""
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(tz)


def local_day(ts: str, tz: tzinfo | None) -> date | None:
    dt = local_dt(ts, tz)
    return dt.date() if dt else None


@dataclass
class TillDay:
    till_id: str
    day: date
    checks: int = 0
    decisions: Counter = field(default_factory=Counter)
    alerts: int = 0
    answered_alerts: int = 0
    answers: Counter = field(default_factory=Counter)
    undone: int = 0  # answers the cashier took back (Undo) or replaced
    integrity: int = 0
    decision_times: list[float] = field(default_factory=list)

    @property
    def share_answered(self) -> float | None:
        return self.answered_alerts / self.alerts if self.alerts else None

    @property
    def median_decision_s(self) -> float | None:
        return statistics.median(self.decision_times) if self.decision_times else None

    def add(self, other: "TillDay") -> None:
        self.checks += other.checks
        self.decisions.update(other.decisions)
        self.alerts += other.alerts
        self.answered_alerts += other.answered_alerts
        self.answers.update(other.answers)
        self.undone += other.undone
        self.integrity += other.integrity
        self.decision_times.extend(other.decision_times)


@dataclass
class Summary:
    period: Period
    store_ids: list[str]
    rows: dict[tuple[str, date], TillDay]
    bands: Counter
    bands_by_category: dict[str, Counter]
    shoppers_without_estimate: int
    integrity_events: list[dict]
    quarantined: int
    events_total: int

    def totals(self, till: str | None = None) -> TillDay:
        t = TillDay(till or "all tills", self.period.since)
        for (till_id, _), r in self.rows.items():
            if till is None or till_id == till:
                t.add(r)
        return t

    @property
    def tills(self) -> list[str]:
        return sorted({k[0] for k in self.rows})


def open_db(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    if not p.is_file():
        raise ReportInputError(f"--db: {str(p)!r} does not exist; run `agecheck feed` first to collect events "
                               "(or pass --db to the feed's database)")
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        con.execute("SELECT event_id, kind, ts, till_id, payload FROM events LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise ReportInputError(f"--db: {str(p)!r} is not a database written by `agecheck feed` ({exc})") from None
    return con


def summarize(con: sqlite3.Connection, period: Period, tz: tzinfo | None) -> Summary:
    # A coarse filter on the UTC date (a local day can start the previous UTC day), then exact
    # local days in Python.
    lo = (period.since - timedelta(days=1)).isoformat()
    hi = (period.until + timedelta(days=1)).isoformat()
    rows = con.execute(
        "SELECT event_id, kind, ts, store_id, till_id, transaction_id, decision, answer, age, age_band,"
        " alert_event_id, decision_time_s, payload FROM events WHERE substr(ts, 1, 10) BETWEEN ? AND ?"
        " ORDER BY ts", (lo, hi)).fetchall()
    # Answers may come after midnight or after the period; an alert counts as answered either way.
    # Corrections may too, so which answers stand is worked out over every ack stored.
    stand = standing(json.loads(r[0]) for r in con.execute(
        "SELECT payload FROM events WHERE kind = 'ack' AND alert_event_id IS NOT NULL"))
    answered = {alert for alert, acks in stand.items() if acks}
    standing_ids = {a["event_id"] for acks in stand.values() for a in acks}

    cells: dict[tuple[str, date], TillDay] = {}
    stores: set[str] = set()
    latest_check: dict[str, tuple[str, str | None, str]] = {}  # shopper key -> (ts, band, category)
    integrity: list[dict] = []
    total = 0
    for (event_id, kind, ts, store_id, till_id, txn, decision, answer, age, band, alert_id, dt_s,
         payload) in rows:
        day = local_day(ts, tz)
        if day is None or not (period.since <= day <= period.until):
            continue
        total += 1
        stores.add(store_id)
        cell = cells.setdefault((till_id, day), TillDay(till_id, day))
        if kind == "check":
            cell.checks += 1
            cell.decisions[decision] += 1
            key = f"{store_id}/{till_id}/{txn}" if txn else event_id
            prev = latest_check.get(key)
            if band is not None or prev is None or prev[1] is None:
                latest_check[key] = (ts, band, _category(payload))
        elif kind == "alert":
            cell.alerts += 1
            if event_id in answered:
                cell.answered_alerts += 1
        elif kind == "ack":
            if event_id in standing_ids:
                cell.answers[answer] += 1
                if dt_s is not None:
                    cell.decision_times.append(float(dt_s))
            elif answer in ACK_ANSWERS:  # an answer later taken back (the Undo itself is not counted)
                cell.undone += 1
        elif kind == "integrity":
            cell.integrity += 1
            ev = json.loads(payload)
            local = local_dt(ts, tz).strftime("%Y-%m-%d %H:%M:%S")  # type: ignore[union-attr]
            integrity.append({"ts": ts, "local": local, "day": day, "till_id": till_id, "transaction_id": txn,
                              "seconds_after_alert": ev.get("seconds_after_alert"),
                              "reason": ev.get("reason", ""), "alert_event_id": alert_id})

    bands: Counter = Counter()
    by_cat: dict[str, Counter] = defaultdict(Counter)
    no_estimate = 0
    for _, band, cat in latest_check.values():
        if band is None:
            no_estimate += 1
            continue
        bands[band] += 1
        by_cat[cat or "unknown"][band] += 1

    q = con.execute("SELECT received_at FROM quarantine").fetchall() if _has_table(con, "quarantine") else []
    quarantined = sum(1 for (r,) in q if (d := local_day(r, tz)) is not None and period.since <= d <= period.until)
    return Summary(period, sorted(stores), cells, bands, dict(by_cat), no_estimate, integrity, quarantined, total)


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _category(payload: str) -> str | None:
    try:
        trig = json.loads(payload).get("trigger")
    except ValueError:
        return None
    return trig.get("category") if isinstance(trig, dict) and isinstance(trig.get("category"), str) else None


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
    d = r.decisions
    return [label, r.checks, d["approve"], d["check_id"], d["no_face"], r.alerts, sum(r.answers.values()),
            r.answers["id_checked_over_age"], r.answers["id_checked_under_age_refused"], r.answers["no_id_check"],
            r.undone, r.integrity, _pct(r.share_answered), _secs(r.median_decision_s)]


_TILL_HEADER = ["", "checks", "approve", "check ID", "no face", "alerts", "answers", "ID ok", "refused",
                "no ID check", "undone", "integrity", "alerts answered", "median decision"]


def render_markdown(s: Summary, db_path: str, tz_name: str, charts: dict[str, str]) -> str:
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
    L.append(f"- **{t.checks}** age checks, **{t.alerts}** alerts (ID check asked), "
             f"**{_pct(t.share_answered)}** of alerts answered by the cashier, median decision time "
             f"**{_secs(t.median_decision_s)}**.")
    L.append(f"- **{t.integrity}** integrity event{'s' if t.integrity != 1 else ''}: a sale completed on an alert "
             "with no ID check recorded.")
    L.append(f"- Answers: {t.answers['id_checked_over_age']} ID checked, over age · "
             f"{t.answers['id_checked_under_age_refused']} ID checked, under age / refused · "
             f"{t.answers['no_id_check']} no ID check"
             + (f" · {t.undone} taken back by the cashier (Undo)." if t.undone else "."))
    L.append("")
    L += ["## Per till", ""]
    L += _table(["till"] + _TILL_HEADER[1:], [_till_row(till, s.totals(till)) for till in s.tills]
                + [_till_row("**all tills**", t)])
    L.append("")
    L += ["## Per till and day", ""]
    keys = sorted(s.rows, key=lambda k: (k[1], k[0]))
    L += _table(["day", "till"] + _TILL_HEADER[1:], text_cols=2, rows=
                [[k[1].isoformat(), *_till_row(k[0], s.rows[k])] for k in keys] or [["–"] * (len(_TILL_HEADER) + 1)])
    L.append("")
    if "alerts" in charts:
        L += [f"![Alerts per till per day]({charts['alerts']})", ""]

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
        L += _table(["time", "till", "transaction", "sold after alert", "why"], text_cols=5, rows=
                    [[e["local"], e["till_id"], e["transaction_id"] or "–",
                      _secs(e["seconds_after_alert"]),
                      "cashier answered “no ID check”" if e["reason"] == "answered_no_id_check" else "no answer"]
                     for e in s.integrity_events])
    else:
        L.append("None in this period.")
    L.append("")
    L += ["## Data quality", ""]
    L.append(f"- {s.events_total} events in the period; {s.quarantined} message(s) quarantined by the feed "
             "(malformed or unknown schema; see the `quarantine` table in the database).")
    L += ["", "## How the figures are defined", "",
          "- *checks*: age estimates run on a restricted scan; *alerts*: checks that were not `approve` "
          "(`check_id` or `no_face`), so the cashier was asked to check ID.",
          "- *alerts answered*: alerts of that till and day with at least one cashier answer (the answer may "
          "come later). *median decision*: seconds from the alert on screen to the cashier's answer. "
          "*undone*: answers the cashier took back with Undo (or replaced); they are not counted as "
          "answers, and an alert whose only answer was undone counts as unanswered.",
          "- *integrity*: the POS reported the sale of a transaction whose alert had no ID check recorded "
          "(no answer, or the answer “no ID check”) after the grace period.", ""]
    return "\n".join(L)


def write_charts(s: Summary, out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no screen on a manager's server; must precede pyplot
    import matplotlib.pyplot as plt

    charts: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    counts = [s.bands[b] for b in BAND_NAMES]
    bars = ax.bar(BAND_NAMES, counts, color=["#c0392b" if b in ("0-12", "13-17") else "#2e6da4" for b in BAND_NAMES])
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

    days, tills = s.period.days, s.tills or ["–"]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(days) * max(1, len(tills)) + 2), 3.6), dpi=100)
    width = 0.8 / len(tills)
    for i, till in enumerate(tills):
        ys = [s.rows[(till, d)].alerts if (till, d) in s.rows else 0 for d in days]
        ax.bar([j + i * width - 0.4 + width / 2 for j in range(len(days))], ys, width, label=till)
    ax.set_xticks(range(len(days)), [d.strftime("%a %d %b") for d in days],
                  rotation=45 if len(days) > 7 else 0, ha="right" if len(days) > 7 else "center")
    ax.set_ylabel("alerts")
    ax.set_title("Alerts (ID checks asked) per till per day")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.spines[["top", "right"]].set_visible(False)
    if s.tills:
        ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "alerts_per_till_day.png")
    plt.close(fig)
    charts["alerts"] = "alerts_per_till_day.png"
    return charts


def _timezone(cfg: Config) -> tuple[tzinfo | None, str]:
    if cfg.feed.timezone:
        import zoneinfo

        return zoneinfo.ZoneInfo(cfg.feed.timezone), cfg.feed.timezone
    local = datetime.now().astimezone().tzinfo
    return None, f"this computer's timezone ({datetime.now().astimezone().tzname() or local})"


def build(db_path: str, out_dir: str | Path, since: str | None, until: str | None, cfg: Config) -> tuple[Path, Summary]:
    tz, tz_name = _timezone(cfg)
    today = datetime.now(tz).date() if tz else datetime.now().date()
    period = parse_period(since, until, today)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportInputError(f"--out: {str(out)!r} is a file; give a folder for report.md and the charts")
    con = open_db(db_path)
    try:
        summary = summarize(con, period, tz)
    finally:
        con.close()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportInputError(f"--out: cannot create {str(out)!r} ({exc.strerror})") from None
    charts = write_charts(summary, out)
    report = out / "report.md"
    report.write_text(render_markdown(summary, str(db_path), tz_name, charts), encoding="utf-8")
    return report, summary


def main(args, cfg: Config) -> int:
    db = args.db or cfg.feed.db_path
    try:
        report, s = build(db, args.out, args.since, args.until, cfg)
    except ReportInputError as exc:
        print(f"agecheck report: {exc}", file=sys.stderr)
        return 2
    t = s.totals()
    print(f"agecheck report: {report} ({s.period.since} to {s.period.until}): {t.checks} checks, {t.alerts} alerts, "
          f"{_pct(t.share_answered)} answered, median decision {_secs(t.median_decision_s)}, "
          f"{t.integrity} integrity events")
    return 0
