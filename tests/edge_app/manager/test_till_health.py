"""Till health and silent tills as the manager sees them: checks carrying the quality gate's
figures stored by the feed's store (and migrated into a store written before them, on SQLite and
PostgreSQL), the dashboard's health panel in headless Chromium marking the till whose camera
departs from its own usual and following the page's filters, and a till gone silent shown as such
(with the events it numbered that have not arrived) before its next event, fed through the real
`agecheck feed` and Mosquitto."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_app.config import from_dict
from edge_app.core import event_bounds, events
from edge_app.core.state import TillState
from edge_app.core.times import iso_utc
from edge_app.manager import db as dbmod
from edge_app.manager.dashboard import create_app
from edge_app.manager.store import FeedStore
from tests.edge_app.feed_util import Proc, Publisher, check_event, event_topic, numbered, store_events, write_config
from tests.edge_app.manager.test_dashboard import _browser, _drawn, _filter, _stale, _wait

DAY = "2025-03-14"
USUAL = {"sharpness": 210.0, "brightness": 125.0, "eyes_px": 62.0}


def _checks(till: str, hour: int, cashier: str, n: int = 6, no_face: int = 0, alerts: int = 1, **quality) -> list[dict]:
    """n checks in one hour of a till, every 10 minutes: `no_face` of them found no usable face,
    `alerts` of the others asked for ID; the faces measured as `quality` says (else as usual)."""
    q = {**USUAL, **quality}
    out = []
    for i in range(n):
        ts = f"{DAY}T{hour:02d}:{i * 10:02d}:00.000Z"
        txn = f"T-{till}-{hour}-{i}"
        if i < no_face:
            out.append(
                check_event(
                    till=till,
                    txn=txn,
                    decision="no_face",
                    age=None,
                    ts=ts,
                    operator_id=cashier,
                    camera="up",
                    **{k: v for k, v in q.items() if k != "eyes_px"},
                )
            )
            continue
        decision = "check_id" if i < no_face + alerts else "approve"
        # A little spread, as real measures have.
        out.append(
            check_event(
                till=till,
                txn=txn,
                decision=decision,
                age=30.0 if decision == "approve" else 21.0,
                ts=ts,
                operator_id=cashier,
                camera="up",
                **{k: round(v * (1 + 0.02 * (i % 3 - 1)), 1) for k, v in q.items()},
            )
        )
    return out


def a_day_with_a_moved_camera() -> list[dict]:
    """store-001 till-01: 09:00-13:59 as usual (cashier C-1 until noon, then C-2); at 14:00 its
    camera is knocked: faces half the size, blurred, half the checks find no face, most ask for
    ID. till-02: the whole day as usual (cashier C-3)."""
    evs = []
    for hour in range(9, 14):
        evs += _checks("till-01", hour, "C-1" if hour < 12 else "C-2")
    evs += _checks("till-01", 14, "C-2", no_face=3, alerts=2, eyes_px=30.0, sharpness=60.0)
    for hour in range(9, 15):
        evs += _checks("till-02", hour, "C-3")
    return evs


@pytest.fixture(scope="module")
def health_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("health") / "feed.sqlite3"
    store_events(db, a_day_with_a_moved_camera())
    return db


def test_the_quality_figures_are_bounded_on_the_wire():
    ok = events.from_dict(check_event(sharpness=180.5, brightness=120.0, eyes_px=64.0))
    assert (ok.sharpness, ok.brightness, ok.eyes_px) == (180.5, 120.0, 64.0)
    assert "sharpness" not in check_event()  # absent when not measured, not null
    with pytest.raises(event_bounds.SchemaError, match="'brightness' is 300, outside 0 to 255"):
        events.from_dict(check_event(brightness=300))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_store_from_before_gains_the_columns_filled_from_its_payloads(kind, tmp_path, monkeypatch):
    """A store at schema 4 holding a check from a till that already sent the figures: opened by
    this feed it gains the columns, filled from the stored payload, and the till_state table."""
    from tests.edge_app.pg_util import PgServer

    c = check_event(decision="no_face", age=None, camera="down", sharpness=12.5, brightness=40.0, eyes_px=20.0)
    with PgServer() if kind == "postgresql" else _nothing() as pg:
        url = pg.create_db("before5") if pg else str(tmp_path / "feed.sqlite3")
        monkeypatch.setattr(dbmod, "MIGRATIONS", dbmod.MIGRATIONS[:4])
        old = dbmod.open_store(url)
        assert old.migrate() == 4 and "sharpness" not in old.columns("events")
        old.execute(
            "INSERT INTO events (event_id, kind, schema, ts, store_id, till_id, decision, topic, received_at,"
            " payload) VALUES (?, 'check', 1, ?, ?, ?, 'no_face', ?, ?, ?)",
            (c["event_id"], c["ts"], c["store_id"], c["till_id"], event_topic(c), c["ts"], events.encode(c).decode()),
        )
        old.close()
        monkeypatch.undo()
        st = FeedStore(url)
        assert st.db.query("SELECT MAX(version) FROM schema_migrations")[0][0] == len(dbmod.MIGRATIONS) == 5
        assert st.db.query("SELECT camera, sharpness, brightness, eyes_px FROM events") == [("down", 12.5, 40.0, 20.0)]
        assert st.db.has_table("till_state")
        st.close()


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_health_figures_without_a_browser(health_db):
    client = create_app(str(health_db), from_dict({"feed": {"timezone": "UTC"}})).test_client()
    data = json.loads(client.get(f"/summary.json?since={DAY}&until={DAY}").data)
    by = {h["till_id"]: h for h in data["till_health"]}
    one, two = by["till-01"], by["till-02"]
    assert one["departs"] and not two["departs"]
    knocked = one["hours"][0]
    assert knocked["hour"] == f"{DAY} 14:00" and knocked["checks"] == 6
    assert knocked["usable_share"] == 0.5 and knocked["no_face_minutes"] == 3 and knocked["camera_down_minutes"] == 0
    assert knocked["eyes_px"] == pytest.approx(30.0, abs=1)
    assert knocked["usual"]["eyes_px"] == pytest.approx(62.0, abs=1)
    words = " ".join(knocked["departures"])
    assert "usable face on 50% of checks (usual 100%)" in words
    assert "camera moved?" in words and "lens dirty or out of focus?" in words and "lit differently" not in words
    assert [h["hour"] for h in one["hours"] if h["departures"]] == [f"{DAY} 14:00"]


def _health(driver) -> dict:
    from selenium.webdriver.common.by import By

    marks = [e.get_attribute("data-till") for e in driver.find_elements(By.CSS_SELECTOR, "#health-marks li.departs")]
    rows = driver.find_elements(By.CSS_SELECTOR, "#health tr.health-row")
    return {
        "marks": marks,
        "text": driver.find_element(By.ID, "till-health").text,
        "tills": sorted({r.get_attribute("data-till") for r in rows}),
        "departing_rows": [
            (r.get_attribute("data-till"), r.find_elements(By.TAG_NAME, "td")[1].text)
            for r in rows
            if "departs" in r.get_attribute("class")
        ],
        "hours": len(rows),
    }


def test_the_health_panel_marks_the_departing_till_and_follows_the_filters(tmp_path, health_db):
    from selenium.webdriver.common.by import By

    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"})
    dash = Proc(["dashboard", "--config", str(cfg), "--db", str(health_db), "--port", "0"])
    driver = None
    try:
        url = re.search(r"http://\S+/", dash.lines[dash.wait_line("agecheck dashboard: http://", timeout=60)]).group(0)
        driver = _browser(tmp_path)
        driver.set_window_size(800, 1000)
        driver.get(f"{url}?since={DAY}&until={DAY}")
        _drawn(driver)
        got = _health(driver)
        assert got["marks"] == ["store-001/till-01"] and got["tills"] == ["store-001/till-01", "store-001/till-02"]
        assert got["departing_rows"] == [("store-001/till-01", "14 Mar 14:00")] and got["hours"] == 12
        assert "till-01 departs from its usual" in got["text"] and "camera moved?" in got["text"]
        # The panel fits a tablet like the rest of the page.
        width = driver.execute_script("return document.documentElement.clientWidth;")
        assert driver.execute_script("return document.getElementById('health').getBoundingClientRect().right;") <= width
        assert driver.execute_script(
            "var w = document.getElementById('health').parentElement; return w.scrollWidth <= w.clientWidth;"
        )
        driver.find_element(By.ID, "till-health").screenshot(str(tmp_path / "till-health.png"))

        def choose(**form) -> dict:
            _filter(driver, url, **form)
            return _health(driver)

        only_two = choose(till="till-02")
        assert only_two["tills"] == ["store-001/till-02"] and only_two["marks"] == []
        assert "Every till's camera is as usual" in only_two["text"]
        # The morning cashier's checks alone: till-01 as usual (its knocked hour was C-2's).
        c1 = choose(cashier="C-1")
        assert c1["tills"] == ["store-001/till-01"] and c1["marks"] == [] and c1["hours"] == 3
        c2 = choose(cashier="C-2")
        assert c2["marks"] == ["store-001/till-01"] and c2["hours"] == 3  # against C-2's two usual hours
        # The time of day: before the knock, nothing departs; the knocked hour in it, it does.
        assert choose(time_from="09:00", time_to="14:00")["marks"] == []
        assert choose(time_from="10:00", time_to="15:00")["marks"] == ["store-001/till-01"]
        assert "leaves none" in choose(kind="alert")["text"]
    finally:
        if driver is not None:
            driver.quit()
        dash.stop()


def _state(store: str, till: str, last_seq: int, heartbeat: float, depth: int = 0) -> bytes:
    return TillState(
        ts=iso_utc(datetime.now(UTC)),
        status="online",
        heartbeat_s=heartbeat,
        camera="up",
        last_seq=last_seq,
        outbox_depth=depth,
    ).encode()


def _silent_lines(driver) -> list[str]:
    """The silent-till lines as shown, read in one script call: the page replaces the list while it
    updates itself, and an element found a moment earlier can be gone when its text is read."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#silent-tills li.silent-till')].map(e => e.innerText)"
    )


def test_a_silent_till_is_shown_before_its_next_event(tmp_path, mqtt_broker):
    """Two tills publish their events and states through a real broker to the real feed; till-01
    stops (no Last Will: a cut cable) after its state numbered three events that never arrived.
    With till-02 still heard from, the open page shows till-01 silent and the three events not
    arrived, updating itself, without any further event from till-01."""
    from selenium.webdriver.common.by import By

    db = tmp_path / "feed.sqlite3"
    today = datetime.now(UTC)
    cfg = write_config(
        tmp_path / "config.yaml", mqtt_broker.port, feed={"timezone": "UTC"}, dashboard={"refresh_seconds": 1}
    )
    feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
    pub = Publisher(mqtt_broker.port)
    dash = driver = None
    beat = 1.0
    try:
        feed.wait_line("subscribed to", timeout=30)
        now = iso_utc(today)
        one = numbered([check_event(till="till-01", txn=f"T-1-{i}", ts=now) for i in range(4)], "till-01")
        two = numbered([check_event(till="till-02", txn=f"T-2-{i}", ts=now) for i in range(2)], "till-02")
        for ev in one + two:
            pub.event(ev)
        # till-01's last state: it numbered 7 events, 3 of them never reached the broker's queue for the feed.
        pub.raw("agecheck/v1/store-001/till-01/state", _state("store-001", "till-01", 7, beat, depth=1), retain=True)
        pub.raw("agecheck/v1/store-001/till-01/availability", b"online", retain=True)
        _wait(lambda: _db_rows(db, "SELECT COUNT(*) FROM events") == [(6,)], what="the feed to store the events")
        dash = Proc(["dashboard", "--config", str(cfg), "--db", str(db), "--port", "0"])
        url = re.search(r"http://\S+/", dash.lines[dash.wait_line("agecheck dashboard: http://", timeout=60)]).group(0)
        driver = _browser(tmp_path)
        driver.get(url)
        _drawn(driver)
        # till-02 keeps its heartbeat; till-01 says nothing more.
        silent: list = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not silent:
            pub.raw("agecheck/v1/store-001/till-02/state", _state("store-001", "till-02", 2, beat), retain=True)
            silent = _silent_lines(driver)
            time.sleep(0.3)
        assert silent and "till-01: silent" in silent[0] and "every 1 s" in silent[0], silent
        assert all("till-02" not in s for s in silent)
        assert int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates")) >= 1  # no reload
        missing = driver.find_element(By.ID, "missing-events").text
        assert "till-01: 3 events not arrived after" in missing
        assert "numbered up to 7; 1 of them were still in its outbox" in missing
        # (and no new event of till-01 came meanwhile)
        assert _db_rows(db, "SELECT COUNT(*) FROM events WHERE till_id = 'till-01'") == [(4,)]
        # A till that says it went offline is shown so at once.
        pub.raw("agecheck/v1/store-001/till-02/availability", b"offline", retain=True)
        _wait(lambda: any("till-02: offline" in line for line in _silent_lines(driver)), what="till-02 shown offline")
    finally:
        if driver is not None:
            driver.quit()
        if dash is not None:
            dash.stop()
        pub.close()
        feed.stop()


def _db_rows(db: Path, sql: str) -> list:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        try:
            return con.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []


def test_no_till_heard_is_the_feed_s_silence(tmp_path):
    """When no till is heard from, the page says the feed hears nothing instead of calling every
    till silent; a past period says nothing of now."""
    db = tmp_path / "feed.sqlite3"
    st = FeedStore(db)
    old = iso_utc(datetime.now(UTC) - timedelta(hours=2))
    for till in ("till-01", "till-02"):
        st.add(
            f"agecheck/v1/store-001/{till}/state",
            TillState(ts=old, heartbeat_s=30.0, last_seq=0).encode(),
            received_at=old,
        )
    st.close()
    client = create_app(str(db), from_dict({"feed": {"timezone": "UTC"}})).test_client()
    page = client.get("/").data.decode()
    assert 'id="feed-hears-nothing"' in page and 'class="gap silent-till"' not in page
    assert 'id="silent-tills"' not in client.get(f"/?since={DAY}&until={DAY}").data.decode()


class _SubPathProxy:
    """A reverse proxy that serves the dashboard under /agecheck/ only, as a proxy's `location
    /agecheck/` does: anything the page asks for outside it (an absolute link) is a 404."""

    PREFIX = "/agecheck/"

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading
        import urllib.error
        import urllib.request

        prefix = self.PREFIX
        self.asked: list[str] = []
        asked = self.asked

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                asked.append(self.path)
                if not self.path.startswith(prefix):
                    self.send_error(404, "outside the proxied sub-path")
                    return
                try:
                    with urllib.request.urlopen(upstream + self.path[len(prefix) :], timeout=30) as r:
                        status, headers, body = r.status, r.headers, r.read()
                except urllib.error.HTTPError as exc:
                    status, headers, body = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for k in ("Content-Type", "Content-Disposition", "Cache-Control"):
                    if headers.get(k):
                        self.send_header(k, headers[k])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_page_works_under_a_proxy_sub_path(tmp_path):
    """Behind a reverse proxy at /agecheck/, the page loads its styles and scripts, draws its
    charts, polls live.json and updates itself, and its filters and downloads stay under the
    sub-path: nothing the page asks for is outside it."""
    from selenium.webdriver.common.by import By

    db = tmp_path / "feed.sqlite3"
    store_events(db, a_day_with_a_moved_camera())
    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"}, dashboard={"refresh_seconds": 1})
    dash = Proc(["dashboard", "--config", str(cfg), "--db", str(db), "--port", "0"])
    proxy = driver = None
    try:
        url = re.search(r"http://\S+/", dash.lines[dash.wait_line("agecheck dashboard: http://", timeout=60)]).group(0)
        proxy = _SubPathProxy(url)
        driver = _browser(tmp_path)
        driver.get(f"{proxy.url}?since={DAY}&until={DAY}")
        _drawn(driver)
        assert driver.execute_script("return getComputedStyle(document.body).fontFamily;").startswith("system-ui")
        hrefs = [e.get_attribute("href") for e in driver.find_elements(By.CSS_SELECTOR, ".exports a, #clear")]
        assert hrefs and all(h.startswith(proxy.url) for h in hrefs), hrefs
        got = json.loads(_get(driver.find_element(By.ID, "export-json").get_attribute("href")))  # through the proxy
        assert got["filters"]["since"] == DAY and got["events"]
        store_events(db, [check_event(till="till-02", txn="T-proxy", ts=f"{DAY}T15:00:00.000Z", camera="up")])
        _wait(
            lambda: int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-updates")) >= 1,
            what="the page to update itself through the proxy",
        )
        old = driver.find_element(By.ID, "live")
        driver.find_element(By.ID, "apply").click()
        _wait(lambda: _stale(old), what="the filtered page")
        _drawn(driver)
        assert driver.current_url.startswith(proxy.url)
        assert any(p.startswith("/agecheck/live.json") for p in proxy.asked)
        assert [p for p in proxy.asked if not p.startswith("/agecheck/") and p != "/favicon.ico"] == []
    finally:
        if driver is not None:
            driver.quit()
        if proxy is not None:
            proxy.close()
        dash.stop()


def _get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_the_report_shows_a_gap_at_the_end_until_the_events_arrive(tmp_path):
    """The report's missing events take the hole a till's state shows after its last stored event;
    when the events arrive the hole closes (worked out from what is stored)."""
    from edge_app.manager.document import document
    from edge_app.manager.figures import summarize
    from edge_app.manager.render_md import render_markdown
    from edge_app.manager.scope import Period
    from edge_app.manager.store import gap_rows
    from edge_app.manager.store_reader import open_db

    db = tmp_path / "feed.sqlite3"
    evs = numbered([check_event(txn=f"T-{i}", ts=f"{DAY}T10:0{i}:00.000Z") for i in range(6)], "till-01")
    store_events(db, evs[:4])
    st = FeedStore(db)
    st.add(
        "agecheck/v1/store-001/till-01/state",
        TillState(ts=f"{DAY}T10:09:00.000Z", heartbeat_s=30.0, last_seq=6, outbox_depth=0).encode(),
    )
    st.close()
    ro = open_db(db)
    s = summarize(ro, Period(datetime(2025, 3, 14).date(), datetime(2025, 3, 14).date()), UTC)
    assert [(g.after_seq, g.before_seq, g.missing, g.waiting) for g in s.gaps] == [(4, 7, 2, 0)]
    md = render_markdown(document(s, str(db), "UTC"), {})
    assert (
        "till-01: 2 events not arrived after 2025-03-14 10:03 (the till's state at 10:09 says it numbered up to 6)"
    ) in md
    ro.close()
    store_events(db, evs[4:])
    ro = open_db(db)
    assert gap_rows(ro) == []
    ro.close()


def test_an_hour_s_usual_is_the_median_of_the_till_s_other_hours():
    """The usual leaves the hour's own checks out (a knocked hour does not pull its own usual), as
    statistics.median over the rest would, duplicates included."""
    import random
    import statistics

    from edge_app.manager.health import median_without

    rng = random.Random(7)
    for _ in range(2000):
        values = sorted(rng.choice([1.0, 2.0, 3.0, 5.5, 7.0, 7.0, 9.0]) for _ in range(rng.randint(1, 15)))
        some = rng.sample(values, rng.randint(0, len(values)))
        rest = list(values)
        for v in some:
            rest.remove(v)
        assert median_without(values, some) == (round(statistics.median(rest), 1) if rest else None), (values, some)


def test_the_health_panel_reads_alike_from_postgresql(health_db):
    from tests.edge_app.pg_util import PgServer

    cfg = from_dict({"feed": {"timezone": "UTC"}})
    with PgServer() as pg:
        url = pg.create_db("health")
        store_events(url, a_day_with_a_moved_camera())
        post = create_app(url, cfg).test_client()
        lite = create_app(str(health_db), cfg).test_client()
        departs = {}
        for q in ("", "&cashier=C-2", "&time_from=10:00&time_to=15:00", "&till=till-02", "&kind=alert"):
            a, b = (
                json.loads(c.get(f"/summary.json?since={DAY}&until={DAY}{q}").data)["till_health"] for c in (lite, post)
            )
            assert a == b, q
            departs[q] = [h["till_id"] for h in a if h["departs"]]
        assert departs == {
            "": ["till-01"],
            "&cashier=C-2": ["till-01"],
            "&time_from=10:00&time_to=15:00": ["till-01"],
            "&till=till-02": [],
            "&kind=alert": [],
        }
        post.application.extensions["agecheck_db"].close()
