"""The decision and answer words: each has every label its readers show, and a word is the plain
string on the wire and when read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from edge_app.core import words
from edge_app.core.times import local_dt, parse_ts
from edge_app.core.words import Answer, Decision


@pytest.mark.parametrize("table", [words.DECISION_SHORT, words.DECISION_HINT, words.DECISION_COLUMN])
def test_every_decision_has_a_label(table):
    assert set(table) == set(Decision)
    assert all(isinstance(v, str) and v for v in table.values())


@pytest.mark.parametrize(
    "table, wanted",
    [
        (words.ANSWER_LABELS, set(Answer)),
        (words.ANSWER_COLUMN, set(Answer)),
        (words.ANSWER_SHORT, set(words.ACK_ANSWERS)),
        (words.ANSWER_PHRASE, set(words.ACK_ANSWERS)),
    ],
)
def test_every_answer_has_a_label(table, wanted):
    assert set(table) == wanted


def test_undo_is_a_correction_not_an_answer():
    assert Answer.UNDONE not in words.ACK_ANSWERS
    assert set(words.COVERING_ANSWERS) < set(words.ACK_ANSWERS)
    assert Answer.NO_ID_CHECK not in words.COVERING_ANSWERS


def test_a_word_is_the_plain_string_on_the_wire_and_back():
    body = json.dumps({"decision": Decision.CHECK_ID, "answer": Answer.NO_ID_CHECK}, sort_keys=True)
    assert body == '{"answer": "no_id_check", "decision": "check_id"}'
    back = json.loads(body)
    assert back["decision"] == Decision.CHECK_ID and words.DECISION_SHORT[back["decision"]] == "CHECK ID"
    assert f"answers_{Answer.UNDONE}" == "answers_undone"


@pytest.mark.parametrize(
    "ts, want",
    [
        ("2026-03-01T12:00:00.123Z", datetime(2026, 3, 1, 12, 0, 0, 123000, UTC)),
        ("2026-03-01T13:00:00+01:00", datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),
        ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, 0, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_parse_ts_reads_every_producers_times_as_aware(ts, want):
    got = parse_ts(ts)
    assert got == want and got.tzinfo is not None


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-13-01T00:00:00Z", None, 12, ["2026-03-01"]])
def test_parse_ts_gives_none_for_what_is_not_a_time(bad):
    assert parse_ts(bad) is None


def test_a_zoneless_pos_time_is_not_guessed_when_asked():
    assert parse_ts("2026-03-01T12:00:00", assume_utc=False) is None
    assert parse_ts("2026-03-01T12:00:00Z", assume_utc=False) == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_local_dt_shows_an_event_time_in_the_readers_zone():
    plus2 = timezone(timedelta(hours=2))
    got = local_dt("2026-03-01T22:30:00Z", plus2)
    assert (got.date().isoformat(), got.hour, got.utcoffset()) == ("2026-03-02", 0, timedelta(hours=2))
    assert local_dt("not a time", plus2) is None
