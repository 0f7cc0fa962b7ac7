"""The bench's figures: percentiles as numpy computes them, rows that carry a figure or say why
not, targets judged on the right statistic, and a text table with one line per row."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.devtools.bench.figures import dist_row, na_row, pct, render, value_row


@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_percentiles_match_numpy(q):
    values = [7.0, 1.5, 3.25, 9.0, 2.0, 4.5, 11.0]
    assert pct(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        pct([], q)


def test_rows_judge_targets_and_say_why_a_figure_is_missing():
    values = [float(v) for v in range(1, 101)]  # p95 is 95.05
    assert dist_row("k", "l", "ms", values, "p95 <= 96", 96.0).ok is True
    assert dist_row("k", "l", "ms", values, "p95 <= 95", 95.0).ok is False
    empty = dist_row("k", "l", "ms", [])
    assert empty.median is None and empty.note == "no samples" and empty.n == 0
    assert value_row("k", "l", "x", 1.5, ">= 2", lambda v: v >= 2).ok is False
    assert value_row("k", "l", "x", None).note == "not measured"
    assert na_row("k", "l", "x", "no float32 model").note == "n/a: no float32 model"


def test_the_table_aligns_columns_and_shows_misses():
    rows = [
        dist_row("a", "short", "ms", [1.0, 2.0, 3.0], "p95 <= 2", 2.0),
        na_row("b", "a much longer label", "x", "no float32 model"),
    ]
    lines = render(rows, ["title", ""]).splitlines()
    assert lines[:2] == ["title", ""] and len(lines) == 6
    head, rule, first, second = lines[2:]
    assert head.index("unit") == first.index("ms") == second.index("x") == len("a much longer label") + 2
    assert first.split()[-1] == "NO" and "n/a: no float32 model" in second


def test_a_figure_beside_today_s_has_the_ratio_of_their_p95s_or_values():
    today = dist_row("t", "today", "ms", [6.0] * 10 + [8.0] * 10)
    new = dist_row("n", "new", "ms", [3.0] * 10 + [4.0] * 10).beside(today)
    assert (new.today_median, new.today_p95) == (today.median, today.p95)
    assert new.ratio == pytest.approx(new.p95 / today.p95)
    idle = value_row("i", "idle", "%", 1.0)
    idle.today_median = 4.0
    assert idle.ratio == pytest.approx(0.25)
    assert value_row("x", "x", "%", 1.0).ratio is None
    line = render([new, idle], []).splitlines()[2]
    assert "0.50" in line.split()  # 4.0 / 8.0: the new p95 over today's
