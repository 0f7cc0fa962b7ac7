"""The dashboard as a manager uses it: the real `agecheck dashboard` process (Flask on waitress) over
a feed database of two stores, opened in Debian's Chromium, headless, driven by Selenium. The
page loads with its figures and drawn charts, the filters change what it shows, the exports
download, and a screenshot of the "needs attention" list shows it on screen."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from edge_app.config import from_dict
from edge_app.core import events
from edge_app.core.words import Answer
from edge_app.devtools.browser import BrowserMissing, headless_chromium
from edge_app.manager.chart_data import bucket_size
from edge_app.manager.dashboard import create_app, hash_password
from edge_app.manager.scope import Period
from edge_app.manager.store import FeedStore
from tests.edge_app.feed_util import (
    Proc,
    ack_event,
    alert_event,
    check_event,
    event_topic,
    numbered,
    store_events,
    write_config,
)
from tests.helpers import wait_until

DAY = "2025-03-14"


def at(hms: str, day: str = DAY) -> str:
    return f"{day}T{hms}.000Z"


def integrity(alert: dict, reason: str, ts: str, secs: float = 30.0) -> dict:
    return events.IntegrityEvent(
        store_id=alert["store_id"],
        till_id=alert["till_id"],
        ts=ts,
        transaction_id=alert["transaction_id"],
        alert_event_id=alert["event_id"],
        seconds_after_alert=secs,
        reason=reason,
    ).to_dict()


def two_stores(db: Path) -> None:
    """store-042 till-01 (cashier C-7): 3 alerts, one answered "no ID check" and sold, one never
    answered and sold, one ID checked; its events 5-16 never arrived (a gap). store-042 till-02:
    2 clean checks. store-043 till-01 (same till name, another store): 1 alert, ID checked."""
    a_evs: list[dict] = []
    for i, (hms, answer) in enumerate(
        [("14:02:00", "no_id_check"), ("14:20:00", None), ("15:00:00", "id_checked_over_age")]
    ):
        c = check_event(store="store-042", till="till-01", txn=f"T-42-{i}", age=19.0, ts=at(hms), operator_id="C-7")
        a = alert_event(c, ts=at(hms))
        a["operator_id"] = "C-7"
        a_evs += [c, a]
        if answer:
            a_evs.append(ack_event(a, answer, 3.0, ts=at(hms[:6] + "04")))
        if answer != "id_checked_over_age":
            a_evs.append(integrity(a, "answered_no_id_check" if answer else "unanswered", at(hms[:6] + "40")))
    a_evs.sort(key=lambda e: e["ts"])
    a_evs = numbered(a_evs, "till-01", skip=set(range(5, 17)))
    b_evs = numbered(
        [
            check_event(
                store="store-042", till="till-02", txn=f"T-B-{i}", decision="approve", age=40.0, ts=at(f"11:0{i}:00")
            )
            for i in range(2)
        ],
        "till-02",
    )
    c = check_event(store="store-043", till="till-01", txn="T-43-1", age=22.0, ts=at("16:00:00"))
    a = alert_event(c, ts=at("16:00:00"))
    c_evs = numbered([c, a, ack_event(a, "id_checked_over_age", 2.0, ts=at("16:00:05"))], "till-01")
    store_events(db, a_evs + b_evs + c_evs)


@pytest.fixture(scope="module")
def feed_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("dash") / "feed.sqlite3"
    two_stores(db)
    return db


def test_chart_buckets_stay_readable_for_a_year():
    import datetime as dt

    d = dt.date(2025, 1, 1)
    assert bucket_size(Period(d, d)) == "day"
    assert bucket_size(Period(d, d + dt.timedelta(days=6))) == "day"
    assert bucket_size(Period(d, d + dt.timedelta(days=90))) == "week"
    assert bucket_size(Period(d, d + dt.timedelta(days=364))) == "month"


def test_pages_and_exports_without_a_browser(feed_db):
    cfg = from_dict({"feed": {"timezone": "UTC"}})
    client = create_app(str(feed_db), cfg).test_client()
    r = client.get(f"/summary.json?since={DAY}&until={DAY}")
    data = json.loads(r.data)
    per = {(t["store_id"], t["till_id"]): t for t in data["per_till"]}
    # till-01 of two stores stays two rows.
    assert per[("store-042", "till-01")]["alerts"] == 3 and per[("store-043", "till-01")]["alerts"] == 1
    assert per[("store-042", "till-01")]["share_alerts_id_checked"] == pytest.approx(1 / 3)
    assert per[("store-042", "till-01")]["integrity"] == 2
    att = data["needs_attention"]
    assert [(g["store_id"], g["till_id"], g["operator_id"], g["sales"]) for g in att] == [
        ("store-042", "till-01", "C-7", 2)
    ]
    # Each integrity entry names the cashier logged in when its alert was shown (the till's
    # integrity event itself does not carry one).
    assert [(e["operator_id"], e["kind"]) for e in data["integrity_events"]] == [("C-7", "integrity")] * 2
    moments = att[0]["moments"]
    assert moments[0]["alert_shown"] == "2025-03-14 14:02:00" and moments[0]["sale_completed"] == "2025-03-14 14:02:30"
    assert [g["missing"] for g in data["missing_events"]] == [12]
    assert data["missing_events"][0]["text"].startswith("till-01: 12 events missing on 2025-03-14 between 14:0")
    assert data["charts"]["bucket"] == "day" and data["charts"]["per_till"]["labels"] == [
        "store-042/till-01",
        "store-042/till-02",
        "store-043/till-01",
    ]
    only = json.loads(client.get(f"/summary.json?since={DAY}&until={DAY}&store=store-043").data)
    assert [t["store_id"] for t in only["per_till"]] == ["store-043"] and only["needs_attention"] == []
    bad = client.get("/?since=2025-02-30")
    assert bad.status_code == 400 and b"since: '2025-02-30' is not a date" in bad.data
    assert b"--since" not in bad.data  # the URL's parameter, not the report's flag
    assert client.get("/static/chart.umd.min.js").status_code == 200


def test_the_dashboard_honours_the_cashiers_undo(tmp_path):
    """An "ID checked" taken back with Undo is not an ID check: the alert counts as unanswered,
    the answer is counted as undone, and the event list says which answer the Undo took back."""
    c = check_event(store="store-042", till="till-01", txn="T-U", age=19.0, ts=at("10:00:00"))
    a = alert_event(c, ts=at("10:00:00"))
    wrong = ack_event(a, "id_checked_over_age", 0.4, ts=at("10:00:01"))
    undo = ack_event(a, Answer.UNDONE, 2.0, ts=at("10:00:03"), replaces_event_id=wrong["event_id"])
    store_events(tmp_path / "feed.sqlite3", [c, a, wrong, undo])
    client = create_app(str(tmp_path / "feed.sqlite3"), from_dict({"feed": {"timezone": "UTC"}})).test_client()
    t = json.loads(client.get(f"/summary.json?since={DAY}&until={DAY}").data)["totals"]
    assert (t["alerts"], t["alerts_answered"], t["alerts_id_checked"]) == (1, 0, 0)
    assert (t["answers_id_checked_over_age"], t["answers_undone"]) == (0, 1)
    rows = json.loads(client.get(f"/events.json?since={DAY}&until={DAY}&kind=ack").data)["events"]
    assert [r["outcome"] for r in rows] == ["UNDONE: ID ok, over age", "ID ok, over age (0.4s)"]
    per_till = list(csv.DictReader(io.StringIO(client.get(f"/per_till.csv?since={DAY}&until={DAY}").data.decode())))
    assert per_till[0]["answers_undone"] == "1"


def test_a_password_is_asked_for_when_configured(feed_db):
    cfg = from_dict({"feed": {"timezone": "UTC"}})
    client = create_app(str(feed_db), cfg, hash_password("correct horse")).test_client()
    assert client.get("/").status_code == 401
    import base64

    wrong = base64.b64encode(b"manager:nope").decode()
    good = base64.b64encode(b"manager:correct horse").decode()
    assert client.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert client.get(f"/?since={DAY}&until={DAY}", headers={"Authorization": f"Basic {good}"}).status_code == 200


def test_other_computers_need_a_password(tmp_path, feed_db):
    cfg = write_config(tmp_path / "config.yaml", 1883)
    p = Proc(["dashboard", "--config", str(cfg), "--db", str(feed_db), "--host", "0.0.0.0", "--port", "0"])
    assert p.p.wait(timeout=60) == 2
    p.stop()
    assert "set dashboard.password_hash" in p.output


# -- in a real browser ---------------------------------------------------------------------------
def _browser(download_dir: Path):
    try:
        return headless_chromium(1400, 2200, download_dir)
    except BrowserMissing as exc:
        pytest.skip(f"{exc}; the dashboard is tested in a real headless browser")


def _wait(pred, timeout: float = 20.0, what: str = "condition"):
    # A browser is slower than the other parts: a longer default and a coarser step.
    return wait_until(pred, timeout, what, step=0.1)


def _downloaded(folder: Path, suffix: str) -> list[Path]:
    """Finished downloads only: Chromium can show the file under its name before it has written
    it (seen on a loaded machine as an empty JSON file), so wait until nothing is in progress and
    the file has content."""
    if any(folder.glob("*.crdownload")):
        return []
    return [p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0]


def test_dashboard_in_a_headless_browser(tmp_path, feed_db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"})
    dash = Proc(["dashboard", "--config", str(cfg), "--db", str(feed_db), "--port", "0"])
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = None
    try:
        line = dash.lines[dash.wait_line("agecheck dashboard: http://", timeout=60)]
        assert "only this computer can open it" in line and "read-only" in line
        url = re.search(r"http://\S+/", line).group(0)
        driver = _browser(downloads)
        driver.get(f"{url}?since={DAY}&until={DAY}")
        _wait(
            lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn",
            what="the charts to be drawn",
        )

        # Needs attention comes first, with the cashier and the CCTV times.
        sections = [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "section, h2 + div, table")]
        assert sections[0] == "needs-attention"
        rows = driver.find_elements(By.CSS_SELECTOR, "#needs-attention tr.attention-row")
        assert len(rows) == 1
        text = rows[0].text
        assert "store-042" in text and "till-01" in text and "C-7" in text
        assert "2025-03-14 14:02:00 → 14:02:30" in text and "2025-03-14 14:20:00 → 14:20:30" in text
        assert "till-01: 12 events missing" in driver.find_element(By.ID, "missing-events").text

        # Per store and till: two till-01 rows, one per store.
        per_till = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#per-till tr")][1:-1]
        assert [r.split()[:2] for r in per_till] == [
            ["store-042", "till-01"],
            ["store-042", "till-02"],
            ["store-043", "till-01"],
        ]
        assert per_till[0].split()[2:5] == ["3", "3", "33%"]

        # The charts are drawn by Chart.js (served from the package) with the page's figures.
        drawn = driver.execute_script(
            "return ['chart-over-time','chart-per-till','chart-bands'].map(function(id){"
            " var c = Chart.getChart(document.getElementById(id));"
            " return c ? c.data.datasets.map(function(d){return d.data.reduce(function(a,b){return a+b;},0);}) : null;});"
        )
        assert drawn[0] == [2, 1, 1] and drawn[1] == [2, 1, 1]  # ID checked, no ID check, not answered
        canvas = driver.find_element(By.ID, "chart-per-till")
        img = Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")
        assert (46, 139, 87) in {c for _, c in img.getcolors(1 << 20)}  # the green "ID checked" bars

        # A screenshot of the needs-attention list: on screen, red-framed, with text in it.
        shot = driver.find_element(By.ID, "needs-attention").screenshot_as_png
        att = Image.open(io.BytesIO(shot)).convert("RGB")
        assert att.size[0] > 600 and att.size[1] > 80
        assert len(att.getcolors(1 << 20)) > 20
        driver.save_screenshot(str(tmp_path / "dashboard.png"))

        # Filters: one store; then only integrity events of its till-01.
        Select(driver.find_element(By.ID, "store")).select_by_value("store-043")
        driver.find_element(By.ID, "apply").click()
        _wait(lambda: "store-043" in driver.current_url, what="the store filter")
        assert driver.find_element(By.ID, "nothing-needs-attention").is_displayed()
        assert {r.text.split()[2] for r in driver.find_elements(By.CSS_SELECTOR, "tr.event-row")} == {"store-043"}
        Select(driver.find_element(By.ID, "store")).select_by_value("store-042")
        driver.find_element(By.ID, "apply").click()
        _wait(lambda: "store-042" in driver.current_url, what="the second store")
        Select(driver.find_element(By.ID, "till")).select_by_value("till-01")
        Select(driver.find_element(By.ID, "kind")).select_by_value("integrity")
        driver.find_element(By.ID, "apply").click()
        _wait(lambda: "kind=integrity" in driver.current_url, what="the kind filter")
        shown = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.event-row")]
        assert len(shown) == 2 and all("integrity" in r for r in shown)
        assert any("cashier answered no ID check" in r for r in shown) and any("alert not answered" in r for r in shown)

        # Export what is shown: the browser downloads it.
        driver.find_element(By.ID, "export-csv").click()
        csv_file = _wait(lambda: _downloaded(downloads, ".csv"), what="the CSV download")[0]
        got = list(csv.DictReader(io.StringIO(csv_file.read_text())))
        assert (
            len(got) == 2
            and {r["kind"] for r in got} == {"integrity"}
            and {r["store_id"] for r in got} == {"store-042"}
        )
        assert {r["reason"] for r in got} == {"cashier answered no ID check", "alert not answered"}
        driver.find_element(By.ID, "export-json").click()
        json_file = _wait(lambda: _downloaded(downloads, ".json"), what="the JSON download")[0]
        body = json.loads(json_file.read_text())
        assert body["filters"]["kind"] == "integrity" and len(body["events"]) == 2
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()


# -- filters, cashiers, live updates, words, 800 px --------------------------------------------------
NEXT_DAY = "2025-03-15"


def with_cashier_c9(db: Path) -> None:
    """two_stores plus store-042 till-02's cashier C-9: at 18:30 an alert (P(over 25) 0.153)
    answered "under age / refused", at 19:00 one answered "no ID check" and sold; and on the next
    day an alert left unanswered."""
    two_stores(db)
    evs = []
    for hms, answer, p_over, age in [
        ("18:30:00", "id_checked_under_age_refused", 0.153, 17.0),
        ("19:00:00", "no_id_check", 0.4, 20.0),
    ]:
        c = check_event(
            store="store-042",
            till="till-02",
            txn=f"T-C9-{hms[:2]}",
            age=age,
            ts=at(hms),
            operator_id="C-9",
            p_over=p_over,
        )
        a = alert_event(c, ts=at(hms))
        a["operator_id"] = "C-9"
        evs += [c, a, ack_event(a, answer, 5.0 if p_over < 0.2 else 2.0, ts=at(hms[:6] + "05"))]
        if answer == "no_id_check":
            evs.append(integrity(a, "answered_no_id_check", at(hms[:6] + "40")))
    c = check_event(
        store="store-042", till="till-02", txn="T-C9-next", age=21.0, ts=at("10:00:00", NEXT_DAY), operator_id="C-9"
    )
    a = alert_event(c, ts=at("10:00:00", NEXT_DAY))
    a["operator_id"] = "C-9"
    evs += [c, a]
    store_events(db, evs)


@pytest.fixture(scope="module")
def filter_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("filters") / "feed.sqlite3"
    with_cashier_c9(db)
    return db


def test_bad_filter_values_get_a_message(filter_db):
    client = create_app(str(filter_db), from_dict({"feed": {"timezone": "UTC"}})).test_client()
    for query, message in [
        ("time_from=25:00", "time_from: '25:00' is not a time of day; use HH:MM"),
        ("time_from=10:00&time_to=10:00", "time_from and time_to are both 10:00"),
        ("cashier=C-99", "cashier: 'C-99' has no events; known: C-7, C-9"),
        ("store=store-043&cashier=C-7", "cashier: 'C-7' has no events in store-043; known: none yet"),
        ("store=store-9", "store: 'store-9' has no events; known: store-042, store-043"),
        ("till=till-7", "till: 'till-7' has no events; known: till-01, till-02"),
        ("kind=alarm", "kind: 'alarm' is not one of check, alert, ack, integrity, missed"),
    ]:
        for path in ("/", "/summary.json", "/events.csv", "/per_cashier.csv"):
            r = client.get(f"{path}?since={DAY}&until={DAY}&{query}")
            assert r.status_code == 400 and r.mimetype == "text/plain", (path, query)
            assert message in r.data.decode(), (path, query, r.data)
            assert "Traceback" not in r.data.decode()
    # The calendar's ends: refused in words, not a 500 (the figures read a day either side).
    for query, message in [
        ("since=9999-12-31", "since: '9999-12-31' is out of range"),
        ("since=0001-01-01&until=2025-01-01", "since: '0001-01-01' is out of range"),
        ("until=0001-01-02", "until: '0001-01-02' is out of range"),
    ]:
        for path in ("/", "/summary.json", "/events.csv", "/events.json", "/per_till.csv", "/per_cashier.csv"):
            r = client.get(f"{path}?{query}")
            assert r.status_code == 400 and message in r.data.decode(), (path, query, r.status_code, r.data[:200])


def test_reasons_in_words_and_answers_carry_their_cashier(filter_db):
    client = create_app(str(filter_db), from_dict({"feed": {"timezone": "UTC"}})).test_client()
    rows = json.loads(client.get(f"/events.json?since={DAY}&until={DAY}&cashier=C-9").data)["events"]
    by = {(r["kind"], r["time"][11:]): r for r in rows}
    # The check and its alert say why in words (the check's P(age >= 25) was 0.153).
    assert by[("check", "18:30:00")]["reason"] == "looked under 25: 15% sure over 25"
    assert by[("alert", "18:30:00")]["reason"] == "looked under 25: 15% sure over 25"
    # Without a probability (the margin rule), the estimate.
    assert (
        json.loads(client.get(f"/events.json?since={DAY}&until={DAY}&store=store-043&kind=check").data)["events"][0][
            "reason"
        ]
        == "looked under 25: estimated 22"
    )
    # Answers (the window sends no cashier) carry the cashier their alert was shown to.
    assert by[("ack", "18:30:05")]["operator_id"] == "C-9" and by[("integrity", "19:00:40")]["operator_id"] == "C-9"
    c7 = json.loads(client.get(f"/events.json?since={DAY}&until={DAY}&cashier=C-7&kind=ack").data)["events"]
    assert len(c7) == 2 and {r["operator_id"] for r in c7} == {"C-7"}


def test_the_title_names_the_one_store(tmp_path):
    db = tmp_path / "feed.sqlite3"
    st = FeedStore(db)
    c = check_event(store="store-001", ts=at("10:00:00"))
    st.add(event_topic(c), events.encode(c))
    st.close()
    client = create_app(str(db), from_dict({"feed": {"timezone": "UTC"}})).test_client()
    page = client.get(f"/?since={DAY}&until={DAY}").data.decode()
    assert '<h1 id="title">Age checks: store-001</h1>' in page and "all stores</h1>" not in page


def _page_figures(driver) -> dict:
    """Every figure the page shows, as the browser shows it: the headline, the tables, the charts'
    data, the needs-attention rows, the event list and where the exports point."""
    from selenium.webdriver.common.by import By

    def rows(css):
        return [
            [c.text for c in r.find_elements(By.CSS_SELECTOR, "td, th")]
            for r in driver.find_elements(By.CSS_SELECTOR, css)
        ]

    charts = driver.execute_script(
        "return ['chart-over-time','chart-per-till','chart-bands'].map(function(id){"
        " var c = Chart.getChart(document.getElementById(id));"
        " return c.data.datasets.map(function(d){return d.data.reduce(function(a,b){return a+(b||0);},0);});});"
    )
    return {
        "headline": driver.find_element(By.ID, "headline").text,
        "per_till": [(r[0], r[1], r[3]) for r in rows("#per-till tr")[1:-1]],  # store, till, alerts
        "per_cashier": [(r[1], r[2], r[4]) for r in rows("#per-cashier tr.cashier-row")],  # cashier, alerts, ID checked
        "attention": [(r[2], r[3]) for r in rows("#needs-attention tr.attention-row")],  # cashier, sales
        "over_time": charts[0],
        "per_till_chart": charts[1],
        "bands": sum(charts[2]),
        "events": sorted({(r[1], r[2], r[3]) for r in rows("tr.event-row")}),  # store, till, kind
        "n_events": len(rows("tr.event-row")),
        "exports": {
            e.get_attribute("id"): e.get_attribute("href") for e in driver.find_elements(By.CSS_SELECTOR, ".exports a")
        },
    }


def _fetch(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def _dashboard(tmp_path: Path, db: Path, refresh: float = 10.0) -> tuple[Proc, str]:
    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"}, dashboard={"refresh_seconds": refresh})
    dash = Proc(["dashboard", "--config", str(cfg), "--db", str(db), "--port", "0"])
    line = dash.lines[dash.wait_line("agecheck dashboard: http://", timeout=60)]
    return dash, re.search(r"http://\S+/", line).group(0)


def _drawn(driver):
    from selenium.webdriver.common.by import By

    _wait(
        lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn",
        what="the charts to be drawn",
    )


def _filter(driver, url: str, **form: str) -> None:
    """Open the day's page, fill the form as a manager does, press Show, wait for the new page
    drawn, and check the filters are kept in its URL (shareable)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"{url}?since={DAY}&until={DAY}")
    _drawn(driver)
    for name, value in form.items():
        el = driver.find_element(By.NAME, name)
        if el.tag_name == "select":
            Select(el).select_by_value(value)
        else:  # date and time inputs: typed values depend on the locale, so set them
            driver.execute_script("arguments[0].value = arguments[1];", el, value)
    old = driver.find_element(By.ID, "live")
    driver.find_element(By.ID, "apply").click()
    _wait(lambda: _stale(old), what="the new page")
    _drawn(driver)
    for name, value in form.items():
        assert f"{name}={value.replace(':', '%3A')}" in driver.current_url, (name, driver.current_url)


def test_every_filter_changes_every_figure_in_a_browser(tmp_path, filter_db):
    """Each filter, chosen in the page's form, narrows the headline, both tables, the three charts,
    needs attention, the event list and every export, and stays in the URL."""
    from selenium.webdriver.common.by import By

    dash, url = _dashboard(tmp_path, filter_db)
    driver = None
    try:
        driver = _browser(tmp_path)
        driver.get(f"{url}?since={DAY}&until={DAY}")
        _drawn(driver)
        base = _page_figures(driver)
        assert base["headline"].startswith(
            "ID checked on 50% of alerts (3 of 6), 17% not answered (1), 33% answered “no ID check” (2)"
        )
        assert base["per_till"] == [
            ("store-042", "till-01", "3"),
            ("store-042", "till-02", "2"),
            ("store-043", "till-01", "1"),
        ]
        assert base["per_cashier"] == [("C-7", "3", "33%"), ("C-9", "2", "50%"), ("not sent by the POS", "1", "100%")]
        assert base["attention"] == [("C-7", "2"), ("C-9", "1")]
        assert base["over_time"] == base["per_till_chart"] == [3, 2, 1] and base["bands"] == 8

        def choose(**form):
            _filter(driver, url, **form)
            return _page_figures(driver)

        expected = {
            (("store", "store-043"),): dict(
                headline="ID checked on 100% of alerts (1 of 1)",
                per_till=[("store-043", "till-01", "1")],
                per_cashier=[("not sent by the POS", "1", "100%")],
                attention=[],
                over_time=[1, 0, 0],
                bands=1,
                events=[("store-043", "till-01", k) for k in ("ack", "alert", "check")],
            ),
            (("till", "till-02"),): dict(
                headline="ID checked on 50% of alerts (1 of 2)",
                per_till=[("store-042", "till-02", "2")],
                per_cashier=[("C-9", "2", "50%")],
                attention=[("C-9", "1")],
                over_time=[1, 1, 0],
                bands=4,
                events=[("store-042", "till-02", k) for k in ("ack", "alert", "check", "integrity")],
            ),
            (("cashier", "C-7"),): dict(
                headline="ID checked on 33% of alerts (1 of 3)",
                per_till=[("store-042", "till-01", "3")],
                per_cashier=[("C-7", "3", "33%")],
                attention=[("C-7", "2")],
                over_time=[1, 1, 1],
                bands=3,
                events=[("store-042", "till-01", k) for k in ("ack", "alert", "check", "integrity")],
            ),
            (("kind", "alert"),): dict(
                headline=base["headline"].split(".")[0],
                per_till=base["per_till"],
                per_cashier=base["per_cashier"],
                attention=[],
                over_time=[3, 2, 1],
                bands=0,
                events=[(st, t, "alert") for st, t, _ in base["per_till"]],
            ),
            (("since", NEXT_DAY), ("until", NEXT_DAY)): dict(
                headline="ID checked on 0% of alerts (0 of 1), 100% not answered (1)",
                per_till=[("store-042", "till-02", "1")],
                per_cashier=[("C-9", "1", "0%")],
                attention=[],
                over_time=[0, 0, 1],
                bands=1,
                events=[("store-042", "till-02", k) for k in ("alert", "check")],
            ),
            (("time_from", "14:00"), ("time_to", "16:30")): dict(
                headline="ID checked on 50% of alerts (2 of 4)",
                per_till=[("store-042", "till-01", "3"), ("store-043", "till-01", "1")],
                per_cashier=[("C-7", "3", "33%"), ("not sent by the POS", "1", "100%")],
                attention=[("C-7", "2")],
                over_time=[2, 1, 1],
                bands=4,
                events=[(st, "till-01", k) for st in ("store-042", "store-043") for k in ("ack", "alert", "check")]
                + [("store-042", "till-01", "integrity")],
            ),
        }
        for form, want in expected.items():
            got = choose(**dict(form))
            for key, value in want.items():
                if key == "headline":
                    assert got["headline"].startswith(value), (form, got["headline"])
                elif key == "events":
                    assert got["events"] == sorted(value), (form, got["events"])
                else:
                    assert got[key] == value, (form, key, got[key])
            assert got["per_till_chart"] == got["over_time"], form
            # Every download follows the same filters.
            ex = got["exports"]
            assert all(f"{k}={v.replace(':', '%3A')}" in href for k, v in form for href in ex.values()), ex
            summary = json.loads(_fetch(ex["export-summary"]))
            assert summary["headline"]["alerts"] == sum(got["over_time"])
            assert [(t["store_id"], t["till_id"], str(t["alerts"])) for t in summary["per_till"]] == got["per_till"]
            assert len(list(csv.DictReader(io.StringIO(_fetch(ex["export-csv"]).decode())))) == got["n_events"]
            assert len(json.loads(_fetch(ex["export-json"]))["events"]) == got["n_events"]
            cashiers = list(csv.DictReader(io.StringIO(_fetch(ex["export-per-cashier"]).decode())))
            assert [(c["cashier"], c["alerts"]) for c in cashiers] == [(c, n) for c, n, _ in got["per_cashier"]]
            per_till = list(csv.DictReader(io.StringIO(_fetch(ex["export-per-till"]).decode())))
            assert [(t["store_id"], t["till_id"], t["alerts"]) for t in per_till] == got["per_till"]
        # The URL alone brings the filtered page back (a bookmark, a link sent on).
        shared = driver.current_url
        driver.get("about:blank")
        driver.get(shared)
        _drawn(driver)
        assert _page_figures(driver)["per_till"] == expected[(("time_from", "14:00"), ("time_to", "16:30"))]["per_till"]
        assert driver.find_element(By.ID, "time_from").get_attribute("value") == "14:00"
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()


def _stale(el) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        el.is_displayed()
        return False
    except StaleElementReferenceException:
        return True


def test_the_page_updates_itself_keeping_filters_and_scroll(tmp_path):
    """Events stored while the page is open appear without a reload: the filters stay, the scroll
    position stays, and only the filtered store's new alert is counted."""
    from selenium.webdriver.common.by import By

    db = tmp_path / "feed.sqlite3"
    two_stores(db)
    dash, url = _dashboard(tmp_path, db, refresh=1)
    driver = None
    try:
        driver = _browser(tmp_path)
        driver.set_window_size(1000, 700)
        driver.get(f"{url}?since={DAY}&until={DAY}&store=store-042")
        _drawn(driver)
        before = _page_figures(driver)
        assert before["per_till"] == [("store-042", "till-01", "3"), ("store-042", "till-02", "0")]
        driver.execute_script("window.__notReloaded = 42; window.scrollTo(0, 600);")
        y = driver.execute_script("return window.scrollY;")
        assert y >= 500
        st = FeedStore(db)
        for store, txn in (("store-042", "T-LIVE-1"), ("store-043", "T-LIVE-2")):
            c = check_event(store=store, till="till-02", txn=txn, age=18.0, ts=at("17:00:00"), operator_id="C-8")
            a = alert_event(c, ts=at("17:00:00"))
            a["operator_id"] = "C-8"
            for ev in (c, a):
                assert st.add(event_topic(ev), events.encode(ev)).status == "new"
        st.close()

        def updated():
            # The page may poll between two of the four inserts and update twice: wait for the
            # state with all four, read when no swap is in the middle.
            from selenium.common.exceptions import WebDriverException

            try:
                got = _page_figures(driver)
            except WebDriverException:
                return None
            return got if got["over_time"] == [1, 1, 2] else None

        after = _wait(updated, timeout=30, what="the page to update itself")
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates") != "0"
        assert driver.execute_script("return window.__notReloaded;") == 42  # no reload
        assert abs(driver.execute_script("return window.scrollY;") - y) <= 2
        assert driver.current_url == f"{url}?since={DAY}&until={DAY}&store=store-042"
        assert driver.find_element(By.ID, "store").get_attribute("value") == "store-042"
        assert after["per_till"] == [("store-042", "till-01", "3"), ("store-042", "till-02", "1")]
        assert after["over_time"] == [1, 1, 2] and ("C-8", "1", "0%") in after["per_cashier"]
        assert after["headline"].startswith("ID checked on 25% of alerts (1 of 4)")
        assert {st for st, _, _ in after["events"]} == {"store-042"}  # the other store's event stays out
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()


def test_the_page_fits_800_px_and_the_legends_match_their_bars(tmp_path, filter_db):
    from selenium.webdriver.common.by import By

    dash, url = _dashboard(tmp_path, filter_db)
    driver = None
    try:
        driver = _browser(tmp_path)
        driver.set_window_size(800, 1000)
        driver.get(f"{url}?since={DAY}&until={DAY}")
        _drawn(driver)
        width = driver.execute_script("return document.documentElement.clientWidth;")
        assert width <= 800
        assert driver.execute_script("return document.documentElement.scrollWidth;") <= width
        for el in driver.find_elements(By.CSS_SELECTOR, "table, canvas, form.filters, section"):
            right = driver.execute_script("return arguments[0].getBoundingClientRect().right;", el)
            assert right <= width, (el.get_attribute("id") or el.tag_name, right, width)
        # Nothing hidden in a table's own scroll box either: every table fits as a whole.
        assert driver.execute_script(
            "return Array.from(document.querySelectorAll('.wide')).every(function(w){"
            " return w.scrollWidth <= w.clientWidth;});"
        )
        driver.save_screenshot(str(tmp_path / "dashboard-800.png"))

        # Every legend swatch is the colour of its bars.
        legends = driver.execute_script(
            "return ['chart-over-time','chart-per-till','chart-bands'].map(function(id){"
            " var c = Chart.getChart(document.getElementById(id));"
            " return c.legend.legendItems.map(function(it){"
            "  var d = c.data.datasets[it.datasetIndex];"
            "  return [it.text, it.fillStyle, d.backgroundColor];});});"
        )
        for chart in legends:
            for text, swatch, bars in chart:
                assert isinstance(bars, str) and swatch == bars, (text, swatch, bars)
        assert [t for t, _, _ in legends[2]] == ["under 18 (camera estimate)", "18 and over (camera estimate)"]
        bands = driver.find_element(By.ID, "chart-bands")
        colours = {c for _, c in Image.open(io.BytesIO(bands.screenshot_as_png)).convert("RGB").getcolors(1 << 20)}
        assert (192, 57, 43) in colours and (46, 109, 164) in colours  # the red and the blue bars are drawn

        # A laptop (1366 px) and a little wider: the two tables one under the other, each whole,
        # rather than side by side and both cut off in scroll boxes.
        for w in (1300, 1400):
            driver.set_window_size(w, 1000)
            driver.get(f"{url}?since={DAY}&until={DAY}")
            _drawn(driver)
            clipped = driver.execute_script(
                "return ['per-till','per-cashier'].filter(function(id){"
                " var w = document.getElementById(id).parentElement; return w.scrollWidth > w.clientWidth;});"
            )
            assert clipped == [], (w, clipped)

        # Wide: the per-till and per-cashier tables side by side.
        driver.set_window_size(1500, 1000)
        driver.get(f"{url}?since={DAY}&until={DAY}")
        _drawn(driver)
        driver.save_screenshot(str(tmp_path / "dashboard-wide.png"))
        till_box, cashier_box = (
            driver.execute_script(
                "var r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right];",
                driver.find_element(By.ID, i),
            )
            for i in ("per-till", "per-cashier")
        )
        assert abs(till_box[1] - cashier_box[1]) < 5 and cashier_box[0] >= till_box[2]
        assert driver.execute_script(
            "return Array.from(document.querySelectorAll('.wide')).every(function(w){"
            " return w.scrollWidth <= w.clientWidth;});"
        )
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()


FILTER_QUERIES = [
    "",
    "store=store-043",
    "till=till-02",
    "cashier=C-7",
    "kind=alert",
    "time_from=14:00&time_to=16:30",
    "cashier=C-9&kind=ack",
]


def test_the_filters_read_alike_from_postgresql(tmp_path, filter_db):
    """The same events in a real PostgreSQL server give the same filtered figures and event lists
    as in SQLite, and /live.json's version moves when an event is stored."""
    from tests.edge_app.pg_util import PgServer

    cfg = from_dict({"feed": {"timezone": "UTC"}})
    with PgServer() as pg:
        url = pg.create_db("filters")
        import sqlite3

        # The very same events (same ids) as the SQLite fixture, stored the way the feed stores them.
        st = FeedStore(url)
        with sqlite3.connect(filter_db) as con:
            for topic, payload in con.execute("SELECT topic, payload FROM events ORDER BY ts"):
                assert st.add(topic, payload.encode() if isinstance(payload, str) else payload).status == "new"
        st.close()
        lite, post = create_app(str(filter_db), cfg).test_client(), create_app(url, cfg).test_client()
        for q in FILTER_QUERIES:
            for path in ("summary.json", "events.json"):
                a, b = (json.loads(c.get(f"/{path}?since={DAY}&until={DAY}&{q}").data) for c in (lite, post))
                assert a == b, (path, q)
        first = json.loads(post.get("/live.json").data)["version"]
        assert json.loads(post.get("/live.json").data)["version"] == first
        st = FeedStore(url)
        c = check_event(store="store-042", till="till-01", txn="T-PG", age=30.0, ts=at("20:00:00"))
        assert st.add(event_topic(c), events.encode(c)).status == "new"
        st.close()
        assert json.loads(post.get("/live.json").data)["version"] != first
        post.application.extensions["agecheck_db"].close()
