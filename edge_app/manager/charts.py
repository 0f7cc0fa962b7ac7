"""The report's two charts, drawn as SVG by hand: the age-band mix of shoppers, and what became of
each till's alerts. SVG is text, so the same chart is a file beside report.md and inline in
report.html, and drawing two bar charts needs no plotting library on the manager's computer
(matplotlib and numpy would be most of a manager install)."""

from __future__ import annotations

from collections.abc import Callable
from xml.sax.saxutils import escape, quoteattr

from edge_app.manager.figures import BAND_COLOURS, BAND_NAMES, MINOR_BANDS, Summary, pct
from edge_app.manager.outcomes import ALERT_OUTCOME_SERIES

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
INK = "#222222"
SVG_NS = "http://www.w3.org/2000/svg"
# What became of an alert, in the order the bar is stacked (the colours of the dashboard's chart).
OUTCOMES = ALERT_OUTCOME_SERIES


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, weight: str = "normal") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{INK}">{escape(text)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, colour: str, label: str) -> str:
    # data-value: what the bar stands for, for a reader of the SVG (and the tests) rather than a
    # measurement of pixels.
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{colour}" '
        f"data-value={quoteattr(label)}><title>{escape(label)}</title></rect>"
    )


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" role="img" aria-label={quoteattr(title)}>'
        f'<title>{escape(title)}</title><rect width="{width}" height="{height}" fill="#ffffff"/>'
        + "".join(body)
        + "</svg>\n"
    )


def age_bands(s: Summary) -> str:
    """One bar per band, shoppers (transactions) with an estimate; under-18 bands red."""
    width, height, left, top, bottom = 700, 360, 60, 50, 60
    counts = [s.bands[b] for b in BAND_NAMES]
    top_value = max(counts + [1])
    plot_h, slot = height - top - bottom, (width - left - 20) / len(BAND_NAMES)
    title = "Age-band mix of shoppers buying restricted items (red: under 18)"
    body = [
        _text(width / 2, 24, title, "middle", 14, "bold"),
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="{INK}"/>',
    ]
    for i, (band, n) in enumerate(zip(BAND_NAMES, counts)):
        h = plot_h * n / top_value
        x = left + i * slot + slot * 0.15
        colour = BAND_COLOURS["minor" if band in MINOR_BANDS else "adult"]
        body += [
            _rect(x, height - bottom - h, slot * 0.7, h, colour, f"{band}: {n}"),
            _text(x + slot * 0.35, height - bottom - h - 5, str(n), "middle"),
            _text(x + slot * 0.35, height - bottom + 18, band, "middle"),
        ]
    body += [
        _text(width / 2, height - 16, "estimated age band", "middle"),
        f'<text x="16" y="{top + plot_h / 2:.1f}" font-size="12" fill="{INK}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">shoppers (transactions)</text>',
    ]
    return _svg(width, height, title, body)


def id_checks(s: Summary) -> str:
    """One bar per till, stacked: alerts with ID checked, answered "no ID check", not answered;
    the same size for a day or a year, so the till that sells without checks is the long red one."""
    tills = s.tills
    labels = s.till_labels
    width, left, top, row = 700, 150, 60, 34
    height = top + row * max(len(tills), 1) + 50
    totals = [s.totals(t, st) for st, t in tills]
    parts = [r.outcomes for r in totals]
    scale = (width - left - 150) / max([r.alerts for r in totals] + [1])
    title = f"Were IDs checked? Alerts per till, {s.period.since} to {s.period.until}"
    body = [_text(width / 2, 22, title, "middle", 14, "bold")]
    x: float = left
    for name, colour in OUTCOMES:  # the legend, one line under the title
        body += [f'<rect x="{x}" y="34" width="12" height="12" fill="{colour}"/>', _text(x + 16, 44, name, size=11)]
        x += 24 + 7 * len(name)
    for i, (label, r, counts) in enumerate(zip(labels, totals, parts)):
        y = top + i * row
        body.append(_text(left - 8, y + row / 2 + 4, label, "end"))
        x = left
        for (name, colour), n in zip(OUTCOMES, counts):
            body.append(_rect(x, y + 5, n * scale, row - 10, colour, f"{label} {name}: {n}"))
            x += n * scale
        body.append(_text(x + 6, y + row / 2 + 4, f"{pct(r.share_id_checked)} with ID check", size=11))
    if not tills:
        body.append(_text(width / 2, top + row / 2, "no alerts in this period", "middle"))
    axis_y = top + row * max(len(tills), 1)
    body += [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="{INK}"/>',
        _text(left + (width - left - 150) / 2, axis_y + 30, "alerts (ID check asked)", "middle"),
    ]
    return _svg(width, height, title, body)


# key -> (file name beside report.md, how it is drawn)
CHARTS: dict[str, tuple[str, Callable[[Summary], str]]] = {
    "id_checks": ("id_checks_per_till.svg", id_checks),
    "bands": ("age_bands.svg", age_bands),
}


def draw_all(s: Summary) -> dict[str, str]:
    """Chart key -> its SVG text."""
    return {key: draw(s) for key, (_, draw) in CHARTS.items()}
