"""The report as Markdown (report.md): the blocks of `document`, charts as links to the chart
files written beside it."""

from __future__ import annotations

from edge_app.manager.document import Block, Bullets, Chart, Heading, Para, Table


def _table(t: Table) -> list[str]:
    align = ["---" if i < t.text_cols else "---:" for i in range(len(t.header))]
    return [
        "| " + " | ".join(t.header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in t.rows),
    ]


def render_markdown(blocks: list[Block], chart_files: dict[str, str]) -> str:
    """`chart_files`: chart key -> the file name written beside report.md (a chart without one is
    left out)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items]
        elif isinstance(b, Table):
            out += _table(b)
        elif isinstance(b, Chart):
            if b.key not in chart_files:
                continue
            out.append(f"![{b.alt}]({chart_files[b.key]})")
        out.append("")
    return "\n".join(out)
