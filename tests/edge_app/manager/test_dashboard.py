"""The dashboard as a manager uses it: the real `agecheck dashboard` process (Flask on waitress) over
a feed database of two stores, opened in Debian's Chromium, headless, driven by Selenium. The
page loads with its figures and drawn charts, the filters change what it shows, the exports
download, and a screenshot of the "needs attention" list shows it on screen."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from edge_app.config import from_dict
from edge_app.core import events
from edge_app.manager.dashboard import bucket_size, create_app, hash_password
from edge_app.manager.feed import FeedStore
from edge_app.manager.report import Period
from tests.helpers import wait_until
from tests.edge_app.feed_util import Proc, ack_event, alert_event, check_event, event_topic, numbered, write_config

DAY = "2025-03-14"


def at(hms: str, day: str = DAY) -> str:
    return f"{day}T{hms}.000Z"


def integrity(alert: dict, reason: str, ts: str, secs: float = 30.0) -> dict:
    ev = events.new_event("integrity", alert["store_id"], alert["till_id"], alert["transaction_id"],
                          alert_event_id=alert["event_id"], seconds_after_alert=secs, reason=reason)
    ev["ts"] = ts
    return ev


def two_stores(db: Path) -> None:
    """store-042 till-01 (cashier C-7): 3 alerts, one answered "no ID check" and sold, one never
    answered and sold, one ID checked; its events 5-16 never arrived (a gap). store-042 till-02:
    2 clean checks. store-043 till-01 (same till name, another store): 1 alert, ID checked."""
    a_evs: list[dict] = []
    for i, (hms, answer) in enumerate([("14:02:00", "no_id_check"), ("14:20:00", None),
                                       ("15:00:00", "id_checked_over_age")]):
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
    b_evs = numbered([check_event(store="store-042", till="till-02", txn=f"T-B-{i}", decision="approve", age=40.0,
                                  ts=at(f"11:0{i}:00")) for i in range(2)], "till-02")
    c = check_event(store="store-043", till="till-01", txn="T-43-1", age=22.0, ts=at("16:00:00"))
    a = alert_event(c, ts=at("16:00:00"))
    c_evs = numbered([c, a, ack_event(a, "id_checked_over_age", 2.0, ts=at("16:00:05"))], "till-01")
    st = FeedStore(db)
    for ev in a_evs + b_evs + c_evs:
        assert st.add(event_topic(ev), events.encode(ev)).status == "new"
    st.close()


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
        ("store-042", "till-01", "C-7", 2)]
    # Each integrity entry names the cashier logged in when its alert was shown (the till's
    # integrity event itself does not carry one).
    assert [(e["operator_id"], e["kind"]) for e in data["integrity_events"]] == [("C-7", "integrity")] * 2
    moments = att[0]["moments"]
    assert moments[0]["alert_shown"] == "2025-03-14 14:02:00" and moments[0]["sale_completed"] == "2025-03-14 14:02:30"
    assert [g["missing"] for g in data["missing_events"]] == [12]
    assert data["missing_events"][0]["text"].startswith("till-01: 12 events missing on 2025-03-14 between 14:0")
    assert data["charts"]["bucket"] == "day" and data["charts"]["per_till"]["labels"] == [
        "store-042/till-01", "store-042/till-02", "store-043/till-01"]
    only = json.loads(client.get(f"/summary.json?since={DAY}&until={DAY}&store=store-043").data)
    assert [t["store_id"] for t in only["per_till"]] == ["store-043"] and only["needs_attention"] == []
    bad = client.get("/?since=2025-02-30")
    assert bad.status_code == 400 and b"--since: '2025-02-30' is not a date" in bad.data
    assert client.get("/static/chart.umd.min.js").status_code == 200


def test_the_dashboard_honours_the_cashiers_undo(tmp_path):
    """An "ID checked" taken back with Undo is not an ID check: the alert counts as unanswered,
    the answer is counted as undone, and the event list says which answer the Undo took back."""
    c = check_event(store="store-042", till="till-01", txn="T-U", age=19.0, ts=at("10:00:00"))
    a = alert_event(c, ts=at("10:00:00"))
    wrong = ack_event(a, "id_checked_over_age", 0.4, ts=at("10:00:01"))
    undo = ack_event(a, events.ACK_UNDONE, 2.0, ts=at("10:00:03"))
    undo["replaces_event_id"] = wrong["event_id"]
    st = FeedStore(tmp_path / "feed.sqlite3")
    for ev in (c, a, wrong, events.validate(undo)):
        assert st.add(event_topic(ev), events.encode(ev)).status == "new"
    st.close()
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
    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver); the dashboard is "
                    "tested in a real headless browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2200",
                "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(driver_bin), options=opts)


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
        _wait(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "drawn",
              what="the charts to be drawn")

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
        assert [r.split()[:2] for r in per_till] == [["store-042", "till-01"], ["store-042", "till-02"],
                                                     ["store-043", "till-01"]]
        assert per_till[0].split()[2:5] == ["3", "3", "33%"]

        # The charts are drawn by Chart.js (served from the package) with the page's figures.
        drawn = driver.execute_script(
            "return ['chart-over-time','chart-per-till','chart-bands'].map(function(id){"
            " var c = Chart.getChart(document.getElementById(id));"
            " return c ? c.data.datasets.map(function(d){return d.data.reduce(function(a,b){return a+b;},0);}) : null;});")
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
        assert len(got) == 2 and {r["kind"] for r in got} == {"integrity"} and {r["store_id"] for r in got} == {"store-042"}
        assert {r["reason"] for r in got} == {"cashier answered no ID check", "alert not answered"}
        driver.find_element(By.ID, "export-json").click()
        json_file = _wait(lambda: _downloaded(downloads, ".json"), what="the JSON download")[0]
        body = json.loads(json_file.read_text())
        assert body["filters"]["kind"] == "integrity" and len(body["events"]) == 2
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()
