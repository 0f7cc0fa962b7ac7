"""The docs' dashboard picture: the tool's simulated store holds a till whose camera departs from
its usual and a till gone silent (as the dashboard itself reads them), and the real dashboard in
headless Chromium is saved as a PNG of exactly the size asked for, with the page drawn in it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest

from edge_app.devtools import dashboard_shot
from edge_app.manager.health import till_health
from edge_app.manager.scope import Scope, parse_period
from edge_app.manager.store_reader import open_db
from edge_app.manager.tills import hearing

NOW = datetime(2025, 3, 14, 15, 30, tzinfo=UTC)


def test_the_simulated_store_has_a_departing_till_and_a_silent_one(tmp_path):
    db_path = tmp_path / "feed.sqlite3"
    n = dashboard_shot.fill_store(db_path, NOW)
    assert n > 600
    db = open_db(str(db_path))
    try:
        health = till_health(db, parse_period(None, None, NOW.date()), UTC, Scope())
        departing = {h.till_id for h in health if any(hour.departures for hour in h.hours)}
        assert departing == {"till-01"}
        heard = hearing(db, NOW)
        assert [t.till_id for t in heard.silent] == ["till-03"] and heard.tills_heard == 2
    finally:
        db.close()


def test_the_size_is_checked():
    assert dashboard_shot.Size.parse("1400x1800") == dashboard_shot.Size(1400, 1800)
    with pytest.raises(Exception, match="is not WIDTHxHEIGHT"):
        dashboard_shot.Size.parse("big")


@pytest.mark.scenario  # the real dashboard and a browser
def test_it_writes_a_png_of_the_size_asked_for(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    from PIL import Image

    out = tmp_path / "shots" / "dashboard.png"
    assert dashboard_shot.main([str(out), "--size", "1000x900"]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (1000, 900)
    # The page, not a blank or an error page: text in many shades, and the red the page says the
    # departing and the silent till in.
    colours = img.convert("RGB").getcolors(1 << 20)
    assert len(colours) > 50
    assert sum(n for n, (r, g, b) in colours if r > 140 and g < 60 and b < 60) > 1000
