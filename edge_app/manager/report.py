"""`agecheck report`: reads the event store written by `agecheck feed` (SQLite or PostgreSQL) and
writes, for a period of days and a scope (one store or all of them, one section per store since
stores are never merged; a till, a cashier, a time of day), report.md and report.html with two
SVG charts, report.json, per_till.csv and per_cashier.csv; or the JSON alone (`--json`).

It owns the command: its options, where files go, what it prints. The figures are
`edge_app.manager.figures`; the formats are render_md, render_html and render_data."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from pathlib import Path

from edge_app.config import Config
from edge_app.manager.charts import CHARTS, draw_all
from edge_app.manager.document import document, title
from edge_app.manager.figures import Summary, headline_text, secs, summarize
from edge_app.manager.render_data import PER_CASHIER_CSV, PER_TILL_CSV, to_json, write_csv
from edge_app.manager.render_html import render_html
from edge_app.manager.render_md import render_markdown
from edge_app.manager.scope import ReportInputError, Scope, parse_period, parse_time_of_day, report_timezone
from edge_app.manager.store_reader import open_db

DEFAULT_OUT = "agecheck-report"
STDOUT = "-"
# What write_folder writes (docs/manager.md names the same files).
FILES = (
    "report.md",
    "report.html",
    "report.json",
    "per_till.csv",
    "per_cashier.csv",
    *(name for name, _ in CHARTS.values()),
)


def collect(
    db_path: str,
    since: str | None,
    until: str | None,
    cfg: Config,
    store: str | None = None,
    *,
    scope: Scope | None = None,
) -> tuple[Summary, str, tzinfo | None, str]:
    """The summary of the period (and the database's label, the timezone and its name)."""
    scope = scope or Scope(store=store)
    tz, tz_name = report_timezone(cfg)
    today = datetime.now(tz).date() if tz else datetime.now().date()
    period = parse_period(since, until, today)
    con = open_db(db_path)
    try:
        summary = summarize(con, period, tz, scope=scope)
        label = con.target.label
    finally:
        con.close()
    if scope.store and not summary.store_ids:
        summary.store_ids.append(scope.store)
    return summary, label, tz, tz_name


def _out_folder(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportInputError(f"--out: {str(out)!r} is a file; give a folder for report.md and the charts")
    return out


def write_folder(summary: Summary, label: str, tz: tzinfo | None, tz_name: str, out_dir: str | Path) -> Path:
    """report.md, report.html, report.json, per_till.csv, per_cashier.csv and the charts in out_dir;
    the path of report.md."""
    out = _out_folder(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportInputError(f"--out: cannot create {str(out)!r} ({exc.strerror})") from None
    charts = draw_all(summary)
    files = {key: name for key, (name, _) in CHARTS.items()}
    for key, svg in charts.items():
        (out / files[key]).write_text(svg, encoding="utf-8")
    blocks = document(summary, label, tz_name, tz)
    report = out / "report.md"
    report.write_text(render_markdown(blocks, files), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks, title(summary), charts), encoding="utf-8")
    data = to_json(summary, tz)
    (out / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    write_csv(data["per_till"], PER_TILL_CSV, out / "per_till.csv")
    write_csv(data["per_cashier"], PER_CASHIER_CSV, out / "per_cashier.csv")
    return report


def build(
    db_path: str,
    out_dir: str | Path,
    since: str | None,
    until: str | None,
    cfg: Config,
    store: str | None = None,
    *,
    scope: Scope | None = None,
) -> tuple[Path, Summary]:
    """The report's files in out_dir (write_folder), and the figures."""
    _out_folder(out_dir)  # refused before the database is read
    summary, label, tz, tz_name = collect(db_path, since, until, cfg, store, scope=scope)
    return write_folder(summary, label, tz, tz_name, out_dir), summary


def scope_of(args) -> Scope:
    """The command's filters: --store, --till, --cashier, --from-time/--to-time."""
    return Scope(
        store=args.store or None,
        till=args.till or None,
        cashier=args.cashier or None,
        hours=parse_time_of_day(args.from_time, args.to_time),
    )


def main(args, cfg: Config) -> int:
    db = args.db or cfg.feed.db_path
    json_to = args.json
    scope = scope_of(args)
    if json_to is None:
        report, s = build(db, args.out or DEFAULT_OUT, args.since, args.until, cfg, scope=scope)
        t = s.totals()
        print(
            f"agecheck report: {report} and {report.with_suffix('.html').name} ({s.period.since} to "
            f"{s.period.until}): {headline_text(t)}; {t.checks} checks, median answer {secs(t.median_decision_s)}, "
            f"{t.integrity} integrity events, {sum(g.missing for g in s.gaps)} events missing"
        )
        return 0
    # --json writes only where it is told: stdout ("-", the default) or the file named; the
    # folder of report.md and charts only when --out asks for it as well.
    s, label, tz, tz_name = collect(db, args.since, args.until, cfg, scope=scope)
    text = json.dumps(to_json(s, tz), indent=2, ensure_ascii=False)
    written = [str(write_folder(s, label, tz, tz_name, args.out).parent)] if args.out else []
    if json_to == STDOUT:
        print(text)
        return 0
    target = Path(json_to)
    try:
        target.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise ReportInputError(f"--json: cannot write {json_to!r} ({exc.strerror})") from None
    print(
        f"agecheck report: {', '.join([str(target), *written])} ({s.period.since} to {s.period.until}): "
        f"{headline_text(s.totals())}"
    )
    return 0
