"""The README's and docs/manager.md's dashboard picture, taken again by one command
(`python -m edge_app.devtools.dashboard_shot docs/dashboard.png [--size 1400x1800]`).

It fills a temporary SQLite feed store with simulated events of one store's three tills over
the two days before now (cashiers answering most alerts, some with no ID check, a few alerts
sold unanswered, a scan missed), with till-01's camera knocked two hours ago (faces half the
size, blurred, half its checks without a face: the till health panel marks the departure) and
till-03 silent for the last 40 minutes (its last retained state that old while the others keep
beating), serves it with the real `agecheck dashboard` and saves what headless Chromium shows at
`--size`. The events come from a seeded generator, so only the dates on the page change from one
run to the next.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from edge_app.core import event_parts, events, topics
from edge_app.core.bands import age_band
from edge_app.core.state import TillState
from edge_app.core.times import iso_utc
from edge_app.core.words import Answer, Decision, IntegrityReason, MissedReason
from edge_app.devtools.browser import BrowserMissing, headless_chromium
from edge_app.manager import tills
from edge_app.manager.store import FeedStore

STORE = "store-001"
TILLS = {"till-01": ("C-1", "C-2"), "till-02": ("C-3",), "till-03": ("C-4",)}  # cashiers, by shift
EVERY = timedelta(minutes=12)  # one restricted scan per till this often
HOURS = 48
KNOCKED = timedelta(hours=2)  # till-01's camera, this long before now
SILENT_FOR = timedelta(minutes=40)  # till-03
HEARTBEAT_S = 60.0
LAGER = event_parts.Product(sku="5010677850100", category="alcohol", min_age=18, name="Lager 4x440ml")
USUAL = (205.0, 125.0, 62.0)  # sharpness, brightness, eyes_px
KNOCKED_QUALITY = (70.0, 95.0, 29.0)


class ShotError(RuntimeError):
    """The dashboard or the browser did not come up; the message says which."""


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Size:
        m = re.fullmatch(r"(\d{3,4})x(\d{3,5})", text)
        if not m:
            raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in pixels (e.g. 1400x1800)")
        return cls(int(m.group(1)), int(m.group(2)))


def _decision(n: int, knocked: bool) -> Decision:
    """The n-th check's outcome. In a cycle rather than drawn: a handful of checks an hour drawn
    at random would make every till depart from its usual now and then."""
    if knocked:
        return Decision.NO_FACE if n % 2 else Decision.CHECK_ID if n % 4 else Decision.APPROVE
    if n % 5 == 1:  # one alert an hour (a check every 12 minutes); now and then no face instead of an age
        return Decision.NO_FACE if n % 35 == 16 else Decision.CHECK_ID
    return Decision.APPROVE


def _check(
    rng: random.Random, till: str, cashier: str, at: datetime, n: int, seq: int, knocked: bool
) -> events.CheckEvent:
    decision = _decision(n, knocked)
    age = (
        None
        if decision == Decision.NO_FACE
        else rng.uniform(31, 62)
        if decision == Decision.APPROVE
        else rng.uniform(15, 24)
    )
    sharp, bright, eyes = (rng.gauss(v, v * 0.04) for v in (KNOCKED_QUALITY if knocked else USUAL))
    return events.CheckEvent(
        store_id=STORE,
        till_id=till,
        transaction_id=f"T-{till[-2:]}{seq:05d}",
        ts=iso_utc(at),
        operator_id=cashier,
        publisher=till,
        seq=seq,
        trigger=event_parts.TriggerInfo(LAGER, source="pos"),
        frames_used=0 if age is None else 5,
        faces_seen=0 if age is None else 1,
        decision=decision,
        age=age,
        age_low=None if age is None else age - 3.5,
        age_high=None if age is None else age + 3.5,
        age_band=None if age is None else age_band(age),
        p_over=None if age is None else (0.93 if decision == Decision.APPROVE else rng.uniform(0.05, 0.4)),
        policy=event_parts.PolicyInfo(legal_age=18, challenge_age=25),
        model_id="age_resnet10_int8",
        latency_ms=event_parts.Latency(total=rng.uniform(90, 160)),
        camera="up",
        sharpness=round(sharp, 1),
        brightness=round(bright, 1),
        eyes_px=None if age is None else round(eyes, 1),
    )


def _after_alert(rng: random.Random, check: events.CheckEvent, at: datetime, seq: int) -> list[events.Event]:
    """The alert of a check that asked for ID, and what followed it: an answer, or (unanswered) the
    sale as an integrity event, or nothing yet."""
    till = check.till_id
    common: dict[str, Any] = dict(store_id=STORE, till_id=till, transaction_id=check.transaction_id, publisher=till)
    # The alert names the cashier logged in (from the scan, like the check); the answer and the
    # integrity event are theirs through it.
    alert = events.AlertEvent(
        **common,
        ts=iso_utc(at),
        seq=seq,
        operator_id=check.operator_id,
        check_event_id=check.event_id,
        decision=check.decision,
        age_band=check.age_band,
        item=LAGER,
        camera="up",
    )
    roll = rng.random()
    if roll < 0.03:
        return [
            alert,
            events.IntegrityEvent(
                **common,
                ts=iso_utc(at + timedelta(seconds=40)),
                seq=seq + 1,
                alert_event_id=alert.event_id,
                seconds_after_alert=40.0,
                check_event_id=check.event_id,
                decision=check.decision,
                reason=IntegrityReason.UNANSWERED,
            ),
        ]
    if roll < 0.07:
        return [alert]
    answer = (
        Answer.NO_ID_CHECK
        if roll < 0.15
        else Answer.ID_CHECKED_UNDER_AGE_REFUSED
        if roll < 0.3
        else Answer.ID_CHECKED_OVER_AGE
    )
    took = rng.uniform(2.0, 11.0)
    return [
        alert,
        events.AckEvent(
            **common,
            ts=iso_utc(at + timedelta(seconds=took)),
            seq=seq + 1,
            alert_event_id=alert.event_id,
            check_event_id=check.event_id,
            answer=answer,
            decision_time_s=round(took, 1),
        ),
    ]


def simulated_events(now: datetime, seed: int = 7) -> list[events.Event]:
    """Every till's events over the HOURS before `now`, oldest first."""
    rng = random.Random(seed)
    out: list[events.Event] = []
    start = (now - timedelta(hours=HOURS)).replace(minute=0, second=0, microsecond=0)  # whole hours: 5 checks each
    for n, (till, cashiers) in enumerate(TILLS.items()):
        at, seq, checks = start + timedelta(minutes=4 * n), 0, 0
        stop = now - (SILENT_FOR if till == "till-03" else timedelta(minutes=2))
        while at < stop:
            seq, checks = seq + 1, checks + 1
            cashier = cashiers[(at.hour // 12) % len(cashiers)]
            check = _check(rng, till, cashier, at, checks, seq, till == "till-01" and at >= now - KNOCKED)
            out.append(check)
            if check.decision != Decision.APPROVE:
                followed = _after_alert(rng, check, at + timedelta(seconds=1), seq + 1)
                out += followed
                seq += len(followed)
            at += EVERY  # evenly: an hour with more checks than usual would read as a departure
    out.append(
        events.MissedEvent(
            store_id=STORE,
            till_id="till-02",
            transaction_id="T-0299999",
            ts=iso_utc(now - timedelta(hours=5)),
            trigger=event_parts.TriggerInfo(LAGER, source="pos"),
            reason=MissedReason.QUEUE_FULL,
            detail="16 checks were already waiting",
        )
    )
    return sorted(out, key=lambda ev: ev.ts)


def fill_store(path: Path, now: datetime) -> int:
    """The simulated events and each till's latest retained state in a new SQLite feed store;
    the number of events stored."""
    store = FeedStore(path)
    try:
        evs = simulated_events(now)
        for ev in evs:
            store.add(topics.event_topic(ev.store_id, ev.till_id, ev), ev.encode(), received_at=ev.ts)
        last_seq = {ev.till_id: ev.seq for ev in evs if ev.seq is not None}
        for till in TILLS:
            heard = now - (SILENT_FOR if till == "till-03" else timedelta(seconds=20))
            state = TillState(
                ts=iso_utc(heard), status="online", heartbeat_s=HEARTBEAT_S, camera="up", last_seq=last_seq[till]
            )
            tills.keep(store.db, topics.topic(STORE, till, tills.STATE_LEAF), state.encode(), iso_utc(heard))
        return len(evs)
    finally:
        store.close()


def _serve(config: Path, db: Path) -> tuple[subprocess.Popen, str]:
    """The real `agecheck dashboard` on a free port, and the URL its start-up line gives."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "dashboard", "--config", str(config), "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    said = []
    for line in proc.stdout:  # ends when the dashboard exits: a failed start is said, not waited on
        said.append(line)
        if m := re.search(r"agecheck dashboard: (http://\S+/)", line):
            return proc, m.group(1)
    proc.wait()
    raise ShotError("the dashboard did not start:\n" + "".join(said[-20:]))


def _screenshot(url: str, out: Path, size: Size, timeout_s: float = 60.0) -> None:
    """Headless Chromium (Debian's chromium and chromium-driver, through selenium) at `size`,
    once the page says its charts are drawn."""
    from selenium.common.exceptions import WebDriverException  # deferred: a dev dependency, needed only here
    from selenium.webdriver.common.by import By

    try:
        driver = headless_chromium(size.width, size.height, None, "--hide-scrollbars")
    except BrowserMissing as exc:
        raise ShotError(str(exc)) from None
    except WebDriverException as exc:
        raise ShotError(f"headless Chromium did not start: {exc.msg}") from None
    try:
        driver.set_window_size(size.width, size.height)
        driver.get(url)
        end = time.monotonic() + timeout_s
        while driver.find_element(By.TAG_NAME, "body").get_attribute("data-charts") != "drawn":
            if time.monotonic() > end:
                raise ShotError(f"the page at {url} did not draw its charts in {timeout_s:.0f} s")
            time.sleep(0.1)
        time.sleep(0.5)  # Chart.js's entry animation
        # The viewport, not the window: what is saved is exactly `size`.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": size.width, "height": size.height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def take(out: Path, size: Size, now: datetime | None = None) -> Path:
    """Fill a temporary store, serve it, save the page to `out`."""
    now = now or datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="agecheck-dashboard-shot-") as tmp:
        db, config = Path(tmp) / "feed.sqlite3", Path(tmp) / "config.yaml"
        fill_store(db, now)
        # UTC, so the page reads the same wherever it is taken.
        config.write_text(yaml.safe_dump({"feed": {"timezone": "UTC"}}))
        proc, url = _serve(config, db)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            _screenshot(url, out, size)
        finally:
            proc.terminate()
            proc.wait(10)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_app.devtools.dashboard_shot", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, nargs="?", default=Path("docs/dashboard.png"))
    p.add_argument("--size", type=Size.parse, default=Size(1400, 1800), help="WIDTHxHEIGHT (default 1400x1800)")
    args = p.parse_args(argv)
    try:
        print(f"wrote {take(args.out, args.size)}")
    except ShotError as exc:
        print(f"dashboard_shot: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
