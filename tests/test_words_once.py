"""The words of the event schema are spelled in one place each: the decision, answer,
integrity-reason, missed-reason and ack-via words only in edge_app/core/words.py (everything else,
training included, uses the enums), and an event's fields are read as attributes of the typed
events, not by key, outside the modules that declare a wire format. A new `ev["decision"]` or
`"no_id_check"` elsewhere fails here."""

from __future__ import annotations

import dataclasses
import io
import re
import tokenize
from pathlib import Path

from edge_app.core import events, words

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "edge_app"
TRAINING = REPO / "training"
WORDS = {str(w) for w in (*words.Decision, *words.Answer, *words.IntegrityReason, *words.MissedReason, *words.AckVia)}
# Strings that happen to be one of the words but mean something else, with what they are.
OTHER_WORD_MEANINGS = {
    ("devtools/screenshots.py", "click"): "xdotool's click command",
    ("devtools/bench/latency.py", "click"): "xdotool's click command",
    ("till/service.py", "shutdown"): "the method name a plug-in may have",
}
# A library shipped as it came (manager/static/README), not our code.
VENDORED = {"manager/static/chart.umd.min.js"}
FIELDS = {f.name for cls in events.EVENT_TYPES.values() for f in dataclasses.fields(cls)} - {"extra", "absent"}

# Modules that declare a wire or storage format of their own, where these names are that format's keys.
FORMAT_MODULES = {
    "core/events.py",  # the event schema: validate() reads the wire dict
    "core/event_bounds.py",  # the bounds validate() checks on the wire dict
    "core/pos.py",  # the POS messages (their transaction_id, ts, ...)
}
# Keys that happen to share a field's name but belong to something else, with what they are.
OTHER_MEANINGS = {
    ("till/check.py", "policy"): "the check's latency stage timed as 'policy'",
    ("cashier/drawing.py", "item"): "the Tk label widget showing the item",
    ("cashier/drawing.py", "detail"): "the Tk label widget showing the detail line",
    ("vision/model.py", "decision"): "the model card's calibrated decision block",
    ("vision/model.py", "model_id"): "the model card's id",
    ("devtools/bench/run.py", "model_id"): "the bench's own report header",
    ("transport/outbox_file.py", "seq"): "the outbox table's column",
    ("devtools/photos.py", "sharpness"): "the photo tool's JSON of the quality gate's measures (faces.Quality)",
    ("devtools/photos.py", "brightness"): "the photo tool's JSON of the quality gate's measures (faces.Quality)",
    (
        "manager/render_data.py",
        "store_id",
    ): "per_till.csv's and per_cashier.csv's first column (a list, not a key read)",
    ("manager/document.py", "store_id"): "a row of figures.cashier_rows (the report's figures, not an event)",
}
KEYED = re.compile(r"""(?:\[\s*|\.get\(\s*|getattr\([^,()]+,\s*)(["'])(\w+)\1""")


def sources(*suffixes: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in suffixes and "__pycache__" not in p.parts)


def python_strings(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every string literal (comments and docstrings' prose are not code)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.STRING:
            body = tok.string.lstrip("rbuRBUfF")
            if body[:1] in "'\"" and not body.startswith(('"""', "'''")):
                out.append((tok.start[0], body[1:-1]))
    return out


def test_decision_answer_and_reason_words_are_spelled_once():
    found = []
    for path in sources(".py") + sources(".py", root=TRAINING):
        rel = path.relative_to(ROOT if path.is_relative_to(ROOT) else REPO).as_posix()
        if rel == "core/words.py":
            continue
        found += [
            f"{rel}:{line}: {value!r}"
            for line, value in python_strings(path)
            if value in WORDS and (rel, value) not in OTHER_WORD_MEANINGS
        ]
    for path in sources(".js", ".html"):
        if path.relative_to(ROOT).as_posix() in VENDORED:
            continue
        for line, text in enumerate(path.read_text().splitlines(), 1):
            found += [
                f"{path.relative_to(ROOT)}:{line}: {m.group(2)!r}"
                for m in re.finditer(r"""(["'])(\w+)\1""", text)
                if m.group(2) in WORDS
            ]
    assert not found, "use edge_app.core.words instead of spelling the word again:\n" + "\n".join(found)


def test_event_fields_are_read_as_attributes():
    found = []
    for path in sources(".py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in FORMAT_MODULES:
            continue
        for line, text in enumerate(path.read_text().splitlines(), 1):
            for m in KEYED.finditer(text):
                name = m.group(2)
                if name in FIELDS and (rel, name) not in OTHER_MEANINGS:
                    found.append(f"{rel}:{line}: {text.strip()}")
    assert not found, "read typed events (edge_app.core.events) by attribute, not by key:\n" + "\n".join(found)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The scanners themselves: a spelled word and a keyed field read are found."""
    bad = tmp_path / "bad.py"
    bad.write_text('x = ev["decision"] if ev.get("answer") == "no_id_check" else None  # "approve" in a comment\n')
    assert [v for _, v in python_strings(bad) if v in WORDS] == ["no_id_check"]
    assert [m.group(2) for m in KEYED.finditer(bad.read_text())] == ["decision", "answer"]


# Places that still build a topic or decode an event by hand, left to their owner (edge_app/manager
# is being changed elsewhere); remove an entry once the module uses topics.event_leaf/decode_event.
NOT_YET: dict[tuple[str, str], str] = {}
HAND_DECODED = re.compile(r"events\.from_dict\(\s*(?:json\.loads|\w*\.?decode\(|payloads\.parse)")


def test_event_topics_and_the_event_decoder_are_spelled_once():
    found = []
    for path in sources(".py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "core/events.py":
            continue
        if (rel, "topic") not in NOT_YET and rel != "core/topics.py":
            found += [
                f"{rel}:{line}: {value!r} (use topics.event_leaf/event_topic)"
                for line, value in python_strings(path)
                if "events/" in value
            ]
        if (rel, "decoder") not in NOT_YET:
            found += [
                f"{rel}:{line}: {text.strip()} (use events.decode_event)"
                for line, text in enumerate(path.read_text().splitlines(), 1)
                if HAND_DECODED.search(text)
            ]
    assert not found, (
        "build event topics through edge_app.core.topics and decode events through edge_app.core.events:\n"
        + "\n".join(found)
    )


def test_the_topic_and_decoder_checks_catch_what_they_look_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        't = f"events/{kind}"\nev = events.from_dict(json.loads(p))\nev = events.from_dict(events.decode(p))\n'
    )
    assert [v for _, v in python_strings(bad) if "events/" in v] == ["events/{kind}"]
    assert [n for n, t in enumerate(bad.read_text().splitlines(), 1) if HAND_DECODED.search(t)] == [2, 3]
