"""Manager report on a stored day of synthetic events: the figures in report.md are checked
against numbers worked out by hand (the charts and report.html: test_report_html.py)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from edge_app.config import from_dict
from edge_app.core import events
from edge_app.core.words import Answer, IntegrityReason
from edge_app.manager.report import build
from edge_app.manager.scope import ReportInputError, parse_period
from edge_app.manager.store import FeedStore
from tests.edge_app.feed_util import Proc, ack_event, alert_event, check_event, event_topic, write_config

DAY = "2025-03-14"


def at(hms: str, day: str = DAY) -> str:
    return f"{day}T{hms}.000Z"


def store_day(db: Path) -> None:
    """till-01: 11 checks (7 approve, 3 check_id, 1 no_face), 4 alerts, 3 answers (2 s, 4 s, 6 s)
    and 2 more taken back with Undo (T-109 then answered again, T-110 left unanswered),
    2 integrity events; cashier C-1 had T-107 and T-108 (both ID checked), C-2 T-109 and T-110.
    till-02: 5 checks, 1 alert answered after midnight, no cashier sent. Plus events on the
    days before and after that must not count."""
    evs: list[dict] = []
    minute = iter(range(10, 60))

    def t() -> str:
        return at(f"10:{next(minute):02d}:00")

    for txn, age in [("T-101", 34), ("T-102", 41), ("T-103", 52), ("T-104", 29), ("T-105", 38), ("T-106", 67)]:
        evs.append(check_event(txn=txn, decision="approve", age=age, ts=t()))
    evs.append(check_event(txn="T-101", decision="approve", age=35, ts=t()))  # a second scan, same shopper
    for txn, age, answer, secs, cashier in [
        ("T-107", 19, "id_checked_over_age", 2.0, "C-1"),
        ("T-108", 16, "id_checked_under_age_refused", 4.0, "C-1"),
        ("T-109", 22, "no_id_check", 6.0, "C-2"),
        ("T-110", None, None, None, "C-2"),
    ]:
        c = check_event(txn=txn, decision="check_id" if age else "no_face", age=age, ts=t(), operator_id=cashier)
        a = alert_event(c, ts=c["ts"])
        a["operator_id"] = cashier
        evs += [c, a]
        if txn in ("T-109", "T-110"):
            # An answer pressed by accident and taken back with Undo: not an answer, not a decision time.
            wrong = ack_event(a, "id_checked_over_age", 0.4, ts=t())
            evs += [wrong, ack_event(a, Answer.UNDONE, 1.0, ts=t(), replaces_event_id=wrong["event_id"])]
        if answer:
            evs.append(ack_event(a, answer, secs, ts=t()))
        if answer in (None, "no_id_check"):
            evs.append(
                events.IntegrityEvent(
                    store_id="store-001",
                    till_id="till-01",
                    transaction_id=txn,
                    ts=t(),
                    alert_event_id=a["event_id"],
                    seconds_after_alert=30.0,
                    reason=IntegrityReason.ANSWERED_NO_ID_CHECK if answer else IntegrityReason.UNANSWERED,
                ).to_dict()
            )
    for txn, age in [("T-201", 45), ("T-202", 27), ("T-203", 31), ("T-204", 58)]:
        evs.append(check_event(till="till-02", txn=txn, decision="approve", age=age, ts=t()))
    c = check_event(till="till-02", txn="T-205", decision="check_id", age=23, ts=at("23:59:00"))
    a = alert_event(c, ts=c["ts"])
    evs += [c, a, ack_event(a, "id_checked_over_age", 3.0, ts=at("00:00:30", "2025-03-15"))]
    evs.append(check_event(txn="T-099", decision="check_id", age=17, ts=at("23:59:59", "2025-03-13")))

    st = FeedStore(db)
    for ev in evs:
        assert st.add(event_topic(ev), events.encode(ev)).status == "new"
    st.add("agecheck/v1/store-001/till-01/events/check", b"{oops", received_at=at("12:00:00"))
    st.close()


def row(md: str, first: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no table row starting with {first!r} in:\n{md}")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "feed.sqlite3"
    store_day(db)
    cfg = from_dict({"feed": {"timezone": "UTC"}})
    path, summary = build(str(db), tmp / "out", DAY, DAY, cfg)
    return path, path.read_text(encoding="utf-8"), summary


def test_report_figures_per_till(report):
    _, md, _ = report
    # till | checks approve check-ID no-face | alerts answers ok refused no-check undone | integrity answered
    # median
    assert row(md, "till-01")[1:] == ["11", "7", "3", "1", "4", "3", "1", "1", "1", "2", "2", "75%", "4.0 s"]
    # The alert was answered after midnight: answered, but the answer belongs to the next day.
    assert row(md, "till-02")[1:] == ["5", "4", "1", "0", "1", "0", "0", "0", "0", "0", "0", "100%", "–"]
    assert row(md, "**all tills**")[1:] == ["16", "11", "4", "1", "5", "3", "1", "1", "1", "2", "2", "80%", "4.0 s"]
    assert "2 taken back by the cashier (Undo)" in md
    assert row(md, DAY)[1] == "till-01"  # the per-day table
    assert "2025-03-13" not in md and "T-099" not in md


def test_report_age_band_mix(report):
    _, md, summary = report
    expected = {"0-12": 0, "13-17": 1, "18-24": 3, "25-34": 3, "35-49": 4, "50-64": 2, "65+": 1}
    for band, n in expected.items():
        assert row(md, band)[1] == str(n), band
    assert row(md, "35-49")[2] == "29%"  # 4 of 14
    assert "(14 with an estimate; 1 without a usable face)" in md
    assert dict(summary.bands) == {k: v for k, v in expected.items() if v}


def test_report_lists_integrity_events_and_quarantine(report):
    _, md, _ = report
    section = md.split("## Integrity events")[1].split("##")[0]
    assert "T-109" in section and "no ID check" in section
    assert "T-110" in section and "no answer" in section
    assert "1 message(s) quarantined" in md
    assert "**2** integrity events" in md


def test_a_stored_payload_that_no_longer_reads_is_left_out_not_fatal(tmp_path, caplog):
    db = tmp_path / "feed.sqlite3"
    c1 = check_event(txn="T-1", decision="check_id", age=19, ts=at("10:00:00"))
    a1 = alert_event(c1, ts=at("10:00:00"))
    k1 = ack_event(a1, "id_checked_over_age", 2.0, ts=at("10:00:05"))
    c2 = check_event(txn="T-2", decision="approve", age=40, ts=at("10:01:00"))
    st = FeedStore(db)
    for ev in (c1, a1, k1, c2):
        st.add(event_topic(ev), events.encode(ev))
    cfg = from_dict({"feed": {"timezone": "UTC"}})
    _, before = build(str(db), tmp_path / "before", DAY, DAY, cfg)
    t = before.totals()
    assert (t.checks, t.answered_alerts, sum(t.answers.values()), before.unreadable) == (2, 1, 1, [])
    # Rows another build (or a hand) left behind: a schema this build does not read, and no JSON at all.
    st.db.execute("UPDATE events SET payload = ? WHERE event_id = ?", (json.dumps({**k1, "schema": 2}), k1["event_id"]))
    st.db.execute("UPDATE events SET payload = ? WHERE event_id = ?", ("{not json", c2["event_id"]))
    st.close()
    with caplog.at_level(logging.WARNING, logger="edge_app.manager.store"):
        path, s = build(str(db), tmp_path / "out", DAY, DAY, cfg)
    assert f"event {k1['event_id']} left out" in caplog.text and "unknown schema version 2" in caplog.text
    assert f"event {c2['event_id']} left out" in caplog.text
    # Left out of every figure: the unreadable answer is neither an answer nor one taken back.
    t = s.totals()
    assert (t.checks, t.alerts, t.answered_alerts, sum(t.answers.values()), t.undone) == (1, 1, 0, 0, 0)
    assert sorted(s.unreadable) == sorted([k1["event_id"], c2["event_id"]]) and s.events_total == 2
    quality = path.read_text(encoding="utf-8").split("## Data quality")[1]
    assert "2 stored event(s) left out of every figure" in quality
    assert k1["event_id"] in quality and c2["event_id"] in quality
    assert "left out of every figure" not in (tmp_path / "before" / "report.md").read_text(encoding="utf-8")


def test_report_days_follow_the_timezone(tmp_path):
    db = tmp_path / "feed.sqlite3"
    st = FeedStore(db)
    late = check_event(decision="approve", age=40, ts="2025-03-13T23:30:00.000Z")  # 00:30 in Berlin
    st.add(event_topic(late), events.encode(late))
    st.close()
    _, s = build(str(db), tmp_path / "berlin", DAY, DAY, from_dict({"feed": {"timezone": "Europe/Berlin"}}))
    assert s.totals().checks == 1
    _, s = build(str(db), tmp_path / "utc", DAY, DAY, from_dict({"feed": {"timezone": "UTC"}}))
    assert s.totals().checks == 0
    assert "No events were stored for this period" in (tmp_path / "utc" / "report.md").read_text()


@pytest.mark.parametrize(
    "since, until, message",
    [
        ("2025-02-30", None, "--since: '2025-02-30' is not a date; use YYYY-MM-DD"),
        ("14/03/2025", None, "--since: '14/03/2025' is not a date"),
        (None, "yesterday", "--until: 'yesterday' is not a date"),
        ("2025-03-15", "2025-03-14", "--since 2025-03-15 is after --until 2025-03-14"),
        ("2020-01-01", "2025-01-01", "at most 366 days"),
        ("9999-12-30", "2025-01-01", "--since: '9999-12-30' is out of range; use a date from 1970-01-01 to 9998-12-31"),
        (None, "0001-01-03", "--until: '0001-01-03' is out of range"),
    ],
)
def test_bad_dates(since, until, message):
    with pytest.raises(ReportInputError, match=re.escape(message)):
        parse_period(since, until, today=__import__("datetime").date(2025, 3, 20))


def test_default_period_is_the_last_week():
    import datetime as dt

    p = parse_period(None, None, today=dt.date(2025, 3, 20))
    assert (p.since, p.until) == (dt.date(2025, 3, 14), dt.date(2025, 3, 20))


def test_report_command(tmp_path):
    db = tmp_path / "feed.sqlite3"
    store_day(db)
    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"})
    ok = Proc(
        [
            "report",
            "--config",
            str(cfg),
            "--db",
            str(db),
            "--since",
            DAY,
            "--until",
            DAY,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert ok.p.wait(timeout=60) == 0, ok.output
    ok.stop()
    # The headline leads with the share of alerts where ID was checked (3 of 5), not "answered".
    assert (
        "ID checked on 60% of alerts (3 of 5), 20% not answered (1), 20% answered “no ID check” (1); "
        "16 checks, median answer 4.0 s, 2 integrity events, 0 events missing"
    ) in ok.output
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "per_cashier.csv").is_file()

    bad = Proc(["report", "--db", str(tmp_path / "missing.sqlite3"), "--since", DAY, "--until", DAY])
    assert bad.p.wait(timeout=60) == 2
    bad.stop()
    assert "does not exist; run `agecheck feed` first" in bad.output

    notdb = tmp_path / "notes.txt"
    notdb.write_text("hello\n" * 100)
    bad = Proc(["report", "--db", str(notdb), "--since", "2025-13-01"])
    assert bad.p.wait(timeout=60) == 2
    bad.stop()
    assert "--since: '2025-13-01' is not a date" in bad.output


def test_the_headline_leads_with_id_checks_and_cashiers_have_a_table(report):
    path, md, _ = report
    summary_part = md.split("## Summary")[1].split("\n- ")[0]
    assert (
        "**ID was checked on 60% of alerts** (3 of 5). **20% were not answered** (1) and "
        "**20% were answered “no ID check”** (1)."
    ) in summary_part
    assert "answered by the cashier" not in md  # the old headline counted "no ID check" as done
    # store | cashier | alerts answered ID-checked no-ID-check not-answered median undone
    cashiers = md.split("## Per cashier")[1].split("\n## ")[0]
    lines = {
        c[1]: c
        for c in (
            [x.strip() for x in line.strip().strip("|").split("|")]
            for line in cashiers.splitlines()
            if line.startswith("| store-001")
        )
    }
    assert lines["C-1"][2:] == ["2", "2", "100%", "0", "0", "3.0 s", "0"]
    # C-2's answers taken back with Undo are theirs too (an answer carries its alert's cashier).
    assert lines["C-2"][2:] == ["2", "1", "0%", "1", "1", "6.0 s", "2"]
    assert lines["not sent by the POS"][2:] == ["1", "1", "100%", "0", "0", "–", "0"]
    data = json.loads((path.parent / "report.json").read_text())
    assert data["headline"] == {
        "alerts": 5,
        "id_checked": 3,
        "share_id_checked": 0.6,
        "not_answered": 1,
        "share_not_answered": 0.2,
        "no_id_check_answered": 1,
        "share_no_id_check_answered": 0.2,
    }
    assert [c["cashier"] for c in data["per_cashier"]] == ["C-1", "C-2", "not sent by the POS"]
    csv_lines = (path.parent / "per_cashier.csv").read_text().splitlines()
    assert csv_lines[0].startswith("store_id,cashier,alerts,alerts_answered,alerts_id_checked")
    assert csv_lines[2].startswith("store-001,C-2,2,1,0,0.0,1,1,6.0,2,2")


def test_the_scope_narrows_every_figure(tmp_path):
    """Till, cashier, kind and time of day each change the counts, the cashier table, the bands
    and the integrity list: one definition (scope.Scope) for the report and the dashboard."""
    import datetime as dt

    from edge_app.manager.figures import summarize
    from edge_app.manager.scope import Period, Scope, parse_time_of_day
    from edge_app.manager.store_reader import open_db

    db = tmp_path / "feed.sqlite3"
    store_day(db)
    con = open_db(db)
    day = Period(dt.date(2025, 3, 14), dt.date(2025, 3, 14))

    def figures(**kw):
        s = summarize(con, day, dt.UTC, scope=Scope(**kw))
        t = s.totals()
        return (
            t.checks,
            t.alerts,
            t.id_checked_alerts,
            sum(t.answers.values()),
            t.undone,
            t.integrity,
            sum(s.bands.values()),
            sorted(c for _, c in s.cashiers),
            len(s.integrity_events),
        )

    assert figures() == (16, 5, 3, 3, 2, 2, 14, ["", "C-1", "C-2"], 2)
    assert figures(till="till-02") == (5, 1, 1, 0, 0, 0, 5, [""], 0)
    assert figures(cashier="C-2") == (2, 2, 0, 1, 2, 2, 1, ["C-2"], 2)
    assert figures(kind="alert") == (0, 5, 3, 0, 0, 0, 0, ["", "C-1", "C-2"], 0)
    assert figures(kind="integrity")[5:] == (2, 0, ["C-2"], 2)
    assert figures(hours=parse_time_of_day("23:00", None)) == (1, 1, 1, 0, 0, 0, 1, [""], 0)
    # Over midnight: 23:00 to 10:15 takes T-205 and the first five minutes of the morning.
    assert figures(hours=parse_time_of_day("23:00", "10:15"))[:2] == (6, 1)
    con.close()


@pytest.mark.parametrize(
    "start, end, message",
    [
        ("25:00", None, "--from-time: '25:00' is not a time of day; use HH:MM"),
        ("9", None, "--from-time: '9' is not a time of day"),
        (None, "12:60", "--to-time: '12:60' is not a time of day"),
        ("10:00", "10:00", "are both 10:00; give a range"),
    ],
)
def test_bad_times_of_day(start, end, message):
    from edge_app.manager.scope import parse_time_of_day

    with pytest.raises(ReportInputError, match=re.escape(message)):
        parse_time_of_day(start, end)


def test_json_goes_where_it_is_told(tmp_path):
    """`--json` prints and writes no folder unless --out asks; `--json FILE` writes that file."""
    db = tmp_path / "feed.sqlite3"
    store_day(db)
    cfg = write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"})
    work = tmp_path / "work"
    work.mkdir()
    common = ["report", "--config", str(cfg), "--db", str(db), "--since", DAY, "--until", DAY]
    printed = Proc([*common, "--json"], cwd=work)
    assert printed.p.wait(timeout=60) == 0, printed.output
    printed.stop()
    assert json.loads(printed.output)["headline"]["id_checked"] == 3
    assert list(work.iterdir()) == []  # no ./agecheck-report/ behind the user's back
    to_file = Proc([*common, "--json", str(tmp_path / "week.json")], cwd=work)
    assert to_file.p.wait(timeout=60) == 0, to_file.output
    to_file.stop()
    assert json.loads((tmp_path / "week.json").read_text())["headline"]["alerts"] == 5
    assert str(tmp_path / "week.json") in to_file.output and list(work.iterdir()) == []
    both = Proc([*common, "--json", str(tmp_path / "b.json"), "--out", str(tmp_path / "folder")], cwd=work)
    assert both.p.wait(timeout=60) == 0, both.output
    both.stop()
    assert (tmp_path / "b.json").is_file() and (tmp_path / "folder" / "report.md").is_file()
