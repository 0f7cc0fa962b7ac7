"""The report's figures as data: report.json (and `--json`), per_till.csv and per_cashier.csv;
the dashboard's downloads are the same."""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path

from edge_app.core.words import ACK_ANSWERS, DECISIONS, Answer
from edge_app.manager.figures import BAND_NAMES, Summary, attention, cashier_rows, headline
from edge_app.manager.live_table import gap_text


def to_json(s: Summary, tz: tzinfo | None) -> dict:
    """Everything in report.md as data (report.json, `--json`)."""
    sc = s.scope
    return {
        "period": {"since": s.period.since.isoformat(), "until": s.period.until.isoformat()},
        "filters": {
            "store": sc.store,
            "till": sc.till,
            "cashier": sc.cashier,
            "kind": sc.kind,
            "time_from": sc.hours.start_text if sc.hours else None,
            "time_to": sc.hours.end_text if sc.hours else None,
        },
        "stores": s.store_ids,
        "headline": headline(s.totals()),
        "totals": s.totals().figures(),
        "per_till": [{"store_id": st, "till_id": t, **s.totals(t, st).figures()} for st, t in s.tills],
        "per_cashier": cashier_rows(s),
        "per_till_day": [
            {"store_id": k[0], "till_id": k[1], "day": k[2].isoformat(), **r.figures()}
            for k, r in sorted(s.rows.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1]))
        ],
        "needs_attention": attention(s),
        "integrity_events": [e.as_json() for e in s.integrity_events],
        "missing_events": [
            {
                "store_id": g.store_id,
                "publisher": g.publisher,
                "till_id": g.till_id,
                "missing": g.missing,
                "first_missing_seq": g.after_seq + 1,
                "last_missing_seq": g.before_seq - 1,
                "after_ts": g.after_ts,
                "before_ts": g.before_ts,
                "text": gap_text(g, tz),
            }
            for g in s.gaps
        ],
        "age_bands": {
            "note": "camera estimates of the shopper's age, not verified ages",
            "shoppers": {b: s.bands[b] for b in BAND_NAMES},
            "without_estimate": s.shoppers_without_estimate,
        },
        "quarantined": s.quarantined,
        "events": s.events_total,
    }


PER_TILL_CSV = [
    "store_id",
    "till_id",
    "checks",
    *(d.value for d in DECISIONS),
    "alerts",
    "alerts_answered",
    "alerts_id_checked",
    "share_alerts_id_checked",
    *[f"answers_{a}" for a in (*ACK_ANSWERS, Answer.UNDONE)],
    "integrity",
    "missed",
    "median_answer_s",
]


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


PER_CASHIER_CSV = [
    "store_id",
    "cashier",
    "alerts",
    "alerts_answered",
    "alerts_id_checked",
    "share_alerts_id_checked",
    "answers_no_id_check",
    "alerts_unanswered",
    "median_answer_s",
    "answers_undone",
    "integrity",
]
