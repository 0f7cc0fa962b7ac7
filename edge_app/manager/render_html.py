"""The report as one self-contained HTML file (report.html): the blocks of `document`, the charts
inline as SVG and the style inline, so the file can be mailed or opened from a USB stick and reads
the same without a network or the files beside it. Nothing in it points outside the file."""

from __future__ import annotations

import html
import re

from edge_app.manager.charts import SVG_NS
from edge_app.manager.document import Block, Bullets, Chart, Heading, Para, Table

STYLE = """
body { font-family: system-ui, "DejaVu Sans", Arial, sans-serif; color: #222; margin: 1.5rem auto;
       max-width: 72rem; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; }
th { background: #f2f2f2; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.chart svg { max-width: 100%; height: auto; }
code { background: #f4f4f4; padding: 0 0.2em; }
@media print { .scroll { overflow: visible; } }
"""

# Our own marks in the text (document's module docstring), applied after escaping.
_MARKS = (
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
    (re.compile(r"(?<![\w*])\*(\S.*?)\*(?![\w*])"), r"<em>\1</em>"),
)


def inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _MARKS:
        out = pattern.sub(repl, out)
    return out


def _table(t: Table) -> str:
    head = "".join(f"<th>{inline(h)}</th>" for h in t.header)
    cls = ["<td>" if i < t.text_cols else '<td class="n">' for i in range(len(t.header))]
    rows = "".join("<tr>" + "".join(f"{cls[i]}{inline(c)}</td>" for i, c in enumerate(r)) + "</tr>" for r in t.rows)
    ident = f' id="{html.escape(t.name)}"' if t.name else ""
    return f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _block(b: Block, charts: dict[str, str]) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{inline(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p>{inline(b.text)}</p>"
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Chart) and b.key in charts:
        # Inside HTML an <svg> needs no namespace declaration: without it the file names no URL at all.
        svg = charts[b.key].replace(f' xmlns="{SVG_NS}"', "", 1)
        return f'<figure class="chart" id="chart-{b.key}">{svg}<figcaption>{inline(b.alt)}</figcaption></figure>'
    return ""


def render_html(blocks: list[Block], title: str, charts: dict[str, str]) -> str:
    """`charts`: chart key -> its SVG text, put in the page as it is."""
    body = "\n".join(x for b in blocks if (x := _block(b, charts)))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
