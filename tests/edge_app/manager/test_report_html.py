"""The report's charts (SVG) and its self-contained HTML file, on the day of test_report.py whose
figures were worked out by hand: the bars stand for those figures, the HTML page carries the
headline, the per-cashier table and both charts inline, names nothing outside itself, and a
real headless Chromium opening it from disk fetches nothing and draws the charts."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edge_app.config import from_dict
from edge_app.devtools.browser import BrowserMissing, headless_chromium
from edge_app.manager.report import FILES, build
from tests.edge_app.feed_util import Proc, write_config
from tests.edge_app.manager.test_report import DAY, store_day

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report_html")
    store_day(tmp / "feed.sqlite3")
    path, _ = build(str(tmp / "feed.sqlite3"), tmp / "out", DAY, DAY, from_dict({"feed": {"timezone": "UTC"}}))
    return path.parent


def bars(svg: ET.Element) -> dict[str, float]:
    """data-value "label: n" -> the bar's drawn length (height or width)."""
    return {
        r.get("data-value"): (float(r.get("height")), float(r.get("width")))
        for r in svg.iter(f"{SVG}rect")
        if r.get("data-value")
    }


def test_the_folder_holds_what_the_docs_name(out):
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    manager_md = (Path(__file__).resolve().parents[3] / "docs" / "manager.md").read_text(encoding="utf-8")
    for name in FILES:
        assert f"`{name}`" in manager_md, name
    assert ".png" not in manager_md.split("## The report")[1].split("\n## ")[0]
    for name in ("per_till.csv", "per_cashier.csv"):  # the columns, as the docs list them
        header = (out / name).read_text(encoding="utf-8").splitlines()[0]
        assert f"| `{name}` | `{header.replace(',', ', ')}` |" in manager_md, header


def test_the_age_band_bars_stand_for_the_counts(out):
    svg = ET.parse(out / "age_bands.svg").getroot()
    drawn = bars(svg)
    expected = {"0-12": 0, "13-17": 1, "18-24": 3, "25-34": 3, "35-49": 4, "50-64": 2, "65+": 1}
    assert set(drawn) == {f"{b}: {n}" for b, n in expected.items()}
    per_shopper = {drawn[f"{b}: {n}"][0] / n for b, n in expected.items() if n}
    assert max(per_shopper) - min(per_shopper) < 0.01  # heights in proportion
    assert drawn["0-12: 0"][0] == 0
    fills = {r.get("data-value").split(":")[0]: r.get("fill") for r in svg.iter(f"{SVG}rect") if r.get("data-value")}
    assert fills["13-17"] == fills["0-12"] != fills["18-24"] == fills["65+"]  # under 18 apart


def test_the_id_check_bars_stand_for_each_tills_alerts(out):
    drawn = {k: w for k, (_, w) in bars(ET.parse(out / "id_checks_per_till.svg").getroot()).items()}
    # till-01: 4 alerts, 2 ID checked, 1 answered "no ID check", 1 not answered; till-02: 1, ID checked.
    assert drawn["till-01 ID checked: 2"] == pytest.approx(2 * drawn["till-02 ID checked: 1"])
    assert drawn["till-01 answered: no ID check: 1"] == pytest.approx(drawn["till-01 not answered: 1"])
    assert drawn["till-01 not answered: 1"] == pytest.approx(drawn["till-02 ID checked: 1"])
    assert drawn["till-02 ID checked: 1"] > 0
    assert drawn["till-02 not answered: 0"] == 0


class Page(HTMLParser):
    """Every tag with its attributes, the text of each table by id, and the text of <p>s."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.paragraphs: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._p: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table":
            self._table = a.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._p = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._p is not None:
            self.paragraphs.append("".join(self._p))
            self._p = None

    def handle_data(self, data):
        for buf in (self._cell, self._p):
            if buf is not None:
                buf.append(data)


def test_the_html_report_is_one_self_contained_file(out):
    text = (out / "report.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    tags = [t for t, _ in page.tags]
    # Nothing outside the file: no scripts, style sheets, images, frames or links to fetch.
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(tags)
    assert all(not ({"src", "href", "xlink:href", "srcset"} & a.keys()) for _, a in page.tags)
    assert not re.search(r"url\(|@import|https?:|//[a-z]", text, re.I)
    assert (
        "ID was checked on 60% of alerts (3 of 5). 20% were not answered (1) and 20% were answered "
        "“no ID check” (1)." in page.paragraphs
    )
    cashiers = {r[1]: r[2:] for r in page.tables["per-cashier"][1:]}
    assert cashiers["C-1"] == ["2", "2", "100%", "0", "0", "3.0 s", "0"]
    assert cashiers["C-2"] == ["2", "1", "0%", "1", "1", "6.0 s", "2"]
    assert page.tables["per-till-store-001"][1][:2] == ["till-01", "11"]
    # Both charts inline, the same drawing as the files beside report.md.
    assert tags.count("svg") == 2
    for name in ("age_bands.svg", "id_checks_per_till.svg"):
        body = (out / name).read_text(encoding="utf-8").split(">", 1)[1]  # after the <svg ...> tag
        assert body.strip() in text


def test_the_report_command_narrows_like_the_dashboard(tmp_path):
    """--till, --cashier and --from-time/--to-time change the figures; a bad time names the option."""
    import json

    db = tmp_path / "feed.sqlite3"
    store_day(db)
    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"})
    base = ["report", "--config", str(cfg), "--db", str(db), "--since", DAY, "--until", DAY]

    def figures(*extra: str) -> dict:
        p = Proc([*base, "--json", *extra])
        assert p.p.wait(timeout=60) == 0, p.output
        p.stop()
        return json.loads(p.output)

    assert figures()["totals"]["checks"] == 16
    two = figures("--till", "till-02")
    assert (two["totals"]["checks"], two["filters"]["till"]) == (5, "till-02")
    c2 = figures("--cashier", "C-2")
    assert (c2["totals"]["alerts"], [c["cashier"] for c in c2["per_cashier"]]) == (2, ["C-2"])
    late = figures("--from-time", "23:00", "--to-time", "10:15")  # over midnight
    assert late["totals"]["checks"] == 6 and late["filters"]["time_from"] == "23:00"
    folder = Proc([*base, "--till", "till-02", "--out", str(tmp_path / "t2")])
    assert folder.p.wait(timeout=60) == 0, folder.output
    folder.stop()
    assert "**Only till till-02**" in (tmp_path / "t2" / "report.md").read_text(encoding="utf-8")
    bad = Proc([*base, "--from-time", "25:00"])
    assert bad.p.wait(timeout=60) == 2
    bad.stop()
    assert "--from-time: '25:00' is not a time of day; use HH:MM" in bad.output


def test_chromium_opens_the_file_fetches_nothing_and_draws_the_charts(out):
    try:
        driver = headless_chromium(800, 1200)
    except BrowserMissing as exc:
        pytest.skip(str(exc))
    try:
        driver.get((out / "report.html").as_uri())
        assert driver.title == f"Age-check report: {DAY}"
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        sizes = driver.execute_script(
            "return [...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().width)"
        )
        assert len(sizes) == 2 and all(w > 300 for w in sizes)
        # At 800 px (a tablet) the page does not run off the side: wide tables scroll in their box.
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 800
    finally:
        driver.quit()
