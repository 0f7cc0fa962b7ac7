"""What the dashboard's charts draw, as plain data (the page's JSON block and summary.json): alerts
and their outcomes over time, bucketed by day, week or month so a day, a week or a year stay
readable; alerts per till; the age-band mix in two series whose legends match their bars."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from edge_app.manager.figures import BAND_COLOURS, BAND_NAMES, MINOR_BANDS, Summary
from edge_app.manager.outcomes import ALERT_OUTCOME_SERIES
from edge_app.manager.scope import Period


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
    over_time = [[0] * len(buckets) for _ in ALERT_OUTCOME_SERIES]
    for (_, _, day), r in s.rows.items():
        i = idx[bucket_of(day, size)]
        for counts, n in zip(over_time, r.outcomes):
            counts[i] += n
    fmt = {"day": "%a %d %b", "week": "w/c %d %b", "month": "%b %Y"}[size]
    per_till = [s.totals(t, st).outcomes for st, t in s.tills]

    def stacks(per_outcome: list[list[int]]) -> list[dict]:
        # The alerts' outcomes, in the order the bars stack; the page draws what it is given.
        return [
            {"name": name, "colour": colour, "values": values}
            for (name, colour), values in zip(ALERT_OUTCOME_SERIES, per_outcome)
        ]

    return {
        "bucket": size,
        "over_time": {"labels": [b.strftime(fmt) for b in buckets], "series": stacks(over_time)},
        "per_till": {
            "labels": s.till_labels,
            "series": stacks([list(column) for column in zip(*per_till)] or [[] for _ in ALERT_OUTCOME_SERIES]),
        },
        # Two series, each in one colour, so the legend's swatches are the bars' colours (one
        # series with a colour per bar gave the legend the first bar's red for the blue bars).
        "bands": {
            "labels": BAND_NAMES,
            "shoppers": [s.bands[b] for b in BAND_NAMES],
            "series": [
                {
                    "name": name,
                    "colour": BAND_COLOURS[key],
                    "values": [s.bands[b] if (b in MINOR_BANDS) == minor else None for b in BAND_NAMES],
                }
                for name, key, minor in (
                    ("under 18 (camera estimate)", "minor", True),
                    ("18 and over (camera estimate)", "adult", False),
                )
            ],
        },
    }
