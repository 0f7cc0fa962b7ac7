"""Bench figures: one `Row` of the table per figure (with today's path's figure beside it where
the run measured both, and their ratio), the percentiles and the constructors that fill a row
from samples, a single value or a reason it is missing, and the fixed-width text rendering of
the table."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Row:
    """One line of the table. `median`/`p95` hold the figure (a single figure goes in median)."""

    key: str
    label: str
    unit: str
    median: float | None = None
    p95: float | None = None
    n: int = 0
    target: str = ""
    ok: bool | None = None  # None: no target, or no figure
    note: str = ""
    # The same figure for today's path (the code before issue 29), measured in the same run.
    today_median: float | None = None
    today_p95: float | None = None

    @property
    def ratio(self) -> float | None:
        """This figure over today's, on p95 where both have one, else on the median."""
        if self.p95 is not None and self.today_p95:
            return self.p95 / self.today_p95
        if self.median is not None and self.today_median:
            return self.median / self.today_median
        return None

    def beside(self, today: Row) -> Row:
        """This row with today's figure (from a row measured the same way) beside it."""
        self.today_median, self.today_p95 = today.median, today.p95
        return self

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pct(values: list[float], q: float) -> float:
    """Percentile by linear interpolation (numpy's default), without needing numpy here."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def dist_row(
    key: str, label: str, unit: str, values: list[float], target: str = "", p95_max: float | None = None, note: str = ""
) -> Row:
    if not values:
        return Row(key, label, unit, target=target, note=note or "no samples")
    r = Row(key, label, unit, statistics.median(values), pct(values, 95), len(values), target, None, note)
    if p95_max is not None:
        r.ok = r.p95 is not None and r.p95 <= p95_max
    return r


def value_row(
    key: str,
    label: str,
    unit: str,
    value: float | None,
    target: str = "",
    ok: Callable[[float], bool] | None = None,
    note: str = "",
    n: int = 1,
) -> Row:
    if value is None:
        return Row(key, label, unit, target=target, note=note or "not measured")
    return Row(key, label, unit, value, None, n, target, ok(value) if ok else None, note)


def na_row(key: str, label: str, unit: str, reason: str, target: str = "") -> Row:
    return Row(key, label, unit, target=target, note=f"n/a: {reason}")


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def render(rows: list[Row], header: list[str]) -> str:
    """The one table, as fixed-width text."""
    cols = ["figure", "unit", "median", "p95", "n", "today med", "today p95", "ratio", "target", "met", "note"]
    body = []
    for r in rows:
        met = "-" if r.ok is None else ("yes" if r.ok else "NO")
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        body.append(
            [
                r.label,
                r.unit,
                _fmt(r.median),
                _fmt(r.p95),
                str(r.n) if r.n else "-",
                _fmt(r.today_median),
                _fmt(r.today_p95),
                ratio,
                r.target or "-",
                met,
                r.note,
            ]
        )
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols[:-1])]
    out = list(header)

    def line(vals: list[str]) -> str:
        left = {0, 1, 8}  # text columns left-aligned, numbers right-aligned
        cells = [v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths))]
        return "  ".join(cells + [vals[-1]]).rstrip()

    out.append(line(cols))
    out.append("  ".join("-" * w for w in widths) + "  ----")
    out += [line(b) for b in body]
    return "\n".join(out)
