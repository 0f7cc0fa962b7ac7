"""The report's content, once, in no format: headings, paragraphs, lists, tables and charts built
from a Summary, in the order a manager reads them (the answer first). render_md and render_html
write the same blocks as Markdown and as a self-contained HTML page, so the two never say
different things. Text may carry three marks, the Markdown ones: **strong**, *term* and `code`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from edge_app.core.words import ACK_ANSWERS, ANSWER_COLUMN, ANSWER_PHRASE, DECISION_COLUMN, DECISIONS, Answer
from edge_app.manager.figures import BAND_NAMES, Summary, TillDay, cashier_rows, pct, secs
from edge_app.manager.live_table import gap_text


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """Figures right-aligned; the first `text_cols` columns are text, left-aligned."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    text_cols: int = 1
    name: str = ""  # what the table is (an HTML id, for a reader or a test to find it)


@dataclass(frozen=True)
class Chart:
    """A chart by its key in charts.CHARTS (the file name and how it is drawn)."""

    key: str
    alt: str


Block = Heading | Para | Bullets | Table | Chart


def _table(header: list[str], rows: list[list], text_cols: int = 1, name: str = "") -> Table:
    return Table(tuple(header), tuple(tuple(str(c) for c in r) for r in rows), text_cols, name)


def _till_row(label: str, r: TillDay) -> list:
    return [
        label,
        r.checks,
        *(r.decisions[d] for d in DECISIONS),
        r.alerts,
        sum(r.answers.values()),
        *(r.answers[a] for a in ACK_ANSWERS),
        r.undone,
        r.integrity,
        pct(r.share_answered),
        secs(r.median_decision_s),
    ]


def _id_row(store: str, till: str, r: TillDay) -> list:
    return [
        store,
        till,
        r.alerts,
        *r.outcomes,
        pct(r.share_id_checked),
    ]


_TILL_HEADER = [
    "checks",
    *(DECISION_COLUMN[d] for d in DECISIONS),
    "alerts",
    "answers",
    *(ANSWER_COLUMN[a] for a in ACK_ANSWERS),
    ANSWER_COLUMN[Answer.UNDONE],
    "integrity",
    "alerts answered",
    "median decision",
]


def title(s: Summary) -> str:
    p = s.period
    span = p.since.isoformat() if p.since == p.until else f"{p.since.isoformat()} to {p.until.isoformat()}"
    return f"Age-check report: {span}"


def scope_text(s: Summary) -> str | None:
    """What narrows the figures besides the store, in words (None: nothing)."""
    sc = s.scope
    parts = [
        f"till {sc.till}" if sc.till else "",
        f"cashier {sc.cashier}" if sc.cashier else "",
        f"{sc.kind} events only" if sc.kind else "",
        f"from {sc.hours.start_text} to {sc.hours.end_text} each day" if sc.hours else "",
    ]
    said = [p for p in parts if p]
    return ", ".join(said) if said else None


def _opening(s: Summary, source: str, tz_name: str) -> list[Block]:
    out: list[Block] = [
        Heading(1, title(s)),
        Para(
            f"Store{'s' if len(s.store_ids) != 1 else ''}: {', '.join(s.store_ids) or '–'} · days in {tz_name} · "
            f"source `{source}` · generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        ),
    ]
    if (narrowed := scope_text(s)) is not None:
        out.append(Para(f"**Only {narrowed}**: every figure, table and chart below counts these events alone."))
    if s.events_total == 0:
        out.append(
            Para(
                "**No events were stored for this period.** Check that `agecheck feed` was running and "
                "that the dates are right."
            )
        )
    return out


def headline_para(t: TillDay) -> str:
    if not t.alerts:
        return "**No alerts**: no ID check was asked for in this period."
    # The answer first: of the alerts (ID check asked), how many had one. "Answered" alone would
    # count the cashier's "no ID check" as done.
    return (
        f"**ID was checked on {pct(t.share(t.id_checked_alerts))} of alerts** ({t.id_checked_alerts} of "
        f"{t.alerts}). **{pct(t.share(t.unanswered_alerts))} were not answered** ({t.unanswered_alerts}) and "
        f"**{pct(t.share(t.no_id_check_alerts))} were answered “no ID check”** ({t.no_id_check_alerts})."
    )


def _summary(s: Summary) -> list[Block]:
    t = s.totals()
    items = [
        f"**{t.checks}** age checks, **{t.alerts}** alerts (ID check asked), median answer time "
        f"**{secs(t.median_decision_s)}**.",
        f"**{t.integrity}** integrity event{'s' if t.integrity != 1 else ''}: a sale completed on an alert "
        "with no ID check recorded.",
    ]
    if t.missed:
        items.append(
            f"**{t.missed}** restricted scan{'s' if t.missed != 1 else ''} not checked (`missed` events: "
            "the scan was stale, the till was busy or stopping, or the check failed); ask the till's staff."
        )
    items.append(
        "Answers: "
        + " · ".join(f"{t.answers[a]} {ANSWER_PHRASE[a]}" for a in ACK_ANSWERS)
        + (f" · {t.undone} taken back by the cashier (Undo)." if t.undone else ".")
    )
    return [Heading(2, "Summary"), Para(headline_para(t)), Bullets(tuple(items))]


def _per_store(s: Summary) -> list[Block]:
    out: list[Block] = []
    multi = len(s.store_ids) > 1
    for store_id in s.store_ids:
        # One section per store: till-01 of two stores are two rows, never one.
        mine = [k for k in s.tills if k[0] == store_id]
        of = f" of {store_id}" if multi else ""
        out += [
            Heading(2, f"Per till{f': {store_id}' if multi else ''}"),
            Para(f"Store **{store_id}**."),
            _table(
                ["till", *_TILL_HEADER],
                [_till_row(till, s.totals(till, store_id)) for _, till in mine]
                + [_till_row(f"**all tills{of}**", s.totals(store=store_id))],
                name=f"per-till-{store_id}",
            ),
        ]
        keys = sorted((k for k in s.rows if k[0] == store_id), key=lambda k: (k[2], k[1]))
        out += [
            Heading(2, f"Per till and day{f': {store_id}' if multi else ''}"),
            _table(
                ["day", "till", *_TILL_HEADER],
                [[k[2].isoformat(), *_till_row(k[1], s.rows[k])] for k in keys] or [["–"] * (len(_TILL_HEADER) + 2)],
                text_cols=2,
                name=f"per-till-day-{store_id}",
            ),
        ]
    return out


CASHIER_HEADER = [
    "store",
    "cashier",
    "alerts",
    "answered",
    "ID checked",
    "no ID check",
    "not answered",
    "median answer",
    ANSWER_COLUMN[Answer.UNDONE],
]


def _per_cashier(s: Summary) -> list[Block]:
    rows = [
        [
            c["store_id"],
            c["cashier"],
            c["alerts"],
            c["alerts_answered"],
            pct(c["share_alerts_id_checked"]),
            c["answers_no_id_check"],
            c["alerts_unanswered"],
            secs(c["median_answer_s"]),
            c["answers_undone"],
        ]
        for c in cashier_rows(s)
    ]
    return [
        Heading(2, "Per cashier"),
        Para("The cashier logged in when the alert was shown (sent by the POS with the scan)."),
        _table(CASHIER_HEADER, rows or [["–"] * len(CASHIER_HEADER)], text_cols=2, name="per-cashier"),
    ]


def _id_checks(s: Summary) -> list[Block]:
    out: list[Block] = []
    if len(s.store_ids) > 1:
        out += [
            Heading(2, "All stores"),
            _table(
                ["store", *_TILL_HEADER],
                [_till_row(st, s.totals(store=st)) for st in s.store_ids] + [_till_row("**all stores**", s.totals())],
                name="all-stores",
            ),
        ]
    out += [
        Heading(2, "Were IDs checked?"),
        Para(
            "Per till, what became of the alerts (the cashier was asked to check ID): the till that sells "
            "without checks stands out here."
        ),
        _table(
            ["store", "till", "alerts", "ID checked", "answered no ID check", "not answered", "alerts with ID check"],
            [_id_row(st, till, s.totals(till, st)) for st, till in s.tills],
            text_cols=2,
            name="id-checks",
        ),
        Chart("id_checks", "ID checks on alerts, per till"),
    ]
    return out


def _missing(s: Summary, tz: tzinfo | None) -> list[Block]:
    if not s.gaps:
        return [
            Heading(2, "Missing events"),
            Para("None: every till's events arrived without a hole in their numbers."),
        ]
    return [
        Heading(2, "Missing events"),
        Para(
            "Events that tills sent but the feed never received (found from each till's event numbers); "
            "the figures above do not include them."
        ),
        Bullets(tuple(gap_text(g, tz, with_store=len(s.store_ids) > 1) for g in s.gaps)),
    ]


def _bands(s: Summary) -> list[Block]:
    n = sum(s.bands.values())
    cats = sorted(s.bands_by_category)
    rows = []
    for b in BAND_NAMES:
        row = [b, s.bands[b], pct(s.bands[b] / n if n else None)]
        if len(cats) > 1:
            row += [s.bands_by_category[c][b] for c in cats]
        rows.append(row)
    return [
        Heading(2, "Who buys age-restricted items: age bands"),
        Para(
            f"Estimated age band of the shopper, one per transaction ({n} with an estimate; "
            f"{s.shoppers_without_estimate} without a usable face)."
        ),
        _table(["age band", "shoppers", "share", *(cats if len(cats) > 1 else [])], rows, name="age-bands"),
        Chart("bands", "Age-band mix"),
        Para("Ages are camera estimates (Challenge 25 screening), not verified ages."),
    ]


def _integrity(s: Summary) -> list[Block]:
    if not s.integrity_events:
        return [Heading(2, "Integrity events"), Para("None in this period.")]
    rows = [
        [
            e.local,
            e.event.store_id,
            e.event.till_id,
            e.event.operator_id or "–",
            e.event.transaction_id or "–",
            e.alert_local or "–",
            e.sale_local or "–",
            secs(e.event.seconds_after_alert),
            "cashier answered “no ID check”" if e.no_id_check_answered else "no answer",
        ]
        for e in s.integrity_events
    ]
    return [
        Heading(2, "Integrity events"),
        Para(
            "A sale completed on an alert with no ID check recorded. The times are for finding the moment on "
            "CCTV: the alert on the till's screen, then the sale."
        ),
        _table(
            [
                "time",
                "store",
                "till",
                "cashier",
                "transaction",
                "alert shown",
                "sale completed",
                "sold after alert",
                "why",
            ],
            rows,
            text_cols=9,
            name="integrity",
        ),
    ]


def _quality(s: Summary) -> list[Block]:
    items = [
        f"{s.events_total} events in the period; {s.quarantined} message(s) quarantined by the feed "
        "(malformed or unknown schema; see the `quarantine` table in the database).",
        f"{sum(g.missing for g in s.gaps)} event(s) missing in {len(s.gaps)} gap(s) (see “Missing events”).",
    ]
    if s.unreadable:
        items.append(
            f"{len(s.unreadable)} stored event(s) left out of every figure: their stored payload is no "
            f"longer a valid event (written by another build, or edited): {', '.join(s.unreadable)}."
        )
    return [Heading(2, "Data quality"), Bullets(tuple(items))]


DEFINITIONS = Bullets(
    (
        "*checks*: age estimates run on a restricted scan; *alerts*: checks that were not `approve` "
        "(`check_id` or `no_face`), so the cashier was asked to check ID.",
        "*alerts answered*: alerts of that till and day with at least one cashier answer (the answer may come "
        "later). *median decision*: seconds from the alert on screen to the cashier's answer. *undone*: answers "
        "the cashier took back with Undo (or replaced); they are not counted as answers, and an alert whose only "
        "answer was undone counts as unanswered.",
        "*integrity*: the POS reported the sale of a transaction whose alert had no ID check recorded (no answer, "
        "or the answer “no ID check”) after the grace period.",
        "*alerts with ID check*: alerts answered “ID checked” (over age, or under age / refused).",
        "*missing events*: every till numbers its events; a hole in the numbers the feed received is events lost "
        "on the way (a broker queue limit reached, a till outbox full).",
    )
)


def document(s: Summary, source: str, tz_name: str, tz: tzinfo | None = None) -> list[Block]:
    """The whole report, top to bottom."""
    return [
        *_opening(s, source, tz_name),
        *_summary(s),
        *_per_store(s),
        *_per_cashier(s),
        *_id_checks(s),
        *_missing(s, tz),
        *_bands(s),
        *_integrity(s),
        *_quality(s),
        Heading(2, "How the figures are defined"),
        DEFINITIONS,
    ]
